"""The line index of a text data file: its row count and the byte offset of every EVERY-th line.

Why: without it every process (chief, workers, evaluator, each restart) counted every line of every
file before its first step, and the held-out slice and each --workqueue item were reached by reading
the file from line 1 (tf.data's skip()). With it the count is read from a small JSON sidecar and a
reader seeks to the indexed line at or before its first line, then skips at most EVERY - 1 lines.

The sidecar is `.NAME.index.json` beside the file, or, when that folder is read-only, a file in
CACHE_DIR (MODELZOO_INDEX_CACHE, default ~/.cache/modelzoo/line_index). It records the file's
identity (bytes, mtime_ns, the first line's fingerprint) and is rebuilt when that no longer matches
(the file was appended to or replaced). data/prepare_criteo.py and the generators write it as they
write the file (IndexingWriter: no extra pass); otherwise the first process to read the file builds it
(one pass, as the count it replaces) and every later one reuses it. A gzip file cannot seek: its index
holds the count only, and its rows are reached by decompressing from line 1 (said once per file).
"""
import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import threading
import time

from modelzoo.data_errors import UNREADABLE, DataError, open_binary
from modelzoo.io_utils import atomic_write_json

EVERY = 65_536  # lines between two indexed offsets: a reader skips at most EVERY - 1 lines after its seek
VERSION = 1
CACHE_ENV = "MODELZOO_INDEX_CACHE"
BLOCK_BYTES = 1 << 20  # what the seeking reader reads at a time
BLOCK_LINES = 4096  # lines per block it hands to tf.data (then unbatched)

_loaded = {}  # path -> LineIndex, for the readers of this process
_lock = threading.Lock()
_said = set()  # gzip files whose cost of reaching a line was said


def sidecar(path):
    """Where the index of `path` is kept beside it."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.index.json")


def cache_path(path):
    """Where the index of a file in a read-only folder is kept."""
    folder = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "modelzoo", "line_index")
    real = os.path.realpath(path)
    return os.path.join(folder, f"{hashlib.sha256(real.encode()).hexdigest()[:16]}-{os.path.basename(real)}.json")


def identity(path):
    """What tells this file's content from another's, cheaply: size, modification time, first line."""
    try:
        stat = os.stat(path)
        with open_binary(path) as f:
            first = f.readline(1 << 16)
    except UNREADABLE as err:
        raise DataError(f"{path}: cannot be read: {err}") from None
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "first_row_sha256": hashlib.sha256(first).hexdigest()[:16]}


class LineIndex:
    """Rows of a file and `offsets[j]`: the byte where line j * every starts (0-based; [0] for gzip)."""

    def __init__(self, rows, offsets, every, where=None, built=False):
        self.rows, self.offsets, self.every, self.where, self.built = rows, offsets, every, where, built

    def seek_point(self, line):
        """(byte offset, lines to skip after it) for 0-based `line`."""
        j = min(line // self.every, len(self.offsets) - 1)
        return self.offsets[j], line - j * self.every


def describe(indexes):
    """The line indexes of a run's text files, for the start-up `data:` line."""
    built = sum(i.built for i in indexes)
    how = "built now" if built == len(indexes) else "reused" if not built else f"{built} built now, the rest reused"
    cache = os.path.dirname(cache_path("x"))
    kept = {"not kept (neither the data folder nor " + cache + " is writable: counted at each start)" if i.where is None
            else f"kept in {cache} (the data folder is read-only)" if os.path.dirname(i.where) == cache
            else f"kept beside the data ({os.path.basename(i.where)})" if len(indexes) == 1
            else "kept beside the data (.NAME.index.json)" for i in indexes}
    return f"line index{'es' if len(indexes) > 1 else ''} {how}, " + "; ".join(sorted(kept))


class _Counter:
    """Counts the lines of a byte stream block by block, noting where every EVERY-th line starts."""

    def __init__(self, every=None):
        self.every, self.lines, self.bytes, self.offsets, self.last = every or EVERY, 0, 0, [0], b"\n"

    def feed(self, block):
        if not block:
            return
        n = block.count(b"\n")
        target = len(self.offsets) * self.every  # the next line whose start is indexed
        if self.lines + n >= target:
            pos, seen = -1, self.lines
            while seen < self.lines + n:
                pos = block.index(b"\n", pos + 1)
                seen += 1
                if seen == target:
                    self.offsets.append(self.bytes + pos + 1)
                    target += self.every
        self.lines += n
        self.bytes += len(block)
        self.last = block[-1:]

    def rows(self):
        return self.lines + (self.last != b"\n")

    def offsets_before_end(self):
        return [o for o in self.offsets if o < self.bytes] or [0]


def _record(path, rows, offsets, every):
    return {"version": VERSION, "file": os.path.basename(path), "identity": identity(path), "rows": rows,
            "every": every, "gzip": path.endswith(".gz"), "offsets": offsets}


def writable(folder):
    """Whether to write beside the data: the folder is writable and not marked read-only (no write bit for
    anyone: root may write there, but leaves it alone as it would a read-only volume)."""
    try:
        return os.access(folder, os.W_OK) and bool(os.stat(folder).st_mode & 0o222)
    except OSError:
        return False


def save(path, rows, offsets, every):
    """Write the index of a complete file: beside it, or in the cache folder when that is read-only.
    Returns where it went (None: neither could be written; the file is then counted at each start)."""
    record = _record(path, rows, offsets, every)
    for target in (sidecar(path), cache_path(path)):
        if target == sidecar(path) and not writable(os.path.dirname(target)):
            continue
        try:
            atomic_write_json(target, record)
            return target
        except OSError:
            continue
    return None


def _read(target, path, ident):
    try:
        with open(target, encoding="utf-8") as f:
            record = json.load(f)
        if record.get("version") == VERSION and record.get("identity") == ident:
            return LineIndex(int(record["rows"]), [int(o) for o in record["offsets"]], int(record["every"]), target)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def build(path, every=None):
    """Count the lines of `path` in one pass, noting the offsets (what count_lines did, and a little more)."""
    counter = _Counter(every)
    try:
        with open_binary(path) as f:
            while True:
                block = f.read(1 << 22)
                if not block:
                    break
                counter.feed(block)
    except UNREADABLE as err:  # a truncated or corrupt gzip stream, a disk error
        raise DataError(f"{path}: cannot be read: {err}") from None
    return counter.rows(), ([0] if path.endswith(".gz") else counter.offsets_before_end()), counter.every


def _find(path, ident):
    for target in (sidecar(path), cache_path(path)):
        index = _read(target, path, ident)
        if index is not None:
            return index
    return None


@contextlib.contextmanager
def _building(path):
    """Held while one process builds the index of `path` (a lock on the data file itself, which leaves
    nothing behind): the others starting at the same time (a local job's chief, workers and evaluator) wait
    for it and read it, instead of counting too. Where the file system has no locks, each counts."""
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


def load(path):
    """The LineIndex of `path`: read from its sidecar (or the cache) when it still matches the file, else
    built now and saved for later processes. `.where` says where it is kept, `.built` whether it was made now."""
    ident = identity(path)
    index = _find(path, ident)
    if index is None:
        with _building(path):
            index = _find(path, ident)  # (built meanwhile by a process that held the lock)
            if index is None:
                rows, offsets, every = build(path)
                where = save(path, rows, offsets, every)
                index = LineIndex(rows, offsets, every, where, built=True)
    with _lock:
        _loaded[os.path.abspath(path)] = index
    return index


def loaded(path):
    """This process's index of `path` (loaded once)."""
    with _lock:
        index = _loaded.get(os.path.abspath(path))
    return index if index is not None else load(path)


class IndexingWriter:
    """A binary file object's writes, counted as they pass (for a writer that makes a data file): after
    the file is complete and renamed, `save(path)` writes its index at no extra pass over the data."""

    def __init__(self, out, every=None):
        self.out, self.counter = out, _Counter(every)

    def write(self, data):
        self.counter.feed(bytes(data))
        return self.out.write(data)

    def save(self, path):
        offsets = [0] if path.endswith(".gz") else self.counter.offsets_before_end()
        return save(path, self.counter.rows(), offsets, self.counter.every)


def _skip_lines(f, count):
    """Read past `count` lines of `f`; returns the bytes read beyond the last of them."""
    while count > 0:
        block = f.read(BLOCK_BYTES)
        if not block:
            return b""
        n = block.count(b"\n")
        if n < count:
            count -= n
            continue
        pos = -1
        for _ in range(count):
            pos = block.index(b"\n", pos + 1)
        return block[pos + 1:]
    return b""


def say_gzip_cost(path, start, seconds=None):
    """Once per file and process: a gzip file's rows from `start` are reached by decompressing the lines
    before them (gzip cannot seek)."""
    if start <= 0 or path in _said:
        return
    _said.add(path)
    took = f" ({seconds:.1f} s)" if seconds is not None else ""
    print(f"{path}: gzip cannot seek: reaching line {start + 1:,} decompresses the {start:,} lines before it{took}, "
          "each time it is read (said once per file; plain text seeks through its line index)", flush=True)


def blocks(path, start, stop=None):
    """Lines [start, stop) of `path` (0-based, stop None: to the end), in lists of up to BLOCK_LINES bytes,
    as tf.data's TextLineDataset reads them: split at "\\n", every "\\r" dropped. A plain file is entered at
    its nearest indexed line; a gzip file is decompressed from line 1."""
    path = path.decode() if isinstance(path, bytes) else path
    stop = None if stop is None or stop < 0 else stop
    if stop is not None and stop <= start:
        return
    gz = path.endswith(".gz")
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        if gz:
            t0 = time.perf_counter()
            rest = _skip_lines(f, start)
            say_gzip_cost(path, start, time.perf_counter() - t0)
        else:
            offset, skip = loaded(path).seek_point(start)
            f.seek(offset)
            rest = _skip_lines(f, skip)
        line = start
        while stop is None or line < stop:
            block = f.read(BLOCK_BYTES)
            data = rest + block
            pieces = data.split(b"\n")
            rest = pieces.pop()
            if not block and rest:  # the last line, without a line end
                pieces.append(rest)
            if not pieces:
                if not block:
                    return
                continue
            if b"\r" in data:
                pieces = [p.replace(b"\r", b"") for p in pieces]
            if stop is not None and line + len(pieces) > stop:
                pieces = pieces[:stop - line]
            for k in range(0, len(pieces), BLOCK_LINES):
                yield pieces[k:k + BLOCK_LINES]
            line += len(pieces)
            if not block:
                return


def dataset(path, start, stop=None):
    """The tf.data lines [start, stop) of a file, read by `blocks` (one Python reader, unbatched)."""
    import tensorflow as tf
    ds = tf.data.Dataset.from_generator(blocks, args=(path, start, -1 if stop is None else stop),
                                        output_signature=tf.TensorSpec([None], tf.string))
    return ds.unbatch()

"""Finding, splitting and checking input files (no TensorFlow here).

Two file formats hold the same 40 Criteo columns: Kaggle's raw `train.txt` (tab-separated) and
DeepRec's `train.csv`/`eval.csv` (comma-separated); the delimiter is detected from the first line.
A file may start with a header line (--header auto/true/false; auto: when line 1 holds the schema's
column names): its columns are then matched to the schema's by name, in any order, and the header
is never read as a row (a Slice of such a file starts at line 1, so every reader, shard and work
item skips it). A single file is split by time order: its last 10% of rows are held out for evaluation.
A text file's row count comes from its line index (modelzoo/line_index.py), built once and reused by
every later process, not from a count at each start.
The tf.data pipeline reads the files; when it stops on a malformed row, `diagnose` rescans the
files here to name the file, line and problem, since TensorFlow's own message names neither.
"""
import fcntl
import glob
import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from modelzoo import line_index
from modelzoo.data_errors import UNREADABLE, DataError, open_binary, opened  # noqa: F401 (the readers' error, from here too)
from modelzoo.io_utils import atomic_write_json

HOLDOUT_FRACTION = 0.1
DELIMITERS = {"\t": "tab", ",": "comma"}
PARQUET = "parquet"  # DataSpec.delimiter of Parquet files (modelzoo/parquet.py reads them)
KNOWN_TRAIN_NAMES = ("train.txt", "train.txt.gz", "train.csv", "train.csv.gz", "train.parquet")
SYNTHETIC_MARKER = "SYNTHETIC"  # left beside generated data, so later runs still say it is synthetic
SYNTHETIC_NOTE = ("train.txt in this folder is synthetic (modelzoo/synthetic.py for Criteo, synthetic_sequences.py for "
                  "Taobao), not real data.")




@dataclass(frozen=True)
class Slice:
    """Lines [start, stop) of one file (0-based; stop None means to the end)."""
    path: str
    start: int = 0
    stop: Optional[int] = None

    @property
    def rows(self):
        return self.stop - self.start


@dataclass
class DataSpec:
    train: List[Slice]
    eval: List[Slice]
    delimiter: str
    description: str
    generated: bool = False
    columns: Optional[Tuple[str, ...]] = None  # the files' column order (a header's), None: the schema's
    indexes: Optional[str] = None  # the text files' line indexes: reused or built, and where (for the data: line)

    def layout(self, schema):
        """The schema with its columns in the files' order: what the readers split a line into."""
        return schema.reordered(self.columns) if self.columns else schema

    @property
    def train_rows(self):
        return sum(s.rows for s in self.train)

    @property
    def eval_rows(self):
        return sum(s.rows for s in self.eval)


def count_lines(path):
    """Rows in a file, counting a last line without a newline, in one pass (~1 GB/s): the line index's
    build without keeping it (modelzoo/line_index.py)."""
    return line_index.build(str(path))[0]


def file_identity(path):
    """What tells a data file from another: its name, size and first line's fingerprint (cheap for any size)."""
    try:
        with open_binary(path) as f:
            first = f.readline(1 << 16)
    except UNREADABLE as err:
        raise DataError(f"{path}: cannot be read: {err}") from None
    return {"name": os.path.basename(path), "bytes": os.path.getsize(path),
            "first_row_sha256": hashlib.sha256(first).hexdigest()[:16]}


def write_marker(folder, generator, described=None, note=SYNTHETIC_NOTE):
    """The SYNTHETIC marker: the generator's rows and seed, and (once it is renamed complete) the identity of
    the file it wrote. Written before the generation starts, so no generated train.txt is ever without it."""
    atomic_write_json(os.path.join(folder, SYNTHETIC_MARKER),
                      {"note": note, "generator": generator,
                       "file": file_identity(described) if described else None})


def synthetic_marker(folder, path, cleans=False):
    """(whether `path` is the generated file the folder's marker describes, the marker's generator or None).
    A marker that describes another file (real data copied over the generated one) is stale: the file is
    read as real data (the marker removed by the process that would generate). A marker without a file
    (a generation killed between its rename and the marker's update) or of an older version (plain text)
    is trusted: generated data is never taken for real."""
    marker = os.path.join(folder, SYNTHETIC_MARKER)
    try:
        with open(marker, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return False, None
    try:
        record = json.loads(text)
        described, generator = record["file"], record.get("generator")
    except (ValueError, KeyError, TypeError):
        return True, None  # an older version's marker (plain text): not tied to a file
    if described is None or described == file_identity(path):
        return True, generator
    print(f"{marker} describes another {described.get('name')} ({described.get('bytes'):,} bytes, generated): "
          f"{path} replaced it and is read as real data", flush=True)
    if cleans:
        os.unlink(marker)
    return False, None


def natural_key(path):
    """Sort key that orders the numbers in a name by value: day_2 before day_10, part-00002 before
    part-00010 (text order would put day_10 before day_2, and hold out the wrong days)."""
    return [(0, int(piece), piece) if piece.isdigit() else (1, 0, piece) for piece in re.split(r"(\d+)", path)]


def expand_globs(patterns, flag):
    """Files matching comma-separated globs, each glob's matches in natural order (the numbers in
    their names by value, taken as time order), the globs in the order given; an empty match is an
    error naming the flag."""
    files = []
    for pattern in [p for p in patterns.split(",") if p.strip()]:
        matched = sorted((p for p in glob.glob(os.path.expanduser(pattern.strip())) if os.path.isfile(p)),
                         key=natural_key)
        if not matched:
            raise DataError(f"{flag} {pattern!r}: no file matches")
        files.extend(matched)
    return files


def first_line(path):
    with open_binary(path) as f:
        try:
            return f.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        except UNREADABLE as err:
            raise DataError(f"{path}: cannot be read: {err}") from None


def detect_delimiter(path, field_count):
    """Tab (Kaggle) or comma (DeepRec CSV), whichever splits line 1 into `field_count` fields."""
    line = first_line(path)
    for delim in DELIMITERS:
        if len(line.split(delim)) == field_count:
            return delim
    found = max(len(line.split(d)) for d in DELIMITERS)
    raise DataError(f"{path}:1: expected {field_count} fields separated by tabs (Kaggle train.txt) or "
                    f"commas (DeepRec CSV), found {found}")


@dataclass(frozen=True)
class Layout:
    """How one file holds the schema's columns: its delimiter, whether line 1 is a header, their order."""
    delimiter: str
    header: bool
    columns: Tuple[str, ...]


def read_layout(path, schema, header="auto"):
    """The Layout of one file. With a header (--header true, or auto and line 1 holds every column the
    schema reads) the columns are matched by name: a schema column missing from it, or a file column
    the schema does not name (declare it with kind "ignore" to leave it unread), is refused; an
    "ignore" column may be absent. Without one, the columns are the schema's, by position."""
    names = {c.name for c in schema.columns}
    needed = [c.name for c in schema.columns if c.kind != "ignore"]
    if header != "false":
        line = first_line(path).lstrip("\ufeff")  # (a byte-order mark, as spreadsheets write)
        delim = max(DELIMITERS, key=lambda d: (len(names & set(line.split(d))), line.count(d)))
        fields = line.split(delim)
        missing = [n for n in needed if n not in fields]
        looks = 2 * sum(f in names for f in fields) > len(fields)  # most of line 1 is column names
        if header == "true" or not missing or looks:
            how = "--header true" if header == "true" else "line 1 looks like a header (--header auto)"
            if missing:
                raise DataError(f"{path}:1: {how}, but it lacks the schema's column(s) {missing[:8]}"
                                + ("" if header == "true" else "; give --header false to read line 1 as data"))
            extra = [f for f in fields if f not in names]
            if extra:
                raise DataError(f"{path}:1: the header names column(s) {extra[:8]} that the schema {schema.name} "
                                "does not have; add them to the schema (kind \"ignore\" to leave them unread)")
            dupes = sorted({f for f in fields if fields.count(f) > 1})
            if dupes:
                raise DataError(f"{path}:1: the header names column(s) {dupes[:8]} more than once")
            return Layout(delim, True, tuple(fields))
    return Layout(detect_delimiter(path, schema.field_count), False, tuple(c.name for c in schema.columns))


INT_PATTERN = "-?[0-9]{1,18}"  # int64 columns: at most 18 digits, so never out of range
FLOAT_PATTERN = "[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?"  # decimal only: no nan, inf or hex


def row_pattern(schema, delimiter, python=False):
    """A regular expression that a well-formed row matches in full: TensorFlow's RE2 syntax (the
    tf.data reader checks every row with it, in both --bad_rows modes), or with `python` the same for
    Python's `re` on a decoded str. A text field holds no delimiter or NUL byte, and only valid UTF-8:
    RE2 already refuses malformed bytes but takes UTF-8-encoded surrogates and code points above
    U+10FFFF, which the surrogate range refuses (a str decoded strictly holds neither). Carriage
    returns never reach it: tf.data's TextLineDataset drops every "\\r" of a line (see `diagnose`)."""
    not_text = "\\t" if delimiter == "\t" else ","
    not_text += "\\x00" + ("" if python else "\\x{D800}-\\x{DFFF}")
    parts = []
    for col in schema.columns:
        if col.kind == "label":
            parts.append("[01]")
        elif col.kind == "numeric" and col.dtype == "int64":
            parts.append(f"({INT_PATTERN})?")
        elif col.kind == "numeric":
            parts.append(f"({FLOAT_PATTERN})?")
        else:
            parts.append(f"[^{not_text}]*")
    sep = "\\t" if delimiter == "\t" else ","
    return sep.join(parts)


def float32_overflows(value):
    """True when a decimal number is too large for float32 (TensorFlow would read it as inf)."""
    return math.isinf(struct.unpack("f", struct.pack("f", float(value)))[0])


def row_problem(line, schema, delimiter):
    """What is wrong with one row, a str as tf.data reads it (no line end, no "\\r"), or None if it is
    well formed: the checks of `row_pattern` one by one, to name the problem, plus float32 range."""
    if not line:
        return "empty line"
    if "\x00" in line:
        return "contains a NUL byte"
    fields = line.split(delimiter)
    if len(fields) != schema.field_count:
        return f"expected {schema.field_count} fields, found {len(fields)}"
    for col, value in zip(schema.columns, fields):
        if col.kind == "label" and value not in ("0", "1"):
            return f"label {value!r} is not 0 or 1"
        if col.kind == "numeric" and value:
            if col.dtype == "int64" and not re.fullmatch(INT_PATTERN, value):
                return f"{col.name} {value!r} is not an integer (at most 18 digits)"
            if col.dtype == "float32":
                if not re.fullmatch(FLOAT_PATTERN, value):
                    return f"{col.name} {value!r} is not a decimal number"
                if float32_overflows(value):
                    return f"{col.name} {value!r} is out of float32 range"
    if not re.fullmatch(row_pattern(schema, delimiter, python=True), line):
        return "does not match the row format"  # not reached: the checks above are the pattern's
    return None


def diagnose(slices, schema, delimiter):
    """Find the first malformed row of `slices`: 'file:line: problem', or None if all are fine (Parquet:
    'file: row group G, column C: problem', modelzoo/parquet.diagnose).

    A line is checked as tf.data's TextLineDataset reads it: split at "\\n", with every "\\r" dropped
    (so CRLF files read as LF ones; a stray "\\r" inside a field is dropped too, and "1\\r2" reads as 12)."""
    if delimiter == PARQUET:
        from modelzoo import parquet
        return parquet.diagnose(slices, schema)
    pattern = re.compile(row_pattern(schema, delimiter, python=True))
    floats = any(c.kind == "numeric" and c.dtype == "float32" for c in schema.columns)
    for piece in slices:
        with open_binary(piece.path) as f:
            try:
                for index, raw in enumerate(f):
                    if index < piece.start:
                        continue
                    if piece.stop is not None and index >= piece.stop:
                        break
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as err:
                        return f"{piece.path}:{index + 1}: not valid UTF-8 text ({err.reason} at byte {err.start + 1})"
                    line = (line[:-1] if line.endswith("\n") else line).replace("\r", "")
                    if pattern.fullmatch(line) and not floats:
                        continue  # the fast path: one regular expression per well-formed row
                    problem = row_problem(line, schema, delimiter)
                    if problem:
                        hint = (" (a header line? --header true reads it as one, naming the schema's columns)"
                                if index == 0 and "label" in line else "")
                        return f"{piece.path}:{index + 1}: {problem}{hint}"
            except UNREADABLE as err:
                return f"{piece.path}: cannot be read: {err}"
    return None


def _counted(files, schema, header):
    """Each file's data lines as a Slice (from line 1 after a header) and its Layout; an empty file
    (or one with only a header) is an error, not a silent zero. A Parquet file's rows are in its footer,
    a text file's in its line index (modelzoo/line_index.py: read, or built once and kept for later starts)."""
    from modelzoo import parquet
    out = []
    for path in files:
        if parquet.is_parquet(path):
            out.append((Slice(path, 0, parquet.check_file(path, schema)),
                        Layout(PARQUET, False, tuple(c.name for c in schema.columns))))
            continue
        n = line_index.load(path).rows
        if n == 0:
            raise DataError(f"{path}: file is empty, expected rows of data")
        layout = read_layout(path, schema, header)
        if n == layout.header:
            raise DataError(f"{path}: holds only a header line, expected rows of data")
        out.append((Slice(path, int(layout.header), n), layout))
    return out


def describe_holdout(evals, whole, limit=4):
    """The held-out rows for the start-up `data:` line: a whole file by name, part of one with its
    1-based line range (a header is line 1); past `limit` files the middle ones are counted."""
    names = [os.path.basename(s.path) if s.path in whole else
             f"{os.path.basename(s.path)} {'rows' if s.path.endswith('.parquet') else 'lines'} "
             f"{s.start + 1:,}-{s.stop:,}" for s in evals]
    if len(names) > limit:
        names = names[:limit // 2] + [f"{len(names) - limit} more"] + names[-(limit - limit // 2):]
    return ", ".join(names)


def _split_holdout(files, schema, header):
    """Slices for the first 90% of rows (train) and the last 10% (eval), in file order, and the
    held-out part in words."""
    counted = _counted(files, schema, header)
    total = sum(piece.rows for piece, _ in counted)
    n_train = total - int(round(total * HOLDOUT_FRACTION))
    train, evals, whole, seen = [], [], set(), 0
    for piece, _ in counted:
        cut = min(max(n_train - seen, 0), piece.rows)
        if cut > 0:
            train.append(Slice(piece.path, piece.start, piece.start + cut))
        else:
            whole.add(piece.path)
        if cut < piece.rows:
            evals.append(Slice(piece.path, piece.start + cut, piece.stop))
        seen += piece.rows
    return train, evals, [(piece.path, layout) for piece, layout in counted], describe_holdout(evals, whole)


def _whole(files, schema, header):
    counted = _counted(files, schema, header)
    return [piece for piece, _ in counted], [(piece.path, layout) for piece, layout in counted]


# what a killed data generation leaves beside its file (modelzoo/synthetic.py's temporary name)
GENERATION_LEFTOVERS = tuple(f".{name}.*.tmp" for name in KNOWN_TRAIN_NAMES) + (".tmp-*",)  # (+ the marker's)


def remove_generation_leftovers(folder):
    """Remove the temporary files of a data generation that was killed (as the runner removes an
    interrupted checkpoint write's), so the folder is not refused as holding unknown files. A file
    that a generator still writes is kept: the generator holds a lock on it until its rename."""
    removed = []
    for path in sorted(p for pattern in GENERATION_LEFTOVERS for p in glob.glob(os.path.join(folder, pattern))):
        try:
            with open(path, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
            removed.append(os.path.basename(path))
        except (BlockingIOError, FileNotFoundError):
            continue  # being written now, or renamed complete meanwhile
    if removed:
        print(f"removed what an interrupted data generation left in {folder}: {', '.join(removed)}", flush=True)


def _from_location(args, schema, header, generate):
    """Train and eval slices of --data_location (train.csv+eval.csv, a known train file, or a generated one)."""
    generated = False
    loc = Path(args.data_location)
    if loc.exists() and not loc.is_dir():
        raise DataError(f"--data_location {loc}: is a file, expected a folder")
    pair = next((ext for ext in ("csv", "parquet") if (loc / f"train.{ext}").is_file()
                 and (loc / f"eval.{ext}").is_file()), None)
    parts = sorted((str(p) for p in loc.glob("*.parquet") if p.is_file()), key=natural_key) if loc.is_dir() else []
    if pair:
        (train, layouts), (evals, more) = (_whole([str(loc / f"train.{pair}")], schema, header),
                                           _whole([str(loc / f"eval.{pair}")], schema, header))
        layouts += more
        where = f"{loc}/train.{pair} and {loc}/eval.{pair}" + (" (DeepRec CSV)" if pair == "csv" else "")
    elif parts and not any((loc / n).is_file() for n in KNOWN_TRAIN_NAMES):  # (part-00000.parquet, ...)
        train, evals, layouts, held = _split_holdout(parts, schema, header)
        where = (f"{len(parts)} Parquet file(s) in {loc} in name order (numbers by value), last 10% of rows "
                 f"held out for eval: {held}")
    else:
        if generate is not None and loc.is_dir():  # (only the process that would generate cleans)
            remove_generation_leftovers(loc)
        found = [loc / n for n in KNOWN_TRAIN_NAMES if (loc / n).is_file()]
        if not found:
            # (a marker alone: its generation was killed before the rename; it generates again)
            # (and line indexes of files no longer there: modelzoo/line_index.py)
            others = sorted(p.name for p in loc.iterdir() if p.name != SYNTHETIC_MARKER
                            and not (p.name.startswith(".") and p.name.endswith(".index.json"))) if loc.is_dir() else []
            if others:
                raise DataError(f"--data_location {loc}: holds {others[:5]} but none of "
                                f"{KNOWN_TRAIN_NAMES} (or train.csv with eval.csv)")
            if generate is None:
                raise DataError(f"--data_location {loc}: no data, and this schema has no generator")
            target = loc / "train.txt"
            print(f"No data in {loc}: generating a synthetic {schema.name.title()}-format sample of "
                  f"{args.generate_rows:,} rows into {target} (the schema's shape, hidden-model "
                  f"labels; NOT real data). Bring the real data with --data_location or --train_files.",
                  flush=True)
            loc.mkdir(parents=True, exist_ok=True)
            generator = {"rows": args.generate_rows, "seed": args.seed}
            write_marker(str(loc), generator)  # before the file exists; completed with its identity after
            generate(str(target), args.generate_rows, args.seed)
            write_marker(str(loc), generator, str(target))
            found = [target]
        generated, _ = synthetic_marker(str(loc), str(found[0]), cleans=generate is not None)
        train, evals, layouts, held = _split_holdout([str(found[0])], schema, header)
        where = f"{found[0]}{' (synthetic)' if generated else ''}, last 10% of rows held out for eval: {held}"
    return train, evals, layouts, where, generated


def resolve(args, schema, generate=None):
    """Decide which rows train and evaluate, from --train_files/--eval_files or --data_location.

    With nothing in --data_location, `generate(path, rows, seed)` writes a synthetic sample there.
    """
    generated = False
    header = getattr(args, "header", "auto")
    if args.train_files:
        train_files = expand_globs(args.train_files, "--train_files")
        if args.eval_files:
            (train, layouts), (evals, more) = (_whole(train_files, schema, header),
                                               _whole(expand_globs(args.eval_files, "--eval_files"), schema, header))
            layouts += more
            where = f"{len(train_files)} train file(s) and their --eval_files"
        else:
            train, evals, layouts, held = _split_holdout(train_files, schema, header)
            where = (f"{len(train_files)} file(s) from --train_files in name order (numbers by value), "
                     f"last 10% of rows held out for eval: {held}")
    else:
        try:
            train, evals, layouts, where, generated = _from_location(args, schema, header, generate)
        except PermissionError as err:  # e.g. a volume not owned by the pod's uid
            raise DataError(f"--data_location {args.data_location}: permission denied on {err.filename} for "
                            f"uid {os.getuid()}; make the folder readable (and writable, to generate data "
                            f"there) by this uid (in Kubernetes: the pod's securityContext fsGroup) "
                            f"or give another folder") from None
    if not train:
        raise DataError(f"no training rows in {where}")
    first_path, first = layouts[0]
    kinds = {layout.delimiter == PARQUET: path for path, layout in layouts}
    if len(kinds) > 1:
        raise DataError(f"{kinds[True]} is Parquet but {kinds[False]} is CSV/TSV: one run reads one format "
                        "(data/csv_to_parquet.py converts the CSV files)")
    if True in kinds and header != "auto":
        raise DataError(f"--header {header}: Parquet files ({kinds[True]}) have no header line, their columns are "
                        "always matched by name; leave --header out")
    for path, layout in layouts:
        if layout.delimiter != first.delimiter:
            raise DataError(f"{path}: {DELIMITERS[layout.delimiter]}-separated, but {first_path} is "
                            f"{DELIMITERS[first.delimiter]}-separated; use one format")
        if layout.columns != first.columns:
            raise DataError(f"{path}: its columns are {', '.join(layout.columns[:6])}, ... but those of {first_path} "
                            f"are {', '.join(first.columns[:6])}, ...; give files of one column order")
    clash = [c.name for c in schema.lists if c.separator == first.delimiter]
    if clash:
        raise DataError(f"{first_path}: {DELIMITERS[first.delimiter]}-separated, and the list column(s) {clash} "
                        f"separate their ids by that character too; give them another separator in the schema")
    if any(layout.header for _, layout in layouts):
        where += f" (header line{'s' if len(layouts) > 1 else ''}: columns matched by name)"
    columns = first.columns if first.columns != tuple(c.name for c in schema.columns) else None
    indexes = None
    if first.delimiter != PARQUET:
        indexes = line_index.describe([line_index.loaded(path) for path, _ in layouts])
    return DataSpec(train, evals, first.delimiter, where, generated, columns, indexes)

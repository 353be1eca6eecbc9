"""Atomic writes (a file appears complete under its final name or not at all), and the checks that
an output folder can be written."""
import contextlib
import errno
import json
import os
import tempfile

# mkstemp creates files readable by their owner only; a finished file gets the usual 0666 & ~umask, so
# that other users of a shared volume (a serving job, a teammate) can read the outputs.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_writer(path, mode="w"):
    """A file object (text, or binary with mode "wb") whose content replaces `path` only when the
    block ends without error."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    with atomic_writer(path) as f:
        f.write(text)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_report(prefix, doc, markdown):
    """A benchmark's results: PREFIX.json (the numbers) and PREFIX.md (the table), printed too."""
    atomic_write_json(prefix + ".json", doc)
    atomic_write_text(prefix + ".md", markdown)
    print("\n" + markdown)
    print(f"written: {prefix}.json, {prefix}.md")


class OutputError(Exception):
    """An output folder cannot be written (read-only, full, over quota); the message names it."""


# what a full or read-only volume looks like: from Python (errno) and in TensorFlow's messages
WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
                errno.EDQUOT: "the disk quota is exceeded", errno.EFBIG: "the file is larger than allowed",
                errno.EACCES: "permission denied"}
WRITE_ERROR_TEXTS = ("No space left on device", "Read-only file system", "Disk quota exceeded",
                     "File too large", "Permission denied")
PROBE_BYTES = 1 << 20


def probe_writable(folder, what):
    """Write, sync and remove a 1 MiB file in `folder` before any work starts, so that a read-only or
    full volume is reported now, not after hours of training at the first checkpoint."""
    try:
        os.makedirs(folder, exist_ok=True)
        with atomic_writer(os.path.join(folder, ".write-probe"), "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
        os.unlink(os.path.join(folder, ".write-probe"))
    except OSError as err:
        raise OutputError(f"cannot write to {what} {folder}: {write_problem(err) or err.strerror}; give a "
                          "writable folder with free space") from None


def write_problem(err):
    """What went wrong in a failed write (an OSError or a TensorFlow error), in words; None if it is
    not one of the ways a volume refuses writes."""
    if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
        return f"{WRITE_ERRNOS[err.errno]} ({err.strerror})"
    text = str(err)
    return next((t for t in WRITE_ERROR_TEXTS if t in text), None)


def read_yaml(path, error, what="file", all_documents=False):
    """The document (or, with all_documents, the list of non-empty documents) of a YAML or JSON file;
    whatever keeps it from being read becomes error(one line naming the file): unreadable, not UTF-8
    (the line named), not YAML (PyYAML's message, which spans lines, joined), or a value PyYAML
    cannot build (a date like 2021-13-01 raises ValueError; deep nesting recurses)."""
    import io
    import yaml
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start + 1})") from None
    stream = io.StringIO(text)
    stream.name = str(path)  # (PyYAML's messages name the stream)
    try:
        if all_documents:
            return [d for d in yaml.safe_load_all(stream) if d is not None]
        return yaml.safe_load(stream)
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise error(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None

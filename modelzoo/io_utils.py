"""Atomic writes: a file appears complete under its final name or not at all."""
import contextlib
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

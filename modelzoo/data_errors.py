"""The data readers' one error and what reading a damaged file raises: below every reader (modelzoo/datafiles.py
for text files, modelzoo/parquet.py for Parquet), so each can raise it without importing the other."""
import gzip
import zlib


class DataError(Exception):
    """Bad or missing input; the message names the file (and line) and what was expected."""


# What reading a damaged file raises: OSError (BadGzipFile among them), EOFError (a gzip stream cut
# short) and zlib.error (corrupt compressed data, which is not an OSError).
UNREADABLE = (OSError, EOFError, zlib.error)


def opened(path, opener):
    """opener(path), its errors (no such file, a folder, no permission) a DataError naming the file."""
    try:
        return opener(path)
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a data file") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except PermissionError:
        raise DataError(f"{path}: not readable (permission denied)") from None


def open_binary(path):
    """Open a plain or gzip file for reading bytes; errors name the file."""
    return opened(path, lambda p: gzip.open(p, "rb") if str(p).endswith(".gz") else open(p, "rb"))

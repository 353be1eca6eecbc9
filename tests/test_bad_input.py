"""Bad input, reader by reader: a clear one-line error naming file, line and problem, or with
--bad_rows skip the row skipped and counted; and property-based tests (hypothesis) that arbitrary
lines, bytes and documents never end any other way.

Readers: the Criteo reader of the Estimator models (modelzoo/datafiles.py checks and names, the
tf.data pipeline of modelzoo/features.py reads), data/prepare_criteo.py, MovieLens (modelzoo/datasets/movielens.py:
`prepare` of the official files, `load` of a prepared folder), gdmix_lr's config (gdmix_lr/config.py) and
score files (gdmix_lr/train.py), feature schemas (modelzoo/schema.py) and TFJob manifests
(distribute_k8s/local_run.py). Cases tests/test_data.py, test_prepare_criteo.py, test_movielens.py,
test_gdmix.py, test_schema.py and test_local_run.py already check are not repeated here; each section
says which those are.

The hypothesis tests are derandomized (the same examples on every run, no example database) and small:
the whole file runs in about a minute, most of it in the few command-line runs.
"""
import functools
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import REPO, load_train_module, read_result, run_train
from distribute_k8s import local_run
from gdmix_lr.config import ConfigError, load_config
from modelzoo import datafiles
from modelzoo.datasets import movielens as ml
from modelzoo.datafiles import DataError, Slice
from modelzoo.schema import SchemaError, load_schema, parse_schema

CRITEO = load_schema("criteo")
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# To fuzz deeper by hand: BAD_INPUT_FUZZ=30 runs 30 times the examples, BAD_INPUT_RANDOM=1 other ones each
# run (not derandomized). The suite runs the same small set every time.
SCALE = int(os.environ.get("BAD_INPUT_FUZZ", "1"))
if os.environ.get("BAD_INPUT_RANDOM"):
    FUZZ["derandomize"] = False


def examples(n):
    return n * SCALE


def one_line(message):
    """A user-facing error message is one line (no traceback, no multi-line parser dump)."""
    assert "\n" not in str(message).strip() and "Traceback" not in str(message), repr(message)
    return str(message)


def good_row(i=0):
    """A well-formed Criteo row (Kaggle layout) as a list of str fields."""
    return [str(i % 2)] + [str((i * 7 + k) % 50) if (i + k) % 5 else "" for k in range(13)] + \
        [f"{(i * 31 + k) * 2654435761 % 16 ** 8:08x}" for k in range(26)]


def criteo_text(rows, delim="\t", end="\n"):
    return "".join(delim.join(r) + end for r in rows)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    """A module-wide folder (hypothesis examples reuse it: function-scoped tmp_path is not reset between them)."""
    return tmp_path_factory.mktemp("bad_input")


def scratch(tmp, name):
    """A fresh, empty folder under `tmp` (one per hypothesis example)."""
    return Path(tempfile.mkdtemp(prefix=name + "-", dir=tmp))


# ---------------------------------------------------------------------------------------------------------
# Criteo reader (dlrm and wide_and_deep train.py): modelzoo/datafiles.py + modelzoo/features.py.
# Already in tests/test_data.py: wrong field count, non-numeric and 20-digit integers, label 2 (named and
# stopping the tf.data reader), header-row hint, skip mode counting, an empty file, a folder without data
# files, a glob matching nothing, a truncated gzip. tests/test_dlrm.py runs the first two through
# dlrm/train.py in both modes. Here: the byte-level cases, CRLF, and the lenient spellings that the tf.data
# decoder takes but the row pattern refuses (both modes must agree on every row).

MALFORMED = {  # case: (how to break good_row(i) -> bytes of one line, the problem diagnose names)
    "invalid UTF-8 in a text field": (
        lambda r: "\t".join(r[:20]).encode() + b"\t\xff\xfe\t" + "\t".join(r[21:]).encode(),
        "not valid UTF-8 text (invalid start byte at byte"),
    "NUL byte in a text field": (lambda r: "\t".join(r[:20] + ["ab\x00cd"] + r[21:]).encode(), "contains a NUL byte"),
    "UTF-8-encoded surrogate": (lambda r: "\t".join(r[:20]).encode() + b"\t\xed\xa0\x80\t" + "\t".join(r[21:]).encode(),
                                "not valid UTF-8 text"),
    "integer with a leading space": (lambda r: "\t".join(r[:1] + [" 5"] + r[2:]).encode(),
                                     "I1 ' 5' is not an integer (at most 18 digits)"),
    "integer with a plus sign": (lambda r: "\t".join(r[:1] + ["+5"] + r[2:]).encode(),
                                 "I1 '+5' is not an integer (at most 18 digits)"),
    "19-digit integer": (lambda r: "\t".join(r[:1] + ["9223372036854775807"] + r[2:]).encode(),
                         "I1 '9223372036854775807' is not an integer (at most 18 digits)"),
    "float in an integer column": (lambda r: "\t".join(r[:1] + ["1e5"] + r[2:]).encode(), "I1 '1e5' is not an integer"),
    "label 01": (lambda r: "\t".join(["01"] + r[1:]).encode(), "label '01' is not 0 or 1"),
    "empty line": (lambda r: b"", "empty line"),
    "comma-separated row in a tab file": (lambda r: ",".join(r).encode(), "expected 40 fields, found 1"),
}


def write_with_bad_rows(path, cases, rows=40, every=3, end=b"\n"):
    """`rows` good rows (line n holds good_row(n - 1)) with the cases' bad lines at lines 2, 2+every, ...;
    returns {line number: case}."""
    lines = [("\t".join(good_row(i))).encode() for i in range(rows)]
    where = {}
    for k, case in enumerate(cases):
        number = 2 + k * every
        lines[number - 1] = MALFORMED[case][0](good_row(number))
        where[number] = case
    path.write_bytes(b"".join(line + end for line in lines))
    return where


def read_all(path, rows, bad_rows, schema=CRITEO, delim="\t", batch=64):
    from modelzoo.features import make_dataset
    ds = make_dataset([Slice(str(path), 0, rows)], schema, delim, batch, training=False, smartstaged=False,
                      bad_rows=bad_rows)
    return list(ds.as_numpy_iterator())


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_criteo_bad_row_is_named_by_file_line_and_problem(tmp_path, case):
    path = tmp_path / "train.txt"
    write_with_bad_rows(path, [case])
    problem = datafiles.diagnose([Slice(str(path), 0, 40)], CRITEO, "\t")
    assert problem.startswith(f"{path}:2: {MALFORMED[case][1]}"), problem
    one_line(problem)


def test_criteo_every_bad_row_stops_the_reader_or_is_skipped_and_counted(tmp_path):
    """One file with every case: error mode stops (before, the tf.data decoder took the NUL, invalid UTF-8,
    " 5", "01" rows silently), skip mode drops exactly those rows and counts them; CRLF line ends read as LF."""
    import tensorflow as tf
    from modelzoo.features import BAD_ROWS
    path = tmp_path / "train.txt"
    where = write_with_bad_rows(path, sorted(MALFORMED), rows=60, end=b"\r\n")
    with pytest.raises(tf.errors.InvalidArgumentError):
        read_all(path, 60, "error")
    batches = read_all(path, 60, "skip")
    assert sum(int(f[BAD_ROWS]) for f, _ in batches) == len(where)
    kept = [i for i in range(1, 61) if i not in where]
    labels = np.concatenate([y for _, y in batches])
    assert labels.tolist() == [float(good_row(n - 1)[0]) for n in kept]
    c26 = np.concatenate([f["C26"] for f, _ in batches])
    assert [v.decode() for v in c26] == [good_row(n - 1)[-1] for n in kept], "a CR must not stay on the last field"


def test_criteo_crlf_file_reads_like_lf(tmp_path):
    """tf.data's TextLineDataset drops every CR of a line (not only before LF): diagnose reads lines alike,
    so a stray CR is not a problem it would name while the reader takes the row (C7 "ab\\rcd" reads "abcd")."""
    from modelzoo.features import BAD_ROWS
    rows = [good_row(i) for i in range(30)]
    lf, crlf = tmp_path / "lf.txt", tmp_path / "crlf.txt"
    lf.write_text(criteo_text(rows))
    rows[7][20] = rows[7][20][:3] + "\r" + rows[7][20][3:]
    crlf.write_bytes(criteo_text(rows, end="\r\n").encode())
    assert datafiles.diagnose([Slice(str(crlf), 0, 30)], CRITEO, "\t") is None
    for mode in ("error", "skip"):
        a, b = read_all(lf, 30, mode, batch=30)[0], read_all(crlf, 30, mode, batch=30)[0]
        for name in a[0]:
            np.testing.assert_array_equal(a[0][name], b[0][name])
    assert int(b[0][BAD_ROWS]) == 0


def corrupt_gzip(whole):
    """A gzip stream whose compressed bytes are damaged so that zlib itself fails (zlib.error, not an
    OSError; a damage that zlib decodes fails the CRC check instead, gzip.BadGzipFile, an OSError)."""
    import random
    import zlib
    for seed in range(200):
        rng, data = random.Random(seed), bytearray(whole)
        at = rng.randrange(20, len(data) - 20)
        data[at:at + 8] = bytes(rng.randrange(256) for _ in range(8))
        try:
            gzip.decompress(bytes(data))
        except zlib.error:
            return bytes(data)
        except (OSError, EOFError):
            pass
    raise AssertionError("no damage found that zlib refuses")


def resolve_args(**kw):
    base = dict(train_files=None, eval_files=None, data_location="unused", generate_rows=100, seed=0)
    base.update(kw)
    return SimpleNamespace(**base)


def test_criteo_corrupt_gzip_and_unreadable_paths_are_named(tmp_path):
    """A gzip whose compressed bytes are damaged raises zlib.error (not an OSError) inside gzip: named too."""
    whole = tmp_path / "whole.txt.gz"
    whole.write_bytes(gzip.compress(criteo_text([good_row(i) for i in range(3000)]).encode()))
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(corrupt_gzip(whole.read_bytes()))
    with pytest.raises(DataError, match=r"bad\.txt\.gz: cannot be read") as err:
        datafiles.resolve(resolve_args(train_files=str(bad)), CRITEO)
    one_line(err.value)
    with pytest.raises(DataError, match=r"--data_location .*: is a file, expected a folder"):
        datafiles.resolve(resolve_args(data_location=str(whole)), CRITEO)
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="no file matches"):  # a folder matched by the glob is not a file
        datafiles.resolve(resolve_args(train_files=str(tmp_path / "su*")), CRITEO)


def as_another_user(fn):
    """fn()'s DataError message (None when it returns), run without the test's privileges: root reads any
    folder whatever its mode, so as root the call runs in a forked child switched to uid/gid 65534 (nobody)."""
    if os.geteuid() != 0:
        try:
            fn()
        except DataError as err:
            return str(err)
        return None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, report the error's text through the pipe, never return to pytest
        message = "returned"
        try:
            os.setgid(65534)
            os.setuid(65534)
            fn()
        except DataError as err:
            message = "DataError: " + str(err)
        except BaseException as err:  # noqa: BLE001 (any other exception is the failure this test looks for)
            message = f"{type(err).__name__}: {err}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    assert message.startswith(("DataError: ", "returned")), message
    return message.removeprefix("DataError: ") if message != "returned" else None


def test_criteo_unreadable_data_location_is_one_line_naming_the_folder(tmp_path):
    """A --data_location this uid cannot list or write (an NFS volume owned by another uid) is a DataError
    naming the folder and the fix, not a PermissionError traceback: both a folder with data in it and an
    empty one the generator would write into."""
    locked = tmp_path / "locked"
    (locked / "data").mkdir(parents=True)
    (locked / "data" / "train.txt").write_text(criteo_text([good_row(i) for i in range(20)]))
    tmp_path.chmod(0o755)
    locked.chmod(0o700)  # readable by its owner only
    try:
        for folder in (locked / "data", locked / "empty"):
            message = as_another_user(lambda f=folder: datafiles.resolve(resolve_args(data_location=str(f)), CRITEO,
                                                                  generate=lambda *a: None))
            assert message and one_line(message).startswith(f"--data_location {folder}: permission denied"), message
            assert "fsGroup" in message and "readable" in message
    finally:
        locked.chmod(0o755)


def test_criteo_header_row_is_named_with_a_hint(tmp_path):
    path = tmp_path / "train.txt"
    header = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    path.write_text(criteo_text([header] + [good_row(i) for i in range(5)]))
    problem = datafiles.diagnose([Slice(str(path), 0, 6)], CRITEO, "\t")  # as --header false reads it
    assert problem == (f"{path}:1: label 'label' is not 0 or 1 (a header line? --header true reads it as one, "
                       "naming the schema's columns)")
    spec = datafiles.resolve(resolve_args(train_files=str(path), eval_files=str(path)), CRITEO)  # --header auto
    assert spec.train == [Slice(str(path), 1, 6)] and datafiles.diagnose(spec.train, CRITEO, "\t") is None


# --- property: any line either is a row both modes take, or both refuse it and diagnose names it ----------

MIXED = parse_schema({"name": "mixed", "columns": [
    {"name": "y", "kind": "label"},
    {"name": "n", "kind": "numeric", "dtype": "int64", "normalization": "none"},
    {"name": "x", "kind": "numeric", "dtype": "float32", "normalization": "none"},
    {"name": "c", "kind": "categorical", "hash_buckets": 10, "embedding_dim": 2}]})
FIELD_TOKENS = ["0", "1", "2", "", "5", "-7", "-", "+5", " 5", "05", "1e5", "1.5", ".5", "5.", "-.5e-3", "nan", "inf",
                "-inf", "1e39", "3.4028235e38", "3.5e38", "1e-50", "99999999999999999999", "999999999999999999",
                "-999999999999999999", "0x10", "abc", "a b", '"q"', "1_0", "\u00e9", "\U0001f600", "\ufffd"]
RAW_TOKENS = [b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\x80", b"\r", b"\t", b",", b"\x0b",
              b"\x0c", b"\x1c", b"\x85"]
field_bytes = st.one_of(st.sampled_from(FIELD_TOKENS).map(str.encode), st.sampled_from(RAW_TOKENS),
                        st.lists(st.sampled_from(RAW_TOKENS + [t.encode() for t in FIELD_TOKENS]),
                                 max_size=3).map(b"".join),
                        st.binary(max_size=4))


@st.composite
def mixed_lines(draw):
    """Lines for MIXED (tab- or comma-separated): mostly 4 fields drawn from nasty tokens, sometimes 3 or 5; LF
    or CRLF line ends."""
    delim = draw(st.sampled_from([b"\t", b","]))
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        count = draw(st.sampled_from([4, 4, 4, 4, 3, 5]))
        fields = [draw(field_bytes) for _ in range(count)]
        if draw(st.booleans()):  # often a plausible label, so the later fields decide
            fields[0] = draw(st.sampled_from([b"0", b"1"]))
        lines.append(delim.join(fields))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    last = draw(st.sampled_from([end, b""]))  # with or without a newline after the last line
    return delim.decode(), end.join(lines) + last


_READERS = {}


@pytest.fixture(scope="module", autouse=True)
def _drop_readers():
    """Drop the traced readers before interpreter exit (TF complains when it collects them after)."""
    yield
    _READERS.clear()


def tf_reader(delim, mode):
    """make_dataset over a file's lines (its `lines` argument), traced once per delimiter and mode, so that
    each hypothesis example runs the real parsing without building a new pipeline."""
    import tensorflow as tf
    from modelzoo.features import BAD_ROWS, make_dataset
    if (delim, mode) not in _READERS:
        @tf.function
        def read(path):
            ds = make_dataset(None, MIXED, delim, 100, training=False, smartstaged=False, bad_rows=mode,
                              lines=tf.data.TextLineDataset(path))
            features, label = ds.get_single_element()
            return features.get(BAD_ROWS, tf.constant(-1, tf.int64)), label
        _READERS[(delim, mode)] = read
    return _READERS[(delim, mode)]


def verdicts(data, schema, delim):
    """Per line as tf.data splits the file (at \\n, every \\r dropped): (the problem or None, the line)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for raw in lines:
        raw = raw.replace(b"\r", b"")
        try:
            out.append((datafiles.row_problem(raw.decode("utf-8"), schema, delim), raw))
        except UnicodeDecodeError:
            out.append(("not valid UTF-8 text", raw))
    return out


def python_verdicts(data, delim):
    return [problem for problem, _ in verdicts(data, MIXED, delim)]


@settings(max_examples=examples(60), **FUZZ)
@given(mixed_lines())
@example(("\t", b"1\t5\t1.5\tab\x00c\n0\t\t\t\n"))
@example(("\t", b"1\t5\t1e39\tc\n"))  # float32 overflow: decoded as inf
@example(("\t", b"0\t3000000000\t0\tc\n"))  # an int64 beyond int32 (the decoder read int64 columns as int32)
@example((",", b"1,5,1.5,a\rb\r\n"))
def test_property_tf_reader_modes_and_diagnose_agree_on_any_line(tmp, case):
    import tensorflow as tf
    delim, data = case
    path = scratch(tmp, "criteo") / "lines.txt"
    path.write_bytes(data)
    verdicts = python_verdicts(data, delim)
    bad = [i for i, v in enumerate(verdicts) if v is not None]
    skipped, labels = tf_reader(delim, "skip")(tf.constant(str(path)))
    assert int(skipped) == len(bad), (verdicts, data)
    assert len(labels) == len(verdicts) - len(bad)
    if bad:
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf_reader(delim, "error")(tf.constant(str(path)))
    else:
        _, labels = tf_reader(delim, "error")(tf.constant(str(path)))
        assert len(labels) == len(verdicts)
    named = datafiles.diagnose([Slice(str(path), 0, len(verdicts))], MIXED, delim)
    if bad:
        assert named.startswith(f"{path}:{bad[0] + 1}: "), (named, verdicts)
        one_line(named)
    else:
        assert named is None


# ---------------------------------------------------------------------------------------------------------
# data/prepare_criteo.py. Already in tests/test_prepare_criteo.py: wrong field counts, an empty line, a bad
# label, a comma inside a field (named, nothing written), skip mode through the command line (counted in its
# summary), CRLF line ends, a missing and an empty input. Here: the rows it now refuses because the models'
# reader would (invalid UTF-8, NUL, integers), the header row, unreadable inputs, and a property test.

_spec = importlib.util.spec_from_file_location("prepare_criteo", REPO / "data" / "prepare_criteo.py")
prep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prep)


def quiet(*args, **kw):
    return prep.prepare_criteo(*args, log=lambda m: None, **kw)


@pytest.mark.parametrize("case", ["invalid UTF-8 in a text field", "NUL byte in a text field",
                                  "UTF-8-encoded surrogate", "integer with a leading space", "19-digit integer",
                                  "float in an integer column", "label 01"])
def test_prepare_refuses_or_skips_what_the_models_would(tmp_path, case):
    src = tmp_path / "train.txt"
    write_with_bad_rows(src, [case], rows=14)
    with pytest.raises(prep.PrepareError) as err:
        quiet(src, tmp_path / "out")
    message = one_line(err.value)
    assert message.startswith(f"{src}:2: ") and "--bad_rows skip" in message
    if case != "label 01":  # (prepare's own label message)
        assert MALFORMED[case][1].split(" (")[0] in message, message
    assert os.listdir(tmp_path / "out") == []
    st_ = quiet(src, tmp_path / "skip", bad_rows="skip")
    assert (st_["skipped"], st_["train_rows"] + st_["eval_rows"]) == (1, 13)
    assert st_["skipped_lines"][0][0] == 2


def test_prepare_header_row_and_stray_carriage_return(tmp_path):
    header = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    src = tmp_path / "train.txt"
    src.write_text(criteo_text([header] + [good_row(i) for i in range(7)]))
    with pytest.raises(prep.PrepareError, match=r"train\.txt:1: label 'label' is not 0 or 1 \(a header row\? "):
        quiet(src, tmp_path / "out")
    rows = [good_row(i) for i in range(7)]
    src.write_bytes(criteo_text(rows).replace("\t", "\t\r", 1).encode())  # read as the models read it: CR dropped
    quiet(src, tmp_path / "out2")
    got = (tmp_path / "out2" / "train.csv").read_text() + (tmp_path / "out2" / "eval.csv").read_text()
    assert got == criteo_text(rows, ",")


def damaged_inputs(tmp_path):
    """{name: path} of inputs that cannot be read: truncated and corrupt gzip, a file named .tar.gz that is
    not an archive, a truncated archive, a folder."""
    text = criteo_text([good_row(i) for i in range(3000)]).encode()
    whole = gzip.compress(text)
    out = {"truncated gzip": tmp_path / "cut.txt.gz", "corrupt gzip": tmp_path / "corrupt.txt.gz",
           "not a tar archive": tmp_path / "dac.tar.gz", "truncated tar archive": tmp_path / "cut.tar.gz",
           "a folder": tmp_path / "folder", "an archive without train.txt": tmp_path / "other.tar.gz"}
    out["truncated gzip"].write_bytes(whole[:len(whole) // 2])
    out["corrupt gzip"].write_bytes(corrupt_gzip(whole))
    out["not a tar archive"].write_bytes(whole)
    (tmp_path / "train.txt").write_bytes(text)
    with tarfile.open(tmp_path / "whole.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "train.txt", arcname="train.txt")
    archive = (tmp_path / "whole.tar.gz").read_bytes()
    out["truncated tar archive"].write_bytes(archive[:len(archive) // 2])
    out["a folder"].mkdir()
    with tarfile.open(out["an archive without train.txt"], "w:gz") as tar:
        tar.add(tmp_path / "train.txt", arcname="test.txt")
    return out


def test_prepare_names_unreadable_inputs(tmp_path):
    expected = {"truncated gzip": "cannot be read (Compressed file ended", "corrupt gzip": "cannot be read (Error -3",
                "not a tar archive": "cannot be read", "truncated tar archive": "cannot be read",
                "a folder": "is a directory", "an archive without train.txt": "no train.txt inside the archive"}
    for name, path in damaged_inputs(tmp_path).items():
        with pytest.raises(prep.PrepareError) as err:
            quiet(path, tmp_path / "out", overwrite=True)
        assert one_line(err.value).startswith(f"{path}: {expected[name]}"), (name, str(err.value))
        assert not (tmp_path / "out" / "train.csv").exists()


def test_prepare_command_line_truncated_gzip_is_one_line(tmp_path):
    path = damaged_inputs(tmp_path)["truncated gzip"]
    proc = subprocess.run([sys.executable, str(REPO / "data" / "prepare_criteo.py"), "--input", str(path),
                           "--output_dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: cannot be read (Compressed file ended before the end-of-stream " \
                                  "marker was reached)"


@st.composite
def criteo_lines(draw):
    """Criteo lines, each a good row with up to 3 fields replaced by nasty tokens, or a field added or
    removed; LF or CRLF line ends."""
    lines = []
    for i in range(draw(st.integers(1, 15))):
        fields = [f.encode() for f in good_row(i)]
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
            fields[draw(st.integers(0, 39))] = draw(st.one_of(field_bytes, st.just(b"a,b")))
        shape = draw(st.sampled_from(["keep"] * 8 + ["drop", "add"]))
        fields = fields[:-1] if shape == "drop" else fields + [b"x"] if shape == "add" else fields
        lines.append(b"\t".join(fields))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    return end.join(lines) + draw(st.sampled_from([end, b""]))


def prepare_verdicts(data):
    """Per line (as the models read it: every CR dropped): the problem or None (prepare_criteo also
    refuses a comma, which would break its CSV), and the line."""
    return [(problem or ("a comma" if b"," in raw else None), raw) for problem, raw in verdicts(data, CRITEO, "\t")]


@settings(max_examples=examples(80), **FUZZ)
@given(criteo_lines())
def test_property_prepare_keeps_exactly_the_rows_the_models_accept(tmp, data):
    folder = scratch(tmp, "prepare")
    src = folder / "train.txt"
    src.write_bytes(data)
    verdicts = prepare_verdicts(data)
    bad = [i for i, (problem, _) in enumerate(verdicts) if problem is not None]
    expected = b"".join(raw.replace(b"\t", b",") + b"\n" for problem, raw in verdicts if problem is None)
    st_ = quiet(src, folder / "skip", bad_rows="skip")
    assert st_["skipped"] == len(bad) and [n for n, _ in st_["skipped_lines"]] == [i + 1 for i in bad][:20]
    assert (folder / "skip" / "train.csv").read_bytes() + (folder / "skip" / "eval.csv").read_bytes() == expected
    if bad:
        with pytest.raises(prep.PrepareError) as err:
            quiet(src, folder / "error")
        assert one_line(err.value).startswith(f"{src}:{bad[0] + 1}: "), (str(err.value), verdicts)
        assert os.listdir(folder / "error") == []
    else:
        quiet(src, folder / "error")


# ---------------------------------------------------------------------------------------------------------
# MovieLens (modelzoo/datasets/movielens.py): `prepare` reads the official u.data/u.user/u.item, `load` a prepared
# folder (gdmix_lr's input). Already in tests/test_movielens.py: wrong field counts, non-integer and unknown
# ids, out-of-range ratings, genders, dates and genre flags, a missing u.data, bad values in the prepared
# CSVs (non-numeric, nan, inf, empty), duplicate uids, an empty line, a missing column, missing files and
# folders, a features.json of another format or not JSON, a truncated CSV.


U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n"
U_ITEM = ("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join("1" if g == "Comedy" else "0" for g in ml.GENRES) +
          "\n2|Heat (1995)|15-Dec-1995||http://y|" + "|".join(["0"] * 19) + "\n")
U_DATA = "1\t1\t5\t881250949\n2\t1\t3\t881250950\n3\t2\t4\t881250951\n1\t2\t1\t881250952\n"


def ml_source(folder, data=U_DATA.encode(), user=U_USER.encode(), item=U_ITEM.encode()):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("u.data", data), ("u.user", user), ("u.item", item)):
        (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("data,words", [
    pytest.param(U_DATA.encode().replace(b"\t2\t4", b"\t\xff2\t4"), "u.data:3: not utf-8 text", id="invalid UTF-8"),
    pytest.param(U_DATA.encode().replace(b"\t2\t4", b"\t\x002\t4"), "u.data:3: movie id '\\x002' is not an integer",
                 id="NUL byte"),
    pytest.param(U_DATA.encode().replace(b"881250950", b"99999999999999999999"),
                 "u.data:2: timestamp '99999999999999999999' is not an integer from -9007199254740991 to "
                 "9007199254740991", id="overflowing integer"),
    pytest.param(b"user\titem\trating\ttimestamp\n" + U_DATA.encode(), "u.data:1: user id 'user' is not an integer",
                 id="header row"),
    pytest.param(b"", "u.data: no data, expected lines of 4 tab-separated fields", id="empty file"),
])
def test_movielens_prepare_names_bad_source_lines(tmp_path, data, words):
    src = ml_source(tmp_path / "src", data=data)
    with pytest.raises(DataError) as err:
        ml.prepare(src, tmp_path / "out", seed=0)
    assert words in one_line(err.value), str(err.value)


def test_movielens_prepare_reads_crlf_like_lf(tmp_path):
    lf = ml.prepare(ml_source(tmp_path / "lf"), tmp_path / "a", seed=0)
    crlf_files = (t.encode().replace(b"\n", b"\r\n") for t in (U_DATA, U_USER, U_ITEM))
    crlf = ml.prepare(ml_source(tmp_path / "crlf", *crlf_files), tmp_path / "b", seed=0)
    assert lf["rows"] == crlf["rows"]
    for name in ("train.csv", "validation.csv", "wide_and_deep/train.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.fixture(scope="module")
def ml_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "prepared"
    ml.generate(out, seed=3, users=10, movies=40, rows=300)
    return out


def ml_copy(ml_folder, folder, **replace):
    """A copy of the prepared folder with some files' bytes replaced (train_csv=b"..." for train.csv)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "validation.csv", "features.json"):
        (folder / name).write_bytes(replace.get(name.replace(".", "_"), (ml_folder / name).read_bytes()))
    return folder


def test_movielens_load_byte_level_cases(ml_folder, tmp_path):
    train = (ml_folder / "train.csv").read_bytes()
    lines = train.split(b"\n")
    cases = {  # the third line's first field (its uid) damaged
        "invalid UTF-8": (b"\xff", "train.csv:3: not utf-8 text"),
        "NUL byte": (b"1\x00", "train.csv:3: contains a NUL byte"),
        "lone CR": (b"1\r2", "train.csv:3: contains a carriage return (\\r) that does not end the line"),
        "overflowing integer": (b"99999999999999999999", "train.csv:3: column 'uid' (field 1): expected an integer "
                                                         "from -9007199254740991 to 9007199254740991"),
    }
    for case, (value, words) in cases.items():
        damaged = b"\n".join(lines[:2] + [value + lines[2][lines[2].index(b","):]] + lines[3:])
        folder = ml_copy(ml_folder, tmp_path / case.replace(" ", "_"), train_csv=damaged)
        with pytest.raises(DataError) as err:
            ml.load(folder)
        assert words in one_line(err.value), (case, str(err.value))
    crlf = ml_copy(ml_folder, tmp_path / "crlf", train_csv=train.replace(b"\n", b"\r\n"))
    assert np.array_equal(ml.load(crlf).train.features, ml.load(ml_folder).train.features)
    empty = ml_copy(ml_folder, tmp_path / "empty", train_csv=b"")
    with pytest.raises(DataError, match=r"train\.csv:1: expected a header line .*found an empty file"):
        ml.load(empty)
    (tmp_path / "folder_csv").mkdir()
    folder = ml_copy(ml_folder, tmp_path / "folder_csv")
    (folder / "train.csv").unlink()
    (folder / "train.csv").mkdir()
    with pytest.raises(DataError, match=r"train\.csv: is a directory"):
        ml.load(folder)


@pytest.mark.parametrize("key,value,words", [
    ("rows", [1, 2], "features.json: expected key 'rows' holding"),
    ("rows", {"train": "many"}, "features.json: expected key 'rows' holding"),
    ("seed", "abc", "features.json: expected key 'seed' holding"),
    ("entities", ["user_id", 5], "features.json: expected key 'entities' holding"),
])
def test_movielens_load_features_json_types(ml_folder, tmp_path, key, value, words):
    meta = json.loads((ml_folder / "features.json").read_text())
    meta[key] = value
    folder = ml_copy(ml_folder, tmp_path / "f", features_json=json.dumps(meta).encode())
    with pytest.raises(DataError) as err:
        ml.load(folder)
    assert words in one_line(err.value), str(err.value)


def mutate(data, draw):
    """`data` with a few fields replaced by nasty tokens, or raw bytes inserted or deleted."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "field", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(RAW_TOKENS + [b"\n", b",", b"|"]), st.binary(max_size=3)))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 3))]
        else:  # the field around `at` (between separators) replaced
            seps = b"\t,|\n"
            start = max([data.rfind(bytes([c]), 0, at) for c in seps]) + 1
            ends = [e for e in (data.find(bytes([c]), at) for c in seps) if e >= 0]
            end = min(ends) if ends else len(data)
            data[start:end] = draw(field_bytes)
    return bytes(data)


@settings(max_examples=examples(60), **FUZZ)
@given(st.data())
def test_property_movielens_prepare_takes_or_names_any_source(tmp, data):
    which = data.draw(st.sampled_from(["u.data", "u.user", "u.item"]))
    good = {"u.data": U_DATA, "u.user": U_USER, "u.item": U_ITEM}[which].encode()
    content = mutate(good, data.draw)
    folder = scratch(tmp, "mlsrc")
    src = ml_source(folder / "src", **{{"u.data": "data", "u.user": "user", "u.item": "item"}[which]: content})
    try:
        summary = ml.prepare(src, folder / "out", seed=0)
    except DataError as err:
        assert str(src) in one_line(err), str(err)
    else:
        assert ml.load(folder / "out").train.features.shape[0] == summary["rows"]["train"]


@settings(max_examples=examples(60), **FUZZ)
@given(st.data())
def test_property_movielens_load_takes_or_names_any_prepared_file(tmp, ml_folder, data):
    which = data.draw(st.sampled_from(["train.csv", "validation.csv", "features.json"]))
    content = mutate((ml_folder / which).read_bytes(), data.draw)
    folder = ml_copy(ml_folder, scratch(tmp, "mlload"), **{which.replace(".", "_"): content})
    try:
        ds = ml.load(folder)
    except DataError as err:
        assert str(folder) in one_line(err), str(err)
    else:
        for split in (ds.train, ds.validation):
            assert np.isfinite(split.features).all() and set(np.unique(split.label)) <= {0.0, 1.0}
            assert len(split.uid) == len(split.label) == split.features.shape[0]


# ---------------------------------------------------------------------------------------------------------
# Text documents: gdmix_lr's config (YAML or JSON), feature schemas (JSON), TFJob manifests (YAML), and
# gdmix_lr's score files (CSV). Already elsewhere: configs with wrong structure or values
# (test_gdmix.py), schema files with wrong columns, not JSON, missing (test_schema.py), manifests with
# wrong kinds and fields, not YAML (test_local_run.py, through the command line), a score file with a
# non-numeric score and one in the wrong order (test_gdmix.py, through the command line).


GDMIX_CONFIG = (REPO / "gdmix_lr" / "configs" / "movielens.yaml").read_bytes()
CRITEO_SCHEMA = (REPO / "modelzoo" / "schemas" / "criteo.json").read_bytes()
WORKER = {"replicas": 2, "restartPolicy": "OnFailure", "template": {
    "metadata": {"labels": {"app": "x"}},
    "spec": {"containers": [{"name": "tensorflow", "command": ["python", "a.py"]}], "volumes": [{"name": "data"}]}}}
MANIFEST = yaml.safe_dump({"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": "j"}, "spec": {
    "runPolicy": {"backoffLimit": 2}, "tfReplicaSpecs": {"Worker": WORKER}}}).encode()


def load_manifest(path):
    return local_run.parse_job(str(path), local_run.load_tfjob(str(path)))


DOCUMENT_READERS = {  # reader: (good bytes, load(path), its error type, what of the result depends on the content)
    "gdmix config": (GDMIX_CONFIG, load_config, ConfigError, lambda c: (c.coordinates, c.feature_bags)),
    "schema": (CRITEO_SCHEMA, load_schema, SchemaError, lambda s: (s.columns, s.crosses)),
    "manifest": (MANIFEST, load_manifest, local_run.ManifestError, lambda j: j.specs),
}
DOCUMENT_CASES = {  # case: (bytes from the good ones, the words of the error, or None: read like the good file)
    "invalid UTF-8": (lambda good: good[:40] + b"\xff\xfe" + good[40:],
                      "not UTF-8 text (invalid start byte at byte 41)"),
    "NUL byte": (lambda good: good[:40] + b"\x00" + good[40:], "not valid"),
    "CRLF line ends": (lambda good: good.replace(b"\n", b"\r\n"), None),
    "empty file": (lambda good: b"", ""),
    "a date PyYAML cannot build": (lambda good: b"when: 2021-13-45\n" + good, "not valid YAML"),
}


@pytest.mark.parametrize("reader", sorted(DOCUMENT_READERS))
@pytest.mark.parametrize("case", sorted(DOCUMENT_CASES))
def test_documents_named_or_read_like_the_good_file(tmp_path, reader, case):
    good, load, error, content = DOCUMENT_READERS[reader]
    make, words = DOCUMENT_CASES[case]
    if reader == "schema" and case == "a date PyYAML cannot build":
        words = "not valid JSON"  # (JSON: not a YAML date, not JSON either)
    path = tmp_path / "doc"
    path.write_bytes(make(good))
    if words is None:
        (tmp_path / "good").write_bytes(good)
        assert content(load(path)) == content(load(tmp_path / "good"))
        return
    with pytest.raises(error) as err:
        load(path)
    assert str(path) in one_line(err.value) and words in str(err.value), str(err.value)


@pytest.mark.parametrize("reader", sorted(DOCUMENT_READERS))
def test_documents_missing_or_a_folder_are_named(tmp_path, reader):
    _, load, error, _ = DOCUMENT_READERS[reader]
    for path in (tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(error) as err:
            load(path)
        assert str(path) in one_line(err.value), str(err.value)


@pytest.mark.parametrize("text,words", [
    ("coordinates:\n  - {name: g, type: fixed_effect, feature_bag: [a, b]}\n", "feature_bag must be a name or path"),
    ("coordinates:\n  - {name: g, type: scores, training_scores: 5, validation_scores: b.csv}\n",
     "training_scores must be a name or path, got 5"),
    ("coordinates:\n  - {name: g, type: fixed_effect, feature_bag: global, max_iter: .inf}\n",
     "max_iter must be a whole number"),
    ("coordinates:\n  - {name: g, type: fixed_effect, feature_bag: global, max_iter: 2.5}\n",
     "max_iter must be a whole number"),
    ("coordinates:\n  - {name: g, type: fixed_effect, feature_bag: global, l2: .nan}\n", "l2 >= 0"),
    ("coordinates:\n  - {name: g, type: fixed_effect, feature_bag: global, l2: 1%s}\n" % ("0" * 400),
     "int too large to convert to float"),
    ("coordinates:\n  - {name: g, type: fixed_effect, feature_bag: global, tolerance: .inf}\n", "tolerance > 0"),
    ("coordinates: [{name: g, type: fixed_effect, feature_bag: global}]\n1: x\nb: y\n",
     "unknown top-level key(s) ['1', 'b']"),
    ("coordinates: [\n  {name: g,\n   type: fixed_effect\n", "not valid YAML: while parsing a flow mapping in"),
])
def test_config_values_of_the_wrong_type_are_named(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert words in one_line(err.value) and str(path) in str(err.value), str(err.value)


@pytest.mark.parametrize("column,words", [
    ({"name": "c", "kind": "categorical", "hash_buckets": "5", "embedding_dim": 4},
     "hash_buckets must be an integer >= 0"),
    ({"name": "c", "kind": "categorical", "vocabulary": "abc", "embedding_dim": 4}, "vocabulary must be a list"),
    ({"name": "x", "kind": "numeric", "normalization": "standard", "std": "1"}, "std must be a finite number"),
    ({"name": "x", "kind": "numeric", "normalization": "standard", "std": True}, "std must be a finite number"),
    ({"name": "x", "kind": "numeric", "normalization": "standard", "std": 10 ** 400}, "std must be a finite number"),
    ({"name": ["x"], "kind": "numeric"}, "'name' must be a non-empty string"),
    ({"name": "x", "kind": ["numeric"]}, "kind ['numeric'] is not one of"),
])
def test_schema_values_of_the_wrong_type_are_named(column, words):
    columns = [{"name": "y", "kind": "label"},
               {"name": "c0", "kind": "categorical", "hash_buckets": 5, "embedding_dim": 2}, column]
    with pytest.raises(SchemaError) as err:
        parse_schema({"columns": columns}, "my.json")
    assert words in one_line(err.value) and "my.json" in str(err.value), str(err.value)
    with pytest.raises(SchemaError, match="'columns' must list two or more categorical columns"):
        parse_schema({"columns": columns[:2], "crosses": [{"name": "x", "columns": [["c0"], "c0"], "hash_buckets": 3}]})


# --- gdmix_lr score files (gdmix_lr/train.py read_score_file) ----------------------------------------------

def score_split(n=5):
    return SimpleNamespace(uid=np.arange(10, 10 + n), label=np.array([1.0, 0.0] * (n // 2) + [1.0] * (n % 2)),
                           path="train.csv")


@functools.lru_cache(maxsize=None)
def gdmix_train():
    return load_train_module("gdmix_lr")


def read_scores(path):
    return gdmix_train().read_score_file(str(path), score_split(), "other")


SCORES = b"uid,score\n10,0.5\n11,-1\n12,2\n13,0\n14,1e-3\n"


@pytest.mark.parametrize("data,words", [
    (SCORES.replace(b"12,2", b"12,\xff2"), ":4: not utf-8 text"),
    (SCORES.replace(b"12,2", b"12,\x002"), ":4: contains a NUL byte"),
    (SCORES.replace(b"12,2\n", b"12,2\r13,0\n"), ":4: contains a carriage return"),
    (SCORES.replace(b"12,2\n", b"\n12,2\n"), ":4: the score is not a finite number"),  # a blank line, named where it is
    (SCORES.replace(b"12,2", b'12,"2"'), ":4: the score is not a finite number"),  # read as written, no quoting
    (SCORES.replace(b"12,2", b"12,2,7"),
     "cannot read the score file: Error tokenizing data. C error: Expected 2 fields in line 4, saw 3"),
    (SCORES.replace(b"13,0", b"12,0"), ":5: uid 12 appears again"),
    (SCORES.replace(b"12,2", b"12,1e400"), ":4: the score is not a finite number"),
    (b"", "cannot read the score file: No columns to parse from file"),
    (b"label,probability\n1,0.5\nyes,0.2\n1,0.1\n0,0.3\n1,0.9\n", "its labels differ"),
], ids=["invalid UTF-8", "NUL byte", "lone CR", "blank line", "quoted", "extra field", "duplicate uid", "overflow",
        "empty file", "non-numeric label"])
def test_score_file_problems_are_named(tmp_path, data, words):
    path = tmp_path / "scores.csv"
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        read_scores(path)
    assert f"{path} (coordinate other)" in one_line(err.value) and words in str(err.value), str(err.value)


def test_score_file_crlf_missing_and_folder(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_bytes(SCORES.replace(b"\n", b"\r\n"))
    np.testing.assert_allclose(read_scores(path), [0.5, -1, 2, 0, 1e-3])
    for where in (tmp_path / "missing.csv", tmp_path):
        with pytest.raises(DataError, match="cannot read the score file") as err:
            read_scores(where)
        one_line(err.value)


# --- properties: arbitrary bytes, and arbitrary documents of the right shape, are read or named ---------

json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 10 ** 20), st.floats(allow_nan=True),
                                     st.text(max_size=6), st.sampled_from(["label", "numeric", "categorical", "TFJob",
                                                                           "kubeflow.org/v1", "log1p", "int64"])),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=12)


def replace_somewhere(doc, draw):
    """`doc` (parsed JSON/YAML) with one value somewhere in it replaced by an arbitrary one."""
    if isinstance(doc, dict) and doc and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(doc, key=str)))
        return {**doc, key: replace_somewhere(doc[key], draw)}
    if isinstance(doc, list) and doc and draw(st.integers(0, 3)):
        i = draw(st.integers(0, len(doc) - 1))
        return doc[:i] + [replace_somewhere(doc[i], draw)] + doc[i + 1:]
    return draw(json_values)


@settings(max_examples=examples(60), **FUZZ)
@given(st.sampled_from(sorted(DOCUMENT_READERS)), st.data())
def test_property_documents_read_or_named(tmp, reader, data):
    good, load, error, _ = DOCUMENT_READERS[reader]
    how = data.draw(st.sampled_from(["bytes", "bytes", "structure", "structure", "structure"]))
    if how == "bytes":
        content = mutate(good, data.draw)
    else:
        doc = replace_somewhere(yaml.safe_load(good), data.draw)
        content = (json.dumps(doc) if reader == "schema" else yaml.safe_dump(doc)).encode()
    path = scratch(tmp, "doc") / "doc.txt"
    path.write_bytes(content)
    try:
        load(path)
    except error as err:
        assert str(path) in one_line(err), str(err)


@settings(max_examples=examples(60), **FUZZ)
@given(st.data())
def test_property_score_files_read_or_named(tmp, data):
    path = scratch(tmp, "scores") / "scores.csv"
    path.write_bytes(mutate(SCORES, data.draw))
    try:
        scores = read_scores(path)
    except DataError as err:
        assert str(path) in one_line(err), str(err)
    else:
        assert scores.shape == (5,) and np.isfinite(scores).all()


# ---------------------------------------------------------------------------------------------------------
# The command lines, as a user runs them: one line on stderr, no traceback; skipped rows in the summary and
# result.json. (Each train.py run costs 10-20 s of TensorFlow start-up: two runs here.)

def test_dlrm_command_line_names_a_row_it_used_to_take_silently(tmp_path, small_schema):
    """Before, the tf.data decoder took invalid UTF-8 in a text field (it hashes bytes); now error mode stops."""
    path = tmp_path / "train.txt"
    write_with_bad_rows(path, [], rows=300)
    lines = path.read_bytes().split(b"\n")
    lines[41] = MALFORMED["invalid UTF-8 in a text field"][0](good_row(41))
    path.write_bytes(b"\n".join(lines))
    proc = run_train("dlrm", ["--train_files", path, "--schema", small_schema, "--checkpoint", tmp_path / "ckpt",
                              "--batch_size", 270, "--steps", 1, "--no_eval"], check=False)  # every training row
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() and "dlrm" in line]
    at = lines[41].index(b"\xff") + 1
    assert errors == [f"dlrm/train.py: error: {path}:42: not valid UTF-8 text (invalid start byte at byte {at})"], \
        proc.stderr[-3000:]


def test_wide_and_deep_command_line_skips_and_counts_bad_rows(tmp_path, small_schema):
    """A CRLF file with rows the tf.data decoder alone would take or misread: 3 in the training rows, 1 in the
    held-out last 10%; one step of 270 rows reads each training row once."""
    path = tmp_path / "train.txt"
    cases = ["NUL byte in a text field", "integer with a leading space", "label 01", "UTF-8-encoded surrogate"]
    where = write_with_bad_rows(path, cases, rows=300, every=90, end=b"\r\n")
    assert sorted(where) == [2, 92, 182, 272]  # 272 > 270: held out
    ckpt = tmp_path / "ckpt"
    proc = run_train("wide_and_deep", ["--train_files", path, "--schema", small_schema, "--checkpoint", ckpt,
                                       "--batch_size", 270, "--steps", 1, "--deep_hidden_units", 8,
                                       "--bad_rows", "skip"])
    assert read_result(ckpt)["bad_rows_skipped"] == {"train": 3, "eval": 1}
    assert "bad rows skipped: 3 in training, 1 in evaluation" in proc.stdout
    assert read_result(ckpt)["eval_rows"] == 30


def test_local_run_command_line_names_a_manifest_that_is_not_utf8(tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_bytes(MANIFEST.replace(b"name: j", b"name: j\xe9"))
    proc = subprocess.run([sys.executable, "-m", "distribute_k8s.local_run", str(manifest), "--dry_run"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    line = MANIFEST[:MANIFEST.index(b"name: j")].count(b"\n") + 1
    assert proc.stderr.strip().startswith(f"local_run: error: {manifest}:{line}: not UTF-8 text (invalid continuation "
                                          "byte at byte"), proc.stderr
    one_line(proc.stderr)


# -- TF_CONFIG (launch.py checks it in each pod; the trainer reads it again) --------------------------

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=8)
TASK_TYPES = st.sampled_from(["chief", "worker", "ps", "evaluator", "Worker", "master"])
TF_CONFIGS = st.one_of(
    JSON_VALUES.map(json.dumps),
    st.builds(lambda cluster, task: json.dumps({"cluster": cluster, "task": task}),
              st.dictionaries(TASK_TYPES, st.one_of(st.lists(st.sampled_from(["a:1", "b:2", "c", ""]), max_size=3),
                                                    JSON_VALUES), max_size=3),
              st.one_of(st.fixed_dictionaries({"type": TASK_TYPES, "index": st.one_of(st.integers(-1, 3),
                                                                                      JSON_VALUES)}), JSON_VALUES)),
    st.text(max_size=30))


@settings(max_examples=examples(150), **FUZZ)
@given(TF_CONFIGS)
@example("[]")
@example('{"cluster": {"ps": 5}, "task": {"type": "ps", "index": 0}}')
def test_property_tf_config_is_accepted_or_refused_with_the_launchers_and_the_trainers_own_error(text):
    from distribute_k8s.launch import LaunchError, check_tf_config
    from modelzoo.distributed import ClusterError, from_environment
    try:
        check_tf_config(text)
    except LaunchError as err:
        assert str(err).startswith("TF_CONFIG") and "\n" not in str(err)
    try:
        from_environment({"TF_CONFIG": text})
    except ClusterError as err:
        assert str(err).startswith("TF_CONFIG") and "\n" not in str(err)

"""Readers: Kaggle TSV and DeepRec CSV, gzip, the 10% time-order holdout, and malformed input."""
import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from modelzoo import datafiles
from modelzoo.datafiles import DataError, Slice
from modelzoo.features import BAD_ROWS, DENSE, IDS, make_dataset, transform
from modelzoo.schema import load_schema

pytestmark = pytest.mark.fast  # the fast tier (make test-fast)

SCHEMA = load_schema("criteo")


def make_rows(n, seed=0):
    """Rows with the Criteo layout as lists of strings (missing values as empty strings)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-2, 5000))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{int(rng.integers(0, 16 ** 8)):08x}" for _ in range(26)]
        rows.append([str(int(rng.random() < 0.25))] + ints + cats)
    return rows


def write(path, rows, delim="\t"):
    text = "".join(delim.join(r) + "\n" for r in rows)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def args_for(**kw):
    base = dict(train_files=None, eval_files=None, data_location="unused", generate_rows=100, seed=0)
    base.update(kw)
    return SimpleNamespace(**base)


def read_all(slices, delimiter, smartstaged=True, bad_rows="error", batch=64):
    """Every batch of a non-shuffled, non-repeated dataset, as numpy."""
    ds = make_dataset(slices, SCHEMA, delimiter, batch, training=False, smartstaged=smartstaged,
                      bad_rows=bad_rows)
    return list(ds.as_numpy_iterator())


def test_tsv_and_csv_read_to_the_same_features(tmp_path):
    rows = make_rows(150)
    tsv = write(tmp_path / "train.txt", rows, "\t")
    csv = write(tmp_path / "train.csv", rows, ",")
    assert datafiles.detect_delimiter(tsv, 40) == "\t" and datafiles.detect_delimiter(csv, 40) == ","
    a = read_all([Slice(str(tsv), 0, 150)], "\t")
    b = read_all([Slice(str(csv), 0, 150)], ",")
    for (fa, la), (fb, lb) in zip(a, b):
        np.testing.assert_array_equal(fa[IDS], fb[IDS])
        np.testing.assert_array_equal(fa[DENSE], fb[DENSE])
        np.testing.assert_array_equal(la, lb)
    labels = np.concatenate([lab for _, lab in a])
    assert labels.tolist() == [float(r[0]) for r in rows]


def test_dense_features_are_log1p_of_nonnegative_counts_and_missing_is_zero(tmp_path):
    rows = make_rows(20, seed=3)
    path = write(tmp_path / "t.txt", rows)
    (features, _), = read_all([Slice(str(path), 0, 20)], "\t", batch=20)
    expected = np.array([[np.log1p(max(int(v), 0)) if v else 0.0 for v in r[1:14]] for r in rows], np.float32)
    np.testing.assert_allclose(features[DENSE], expected, rtol=1e-6)


def test_staged_and_in_graph_hashing_give_the_same_ids(tmp_path):
    rows = make_rows(100, seed=1)
    path = write(tmp_path / "t.txt", rows)
    staged = read_all([Slice(str(path), 0, 100)], "\t", smartstaged=True, batch=100)[0][0]
    raw = read_all([Slice(str(path), 0, 100)], "\t", smartstaged=False, batch=100)[0][0]
    assert raw["C1"].dtype == object  # still strings: the model graph hashes them
    in_graph = transform({k: tf.constant(v) for k, v in raw.items()}, SCHEMA)
    np.testing.assert_array_equal(staged[IDS], in_graph[IDS].numpy())
    assert staged[IDS].shape == (100, 26)
    buckets = np.array([c.hash_buckets for c in SCHEMA.categorical])
    assert (staged[IDS] >= 0).all() and (staged[IDS] < buckets).all()


def test_gzip_input_reads_like_plain(tmp_path):
    rows = make_rows(80, seed=2)
    plain = write(tmp_path / "a.txt", rows)
    packed = write(tmp_path / "a.txt.gz", rows)
    assert datafiles.count_lines(packed) == 80
    a = read_all([Slice(str(plain), 0, 80)], "\t", batch=80)[0]
    b = read_all([Slice(str(packed), 0, 80)], "\t", batch=80)[0]
    np.testing.assert_array_equal(a[0][IDS], b[0][IDS])


def test_one_file_holds_out_its_last_ten_percent_in_time_order(tmp_path):
    path = write(tmp_path / "train.txt", make_rows(100))
    spec = datafiles.resolve(args_for(train_files=str(path)), SCHEMA)
    assert spec.train == [Slice(str(path), 0, 90)] and spec.eval == [Slice(str(path), 90, 100)]
    assert (spec.train_rows, spec.eval_rows) == (90, 10)


def test_holdout_spans_files_in_name_order_and_explicit_eval_files(tmp_path):
    a = write(tmp_path / "day_0.txt", make_rows(60))
    b = write(tmp_path / "day_1.txt", make_rows(40))
    spec = datafiles.resolve(args_for(train_files=str(tmp_path / "day_*.txt")), SCHEMA)
    assert spec.train == [Slice(str(a), 0, 60), Slice(str(b), 0, 30)]
    assert spec.eval == [Slice(str(b), 30, 40)]
    spec = datafiles.resolve(args_for(train_files=str(a), eval_files=str(b)), SCHEMA)
    assert (spec.train_rows, spec.eval_rows) == (60, 40)


def test_day_files_are_taken_in_the_natural_order_of_their_numbers(tmp_path):
    """day_0..day_23 in time order (text order would train on days 20-23 and hold out days 7-9), and
    part-00002 before part-00010; the data: line names the held-out files and line range."""
    for k in range(24):
        write(tmp_path / f"day_{k}.txt", make_rows(5, seed=k))
    files = datafiles.expand_globs(str(tmp_path / "day_*.txt"), "--train_files")
    assert [p.rsplit("/", 1)[1] for p in files] == [f"day_{k}.txt" for k in range(24)]
    assert sorted(["part-00010.gz", "part-00002.gz", "part-2.gz", "a10b2", "a10b10", "a9b30"],
                  key=datafiles.natural_key) == ["a9b30", "a10b2", "a10b10", "part-00002.gz", "part-2.gz",
                                                  "part-00010.gz"]
    spec = datafiles.resolve(args_for(train_files=str(tmp_path / "day_*.txt")), SCHEMA)
    # 120 rows: 12 held out, the last two days whole and 2 rows of day_21
    assert spec.eval == [Slice(str(tmp_path / "day_21.txt"), 3, 5), Slice(str(tmp_path / "day_22.txt"), 0, 5),
                         Slice(str(tmp_path / "day_23.txt"), 0, 5)]
    assert spec.description.endswith("held out for eval: day_21.txt lines 4-5, day_22.txt, day_23.txt")


def test_the_data_line_counts_the_middle_of_a_long_holdout(tmp_path):
    for k in range(12):
        write(tmp_path / f"part-{k:05d}.txt", make_rows(1, seed=k))
    spec = datafiles.resolve(args_for(train_files=str(tmp_path / "part-*.txt")), SCHEMA)  # 12 rows, 1 held out
    assert spec.description.endswith("held out for eval: part-00011.txt")
    held = datafiles.describe_holdout([Slice(f"/d/day_{k}", 0, 9) for k in range(7)], {f"/d/day_{k}" for k in range(7)})
    assert held == "day_0, day_1, 3 more, day_5, day_6"


def test_deeprec_train_and_eval_csv_in_data_location(tmp_path):
    write(tmp_path / "train.csv", make_rows(30), ",")
    write(tmp_path / "eval.csv", make_rows(10), ",")
    spec = datafiles.resolve(args_for(data_location=str(tmp_path)), SCHEMA)
    assert (spec.train_rows, spec.eval_rows, spec.delimiter) == (30, 10, ",")


def test_empty_data_location_is_filled_by_the_generator(tmp_path):
    calls = []

    def generate(path, rows, seed):
        calls.append((path, rows, seed))
        write(tmp_path / "gen" / "train.txt", make_rows(rows))

    spec = datafiles.resolve(args_for(data_location=str(tmp_path / "gen"), generate_rows=50), SCHEMA, generate)
    assert calls and spec.generated and (spec.train_rows, spec.eval_rows) == (45, 5)
    again = datafiles.resolve(args_for(data_location=str(tmp_path / "gen")), SCHEMA, generate)
    assert len(calls) == 1 and again.generated, "a later run must still know the data is synthetic"


@pytest.mark.parametrize("mutate,problem", [
    (lambda r: r[:-1], "expected 40 fields, found 39"),
    (lambda r: [r[0], "12x"] + r[2:], "I1 '12x' is not an integer (at most 18 digits)"),
    (lambda r: [r[0], "99999999999999999999"] + r[2:], "I1 '99999999999999999999' is not an integer (at most 18 digits)"),
    (lambda r: ["2"] + r[1:], "label '2' is not 0 or 1"),
])
def test_malformed_rows_are_named_by_file_line_and_problem(tmp_path, mutate, problem):
    rows = make_rows(30)
    rows[17] = mutate(rows[17])
    path = write(tmp_path / "bad.txt", rows)
    found = datafiles.diagnose([Slice(str(path), 0, 30)], SCHEMA, "\t")
    assert found == f"{path}:18: {problem}"
    with pytest.raises(tf.errors.InvalidArgumentError):  # and the fast TF reader does stop on it
        read_all([Slice(str(path), 0, 30)], "\t")


NAMES = [c.name for c in SCHEMA.columns]


def test_header_line_read_as_data_gets_a_hint(tmp_path):
    rows = make_rows(5)
    path = tmp_path / "h.csv"
    path.write_text(",".join(NAMES) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    assert "--header true" in datafiles.diagnose([Slice(str(path), 0, 6)], SCHEMA, ",")
    as_data = datafiles.resolve(args_for(train_files=str(path), header="false"), SCHEMA)
    assert as_data.train[0] == Slice(str(path), 0, 5)  # --header false: line 1 is a row (and refused)
    assert datafiles.resolve(args_for(train_files=str(path)), SCHEMA).train == [Slice(str(path), 1, 6)]


def write_with_header(path, rows, order, delim=","):
    """`rows` (in the schema's column order) written with a header line, columns in `order`."""
    index = [NAMES.index(n) for n in order]
    return write(path, [list(order)] + [[r[i] for i in index] for r in rows], delim)


def read_spec(spec, schema=SCHEMA, slices=None, bad_rows="error", trainer_shard=(1, 0)):
    ds = make_dataset(spec.train if slices is None else slices, schema, spec.delimiter, 16, training=False,
                      smartstaged=True, bad_rows=bad_rows, layout=spec.layout(schema), trainer_shard=trainer_shard)
    return list(ds.as_numpy_iterator())


@pytest.mark.parametrize("suffix,delim", [(".csv", ","), (".tsv.gz", "\t")])
def test_header_columns_in_another_order_are_matched_by_name(tmp_path, suffix, delim):
    """A header line is detected (--header auto), never read as a row, and its columns are matched to
    the schema's by name: the features equal those of the same rows without a header in schema order,
    and the held-out last 10% counts data rows only."""
    rows = make_rows(100, seed=4)
    plain = write(tmp_path / "plain.txt", rows)
    shuffled = NAMES[20:] + NAMES[:20]
    headed = write_with_header(tmp_path / f"headed{suffix}", rows, shuffled, delim)
    spec = datafiles.resolve(args_for(train_files=str(headed)), SCHEMA)
    assert spec.train == [Slice(str(headed), 1, 91)] and spec.eval == [Slice(str(headed), 91, 101)]
    assert spec.columns == tuple(shuffled) and spec.delimiter == delim and "header line" in spec.description
    base = datafiles.resolve(args_for(train_files=str(plain)), SCHEMA)
    assert base.columns is None and base.train == [Slice(str(plain), 0, 90)]
    for slices_a, slices_b in ((spec.train, base.train), (spec.eval, base.eval)):
        got, want = read_spec(spec, slices=slices_a), read_spec(base, slices=slices_b)
        for (fa, la), (fb, lb) in zip(got, want):
            np.testing.assert_array_equal(fa[IDS], fb[IDS])
            np.testing.assert_array_equal(fa[DENSE], fb[DENSE])
            np.testing.assert_array_equal(la, lb)
    assert datafiles.diagnose(spec.train + spec.eval, spec.layout(SCHEMA), delim) is None
    skipped = read_spec(spec, slices=spec.train + spec.eval, bad_rows="skip")
    assert sum(int(f[BAD_ROWS]) for f, _ in skipped) == 0 and sum(len(y) for _, y in skipped) == 100


def test_header_files_shard_by_line_and_by_file_without_the_header(tmp_path):
    """Each trainer's rows (every N-th line, or its own files) and the work queue's items never include
    a header line, and together cover every data row once."""
    from modelzoo.workqueue import WorkQueue
    rows = make_rows(60, seed=6)
    for k in range(2):
        write_with_header(tmp_path / f"day_{k}.csv", rows[30 * k:30 * k + 30], NAMES[::-1])
    spec = datafiles.resolve(args_for(train_files=str(tmp_path / "day_*.csv"), eval_files=str(tmp_path / "day_1.csv")),
                             SCHEMA)
    assert [s.start for s in spec.train] == [1, 1] and spec.train_rows == 60
    labels = [float(r[0]) for r in rows]
    for trainers in (2, 3):  # 2: a file each; 3: every 3rd line
        seen = []
        for k in range(trainers):
            seen += [y for _, ys in read_spec(spec, bad_rows="skip", trainer_shard=(trainers, k)) for y in ys]
        assert sorted(seen) == sorted(labels)
    items = WorkQueue.for_trainer(SimpleNamespace(trainers=2), spec).items
    ranges = [(path, int(a), int(b)) for path, a, b in (i.split("\t") for i in items)]
    assert min(a for _, a, _ in ranges) == 1 and sum(b - a for _, a, b in ranges) == 60


def test_ignore_columns_are_read_past_and_extra_or_missing_columns_are_refused(tmp_path):
    from modelzoo.schema import parse_schema
    doc = {"columns": [{"name": "id", "kind": "ignore"}, {"name": "y", "kind": "label"},
                       {"name": "site", "kind": "categorical", "hash_buckets": 50, "embedding_dim": 4},
                       {"name": "price", "kind": "numeric", "normalization": "none"}]}
    schema = parse_schema(doc)
    path = tmp_path / "a.csv"
    path.write_text("site,y,price,id\na,1,2.5,77\nb,0,1.5,78\n")
    spec = datafiles.resolve(args_for(train_files=str(path), eval_files=str(path)), schema)
    (features, labels), = read_spec(spec, schema)
    assert labels.tolist() == [1.0, 0.0] and features[DENSE][:, 0].tolist() == [2.5, 1.5]
    headerless = tmp_path / "b.csv"  # by position, the ignored id takes its place
    headerless.write_text("77,1,a,2.5\n78,0,b,1.5\n")
    spec_b = datafiles.resolve(args_for(train_files=str(headerless), eval_files=str(headerless)), schema)
    (fb, lb), = read_spec(spec_b, schema)
    np.testing.assert_array_equal(fb[IDS], features[IDS])
    without_id = tmp_path / "c.csv"  # an ignored column may be absent from a header
    without_id.write_text("y,site,price\n1,a,2.5\n")
    assert datafiles.resolve(args_for(train_files=str(without_id), eval_files=str(without_id)), schema).train_rows == 1
    cases = {"y,site,price,id,extra\n1,a,2,3,4\n":
             r"x.csv:1: the header names column\(s\) \['extra'\] .*kind \"ignore\"",
             "y,site,id\n1,a,3\n": r"x.csv:1: line 1 looks like a header .* lacks the schema's column\(s\) \['price'\]",
             "y,site,site,price\n1,a,a,2\n": r"names column\(s\) \['site'\] more than once",
             "y,site,price\n": "holds only a header line"}
    for text, words in cases.items():
        (tmp_path / "x.csv").write_text(text)
        with pytest.raises(DataError, match=words):
            datafiles.resolve(args_for(train_files=str(tmp_path / "x.csv")), schema)
    with pytest.raises(DataError, match=r"--header true, but it lacks"):
        datafiles.resolve(args_for(train_files=str(headerless), header="true"), schema)
    with pytest.raises(DataError, match="give files of one column order"):
        datafiles.resolve(args_for(train_files=str(path), eval_files=str(without_id)), schema)


def test_skip_mode_drops_and_counts_bad_rows(tmp_path):
    rows = make_rows(50)
    rows[3] = rows[3][:-2]
    rows[10][5] = "abc"
    rows[40][0] = "7"
    path = write(tmp_path / "t.txt", rows)
    batches = read_all([Slice(str(path), 0, 50)], "\t", bad_rows="skip", batch=25)
    assert sum(int(f[BAD_ROWS]) for f, _ in batches) == 3
    assert sum(len(lab) for _, lab in batches) == 47


@pytest.mark.parametrize("setup,words", [
    (lambda d: (d / "train.txt").write_text(""), "file is empty"),
    (lambda d: (d / "notes.md").write_text("x"), r"holds \['notes.md'\] but none of"),
])
def test_unusable_data_location_is_explained(tmp_path, setup, words):
    setup(tmp_path)
    with pytest.raises(DataError, match=words):
        datafiles.resolve(args_for(data_location=str(tmp_path)), SCHEMA)


def test_missing_files_and_wrong_delimiters_are_explained(tmp_path):
    with pytest.raises(DataError, match="no file matches"):
        datafiles.resolve(args_for(train_files=str(tmp_path / "nope*.txt")), SCHEMA)
    odd = tmp_path / "odd.txt"
    odd.write_text("1;2;3\n")
    with pytest.raises(DataError, match=r"odd.txt:1: expected 40 fields separated by tabs"):
        datafiles.resolve(args_for(train_files=str(odd)), SCHEMA)


def test_truncated_gzip_is_named_as_unreadable(tmp_path):
    whole = write(tmp_path / "whole.txt.gz", make_rows(2000))
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut.txt.gz: cannot be read"):
        datafiles.resolve(args_for(train_files=str(cut)), SCHEMA)


def test_vocabulary_and_normalizations_transform_as_the_schema_says():
    from modelzoo.schema import parse_schema
    schema = parse_schema({"columns": [
        {"name": "y", "kind": "label"},
        {"name": "age", "kind": "numeric", "normalization": "standard", "mean": 30, "std": 10},
        {"name": "year", "kind": "numeric", "normalization": "minmax", "min": 1900, "max": 2000},
        {"name": "g", "kind": "categorical", "vocabulary": ["M", "F"], "embedding_dim": 2}]})
    out = transform({"age": tf.constant([40.0, 20.0]), "year": tf.constant([1950.0, 2100.0]),
                     "g": tf.constant(["F", "X"])}, schema)
    np.testing.assert_allclose(out[DENSE].numpy(), [[1.0, 0.5], [-1.0, 1.0]])
    assert out[IDS].numpy().tolist() == [[1], [2]]  # unknown values share the extra row


def test_a_killed_data_generation_leaves_a_file_that_the_next_run_removes(tmp_path, capsys):
    """SIGKILL while modelzoo/synthetic.py writes: its temporary file stays in the folder. The next run that
    would generate removes it (as the runner removes an interrupted checkpoint write's) and generates."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from conftest import REPO
    folder = tmp_path / "data"
    child = subprocess.Popen([sys.executable, "-c", "import sys; from modelzoo.synthetic import generate_criteo; "
                              "generate_criteo(sys.argv[1], 5_000_000, seed=1)", str(folder / "train.txt")], cwd=REPO)
    try:
        for _ in range(600):
            leftovers = list(folder.glob(".train.txt.*.tmp"))
            if leftovers and leftovers[0].stat().st_size > 0:
                break
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (leftover,) = folder.glob(".train.txt.*.tmp")
    assert not (folder / "train.txt").exists()
    calls = []

    def generate(path, rows, seed):
        calls.append(path)
        write(folder / "train.txt", make_rows(rows))

    spec = datafiles.resolve(args_for(data_location=str(folder), generate_rows=50), SCHEMA, generate)
    assert calls and spec.train_rows == 45 and not leftover.exists()
    assert f"removed what an interrupted data generation left in {folder}: {leftover.name}" in capsys.readouterr().out
    assert sorted(os.listdir(folder)) == [".train.txt.index.json", "SYNTHETIC", "train.txt"]  # (its line index)


def test_a_generation_in_progress_keeps_its_file_and_a_run_that_only_reads_removes_nothing(tmp_path):
    import fcntl
    live = tmp_path / ".train.txt.abc123.tmp"
    live.write_bytes(b"1\t")
    with open(live, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as generate_criteo holds it until its rename
        datafiles.remove_generation_leftovers(str(tmp_path))
        assert live.exists()
    with pytest.raises(DataError, match="holds"):  # without a generator (another task waiting): untouched
        datafiles.resolve(args_for(data_location=str(tmp_path)), SCHEMA)
    assert live.exists()
    datafiles.remove_generation_leftovers(str(tmp_path))
    assert not live.exists()


def test_the_synthetic_marker_describes_its_file_and_a_real_file_copied_over_it_is_read_as_real(tmp_path, capsys):
    """The SYNTHETIC marker records the generated file's name, size and first-row fingerprint: a real train.txt
    copied over the generated one used to be reported as synthetic (generated_data: true) whatever it held."""
    import json
    folder = tmp_path / "data"

    def generate(path, rows, seed):
        write(Path(path), make_rows(rows, seed=seed))
    spec = datafiles.resolve(args_for(data_location=str(folder), generate_rows=50), SCHEMA, generate)
    marker = json.loads((folder / "SYNTHETIC").read_text())
    assert spec.generated and marker["generator"] == {"rows": 50, "seed": 0}
    assert marker["file"] == datafiles.file_identity(str(folder / "train.txt"))
    assert datafiles.resolve(args_for(data_location=str(folder)), SCHEMA).generated  # the same file: synthetic
    write(folder / "train.txt", make_rows(60, seed=7))  # the real data, copied over the generated sample
    assert not datafiles.resolve(args_for(data_location=str(folder)), SCHEMA).generated  # (a reader keeps it)
    assert (folder / "SYNTHETIC").exists()
    spec = datafiles.resolve(args_for(data_location=str(folder)), SCHEMA, generate)
    assert not spec.generated and "(synthetic)" not in spec.description
    assert not (folder / "SYNTHETIC").exists()  # the process that would generate removes the stale marker
    assert "describes another train.txt" in capsys.readouterr().out


def test_a_generation_killed_after_its_rename_leaves_its_file_marked_synthetic(tmp_path):
    """The marker is written before the generated file appears and completed after: a run killed between
    the rename and the marker's write used to leave generated data read as real."""
    folder = tmp_path / "data"

    def killed_after_rename(path, rows, seed):
        write(Path(path), make_rows(rows))
        raise KeyboardInterrupt  # SIGKILL here: train.txt complete, the marker not yet updated

    with pytest.raises(KeyboardInterrupt):
        datafiles.resolve(args_for(data_location=str(folder), generate_rows=50), SCHEMA, killed_after_rename)
    spec = datafiles.resolve(args_for(data_location=str(folder)), SCHEMA)
    assert spec.generated and "(synthetic)" in spec.description


def test_a_generation_killed_before_its_rename_generates_again(tmp_path):
    """A marker alone (the generation died before its file appeared) does not make the folder 'hold unknown
    files': the next run generates."""
    folder = tmp_path / "data"

    def killed_before_rename(path, rows, seed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        datafiles.resolve(args_for(data_location=str(folder), generate_rows=50), SCHEMA, killed_before_rename)
    assert sorted(p.name for p in folder.iterdir()) == ["SYNTHETIC"]
    spec = datafiles.resolve(args_for(data_location=str(folder), generate_rows=50), SCHEMA,
                             lambda path, rows, seed: write(Path(path), make_rows(rows)))
    assert spec.generated and spec.train_rows == 45

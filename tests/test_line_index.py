"""The line index (modelzoo/line_index.py): a file's row count and the bytes of every K-th line, written
once and reused, so no process counts the data at its start and a held-out slice or a --workqueue item
seeks to its rows instead of reading the file from line 1."""
import gzip
import os
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from modelzoo import datafiles, features, line_index
from modelzoo.datafiles import Slice
from modelzoo.schema import load_schema
from modelzoo.synthetic import generate_criteo
from modelzoo.workqueue import WorkQueue

pytestmark = pytest.mark.fast

SCHEMA = load_schema("criteo")


@pytest.fixture
def small_every(monkeypatch):
    """Index every 16th line, so that a file of a few hundred rows has many seek points."""
    monkeypatch.setattr(line_index, "EVERY", 16)
    return 16


def rows_text(n, seed=0, crlf_from=None):
    """n Criteo rows (tab-separated), with CRLF line ends from row `crlf_from` on."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        ints = [str(int(rng.integers(0, 900))) for _ in range(13)]
        cats = [f"{int(rng.integers(0, 16 ** 8)):08x}" for _ in range(26)]
        end = "\r\n" if crlf_from is not None and k >= crlf_from else "\n"
        out.append("\t".join([str(k % 2)] + ints + cats) + end)
    return "".join(out)


def args_for(path):
    return SimpleNamespace(train_files=str(path), eval_files=None, data_location="unused", generate_rows=0, seed=0)


def skip_path(path, start, stop):
    """The lines as the readers got them before the index: TextLineDataset from line 1, skip(start)."""
    ds = tf.data.TextLineDataset(str(path), compression_type="GZIP" if str(path).endswith(".gz") else "")
    return [x for x in ds.skip(start).take(stop - start).as_numpy_iterator()]


def no_counting(monkeypatch):
    """Any full read of a data file (a count, or an index build) fails the test."""
    def refuse(*a, **k):
        raise AssertionError("the data file was read in full")
    monkeypatch.setattr(line_index, "build", refuse)
    monkeypatch.setattr(datafiles, "count_lines", refuse)


def test_the_index_is_written_once_and_a_later_start_reads_no_data(tmp_path, monkeypatch, small_every):
    path = tmp_path / "train.txt"
    path.write_text(rows_text(500))
    first = datafiles.resolve(args_for(path), SCHEMA)
    assert "line index built now, kept beside the data (.train.txt.index.json)" in first.indexes
    assert (tmp_path / ".train.txt.index.json").is_file()
    no_counting(monkeypatch)
    again = datafiles.resolve(args_for(path), SCHEMA)
    assert (again.train, again.eval) == (first.train, first.eval) == ([Slice(str(path), 0, 450)],
                                                                      [Slice(str(path), 450, 500)])
    assert again.indexes == "line index reused, kept beside the data (.train.txt.index.json)"


def test_the_generators_and_prepare_criteo_write_the_index_as_they_write_the_file(tmp_path, monkeypatch):
    """No extra pass: what they counted while writing equals a count of the file, and a start reads it."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "data"))
    import prepare_criteo
    monkeypatch.setattr(line_index, "EVERY", 1000)
    path = tmp_path / "gen" / "train.txt"
    generate_criteo(str(path), 5000, seed=1)
    raw = tmp_path / "raw.txt"
    raw.write_text(rows_text(700))
    prepare_criteo.prepare_criteo(raw, tmp_path / "prep", log=lambda m: None)
    import generate_avazu
    from modelzoo.synthetic_sequences import generate_taobao
    generate_avazu.generate(tmp_path / "avazu.csv", 2500)
    generate_taobao(tmp_path / "taobao.txt", 1500)
    for written in (path, tmp_path / "prep" / "train.csv", tmp_path / "prep" / "eval.csv", tmp_path / "avazu.csv",
                    tmp_path / "taobao.txt"):
        index = line_index.load(str(written))
        assert not index.built
        assert (index.rows, index.offsets) == line_index.build(str(written))[:2]
    assert len(line_index.load(str(path)).offsets) == 5  # lines 0, 1000, ... 4000
    no_counting(monkeypatch)
    assert datafiles.resolve(args_for(path), SCHEMA).eval == [Slice(str(path), 4500, 5000)]


def test_a_stale_index_is_rebuilt_when_the_file_is_appended_to_or_replaced(tmp_path, small_every):
    path = tmp_path / "train.txt"
    path.write_text(rows_text(100))
    assert line_index.load(str(path)).rows == 100
    with open(path, "a") as f:
        f.write(rows_text(20, seed=3))
    appended = line_index.load(str(path))
    assert appended.built and appended.rows == 120
    # replaced by a file of the same size and first line (only a later row differs), the time restored:
    # the size and first line match, the modification time does not
    stat = os.stat(path)
    text = path.read_text()
    path.write_text(text[:len(text) // 2] + text[len(text) // 2:].replace("0", "1", 1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert line_index.load(str(path)).built
    # replaced by other rows: rebuilt, and the rows read are the new file's
    path.write_text(rows_text(40, seed=9))
    index = line_index.load(str(path))
    assert index.built and index.rows == 40
    got = [x for b in line_index.blocks(str(path), 33, 40) for x in b]
    assert got == skip_path(path, 33, 40)


def test_a_read_only_data_folder_keeps_the_index_in_the_cache_folder(tmp_path, monkeypatch, small_every):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "train.txt"
    path.write_text(rows_text(200))
    cache = tmp_path / "cache"
    monkeypatch.setenv(line_index.CACHE_ENV, str(cache))
    real_write = line_index.atomic_write_json

    def read_only(target, record):  # (root may write anywhere: the data folder refuses as a read-only volume)
        if os.path.dirname(target) == str(data):
            raise OSError(30, "Read-only file system", target)
        return real_write(target, record)

    monkeypatch.setattr(line_index, "atomic_write_json", read_only)
    spec = datafiles.resolve(args_for(path), SCHEMA)
    assert spec.indexes == f"line index built now, kept in {cache} (the data folder is read-only)"
    assert os.listdir(data) == ["train.txt"] and [p for p in os.listdir(cache) if p.endswith(".json")]
    no_counting(monkeypatch)
    again = datafiles.resolve(args_for(path), SCHEMA)
    assert again.indexes.startswith("line index reused") and again.eval == [Slice(str(path), 180, 200)]
    assert [x for b in line_index.blocks(str(path), 181, 200) for x in b] == skip_path(path, 181, 200)


@pytest.mark.parametrize("last_newline", [True, False])
def test_a_slice_deep_in_a_file_seeks_and_yields_the_lines_the_skip_path_did(tmp_path, small_every, last_newline):
    """Every start around the seek points (and CRLF line ends, whose "\\r" TextLineDataset drops, and a
    last line without a line end)."""
    path = tmp_path / "train.txt"
    text = rows_text(300, crlf_from=150)
    path.write_text(text if last_newline else text.rstrip("\r\n"))
    line_index.load(str(path))
    for start, stop in [(15, 40), (16, 17), (17, 300), (31, 33), (160, 161), (250, 300), (299, 300), (0, 300)]:
        got = [x for x in features._slice_dataset(Slice(str(path), start, stop)).as_numpy_iterator()]
        assert got == skip_path(path, start, stop), (start, stop)
    # the reader enters at the indexed line at or before its first, then skips fewer than EVERY lines
    index = line_index.loaded(str(path))
    assert index.seek_point(250) == (index.offsets[15], 10)
    with open(path, "rb") as f:
        f.seek(index.offsets[15])
        assert f.readline().rstrip(b"\r\n") == skip_path(path, 240, 241)[0]


def test_holdout_rows_are_those_of_the_skip_path(tmp_path, small_every):
    path = tmp_path / "train.txt"
    path.write_text(rows_text(333))
    spec = datafiles.resolve(args_for(path), SCHEMA)
    (held,) = spec.eval
    got = [x for x in features.read_slices(spec.eval, features._slice_dataset, 1, 0).as_numpy_iterator()]
    assert held.start == 300 and got == skip_path(path, 300, 333)


def test_workqueue_items_deep_in_a_file_read_the_lines_of_the_skip_path(tmp_path, small_every, monkeypatch):
    """Each item's lines, in the order dealt, as TextLineDataset(...).skip(start).take(rows) read them; a
    gzip file is one item (an item deep in it would decompress every line before it)."""
    plain, packed = tmp_path / "a.txt", tmp_path / "b.txt.gz"
    plain.write_text(rows_text(400))
    with gzip.open(packed, "wt") as f:
        f.write(rows_text(100, seed=2))
    spec = datafiles.resolve(SimpleNamespace(train_files=f"{plain},{packed}", eval_files=str(plain),
                                             data_location="unused", generate_rows=0, seed=0), SCHEMA)
    queue = WorkQueue.for_trainer(SimpleNamespace(trainers=2), spec)
    dealt = [3, 0, 5, 7, 1]  # from a.txt's end and start, and b.txt.gz whole (gzip cannot seek: one item)

    def items():
        for index in dealt:
            yield queue._item(index)

    monkeypatch.setattr(queue, "_items", items)
    got = [x for x in queue.lines().as_numpy_iterator()]
    want = []
    for index in dealt:
        path, start, stop = queue.items[index].split("\t")
        want += skip_path(path, int(start), int(stop))
    assert got == want and queue.items[7:] == [f"{packed}\t0\t100"] and len(queue.items) == 8


def test_a_gzip_file_index_saves_its_count_and_its_late_slice_says_what_skipping_costs(tmp_path, monkeypatch,
                                                                                      capsys):
    path = tmp_path / "train.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write(rows_text(120))
    first = datafiles.resolve(args_for(path), SCHEMA)
    assert line_index.loaded(str(path)).offsets == [0]  # no seek points: gzip cannot seek
    no_counting(monkeypatch)
    spec = datafiles.resolve(args_for(path), SCHEMA)
    assert spec.eval == first.eval == [Slice(str(path), 108, 120)]
    got = [x for x in features._slice_dataset(spec.eval[0]).as_numpy_iterator()]
    features._slice_dataset(spec.eval[0])
    assert got == skip_path(path, 108, 120)
    out = capsys.readouterr().out
    assert out.count("gzip cannot seek: reaching line 109 decompresses the 108 lines before it") == 1


def test_a_folder_marked_read_only_is_left_alone_even_by_root(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "train.txt"
    path.write_text(rows_text(30))
    monkeypatch.setenv(line_index.CACHE_ENV, str(tmp_path / "cache"))
    data.chmod(0o555)
    try:
        index = line_index.load(str(path))
    finally:
        data.chmod(0o755)
    assert os.listdir(data) == ["train.txt"] and index.where == line_index.cache_path(str(path))
    assert index.where.startswith(str(tmp_path / "cache")) and index.rows == 30


def test_a_process_starting_while_another_builds_the_index_waits_and_reads_it(tmp_path, monkeypatch):
    """A local job's processes start together: one counts, the others read what it wrote."""
    import fcntl
    import threading
    path = tmp_path / "train.txt"
    path.write_text(rows_text(50))
    got = []
    with open(path, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # (another process building)
        waiting = threading.Thread(target=lambda: got.append(line_index.load(str(path))))
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive() and not got
        line_index.save(str(path), *line_index.build(str(path)))
    waiting.join(10)
    assert got[0].rows == 50 and not got[0].built
    assert sorted(os.listdir(tmp_path)) == [".train.txt.index.json", "train.txt"]  # (no lock file left)


def test_the_ali_ccp_generator_writes_its_index_as_it_writes_the_file(tmp_path):
    """The multi-task models' generated data (modelzoo/datasets/aliccp.py) starts without a count: its
    index is written with the file (the count and the offsets a build would find)."""
    from modelzoo.datasets import aliccp
    path = tmp_path / "train.txt"
    aliccp.generate_sample(str(path), 70_000)  # (two indexed offsets: lines 0 and 65,536)
    index = line_index.load(str(path))
    assert not index.built and index.rows == 70_000 and len(index.offsets) == 2, (index.built, index.rows)
    assert line_index.build(str(path))[:2] == (index.rows, index.offsets)

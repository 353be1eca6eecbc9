"""What the line index (modelzoo/line_index.py) saves, at two sizes of generated Criteo data (issue 27).

For each size (one generated train.txt, which the generator writes with its index):
- start to first step: DLRM's default command with --train_files, stopped at its first `step` line, with
  the index kept (every start after the first) and with it removed (the start builds it: the full count
  every start paid before);
- a --workqueue item of 100,000 rows at the start and at the end of the file: seconds to its first line
  and to its last, read as before (TextLineDataset(...).skip(start).take(rows)) and through the index;
- the readers' throughput over the file's first 1M lines (TextLineDataset, the index's seeking reader),
  and the seconds tf.data's FixedLengthRecordDataset takes to reach a header of the end item's offset
  (it reads through its header: the alternative to a seek).

    python benchmarks/line_index.py --rows 1000000 8000000 --data_dir /tmp/line-index-data

Writes benchmarks/results/line_index.{json,md}.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo import line_index  # noqa: E402
from modelzoo.io_utils import write_report  # noqa: E402
from modelzoo.synthetic import generate_criteo  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402
from modelzoo.workqueue import ITEM_ROWS  # noqa: E402

STEP_LINE = re.compile(r"^step (\d[\d,]*)/")


def first_step_seconds(path, work):
    """Seconds from DLRM's start to its first `step` line (the run is then stopped)."""
    out = Path(work) / "run"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(REPO / "dlrm" / "train.py"), "--train_files", path, "--output_dir", str(out),
           "--log_steps", "1"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    seconds, tail, data_line = None, [], None
    try:
        for line in proc.stdout:
            tail = (tail + [line])[-40:]
            if line.startswith("data:"):
                data_line = line.strip()
            if STEP_LINE.match(line):
                seconds = time.perf_counter() - start
                break
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(out, ignore_errors=True)
    if seconds is None:
        raise SystemExit("no step line:\n" + "".join(tail))
    return round(seconds, 2), data_line


def read_item(make, batch=4096):
    """(seconds to the first line, seconds to the last) of the dataset `make()` builds."""
    start = time.perf_counter()
    first, rows = None, 0
    for lines in make().batch(batch).prefetch(2):
        if first is None:
            first = time.perf_counter() - start
        rows += int(lines.shape[0])
    return round(first, 3), round(time.perf_counter() - start, 3), rows


def items(path, rows):
    """Seconds to read a 100,000-row work item at the start and at the end of the file, both ways."""
    import tensorflow as tf
    out = {}
    for where, start in (("start", 0), ("end", rows - ITEM_ROWS)):
        stop = start + ITEM_ROWS

        def skip(start=start, stop=stop):
            return tf.data.TextLineDataset(path).skip(start).take(stop - start)

        def seek(start=start, stop=stop):
            return line_index.dataset(path, start, stop)

        for how, make in (("skip", skip), ("index", seek)):
            first, last, n = read_item(make)
            assert n == ITEM_ROWS, n
            out[f"{how}_{where}"] = {"first_line_s": first, "item_s": last}
    return out


def throughput(path, end_offset, lines=1_000_000):
    import tensorflow as tf
    out = {}
    for how, make in (("textline", lambda: tf.data.TextLineDataset(path).take(lines)),
                      ("index", lambda: line_index.dataset(path, 0, lines))):
        _, seconds, n = read_item(make)
        out[f"{how}_lines_per_s"] = round(n / seconds)
    size = os.path.getsize(path)
    start = time.perf_counter()
    ds = tf.data.FixedLengthRecordDataset(path, record_bytes=1, header_bytes=end_offset,
                                          footer_bytes=size - end_offset - 1)
    next(iter(ds))
    out["fixed_length_header_reach_s"] = round(time.perf_counter() - start, 3)
    out["fixed_length_header_bytes"] = end_offset
    return out


def cpu_line():
    cpu = cpu_info()
    return f"{cpu['model']}, {cpu['family_model']}, {cpu['cores']} cores"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 8_000_000])
    p.add_argument("--data_dir", default=None, help="where the generated files are kept between runs (default: "
                                                    "a temp folder, removed at the end)")
    p.add_argument("--repeats", type=int, default=2, help="start-up runs each way")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "line_index"))
    a = p.parse_args(argv)
    data_dir = a.data_dir or tempfile.mkdtemp(prefix="line-index-data-")
    work = tempfile.mkdtemp(prefix="line-index-runs-")
    runs = []
    try:
        for rows in a.rows:
            path = os.path.join(data_dir, str(rows), "train.txt")
            if not os.path.exists(path):
                generate_criteo(path, rows, seed=0)
            index = line_index.load(path)
            assert index.rows == rows
            kept, built = [], []
            for _ in range(a.repeats):  # (interleaved: the machine's load changes)
                seconds, kept_line = first_step_seconds(path, work)
                kept.append(seconds)
                os.unlink(line_index.sidecar(path))
                seconds, built_line = first_step_seconds(path, work)  # (builds the index again)
                built.append(seconds)
            start = time.perf_counter()
            line_index.build(path)
            build_s = round(time.perf_counter() - start, 2)
            end_offset, _ = line_index.loaded(path).seek_point(rows - ITEM_ROWS)
            run = {"rows": rows, "bytes": os.path.getsize(path), "first_step_index_kept_s": kept,
                   "first_step_index_built_s": built, "index_build_s": build_s, "data_line_kept": kept_line,
                   "data_line_built": built_line, "items": items(path, rows),
                   "readers": throughput(path, end_offset)}
            print(run, flush=True)
            runs.append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not a.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    cmd = f"python benchmarks/line_index.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    lines = ["# The line index: start-up and work-item cost against data size (benchmarks/line_index.py)", "",
             f"`{cmd}`; start-up: {a.repeats} runs each way, interleaved (each listed), the rest one run; "
             f"CPU: {cpu_line()}, shared with other jobs (loaded: compare within a row, "
             "not across runs). Generated Criteo Kaggle-format data (modelzoo/synthetic.py), page cache warm.", "",
             "| rows | GB | start to first step, index kept (s) | same, index built at start (s) | index build "
             "alone (s) | "
             f"{ITEM_ROWS:,}-row item at the start: skip / index (s) | at the end: skip / index (s) | "
             "end item's first line: skip / index (s) | lines/s: TextLineDataset / index reader | "
             "FixedLengthRecordDataset to the end item's header (s) |",
             "|---:|---:|---|---|---:|---|---|---|---|---:|"]
    for r in runs:
        it, rd = r["items"], r["readers"]
        lines.append(
            f"| {r['rows']:,} | {r['bytes'] / 1e9:.2f} | {', '.join(map(str, r['first_step_index_kept_s']))} | "
            f"{', '.join(map(str, r['first_step_index_built_s']))} | {r['index_build_s']} | "
            f"{it['skip_start']['item_s']} / {it['index_start']['item_s']} | "
            f"{it['skip_end']['item_s']} / {it['index_end']['item_s']} | {it['skip_end']['first_line_s']} / "
            f"{it['index_end']['first_line_s']} | {rd['textline_lines_per_s']:,} / {rd['index_lines_per_s']:,} | "
            f"{rd['fixed_length_header_reach_s']} |")
    write_report(a.output, {"cpu": cpu_line(), "command": cmd, "runs": runs}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

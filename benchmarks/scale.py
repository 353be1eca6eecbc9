"""Cost against data size (issue 27): generated Criteo-format data at several row counts, DLRM's default
command on each, and what grows with the rows: time from start to the first training step, steady
samples/s, the held-out evaluations (with their checkpoint saves), the export, and the peak RSS.

Each size is generated once into --data_dir (data/generate_criteo.py's generator, the Kaggle
cardinalities; 45.8M rows are 11.1 GB and take about a minute), as one file or, with --days 24, as 24
day files (day_0 .. day_23) read with --train_files in day order. Then, per configuration:
- `default`: the README's command with --train_files (one epoch: the last 10% of rows held out);
- `full`: --schema criteo_full (hash buckets at the real Kaggle cardinalities), --steps 3000;
- `ev`: --ev --schema criteo_full (or --ev_schema), one epoch: its peak RSS against the start-up memory plan,
  which result.json keeps. The plan counts each column's expected_ids, else its hash_buckets, and criteo_full
  holds the real Kaggle counts, twice the ids of the generated rows: `benchmarks/distinct_ids.py ...
  --schema_out S` writes criteo_full with the counted ids, for --ev_schema S;
- `ev3000`: --ev, --steps 3000.
The timings come from the child's log lines as they are printed (benchmarks/peak_memory.py's sampler):
the first `step N/` line (with --log_steps 1), the `eval at step` lines, the `SavedModel:` line.

    python benchmarks/scale.py --rows 1000000 4000000 16000000 45840617 --configs default
    python benchmarks/scale.py --rows 1000000 45840617 1000000 --configs default   (small steady: before and after)
    python benchmarks/scale.py --rows 45840617 --days 24 --configs default full ev
    python benchmarks/scale.py --rows 45840617 --configs ev --ev_schema S --data_dir D

Writes benchmarks/results/scale.{json,md} (and scale.png, each figure against the rows).
"""
import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from peak_memory import measure  # noqa: E402

from modelzoo.io_utils import write_report  # noqa: E402
from modelzoo.synthetic import generate_criteo  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402

CONFIGS = {"default": [], "full": ["--schema", "criteo_full", "--steps", "3000"],
           "ev": ["--ev", "--schema", "criteo_full"], "ev3000": ["--ev", "--steps", "3000"]}
STEP_LINE = re.compile(r"^step (\d[\d,]*)/")


def data_files(folder, rows, days, seed=0):
    """The generated data of `rows` rows in `folder` (made once), as a --train_files pattern."""
    folder = Path(folder) / (f"{rows}" + (f"_days{days}" if days else ""))
    done = folder / "DONE"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        whole = folder / "train.txt"
        generate_criteo(str(whole), rows, seed=seed)
        if days:  # split in time order: day k gets rows [k * rows / days, (k + 1) * rows / days)
            with open(whole, "rb") as src:
                for day in range(days):
                    stop = (day + 1) * rows // days - day * rows // days
                    with open(folder / f"day_{day}", "wb") as out:
                        for _ in range(stop):
                            out.write(src.readline())
            whole.unlink()
        done.write_text("complete\n")
    return str(folder / ("day_*" if days else "train.txt"))


def timings(events):
    """Seconds from start to the first step, to the first and last evaluation line, to the export line."""
    first_step = next((t for t, line in events if STEP_LINE.match(line)), None)
    evals = [t for t, line in events if line.startswith("eval at step")]
    before_eval = [t for t, line in events if STEP_LINE.match(line) and evals and t < evals[0]]
    export = next((t for t, line in events if line.startswith("SavedModel:")), None)
    last_step = max((k for k, (t, line) in enumerate(events) if STEP_LINE.match(line)), default=0)
    return {"first_step_s": first_step,
            "first_eval_s": round(evals[0] - before_eval[-1], 2) if evals and before_eval else None,
            "evaluations": len(evals),
            "after_training_s": round(export - evals[-1], 2) if export and evals else None,
            "wall_to_export_s": export,
            "after_training_lines": [f"{t:.1f} {line[:160]}" for t, line in events[last_step:last_step + 40]]}


def run_one(pattern, config, work, ev_schema=None):
    out = Path(work) / config
    shutil.rmtree(out, ignore_errors=True)
    flags = list(CONFIGS[config])
    if config == "ev" and ev_schema:
        flags[flags.index("--schema") + 1] = ev_schema
    cmd = [sys.executable, str(REPO / "dlrm" / "train.py"), "--train_files", pattern, "--output_dir", str(out),
           "--log_steps", "1", *flags]
    rc, samples, events, tail = measure(cmd, interval=0.5)
    if rc != 0:
        return {"config": config, "error": f"exit {rc}: {tail[-1500:]}"}
    result = json.loads((out / "dlrm" / "result.json").read_text())
    shutil.rmtree(out, ignore_errors=True)  # (checkpoints of full cardinality are GBs)
    peak = max(s[1] for s in samples)
    peak_time = next(s[0] for s in samples if s[1] == peak)
    # (where the peak fell: the last log line before it, and the seconds since)
    before_peak = [(t, line) for t, line in events if t <= peak_time]
    plan = result.get("memory_plan", {})
    return {"config": config, **timings(events), "samples_per_sec": round(result["samples_per_sec"]),
            "steps": result["steps"], "train_rows": result["train_rows"], "eval_rows": result["eval_rows"],
            "auc": round(result["auc"], 4), "peak_rss_gb": round(peak / 1e9, 2), "peak_at_s": round(peak_time, 1),
            "peak_after_line": f"{peak_time - before_peak[-1][0]:.1f} s after: {before_peak[-1][1][:120]}"
            if before_peak else None,
            "planned_peak_gb": round(plan["planned_peak_bytes"] / 1e9, 2) if plan else None,
            "ev_tables_planned_gb": round(sum(plan.get("ev_tables_planned_bytes", {}).values()) / 1e9, 2) or None,
            "ev_rows_stored": sum(t["rows"] for t in result.get("ev_tables", {}).values()) or None,
            "ev_payload_gb": round(sum(t["memory_mb"] for t in result.get("ev_tables", {}).values()) * 2 ** 20 / 1e9,
                                   2) or None,
            "variables_gb": round(sum(v for k, v in result["variable_bytes"].items() if k != "dynamic_tables") / 1e9,
                                  2), "cpu": result["cpu"]["model"], "command": " ".join(cmd[1:])}


def end_to_end(runs):
    """Each run's whole-run throughput (issue 27's target): its training rows over the seconds from start to the
    SavedModel line (start-up, training, the evaluations, the checkpoints and the export all count), as a
    fraction of "small steady" (the median steady samples/s of the runs of the smallest size with the same
    configuration: give that size twice, before and after the others, and the host's drift over a long run
    shows in both) and of its own steady samples/s (what the start, evaluations, checkpoints and export cost,
    free of that drift); and the rows of the whole file (trained and evaluated) over the same seconds."""
    for run in runs:
        if "error" in run or not run.get("wall_to_export_s"):
            continue
        same = [r for r in runs if r["config"] == run["config"] and "error" not in r]
        smallest = min(r["rows"] for r in same)
        small = statistics.median(r["samples_per_sec"] for r in same if r["rows"] == smallest)
        run["small_steady_samples_per_sec"] = round(small)
        run["end_to_end_samples_per_sec"] = round(run["train_rows"] / run["wall_to_export_s"])
        run["end_to_end_vs_small_steady"] = round(run["end_to_end_samples_per_sec"] / small, 3)
        run["end_to_end_vs_own_steady"] = round(run["end_to_end_samples_per_sec"] / run["samples_per_sec"], 3)
        run["steady_vs_small_steady"] = round(run["samples_per_sec"] / small, 3)
        run["file_rows_per_sec"] = round((run["train_rows"] + run["eval_rows"]) / run["wall_to_export_s"])
    return runs


def cpu_line():
    """'AMD EPYC, family 25 model 17, 2 cores' (modelzoo.system.cpu_info)."""
    cpu = cpu_info()
    return f"{cpu['model']}, {cpu['family_model']}, {cpu['cores']} cores"


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = ["first_step_s", "samples_per_sec", "first_eval_s", "after_training_s", "peak_rss_gb"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5))
    for ax, key in zip(axes, keys):
        for config in sorted({r["config"] for r in runs}):
            points = sorted((r["rows"], r[key]) for r in runs if r["config"] == config and r.get(key) is not None)
            if points:
                ax.plot(*zip(*points), marker="o", label=config)
        ax.set_xscale("log")
        ax.set_xlabel("rows")
        ax.set_title(key)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(runs, command, cpu):
    """The stored result's Markdown: one line a run (end_to_end's figures included)."""
    lines = ["# Cost against data size (benchmarks/scale.py)", "",
             "End to end: the training rows over the seconds from start to the SavedModel line; \"small steady\": "
             "the median steady samples/s of the runs of the smallest size with the same configuration; \"own "
             "steady\": the run's own steady samples/s.", "",
             f"`{command}`; one run for each size given; CPU: {cpu}.", "",
             "| rows | config | start to first step (s) | samples/s | first evaluation (s) | after training (s) | "
             "peak RSS (GB) | planned peak (GB) | variables (GB) | AUC | start to SavedModel (s) | "
             "end to end (train rows/s) | end to end / small steady | end to end / own steady | "
             "steady / small steady |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    columns = ("first_step_s", "samples_per_sec", "first_eval_s", "after_training_s", "peak_rss_gb",
               "planned_peak_gb", "variables_gb", "auc", "wall_to_export_s", "end_to_end_samples_per_sec",
               "end_to_end_vs_small_steady", "end_to_end_vs_own_steady", "steady_vs_small_steady")
    for r in runs:
        cells = " | ".join(str(r.get(k)) for k in columns) if "error" not in r else r["error"][:200]
        lines.append(f"| {r['rows']:,} | {r['config']} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000, 45_840_617])
    p.add_argument("--days", type=int, default=0, help="split each size into this many day files (0: one file)")
    p.add_argument("--configs", nargs="+", default=["default"], choices=sorted(CONFIGS))
    p.add_argument("--data_dir", default=None, help="where generated data is kept between runs (default: a temp "
                                                    "folder, removed at the end)")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "scale"))
    p.add_argument("--ev_schema", default=None, help="the `ev` configuration's --schema (default criteo_full)")
    a = p.parse_args(argv)
    data_dir = a.data_dir or tempfile.mkdtemp(prefix="scale-data-")
    work = tempfile.mkdtemp(prefix="scale-runs-")
    runs = []
    try:
        for rows in a.rows:
            pattern = data_files(data_dir, rows, a.days)
            for config in a.configs:
                run = {"rows": rows, "days": a.days, **run_one(pattern, config, work, a.ev_schema)}
                print(json.dumps(run), flush=True)
                runs.append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not a.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    end_to_end(runs)
    command, cpu = f"python benchmarks/scale.py {' '.join(argv if argv is not None else sys.argv[1:])}", cpu_line()
    write_report(a.output, {"cpu": cpu, "command": command, "runs": runs}, table(runs, command, cpu))
    if runs:
        plot([r for r in runs if "error" not in r], a.output + ".png")


if __name__ == "__main__":
    main()

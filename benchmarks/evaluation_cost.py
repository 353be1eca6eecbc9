"""What evaluating the held-out rows while training costs: DLRM's default command on the real Criteo sample
(no --steps or --epochs: it evaluates at each epoch's end and stops early) against the same number of steps
with --no_eval, run interleaved (the order alternates from one repeat to the next) so that a loaded machine
slows both alike; the ratio of the medians is the cost. The goal (issue 26): under 2x.

With --baseline_repo PATH a third arm runs the same default command with another checkout's code (e.g. the
commit before in-session evaluation, `git archive COMMIT | tar -x -C PATH`), interleaved too.

    python benchmarks/evaluation_cost.py [--repeats 3] [--baseline_repo PATH]

The data is ../shared/data/criteo-kaggle-head10k/train.txt, read in place (the runner holds out its last
10%). Wall seconds are the whole process's (start-up, graph, training, evaluations, export). Writes
benchmarks/results/evaluation_cost.json and .md.
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "criteo-kaggle-head10k" / "train.txt"
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import atomic_write_json  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402

MODEL = "dlrm"


def run(repo, flags, work, tag):
    """One training run in a fresh checkpoint folder: (wall seconds, result.json)."""
    ckpt = work / tag
    cmd = [sys.executable, str(Path(repo) / MODEL / "train.py"), "--train_files", str(SAMPLE), "--checkpoint",
           str(ckpt), *flags]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads((ckpt / "result.json").read_text())
    events = sum(p.stat().st_size for p in ckpt.glob("events.out.tfevents.*"))
    shutil.rmtree(ckpt, ignore_errors=True)
    return {"wall_seconds": round(wall, 1), "steps": result["steps"], "auc": result.get("auc"),
            "evaluations": len(result.get("evaluations") or []), "events_file_mb": round(events / 2 ** 20, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline_repo", help="another checkout whose default command runs as a third arm")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "evaluation_cost"))
    args = parser.parse_args()
    if not SAMPLE.is_file():
        raise SystemExit(f"the Criteo sample is not at {SAMPLE}")
    work = Path(tempfile.mkdtemp(prefix="evaluation-cost-"))
    arms = {"default (evaluating)": (REPO, [])}
    try:
        steps = run(REPO, [], work, "pilot")["steps"]  # where the default command stops (the same every run)
        print(f"the default command trains {steps} steps", flush=True)
        arms["--no_eval, same steps"] = (REPO, ["--steps", str(steps), "--no_eval"])
        if args.baseline_repo:
            arms[f"default, code at {args.baseline_repo}"] = (Path(args.baseline_repo), [])
        runs = {name: [] for name in arms}
        for r in range(args.repeats):
            order = list(arms) if r % 2 == 0 else list(reversed(arms))
            for name in order:
                repo, flags = arms[name]
                runs[name].append(run(repo, flags, work, f"r{r}"))
                print(f"repeat {r + 1}: {name}: {runs[name][-1]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(r["wall_seconds"] for r in rs) for name, rs in runs.items()}
    base = medians["--no_eval, same steps"]
    summary = {"model": MODEL, "data": str(SAMPLE.relative_to(REPO.parent)), "command": f"{MODEL}/train.py "
               "--train_files SAMPLE (the default: batch 2,048, evaluations at each epoch's end, early stopping)",
               "steps": steps, "repeats": args.repeats, "cpu": cpu_info(),
               "median_wall_seconds": medians, "ratio_to_no_eval": {n: round(m / base, 2) for n, m in medians.items()},
               "runs": runs}
    atomic_write_json(args.out + ".json", summary)
    write_markdown(summary, args.out + ".md")


def write_markdown(summary, path):
    runs, medians, steps, repeats = summary["runs"], summary["median_wall_seconds"], summary["steps"], \
        summary["repeats"]
    base = medians["--no_eval, same steps"]
    cpu = summary["cpu"]

    def auc(value):
        return "" if value is None else f"{value:.4f}"
    lines = [f"# Evaluation cost: {MODEL}'s default command on the Criteo sample", "",
             f"`python benchmarks/evaluation_cost.py --repeats {repeats}` on {cpu.get('model', 'this CPU')} "
             f"({cpu.get('cores', '?')} cores, shared with other runs), {repeats} interleaved repeats; the default "
             f"command trains {steps} steps (its evaluations at each epoch's end; early stopping ends it).", "",
             "| run | median wall s | x --no_eval | evaluations | events file MB | AUC (first repeat) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, rs in runs.items():
        lines.append(f"| {name} | {medians[name]:.1f} | {medians[name] / base:.2f} | {rs[0]['evaluations']} | "
                     f"{rs[0]['events_file_mb']} | {auc(rs[0]['auc'])} |")
    Path(path).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Every registered model on a small real dataset: its default command (no --steps or --epochs: the run picks
its length and stops early) against its own best tuned run, next to a scikit-learn hashed logistic regression.

The data is the real Criteo sample (../shared/data/criteo-kaggle-head10k/train.txt, never copied here), split
as the issue states: the first 9,000 rows train, the last 999 are held out (--train_files/--eval_files on two
temporary files). Each configuration runs with every seed; its AUC is the median over the seeds. The tuned
runs are a small grid per model (--grid); "best tuned" is the grid's best median.

    python benchmarks/small_data_auc.py [--models dlrm,wide_and_deep] [--seeds 1,2,3] [--grid "A;B"] [--jobs 3]
                                        [--update]

--jobs runs that many trainings at once (the AUCs do not depend on it); --update replaces only the measured
models' lines in the stored result (with --no_default: only the configurations measured again).

Writes benchmarks/results/small_data_auc.json and .md (the table the READMEs quote).
"""
import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "criteo-kaggle-head10k" / "train.txt"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "data"))

from modelzoo.io_utils import atomic_write_json  # noqa: E402
from modelzoo.models import ESTIMATOR_MODELS  # noqa: E402

TRAIN_ROWS = 9000
# the READMEs' small-data recipe and two longer runs: each model's own best of these is its "tuned" AUC
GRID = ("--batch_size 256 --steps 100;--batch_size 256 --steps 300;"
        "--batch_size 256 --epochs 20 --early_stop_patience 3;"
        "--batch_size 256 --epochs 20 --early_stop_patience 3 --emb_l2 0.01 --dropout 0.2")


def run(model, flags, seed, work, tag):
    ckpt = work / f"{model}-{tag}-{seed}"
    cmd = [sys.executable, str(REPO / model / "train.py"), "--train_files", str(work / "train.txt"), "--eval_files",
           str(work / "eval.txt"), "--checkpoint", str(ckpt), "--seed", str(seed), "--log_steps", "1000000", *flags]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode == 2:  # a flag this model refuses (e.g. --dropout without an MLP): not in its grid
        return None
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads((ckpt / "result.json").read_text())
    record = ckpt / "evaluations.json"  # the held-out AUC at each evaluation: where the run peaked and stopped
    curve = [[e["step"], e["auc"]] for e in json.loads(record.read_text())["evaluations"]] if record.exists() else []
    shutil.rmtree(ckpt, ignore_errors=True)  # (a W&D checkpoint is 2.7 GB: a grid's would fill the disk)
    return {"auc": result["auc"], "logloss": result["logloss"], "steps": result["steps"],
            "best_step": result.get("best_step"), "wall_seconds": round(time.time() - start, 1), "auc_by_step": curve}


def measure(model, flags, runs):
    """One configuration's runs (one per seed, None where the model refuses a flag) -> its median, or None."""
    if None in runs:
        print(f"{model} [{' '.join(flags)}]: refused by the model, left out", flush=True)
        return None
    median = statistics.median(r["auc"] for r in runs)
    each = ", ".join(f"{r['auc']:.4f} @ {r['steps']} steps" for r in runs)
    print(f"{model} [{' '.join(flags) or 'default'}]: median AUC {median:.4f} ({each})", flush=True)
    return {"flags": " ".join(flags), "median_auc": median, "runs": runs}


def note(config):
    """A stored configuration's "note" (e.g. a default measured before the model's defaults changed), in parentheses."""
    return f" ({config['note']})" if config.get("note") else ""


def table(summary):
    rows = ["| model | default command: median AUC (steps of each seed) | each tuned configuration: median AUC "
            "| best tuned | default - best tuned |", "|---|---:|---|---:|---:|"]
    for model, m in summary["models"].items():
        d, t = m["default"], m["tuned"]
        grid = "; ".join(f"`{g['flags']}` {g['median_auc']:.4f}{note(g)}" for g in m["grid"])
        if d is None:
            rows.append(f"| {model} | (not run) | {grid} | {t['median_auc']:.4f} | |")
            continue
        steps = "/".join(str(r["steps"]) for r in d["runs"])
        rows.append(f"| {model} | {d['median_auc']:.4f} ({steps}){note(d)} | {grid} | {t['median_auc']:.4f} | "
                    f"{d['median_auc'] - t['median_auc']:+.4f} |")
    rows.append(f"| scikit-learn hashed LR (2^20 buckets, C = 0.1) | {summary['sklearn_hashed_lr_auc']:.4f} | | | |")
    return "\n".join(rows)


def merge(old, new):
    """--update: `new`'s models replace their entries in the stored summary `old`, other models stay. A model whose
    default was measured anew keeps none of its old lines (a changed default changes what the grid's flags mean);
    with --no_default a configuration measured again replaces its line and the others stay."""
    for model, m in new["models"].items():
        kept = old["models"].get(model, {"default": None, "grid": []})
        default = m["default"] or kept["default"]
        flags = {g["flags"] for g in m["grid"]}
        grid = [g for g in ([] if m["default"] else kept["grid"]) if g["flags"] not in flags] + m["grid"]
        tuned = max(grid + [default] * (default is not None), key=lambda c: c["median_auc"])
        old["models"][model] = {"default": default, "grid": grid, "tuned": tuned}
    old["commands"] = old.get("commands", []) + [f"{new['date']}: {new['command']}"]
    return old


def measure_all(args, work, lr_auc, ntr, nte):
    """Every model's default and grid, each with every seed; --jobs runs at once (their AUCs do not depend on it)."""
    from modelzoo.system import cpu_info
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = [] if args.no_default else [[]]
    configs += [flags.split() for flags in args.grid.split(";") if flags.strip()]
    tasks = [(model, k, seed) for model in args.models.split(",") for k in range(len(configs)) for seed in seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = dict(zip(tasks, pool.map(lambda t: run(t[0], configs[t[1]], t[2], work, f"c{t[1]}"), tasks)))
    command = shlex.join(["python", "benchmarks/small_data_auc.py", *sys.argv[1:]])
    date = time.strftime("%Y-%m-%d %H:%M")
    summary = {"date": date, "data": f"{SAMPLE.name}: first {ntr:,} rows train, last {nte:,} held out",
               "seeds": seeds, "machine": {**cpu_info(), "cpu": cpu_info()["family_model"]},
               "sklearn_hashed_lr_auc": lr_auc,
               "command": command, "models": {}}
    for model in args.models.split(","):
        measured = [measure(model, flags, [done[(model, k, seed)] for seed in seeds])
                    for k, flags in enumerate(configs)]
        for m in measured:
            if m is not None:
                m.update(date=date, command=command)
        default = None if args.no_default else measured.pop(0)
        grid = [m for m in measured if m is not None]
        tuned = max(grid + [default] * (default is not None), key=lambda m: m["median_auc"])
        summary["models"][model] = {"default": default, "grid": grid, "tuned": tuned}
    output = Path(args.output + ".json")
    if args.update and output.exists():
        summary = merge(json.loads(output.read_text()), summary)
    atomic_write_json(str(output), summary)
    return summary


def write_markdown(summary, path):
    """The table of `summary` in PATH, under a header naming the data, seeds, machine and commands; returns it."""
    text = table(summary)
    machine = summary["machine"]
    commands = summary.get("commands") or [summary.get("command")]
    Path(path).write_text(
        f"# Small data: each model's default command against its tuned runs\n\n{summary['data']}; the median "
        f"AUC over seeds {', '.join(map(str, summary['seeds']))} of each configuration; \"best tuned\" is the best "
        f"median of the grid and the default. {machine['model']} {machine.get('cpu', '')}, {machine['cores']} "
        f"cores (AUC only, no speed). Written by `benchmarks/small_data_auc.py` "
        f"({'; '.join(f'`{c}`' for c in commands if c)}; each configuration in the .json names the command and "
        f"date that measured it, where none is named: an earlier session's runs, listed there).\n\n{text}\n")
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(ESTIMATOR_MODELS))
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--grid", default=GRID, help="';'-separated flag sets of the tuned runs")
    p.add_argument("--no_default", action="store_true",
                   help="measure the grid only (the default command measured in an earlier run)")
    p.add_argument("--jobs", type=int, default=1, help="training runs at once (AUC only: wall_seconds then overlap)")
    p.add_argument("--update", action="store_true",
                   help="replace only these models' measured lines in the stored result, keep the rest")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "small_data_auc"))
    args = p.parse_args()
    if not SAMPLE.is_file():
        raise SystemExit(f"the real Criteo sample is not at {SAMPLE} (../shared/data beside the checkout)")
    from generate_criteo import hashed_lr_auc
    lines = SAMPLE.read_text().splitlines(keepends=True)
    work = Path(tempfile.mkdtemp(prefix="small-data-auc-"))
    (work / "train.txt").write_text("".join(lines[:TRAIN_ROWS]))
    (work / "eval.txt").write_text("".join(lines[TRAIN_ROWS:]))
    lr_auc, ntr, nte = hashed_lr_auc(str(work / "train.txt"), str(work / "eval.txt"))
    print(f"scikit-learn hashed logistic regression: AUC {lr_auc:.4f} ({ntr} train rows, {nte} eval rows)", flush=True)
    try:
        summary = measure_all(args, work, lr_auc, ntr, nte)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # (the split's two files, and a failed run's checkpoint)
    print(write_markdown(summary, args.output + ".md"))


if __name__ == "__main__":
    main()

"""How the held-out AUC moves epoch by epoch as the training set grows: the evidence behind the default length
(modelzoo/run/schedule.py: early stopping on small data, one epoch from ONE_EPOCH_STEPS steps an epoch on).

For each size, generated Criteo-format rows (data/generate_criteo.py's model: real statistics, a hidden label
model; the last 10% held out) train a model for --epochs epochs at its default batch, evaluated at the end of
each epoch (no early stopping), and the real Criteo sample (../shared/data, 8,999 + 1,000 rows) is the
smallest point when present. Printed and written: the AUC after each epoch, the best epoch, and the best
AUC's gain over the first epoch's.

    python benchmarks/epochs_by_size.py [--model dlrm] [--rows 100000,500000,2000000] [--epochs 4]

Writes benchmarks/results/epochs_by_size_MODEL.json and .md.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "criteo-kaggle-head10k" / "train.txt"
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import atomic_write_json  # noqa: E402
from modelzoo.models import ESTIMATOR_MODELS  # noqa: E402


def per_epoch(model, data, epochs, seed, ckpt):
    cmd = [sys.executable, str(REPO / model / "train.py"), "--train_files", str(data), "--checkpoint", str(ckpt),
           "--epochs", str(epochs), "--seed", str(seed), "--log_steps", "1000000"]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads((ckpt / "result.json").read_text())
    aucs = [e["auc"] for e in result["evaluations"]]
    best = max(range(len(aucs)), key=aucs.__getitem__)
    return {"train_rows": result["train_rows"], "steps_per_epoch": result["evaluations"][0]["step"], "aucs": aucs,
            "best_epoch": best + 1, "gain_over_first_epoch": aucs[best] - aucs[0],
            "wall_seconds": round(time.time() - start, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dlrm", choices=ESTIMATOR_MODELS)
    p.add_argument("--rows", default="100000,500000,2000000", help="generated rows per point (10%% held out)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output", default=None)
    args = p.parse_args()
    out = Path(args.output or REPO / "benchmarks" / "results" / f"epochs_by_size_{args.model}")
    from modelzoo.synthetic import generate_criteo
    from modelzoo.system import cpu_info
    work = Path(tempfile.mkdtemp(prefix="epochs-by-size-"))
    points = []
    sources = ([("real Criteo sample", SAMPLE)] if SAMPLE.is_file() else []) + \
        [(f"generated {int(r):,} rows", int(r)) for r in args.rows.split(",")]
    for name, source in sources:
        data = source
        if isinstance(source, int):
            data = work / f"gen{source}.txt"
            generate_criteo(str(data), source, seed=args.seed)
        point = {"data": name, **per_epoch(args.model, data, args.epochs, args.seed, work / f"ckpt-{len(points)}")}
        points.append(point)
        print(f"{name}: {point['train_rows']:,} train rows, {point['steps_per_epoch']:,} steps an epoch: AUC by "
              f"epoch {', '.join(f'{a:.4f}' for a in point['aucs'])}; best epoch {point['best_epoch']} "
              f"({point['gain_over_first_epoch']:+.4f} over the first)", flush=True)
        summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "epochs": args.epochs,
                   "seed": args.seed, "machine": cpu_info(), "points": points}
        atomic_write_json(str(out) + ".json", summary)
    rows = ["| data | train rows | steps an epoch | AUC after each epoch | best epoch | best - first |",
            "|---|---:|---:|---|---:|---:|"]
    rows += [f"| {p['data']} | {p['train_rows']:,} | {p['steps_per_epoch']:,} | "
             f"{' / '.join(f'{a:.4f}' for a in p['aucs'])} | {p['best_epoch']} | {p['gain_over_first_epoch']:+.4f} |"
             for p in points]
    machine = summary["machine"]
    out.with_suffix(".md").write_text(
        f"# AUC by epoch as the data grows ({args.model})\n\nOne run each (seed {args.seed}), default batch, "
        f"evaluated at each epoch's end; {machine['model']} ({machine['cores']} cores), {summary['date']}. Written "
        f"by `python benchmarks/epochs_by_size.py --model {args.model} --rows {args.rows} --epochs {args.epochs}`."
        "\n\n" + "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

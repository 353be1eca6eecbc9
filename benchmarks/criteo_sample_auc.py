"""A model's AUC on the real Criteo sample, next to two logistic regressions on the same split: a hashed
one over every column, and one over the 13 integer columns alone (the dense-only floor the tests use).

The sample is ../shared/data/criteo-kaggle-head10k/train.txt (9,999 rows, never copied here);
train.py holds out its last 10% (1,000 rows), and the logistic regression gets the same split.
The model is run with several seeds and its median AUC reported.

    python benchmarks/criteo_sample_auc.py [--model dlrm] [--seeds 1,2,3] [--steps 100] [--batch_size 256]
    python benchmarks/criteo_sample_auc.py --model wide_and_deep --steps 0   # one epoch
    python benchmarks/criteo_sample_auc.py --model wide_and_deep --steps 0 --processes 2  # Horovod, same global batch
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "criteo-kaggle-head10k" / "train.txt"
sys.path.insert(0, str(REPO))

from modelzoo.models import ESTIMATOR_MODELS  # noqa: E402 (the registered models)
sys.path.insert(0, str(REPO / "data"))

from modelzoo.io_utils import atomic_write_json  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dlrm", choices=ESTIMATOR_MODELS)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--steps", type=int, default=100, help="0: one epoch")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--processes", type=int, default=1,
                   help="> 1: train with horovodrun -np N --hvd at the same global batch (one thread each)")
    p.add_argument("--extra", default="", help="more train.py flags, space-separated")
    p.add_argument("--output", default=None, help="default benchmarks/results/criteo_sample_auc_MODEL.json")
    args = p.parse_args()
    suffix = f"_hvd{args.processes}" if args.processes > 1 else ""
    args.output = args.output or str(REPO / "benchmarks" / "results" / f"criteo_sample_auc_{args.model}{suffix}.json")
    if not SAMPLE.is_file():
        raise SystemExit(f"the real Criteo sample is not at {SAMPLE}")

    from generate_criteo import dense_lr_auc, hashed_lr_auc
    from modelzoo.system import cpu_info
    lines = SAMPLE.read_text().splitlines(keepends=True)
    cut = len(lines) - round(len(lines) * 0.1)
    work = Path(tempfile.mkdtemp(prefix="criteo-auc-"))
    (work / "train.txt").write_text("".join(lines[:cut]))
    (work / "eval.txt").write_text("".join(lines[cut:]))
    lr_auc, ntr, nte = hashed_lr_auc(str(work / "train.txt"), str(work / "eval.txt"))
    print(f"hashed logistic regression: AUC {lr_auc:.4f} ({ntr} train rows, {nte} eval rows)", flush=True)
    dense_auc = dense_lr_auc(lines[:cut], lines[cut:])
    print(f"logistic regression on the 13 integer columns alone: AUC {dense_auc:.4f}", flush=True)

    aucs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        ckpt = work / f"{args.model}-{seed}"
        cmd = [sys.executable, str(REPO / args.model / "train.py"), "--train_files", str(SAMPLE), "--checkpoint",
               str(ckpt), "--steps", str(args.steps), "--global_batch_size", str(args.batch_size), "--seed",
               str(seed), "--log_steps", "1000000", *args.extra.split()]
        if args.processes > 1:
            n = str(args.processes)
            cmd = [str(Path(sys.executable).parent / "horovodrun"), "--gloo", "-np", n, "-H", f"localhost:{n}",
                   *cmd, "--hvd", "--intra", "1", "--inter", "1"]
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
        result = json.loads((ckpt / "result.json").read_text())
        aucs.append(result["auc"])
        print(f"{args.model} seed {seed}: AUC {result['auc']:.4f} logloss {result['logloss']:.4f}", flush=True)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "sample": str(SAMPLE.name), "train_rows": ntr,
               "eval_rows": nte, "hashed_lr_auc": lr_auc, "dense_lr_auc": dense_auc, "machine": cpu_info(),
               "model": args.model, "aucs": aucs,
               "median_auc": statistics.median(aucs), "processes": args.processes,
               "flags": f"--steps {args.steps} --batch_size {args.batch_size} {args.extra}".strip()}
    atomic_write_json(args.output, summary)
    print(f"{args.model} median AUC {summary['median_auc']:.4f} over seeds {args.seeds} "
          f"(hashed LR {lr_auc:.4f}); written {args.output}")


if __name__ == "__main__":
    main()

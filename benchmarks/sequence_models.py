"""DIN's target attention over the user's history against the same network with the history mean-pooled and
without the history, on the Taobao-shaped generator (modelzoo/synthetic_sequences.py: interests drift, the
click depends on the candidate's similarity to the RECENT history), over several seeds: held-out AUC (and
GAUC, per user, when the runner reports it: result.json's `gauc`).

    python benchmarks/sequence_models.py                       # 3 seeds x 3 poolings -> benchmarks/results/
    python benchmarks/sequence_models.py --seeds 1 --rows 40000 --output /tmp/seq.json
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
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import atomic_write_json, atomic_write_text  # noqa: E402

POOLINGS = ("attention", "mean", "none")


def run(data, pooling, seed, epochs, work, extra=()):
    """One din/train.py run; returns its result.json."""
    ckpt = Path(work) / f"{pooling}_{seed}"
    cmd = [sys.executable, str(REPO / "din" / "train.py"), "--train_files", str(data), "--epochs", str(epochs),
           "--history_pooling", pooling, "--seed", str(seed), "--checkpoint", str(ckpt), *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads((ckpt / "result.json").read_text())


def compare(seeds, rows, epochs, work, extra=()):
    """{seed: {pooling: {auc, gauc}}} plus the data's own hidden-model AUC per seed."""
    from modelzoo.synthetic_sequences import generate_taobao
    out = {}
    for seed in seeds:
        data = Path(work) / f"taobao_{seed}.txt"
        stats = generate_taobao(data, rows, seed)
        out[seed] = {"hidden_auc": stats["hidden_auc"]}
        for pooling in POOLINGS:
            result = run(data, pooling, seed, epochs, work, extra)
            out[seed][pooling] = {"auc": result["auc"], "gauc": result.get("gauc")}
            print(f"seed {seed} {pooling}: AUC {result['auc']:.4f}"
                  + (f" GAUC {result['gauc']:.4f}" if result.get("gauc") is not None else ""), flush=True)
        data.unlink()
    return out


def summary(runs):
    """Per pooling: the mean AUC (GAUC) over seeds, and the least per-seed margin of each ordered pair."""
    seeds = list(runs)
    out = {}
    for metric in ("auc", "gauc"):
        if any(runs[s][p][metric] is None for s in seeds for p in POOLINGS):
            continue
        out[metric] = {p: statistics.mean(runs[s][p][metric] for s in seeds) for p in POOLINGS}
        out[f"{metric}_least_margin"] = {
            f"{a}-{b}": min(runs[s][a][metric] - runs[s][b][metric] for s in seeds)
            for a, b in (("attention", "mean"), ("mean", "none"))}
    return out


def markdown(record):
    lines = [f"# DIN: attention vs mean-pooled vs no history ({record['date']})", "",
             f"Data: `modelzoo/synthetic_sequences.py` (SYNTHETIC, Taobao-shaped), {record['rows']:,} rows per seed "
             f"(last 10% held out), {record['epochs']} epochs, din/train.py's defaults"
             f"{' with ' + record['extra'] if record['extra'] else ''}, one run per seed and pooling."
             f" Machine: {record['cpu']}. Command: `{record['command']}`.", "",
             "| seed | hidden-model AUC | attention | mean | none |", "|---|---|---|---|---|"]
    for seed, r in record["runs"].items():
        cells = [f"{r[p]['auc']:.4f}" + (f" (GAUC {r[p]['gauc']:.4f})" if r[p]["gauc"] is not None else "")
                 for p in POOLINGS]
        lines.append(f"| {seed} | {r['hidden_auc']:.4f} | " + " | ".join(cells) + " |")
    s = record["summary"]
    for metric in ("auc", "gauc"):
        if metric in s:
            lines += ["", f"Mean {metric.upper()}: " + ", ".join(f"{p} {v:.4f}" for p, v in s[metric].items())
                      + "; least per-seed margin: " + ", ".join(
                          f"{k} {v:+.4f}" for k, v in s[f"{metric}_least_margin"].items())]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--extra", default="", help="more din/train.py flags, space-separated")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "sequence_models.json"))
    args = p.parse_args()
    from modelzoo.system import cpu_info
    with tempfile.TemporaryDirectory(prefix="seq-models-") as work:
        runs = compare([int(s) for s in args.seeds.split(",")], args.rows, args.epochs, work, args.extra.split())
    cpu = cpu_info()
    record = {"date": time.strftime("%Y-%m-%d"), "rows": args.rows, "epochs": args.epochs, "extra": args.extra,
              "cpu": f"{cpu['model']} {cpu['family_model']}, {cpu['cores']} cores ({' '.join(cpu['flags'])})",
              "command": "python benchmarks/sequence_models.py " + " ".join(sys.argv[1:]),
              "runs": runs, "summary": summary(runs)}
    atomic_write_json(args.output, record)
    atomic_write_text(str(Path(args.output).with_suffix(".md")), markdown(record))
    print(markdown(record))


def rewrite_markdown(path):
    """The .md beside a results .json, again (after a change of this script's table)."""
    record = json.loads(Path(path).read_text())
    atomic_write_text(str(Path(path).with_suffix(".md")), markdown(record))


if __name__ == "__main__":
    main()

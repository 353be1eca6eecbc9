"""Training throughput of a model: the --tf baseline against the default and each speed switch, in one run.

Runs MODEL/train.py once per configuration and repetition, interleaving the configurations (so the
noise of a shared machine falls on all of them alike), reads each run's result.json and reports the
median steady-state samples/s, min-max, and the ratio to the --tf baseline measured in the same run.
Data: synthetic Criteo-format rows with the Kaggle cardinalities (modelzoo/synthetic.py), because
throughput depends on the spread of ids over the tables.

    python benchmarks/bench_train.py                      # DLRM: 3 repetitions, 200 steps of 2048
    python benchmarks/bench_train.py --runs 1 --steps 60  # a quick look
    python benchmarks/bench_train.py --model wide_and_deep --configs tf,default,bf16,hvd1,hvd2

hvdN runs the default configuration under `horovodrun --gloo -np N` with --hvd and the same global
batch (each process one intra-op thread), so hvd1 against hvd2 is Horovod's scaling on this machine.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import write_report  # noqa: E402
from modelzoo.synthetic import generate_criteo  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402

# NAME_toggled: the default with that switch flipped (read from dlrm/train.py's defaults).
CONFIGS = {
    "tf": ["--tf"],
    "default": [],
    "smartstaged_toggled": None,
    "op_fusion_toggled": None,
    "emb_fusion_toggled": None,
    "xla_toggled": None,
    "bf16": ["--bf16"],
    "hvd1": ["--hvd"],
    "hvd2": ["--hvd"],
}


def model_defaults(model):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"{model}_train", REPO / model / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SPEC.speed_defaults


def configs(model, names):
    defaults = model_defaults(model)
    out = {}
    for name in names:
        if ":" in name:  # an ad-hoc configuration: "NAME:--flag --flag=value"
            label, flags = name.split(":", 1)
            out[label] = flags.split()
        elif name.endswith("_toggled"):
            switch = name[: -len("_toggled")]
            value = not defaults[switch]
            out[f"{switch}_{'on' if value else 'off'}"] = [f"--{switch}={str(value).lower()}"]
        else:
            out[name] = CONFIGS[name]
    return out


def run_once(model, name, data, flags, steps, batch_size, workdir):
    checkpoint = tempfile.mkdtemp(prefix="ckpt-", dir=workdir)
    cmd = [sys.executable, str(REPO / model / "train.py"), "--train_files", data, "--steps", str(steps),
           "--global_batch_size", str(batch_size), "--no_eval", "--checkpoint", checkpoint,
           "--log_steps", "1000000", *flags]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if name.startswith("hvd"):
        n = int(name[3:])
        cmd = [str(Path(sys.executable).parent / "horovodrun"), "--gloo", "-np", str(n), "-H", f"localhost:{n}",
               *cmd, "--intra", "1", "--inter", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    result = json.loads((Path(checkpoint) / "result.json").read_text())
    shutil.rmtree(checkpoint, ignore_errors=True)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dlrm", choices=("dlrm", "wide_and_deep"))
    p.add_argument("--runs", type=int, default=3, help="repetitions of each configuration")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=2048)
    p.add_argument("--rows", type=int, default=600_000, help="synthetic rows generated for the benchmark")
    p.add_argument("--configs", default=",".join(c for c in CONFIGS if not c.startswith("hvd")),
                   help=f"comma-separated, from {list(CONFIGS)}, or NAME:FLAGS for an ad-hoc one")
    p.add_argument("--output", default=None, help="writes OUTPUT.json and OUTPUT.md "
                   "(default benchmarks/results/MODEL)")
    args = p.parse_args()
    args.output = args.output or str(REPO / "benchmarks" / "results" / args.model)

    workdir = tempfile.mkdtemp(prefix=f"bench-{args.model}-")
    data = os.path.join(workdir, "train.txt")
    print(f"generating {args.rows:,} synthetic rows into {data}", flush=True)
    generate_criteo(data, args.rows, seed=1)
    chosen = configs(args.model, args.configs.split(","))
    samples = {name: [] for name in chosen}
    rss = {name: [] for name in chosen}
    for rep in range(args.runs):
        for name, flags in chosen.items():
            r = run_once(args.model, name, data, flags, args.steps, args.batch_size, workdir)
            samples[name].append(r["samples_per_sec"])
            rss[name].append(r["peak_rss_mb"])
            print(f"run {rep + 1}/{args.runs} {name:>16}: {r['samples_per_sec']:>9,.0f} samples/s "
                  f"peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)

    base = statistics.median(samples["tf"]) if "tf" in samples else None
    rows = []
    for name, flags in chosen.items():
        med = statistics.median(samples[name])
        shown = " ".join(flags) or "(defaults)"
        if name.startswith("hvd"):
            shown = f"horovodrun -np {name[3:]} ... --hvd --intra 1 --inter 1"
        rows.append({"config": name, "flags": shown, "median": med,
                     "min": min(samples[name]), "max": max(samples[name]), "runs": samples[name],
                     "ratio_to_tf": med / base if base else None, "peak_rss_mb": statistics.median(rss[name])})
    cpu = cpu_info()
    meta = {"model": args.model, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{cpu['model']}, {cpu['cores']} vCPU, "
            f"{' '.join(cpu['flags'])}", "python": platform.python_version(), "steps": args.steps,
            "batch_size": args.batch_size, "runs": args.runs, "data": f"{args.rows:,} synthetic Criteo rows"}
    import tensorflow as tf
    meta["tf_version"] = tf.__version__
    lines = [f"{args.model}, global batch {args.batch_size}, {args.steps} steps a run, median of {args.runs} interleaved runs; "
             f"{meta['machine']}; TF {meta['tf_version']}; {meta['data']}; {meta['date']}.", "",
             "| configuration | flags | samples/s (median) | min - max | vs --tf | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio_to_tf']:.2f}x" if r["ratio_to_tf"] else "n/a"
        lines.append(f"| {r['config']} | `{r['flags']}` | {r['median']:,.0f} | {r['min']:,.0f} - {r['max']:,.0f} "
                     f"| {ratio} | {r['peak_rss_mb']:,.0f} |")
    table = "\n".join(lines) + "\n"
    write_report(args.output, {"meta": meta, "results": rows}, table)


if __name__ == "__main__":
    main()

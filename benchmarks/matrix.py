"""The performance matrix: models x configurations, each repeated and interleaved, on generated data.

Every run is a separate process (`MODEL/train.py`, or through `distribute_k8s/launch.py` for the
allocator configurations) whose result.json gives the steady-state samples/s, the AUC on held-out
rows and the peak RSS. The configurations of a repetition run one after another, then the next
repetition starts, so the noise of a shared machine falls on all of them alike; each number is the
median of the runs, with its min and max, and its ratio to the `--tf` baseline of the same matrix.

    python benchmarks/matrix.py --quick    # DLRM: tf and default; gdmix_lr: default (< 5 min here)
    python benchmarks/matrix.py            # the full matrix and the batch-size sweep (make bench)
    python benchmarks/matrix.py --models dlrm --configs tf,default,bf16 --runs 5

Configurations (`--configs`): tf, default, bf16, ev, ev_filter, NAME_toggled (the model's default
of --NAME flipped: op_fusion, smartstaged, emb_fusion, xla), glibc and jemalloc (the default through
launch.py with MEM_USAGE_STRATEGY=close / jemalloc), onednn_pool (the default with oneDNN's BFC pool,
TF_ONEDNN_USE_SYSTEM_ALLOCATOR=0, which the runner turns off for --ev, large tables and --micro_batch),
hvdN (horovodrun -np N, same global batch), or
an ad-hoc NAME:--flag,--flag=value. gdmix_lr has no speed flags: only default, glibc and jemalloc
apply to it, and its number is the fixed effect's samples/s per L-BFGS pass over in-memory data.

Data: generated Criteo rows with the Kaggle cardinalities (modelzoo/synthetic.py; the last
--eval_rows held out) and generated MovieLens-shaped ratings for gdmix_lr, because throughput
depends on the spread of ids over the tables. Outputs (--output PREFIX): PREFIX.json (every run,
with the machine, CPU flags, versions and flags), PREFIX.md (the tables), and the plots
PREFIX_throughput.png, PREFIX_auc.png, PREFIX_rss.png and PREFIX_batch.png.
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
from modelzoo.models import ESTIMATOR_MODELS, OTHER_MODELS, load_spec  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402

TRAINERS = ESTIMATOR_MODELS  # the Estimator models (the shared train.py flags): modelzoo/models.py
MODELS = (*TRAINERS, *OTHER_MODELS)
ALLOCATORS = {"glibc": "close", "jemalloc": "jemalloc"}  # config -> launch.py's MEM_USAGE_STRATEGY
FIXED = {"tf": ["--tf"], "default": [], "bf16": ["--bf16"], "bf16_grappler": ["--bf16", "--bf16_mode", "grappler"],
         "ev": ["--ev"],
         "ev_filter": ["--ev", "--ev_filter", "counter"], "glibc": [], "jemalloc": [], "onednn_pool": []}
# configurations that are the default with an environment variable: oneDNN's BFC pool for large buffers, which
# TensorFlow uses with oneDNN on and the runner turns off (modelzoo/runner.set_environment; issue 27)
ENVIRONMENTS = {"onednn_pool": {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"}}
FULL_CONFIGS = ("tf", "default", "bf16", "ev", "ev_filter", "op_fusion_toggled", "smartstaged_toggled",
                "glibc", "jemalloc")
QUICK_CONFIGS = ("tf", "default")
GDMIX_CONFIGS = ("default", "glibc", "jemalloc")

# (steps, rows, eval rows, batch sizes of the sweep, gdmix_lr generated rows)
MODES = {
    # (the batch-size sweep is DLRM's: a W&D run costs about a minute of start-up, checkpoints and export)
    "full": dict(steps={"dlrm": 150, "wide_and_deep": 40, "dcn_v2": 150, "lr": 150, "fm": 150}, rows=600_000,
                 eval_rows=50_000,
                 sweep=(512, 1024, 2048, 4096), sweep_samples={"dlrm": 300_000},
                 gdmix_rows=1_000_000, configs=FULL_CONFIGS, models=MODELS),
    # (W&D is left out: each of its runs spends about a minute creating, checkpointing and exporting its
    # 0.9 GB of tables and their 1.8 GB of optimizer slots, whatever the number of steps)
    "quick": dict(steps={"dlrm": 40, "wide_and_deep": 10, "dcn_v2": 40, "lr": 40, "fm": 40}, rows=100_000,
                  eval_rows=20_000, sweep=(),
                  sweep_samples={}, gdmix_rows=100_000, configs=QUICK_CONFIGS, models=("dlrm", "gdmix_lr")),
}

# Issue 15's targets (a CPU with avx512_bf16, 2 cores, batch 2048, end to end from files): (what, key into
# the summary, comparison, value); gdmix_lr keeps issue 1's.
TARGETS = (
    ("DLRM --bf16 samples/s at batch 2048", ("dlrm", "bf16", "samples_per_sec"), ">=", 90_000),
    ("DLRM default samples/s at batch 2048", ("dlrm", "default", "samples_per_sec"), ">=", 65_000),
    ("DLRM default / --tf samples/s", ("dlrm", "default", "ratio_to_tf"), ">=", 1.71),
    ("W&D --bf16 samples/s at batch 2048", ("wide_and_deep", "bf16", "samples_per_sec"), ">=", 30_000),
    ("W&D --bf16 / --tf samples/s", ("wide_and_deep", "bf16", "ratio_to_tf"), ">=", 2.59),
    ("W&D default samples/s at batch 2048", ("wide_and_deep", "default", "samples_per_sec"), ">=", 20_000),
    ("gdmix_lr fixed effect samples/s per L-BFGS pass", ("gdmix_lr", "default", "samples_per_sec"), ">=", 300_000),
    ("DLRM --bf16 AUC - default AUC", ("dlrm", "bf16", "auc_vs_default"), "abs<=", 0.003),
    ("DLRM --bf16_mode grappler AUC - default AUC", ("dlrm", "bf16_grappler", "auc_vs_default"), "abs<=", 0.003),
    ("W&D --bf16 AUC - default AUC", ("wide_and_deep", "bf16", "auc_vs_default"), "abs<=", 0.003),
    ("W&D --bf16_mode grappler AUC - default AUC", ("wide_and_deep", "bf16_grappler", "auc_vs_default"),
     "abs<=", 0.003),
)


def model_speed_defaults(model):
    return load_spec(model).speed_defaults


def resolve_config(model, name):
    """(label, train.py flags, launcher strategy or None, horovod processes or 0) of one configuration."""
    if ":" in name:
        label, flags = name.split(":", 1)
        return label, [f for f in flags.split(",") if f], None, 0
    if name.endswith("_toggled"):
        switch = name[: -len("_toggled")]
        value = not model_speed_defaults(model)[switch]
        return f"{switch}_{'on' if value else 'off'}", [f"--{switch}={str(value).lower()}"], None, 0
    if name.startswith("hvd") and name[3:].isdigit():
        return name, ["--hvd"], None, int(name[3:])
    if name not in FIXED:
        raise SystemExit(f"--configs: unknown configuration {name!r}; expected one of {', '.join(FIXED)}, "
                         "NAME_toggled, hvdN or NAME:--flag,--flag")
    return name, FIXED[name], ALLOCATORS.get(name), 0


def split_configs(text):
    """--configs's comma-separated names; an ad-hoc NAME:--flag,--flag keeps its flags (a part that starts
    with -- belongs to the ad-hoc configuration before it)."""
    configs = []
    for part in (p for p in text.split(",") if p):
        if part.startswith("--") and configs and ":" in configs[-1]:
            configs[-1] += "," + part
        else:
            configs.append(part)
    return configs


def plan(models, configs, mode):
    """The runs of one repetition: [(model, label, flags, strategy, processes, batch size)]."""
    runs = []
    for model in models:
        if model == "gdmix_lr":
            names = [c for c in configs if c in GDMIX_CONFIGS] or ["default"]
            runs += [(model, c, [], ALLOCATORS.get(c), 0, None) for c in names]
            continue
        for name in configs:
            label, flags, strategy, processes = resolve_config(model, name)
            if "--bf16" in flags and not load_spec(model).has_mlp:
                continue  # (a model without an MLP refuses --bf16)
            runs.append((model, label, flags, strategy, processes, 2048))
        for batch in mode["sweep"] if model in mode["sweep_samples"] else ():
            if batch != 2048:
                runs.append((model, f"default_batch{batch}", [], None, 0, batch))
    return runs


def command(model, flags, strategy, processes, batch, steps, data, checkpoint, gdmix_rows):
    """The command line of one run; its result.json appears in `checkpoint`."""
    if model == "gdmix_lr":
        script, args = "gdmix_lr/train.py", ["--output_dir", checkpoint, "--generate_rows", str(gdmix_rows),
                                             "--seed", "1"]
    else:
        script, args = f"{model}/train.py", [
            "--train_files", data["train"], "--eval_files", data["eval"], "--steps", str(steps),
            "--global_batch_size", str(batch), "--checkpoint", checkpoint, "--log_steps", "1000000",
            "--seed", "1", *flags]
    if strategy:
        cmd = [sys.executable, str(REPO / "distribute_k8s" / "launch.py"), "--script", script,
               "--mem_usage_strategy", strategy, "--", *args]
    else:
        cmd = [sys.executable, str(REPO / script), *args]
    if processes:
        cmd = [str(Path(sys.executable).parent / "horovodrun"), "--gloo", "-np", str(processes),
               "-H", f"localhost:{processes}", *cmd, "--intra", "1", "--inter", "1"]
    return cmd


def run_once(model, flags, strategy, processes, batch, steps, data, workdir, gdmix_rows, environment=None):
    out = tempfile.mkdtemp(prefix="run-", dir=workdir)
    cmd = command(model, flags, strategy, processes, batch, steps, data, out, gdmix_rows)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(environment or {}))
    env.pop("TF_CONFIG", None)
    env.pop("MALLOC_CONF", None)
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-1500:]}{proc.stderr[-2500:]}")
    result = json.loads((Path(out) / "result.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    if model == "gdmix_lr":
        fixed = [c for c in result["coordinates"] if c["type"] == "fixed_effect"][0]
        speed = fixed["samples_per_second_per_pass"]
    else:
        speed = result["samples_per_sec"]
    return {"samples_per_sec": speed, "auc": result.get("auc"), "peak_rss_mb": result.get("peak_rss_mb"),
            "wall_seconds": round(time.time() - start, 1), "onednn": onednn_state(env)}


SPREAD_LIMIT = 0.05  # a configuration whose (max - min) / median is over this is flagged in the tables


def onednn_state(env):
    """What decides whether a run's kernels are oneDNN's: TF_ENABLE_ONEDNN_OPTS as the run saw it, whether
    TensorFlow turned oneDNN on under it (IsMklEnabled, in a process with that environment), and the CPU's
    BF16 flags. Asked once per environment value (a TensorFlow start-up costs seconds)."""
    value = env.get("TF_ENABLE_ONEDNN_OPTS")
    if value not in _ONEDNN_CACHE:
        probe = subprocess.run([sys.executable, "-c", "from tensorflow.python.util import _pywrap_util_port as p; "
                                "print(int(p.IsMklEnabled()))"], capture_output=True, text=True, env=env)
        enabled = probe.stdout.strip().endswith("1") if probe.returncode == 0 else None
        cpu = cpu_info()
        _ONEDNN_CACHE[value] = {"TF_ENABLE_ONEDNN_OPTS": value if value is not None else "unset (TF's default)",
                                "enabled": enabled, "cpu_bf16": cpu["bf16_hardware"]}
    return _ONEDNN_CACHE[value]


_ONEDNN_CACHE = {}


def spread(speeds):
    """(max - min) / median of a configuration's runs: its +-% is half of it."""
    median = statistics.median(speeds)
    return (max(speeds) - min(speeds)) / median if median else None


def summarize(runs_by_key, flags_by_key):
    """{(model, label): [run records]} -> {model: {label: medians, min-max, ratios}}."""
    summary = {}
    for (model, label), records in runs_by_key.items():
        speeds = [r["samples_per_sec"] for r in records]
        aucs = [r["auc"] for r in records if r["auc"] is not None]
        rss = [r["peak_rss_mb"] for r in records if r["peak_rss_mb"] is not None]
        summary.setdefault(model, {})[label] = {
            "flags": flags_by_key[(model, label)], "runs": len(records), "samples_per_sec": statistics.median(speeds),
            "min": min(speeds), "max": max(speeds), "spread": spread(speeds),
            "onednn": records[-1].get("onednn"), "auc": statistics.median(aucs) if aucs else None,
            "peak_rss_mb": statistics.median(rss) if rss else None, "per_run": records}
    for configs in summary.values():
        base = configs.get("tf", {}).get("samples_per_sec")
        default = configs.get("default", {})
        for s in configs.values():
            s["ratio_to_tf"] = s["samples_per_sec"] / base if base else None
            s["ratio_to_default"] = s["samples_per_sec"] / default["samples_per_sec"] if default else None
            s["auc_vs_default"] = (s["auc"] - default["auc"]) if s["auc"] is not None and default.get("auc") \
                is not None else None
    return summary


def check_targets(summary):
    out = []
    for what, (model, label, key), op, target in TARGETS:
        value = summary.get(model, {}).get(label, {}).get(key)
        if value is None:
            out.append({"target": what, "goal": f"{op} {target}", "value": None, "met": None})
            continue
        met = abs(value) <= target if op == "abs<=" else value >= target
        out.append({"target": what, "goal": f"{op} {target}", "value": value, "met": met})
    return out


def shown_flags(model, label, flags, strategy, processes):
    if strategy:
        return f"launch.py MEM_USAGE_STRATEGY={strategy}"
    if processes:
        return f"horovodrun -np {processes} ... --hvd --intra 1 --inter 1"
    if label.startswith("default_batch"):
        return f"--global_batch_size {label[len('default_batch'):]}"
    return " ".join(flags) or "(defaults)"


def fmt(value, spec, empty="n/a"):
    return empty if value is None else format(value, spec)


def markdown(doc):
    meta, summary = doc["meta"], doc["summary"]
    lines = [f"{meta['mode']} matrix, {meta['date']}: {meta['machine']}; Python {meta['python']}, TF "
             f"{meta['tf_version']}; {meta['runs']} interleaved runs of each configuration (median, min - max); "
             f"{meta['data']}.", ""]
    for model, configs in summary.items():
        unit = "fixed-effect samples/s per L-BFGS pass" if model == "gdmix_lr" else \
            f"samples/s at global batch 2048, {meta['steps'].get(model)} steps a run"
        lines += [f"**{model}** ({unit})", "",
                  "| configuration | flags | samples/s | min - max | spread | oneDNN | vs --tf | vs default | AUC "
                  "| peak RSS MB |",
                  "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
        for label, s in configs.items():
            if label.startswith("default_batch"):
                continue
            lines.append(f"| {label} | `{s['flags']}` | {s['samples_per_sec']:,.0f} | {s['min']:,.0f} - {s['max']:,.0f}"
                         f" | {spread_words(s.get('spread'))} | {onednn_words(s.get('onednn'))}"
                         f" | {fmt(s['ratio_to_tf'], '.2f')}{'x' * (s['ratio_to_tf'] is not None)}"
                         f" | {fmt(s['ratio_to_default'], '.2f')}{'x' * (s['ratio_to_default'] is not None)}"
                         f" | {fmt(s['auc'], '.4f')} | {fmt(s['peak_rss_mb'], ',.0f')} |")
        lines.append("")
    sweep = batch_sweep(summary)
    if sweep:
        lines += ["**samples/s vs global batch size** (default configuration; median)", "",
                  "| model | " + " | ".join(str(b) for b in sorted({b for s in sweep.values() for b in s})) + " |",
                  "|---|" + "---:|" * len({b for s in sweep.values() for b in s})]
        sizes = sorted({b for s in sweep.values() for b in s})
        for model, points in sweep.items():
            lines.append(f"| {model} | " + " | ".join(fmt(points.get(b), ',.0f', '') for b in sizes) + " |")
        lines.append("")
    lines += ["**targets**", "", "| target | goal | measured | met |", "|---|---|---:|---|"]
    for t in doc["targets"]:
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "**no**")
        value = t["value"]
        shown = fmt(value, ",.0f" if value is not None and abs(value) >= 100 else "+.4f" if "AUC" in t["target"]
                    else ".2f")
        lines.append(f"| {t['target']} | {t['goal']} | {shown} | {met} |")
    return "\n".join(lines) + "\n"


def spread_words(value):
    """The spread as +-% of the median ((max - min) / 2), flagged when over SPREAD_LIMIT."""
    if value is None:
        return "n/a"
    words = f"±{value * 50:.1f}%"
    return f"**{words}** (over ±{SPREAD_LIMIT * 100:.0f}%)" if value / 2 > SPREAD_LIMIT else words


def onednn_words(state):
    if not state:
        return "n/a"
    on = {True: "on", False: "off", None: "unknown"}[state.get("enabled")]
    bf16 = ", ".join(state.get("cpu_bf16") or []) or "none, so --bf16 is emulated"
    return f"{on} (TF_ENABLE_ONEDNN_OPTS {state['TF_ENABLE_ONEDNN_OPTS']}; BF16 CPU flags: {bf16})"


def batch_sweep(summary):
    """{model: {batch: median samples/s}} from the default runs at each batch size (2048: the default)."""
    out = {}
    for model, configs in summary.items():
        points = {int(label[len("default_batch"):]): s["samples_per_sec"] for label, s in configs.items()
                  if label.startswith("default_batch")}
        if points and "default" in configs:
            points[2048] = configs["default"]["samples_per_sec"]
            out[model] = dict(sorted(points.items()))
    return out


def plot(doc, prefix):
    """The four PNGs; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    summary = {m: {k: v for k, v in c.items() if not k.startswith("default_batch")} for m, c in doc["summary"].items()}
    paths = []
    charts = (("throughput", "samples/s (median, min-max bars)", "samples_per_sec", True),
              ("auc", "AUC on held-out rows (median)", "auc", False),
              ("rss", "peak RSS MB (median)", "peak_rss_mb", False))
    for name, title, key, bars in charts:
        fig, axes = plt.subplots(1, len(summary), figsize=(5 * len(summary), 4), squeeze=False)
        for ax, (model, configs) in zip(axes[0], summary.items()):
            labels = [label for label, s in configs.items() if s.get(key) is not None]
            values = [configs[label][key] for label in labels]
            errors = None
            if bars and labels:
                errors = [[v - configs[label]["min"] for label, v in zip(labels, values)],
                          [configs[label]["max"] - v for label, v in zip(labels, values)]]
            ax.bar(range(len(labels)), values, yerr=errors, capsize=3, color="tab:blue")
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
            ax.set_title(model, fontsize=10)
            if key == "auc" and values:
                ax.set_ylim(min(values) - 0.01, max(values) + 0.005)
        fig.suptitle(f"{title}: {doc['meta']['machine']}", fontsize=9)
        fig.tight_layout()
        paths.append(f"{prefix}_{name}.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    sweep = batch_sweep(doc["summary"])
    if sweep:
        fig, ax = plt.subplots(figsize=(5, 4))
        for model, points in sweep.items():
            ax.plot(list(points), list(points.values()), marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("global batch size")
        ax.set_ylabel("samples/s (median)")
        ax.legend()
        ax.set_title("default configuration", fontsize=10)
        fig.tight_layout()
        paths.append(f"{prefix}_batch.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def update_readme(path, name, table):
    """Puts the table between the README's `<!-- matrix:NAME -->` and `<!-- /matrix:NAME -->` markers
    (NAME: the output's file name), written atomically."""
    from modelzoo.io_utils import atomic_write_text
    start, end = f"<!-- matrix:{name} -->", f"<!-- /matrix:{name} -->"
    text = Path(path).read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path}: no {start} ... {end} section to put the table in")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{start}\n{table}{end}{tail}")


def generate_data(workdir, rows, eval_rows):
    """Generated Criteo rows, split into a training file and a held-out file."""
    from modelzoo.synthetic import generate_criteo
    whole = os.path.join(workdir, "all.txt")
    generate_criteo(whole, rows + eval_rows, seed=1)
    paths = {"train": os.path.join(workdir, "train.txt"), "eval": os.path.join(workdir, "eval.txt")}
    with open(whole, encoding="utf-8") as src, open(paths["train"], "w", encoding="utf-8") as train, \
            open(paths["eval"], "w", encoding="utf-8") as held_out:
        for i, line in enumerate(src):
            (train if i < rows else held_out).write(line)
    os.remove(whole)
    return paths


def machine_meta():
    import numpy
    import tensorflow as tf
    cpu = cpu_info()
    from distribute_k8s.launch import find_jemalloc
    return {"machine": f"{cpu['model']}, {cpu['cores']} vCPU, {' '.join(cpu['flags'])}",
            "cpu_flags": cpu["flags"], "bf16_hardware": cpu["bf16_hardware"], "python": platform.python_version(),
            "tf_version": tf.__version__, "numpy_version": numpy.__version__,
            "glibc": " ".join(platform.libc_ver()), "jemalloc": find_jemalloc(),
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the quick matrix (under 5 minutes here)")
    p.add_argument("--models", default=None, help=f"comma-separated, from {', '.join(MODELS)} (default: the "
                   "mode's: all, or DLRM and gdmix_lr with --quick)")
    p.add_argument("--configs", default=None, help="comma-separated (see above); default: the mode's")
    p.add_argument("--runs", type=int, default=3, help="repetitions of each configuration (>= 3 for a report)")
    p.add_argument("--steps", type=int, default=None, help="steps of every Estimator run (default: the mode's)")
    p.add_argument("--rows", type=int, default=None, help="generated Criteo training rows (default: the mode's)")
    p.add_argument("--eval_rows", type=int, default=None, help="held-out generated rows for the AUC")
    p.add_argument("--gdmix_rows", type=int, default=None, help="generated gdmix_lr ratings")
    p.add_argument("--output", default=None, help="PREFIX of the outputs (default benchmarks/results/matrix, "
                   "or matrix_quick)")
    p.add_argument("--readme", default=None, help="a README with <!-- matrix:NAME --> ... <!-- /matrix:NAME --> "
                   "(NAME: the output's file name) to put the table in (default: benchmarks/README.md for a "
                   "full matrix with the default output)")
    args = p.parse_args(argv)
    if args.readme and not Path(args.readme).is_file():  # found now, not after an hour of runs
        p.error(f"--readme {args.readme}: no such file")
    mode = dict(MODES["quick" if args.quick else "full"])
    models = [m for m in args.models.split(",") if m] if args.models else list(mode["models"])
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; expected some of {', '.join(MODELS)}")
    configs = split_configs(args.configs) if args.configs else list(mode["configs"])
    steps = {m: args.steps or mode["steps"].get(m) for m in TRAINERS}
    rows = args.rows or mode["rows"]
    eval_rows = args.eval_rows or mode["eval_rows"]
    gdmix_rows = args.gdmix_rows or mode["gdmix_rows"]
    default_output = args.output is None
    prefix = args.output or str(REPO / "benchmarks" / "results" / ("matrix_quick" if args.quick else "matrix"))
    readme = args.readme or (str(REPO / "benchmarks" / "README.md") if default_output and not args.quick
                             and args.configs is None and args.models is None else None)

    started = time.time()
    workdir = tempfile.mkdtemp(prefix="matrix-")
    runs = plan(models, configs, mode)
    data = None
    if any(m in TRAINERS for m in models):
        print(f"generating {rows:,} + {eval_rows:,} held-out synthetic Criteo rows", flush=True)
        data = generate_data(workdir, rows, eval_rows)
    by_key, flags_by_key = {}, {}
    try:
        for rep in range(args.runs):
            for model, label, flags, strategy, processes, batch in runs:
                if label.startswith("default_batch"):
                    run_steps = max(20, mode["sweep_samples"][model] // batch)
                else:
                    run_steps = steps.get(model)
                r = run_once(model, flags, strategy, processes, batch, run_steps, data, workdir, gdmix_rows,
                             ENVIRONMENTS.get(label))
                r.update(run=rep + 1, steps=run_steps, batch_size=batch, command_flags=flags,
                         launcher_strategy=strategy)
                by_key.setdefault((model, label), []).append(r)
                flags_by_key[(model, label)] = shown_flags(model, label, flags, strategy, processes)
                print(f"run {rep + 1}/{args.runs} {model:>13} {label:>20}: {r['samples_per_sec']:>11,.0f} samples/s"
                      f"  AUC {fmt(r['auc'], '.4f')}  peak RSS {fmt(r['peak_rss_mb'], ',.0f')} MB"
                      f"  ({r['wall_seconds']:.0f} s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(by_key, flags_by_key)
    meta = {"mode": "quick" if args.quick else "full", "date": time.strftime("%Y-%m-%d %H:%M"), "runs": args.runs,
            "steps": steps, "batch_size": 2048, "wall_minutes": round((time.time() - started) / 60, 1),
            "data": (f"{rows:,} generated Criteo rows (Kaggle cardinalities), {eval_rows:,} held out for the AUC"
                     if data else "") + (f"; gdmix_lr: {gdmix_rows:,} generated ratings"
                                         if "gdmix_lr" in models else ""),
            **machine_meta()}
    doc = {"meta": meta, "summary": summary, "targets": check_targets(summary)}
    table = markdown(doc)
    write_report(prefix, doc, table)
    for path in plot(doc, prefix):
        print(f"wrote {path}")
    if readme:
        update_readme(readme, Path(prefix).name, table)
        print(f"updated {readme}")
    print(f"matrix took {meta['wall_minutes']} minutes")


if __name__ == "__main__":
    main()

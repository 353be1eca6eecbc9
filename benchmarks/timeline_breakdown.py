"""Where one training step's time goes, from Chrome traces written by `train.py --timeline N`.

For each trace: the step's wall time, the time no op ran (framework overhead: session dispatch,
thread hand-offs), and op time grouped by op type, by top-level name scope and by category (input
wait, feature transform in the step, embedding lookups, MLPs and interaction, optimizer, other).
Op times on different threads overlap, so their sum can exceed the wall time. The input share is
the time the step waited in IteratorGetNext over its wall time. With several traces, the median.

    python dlrm/train.py --train_files DATA --steps 120 --timeline 10 --no_eval --checkpoint /tmp/tl
    python benchmarks/timeline_breakdown.py /tmp/tl/timeline/timeline-*.json
    python benchmarks/timeline_breakdown.py --run dlrm --flags=--tf --output benchmarks/results/profile_dlrm_tf
"""
import argparse
import collections
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.models import ESTIMATOR_MODELS  # noqa: E402 (the registered models)

INPUT_OPS = ("IteratorGetNext", "IteratorGetNextSync", "IteratorGetNextAsOptional")
TRANSFORM_OPS = ("StringToHashBucketFast", "StringToHashBucket", "StringToHashBucketStrong", "Log1p", "DecodeCSV",
                 "StringJoin", "LookupTableFindV2", "NotEqual", "Where", "SparseFillEmptyRows",
                 "SparseReshape", "GatherNd")
OPTIMIZER_SCOPES = ("LazyAdam", "Adam", "Ftrl", "Adagrad", "AdagradDecay", "GradientDescent", "AdamAsync")
EMBEDDING_SCOPES = ("embedding", "linear", "stack", "input_layer")
CATEGORIES = ("input wait (IteratorGetNext)", "feature transform in the step (hashing, normalization)",
              "embedding lookups (forward and gradient)", "MLPs and interaction (forward and backward)",
              "optimizer (dense and sparse updates)", "other ops")


def category(op, name):
    parts = name.split("/")
    backward = parts[0] == "gradients" and len(parts) > 1
    scope = parts[1] if backward else parts[0]
    if op in INPUT_OPS:
        return CATEGORIES[0]
    if op in TRANSFORM_OPS and not backward:
        return CATEGORIES[1]
    if scope in OPTIMIZER_SCOPES or op.startswith(("ResourceApply", "ResourceSparseApply")):
        return CATEGORIES[4]
    if scope.split("_grad")[0] in EMBEDDING_SCOPES or "embedding" in scope:
        return CATEGORIES[2]
    if backward or op in ("MatMul", "_FusedMatMul", "BatchMatMulV2", "GatherV2", "ConcatV2", "Relu", "BiasAdd"):
        return CATEGORIES[3]
    return CATEGORIES[5]


def breakdown(trace):
    """(wall ms, op time by op type, by scope) of one trace, op times in microseconds."""
    wall, by_op, by_scope, _, _ = analyze(trace)
    return wall, by_op, by_scope


def analyze(trace):
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    if not events:
        raise SystemExit("no op events in this trace")
    start = min(e["ts"] for e in events)
    end = max(e["ts"] + e["dur"] for e in events)
    by_op, by_scope, by_category = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        args = e.get("args", {})
        op, name = args.get("op", e["name"]), args.get("name", e["name"])
        by_op[op] += e["dur"]
        parts = name.split("/")
        scope = "/".join(parts[:2]) if parts[0] == "gradients" and len(parts) > 1 else parts[0]
        by_scope[scope] += e["dur"]
        by_category[category(op, name)] += e["dur"]
    busy, cursor = 0, start  # the union of the ops' intervals: when at least one op ran
    for e in sorted(events, key=lambda e: e["ts"]):
        stop = e["ts"] + e["dur"]
        if stop > cursor:
            busy += stop - max(cursor, e["ts"])
            cursor = stop
    idle = (end - start) - busy
    return (end - start) / 1000, by_op, by_scope, by_category, idle / 1000


def summarize(paths):
    """Medians over the traces: wall, idle, input share and each category's op time (ms)."""
    per_trace = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            wall, by_op, _, by_category, idle = analyze(json.load(f))
        per_trace.append({"trace": os.path.basename(path), "wall_ms": wall, "idle_ms": idle,
                          "input_wait_ms": by_category[CATEGORIES[0]] / 1000,
                          "categories_ms": {c: by_category[c] / 1000 for c in CATEGORIES},
                          "top_ops_ms": {op: t / 1000 for op, t in by_op.most_common(8)}})
    med = statistics.median
    return {"traces": len(per_trace), "wall_ms": med(t["wall_ms"] for t in per_trace),
            "idle_ms": med(t["idle_ms"] for t in per_trace),
            "input_share": med(t["input_wait_ms"] / t["wall_ms"] for t in per_trace),
            "input_share_max": max(t["input_wait_ms"] / t["wall_ms"] for t in per_trace),
            "categories_ms": {c: med(t["categories_ms"][c] for t in per_trace) for c in CATEGORIES},
            "per_trace": per_trace}


def run_and_trace(model, flags, steps, every, rows, workdir):
    """Trains MODEL on generated data with --timeline EVERY; returns the traces after the warm-up."""
    sys.path.insert(0, str(REPO))
    from modelzoo.synthetic import generate_criteo
    data = os.path.join(workdir, "train.txt")
    if not os.path.exists(data):
        generate_criteo(data, rows, seed=1)
    checkpoint = tempfile.mkdtemp(prefix="tl-", dir=workdir)
    cmd = [sys.executable, str(REPO / model / "train.py"), "--train_files", data, "--steps", str(steps),
           "--batch_size", "2048", "--no_eval", "--checkpoint", checkpoint, "--log_steps", "1000000",
           "--timeline", str(every), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    traces = sorted(glob.glob(os.path.join(checkpoint, "timeline", "timeline-*.json")),
                    key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))
    return [p for p in traces if int(p.rsplit("-", 1)[1].split(".")[0]) >= steps // 3]  # past the warm-up


def print_summary(title, s):
    print(f"\n{title}: {s['traces']} traces; step wall {s['wall_ms']:.1f} ms (median), no op running "
          f"{s['idle_ms']:.1f} ms; input wait {100 * s['input_share']:.1f}% of the step (max "
          f"{100 * s['input_share_max']:.1f}%)")
    for name, ms in s["categories_ms"].items():
        print(f"{ms:9.1f} ms  {name}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="*", help="trace files (timeline-STEP.json)")
    p.add_argument("--run", choices=ESTIMATOR_MODELS, help="train this model and trace it instead")
    p.add_argument("--flags", default="", help="train.py flags for --run, space-separated (e.g. --flags=--tf)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--every", type=int, default=10, help="a trace every N steps")
    p.add_argument("--rows", type=int, default=400_000, help="generated Criteo rows for --run")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--output", default=None, help="write OUTPUT.json")
    args = p.parse_args()
    if args.run:
        workdir = tempfile.mkdtemp(prefix="timeline-")
        paths = run_and_trace(args.run, args.flags.split(), args.steps, args.every, args.rows, workdir)
    else:
        paths = args.traces
    if not paths:
        raise SystemExit("no traces: give timeline-*.json files or --run MODEL")
    if len(paths) == 1:
        with open(paths[0], encoding="utf-8") as f:
            wall, by_op, by_scope = breakdown(json.load(f))
        print(f"step wall time {wall:.1f} ms; op time {sum(by_op.values()) / 1000:.1f} ms")
        for title, counter in (("by op type", by_op), ("by name scope", by_scope)):
            print(f"\n{title}:")
            for name, micros in counter.most_common(args.top):
                print(f"{micros / 1000:9.1f} ms  {name}")
    s = summarize(paths)
    print_summary(f"{args.run or 'traces'} {args.flags}".strip(), s)
    if args.output:
        sys.path.insert(0, str(REPO))
        from modelzoo.io_utils import atomic_write_json
        atomic_write_json(args.output + ".json", {"model": args.run, "flags": args.flags, **s})


if __name__ == "__main__":
    main()

"""Which ops of a model's training step run in bfloat16 under `--bf16`, for both `--bf16_mode`s.

`casts`: the graph itself holds the bfloat16 ops (the MLPs inside the runner's precision scope), so they are
counted in the training graph the Estimator saved. `grappler`: the graph is float32 and Grappler's
`auto_mixed_precision_onednn_bfloat16` pass rewrites it when the session starts, so the saved float32
graph is run through that pass here (the same rewriter option the runner sets) and the rewritten graph
is counted. Either way the count is of op types whose dtype attribute is bfloat16, split into the forward
pass, the gradients and the optimizer, next to the float32 op types of the same parts.

    python benchmarks/bf16_ops.py --model dlrm [--output benchmarks/results/bf16_ops_dlrm]
"""
import argparse
import collections
import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import atomic_write_json  # noqa: E402

DTYPE_ATTRS = ("T", "dtype", "DstT", "Tparams", "TI")
OPTIMIZER_SCOPES = ("LazyAdam", "Adam", "Ftrl", "Adagrad", "AdagradDecay", "GradientDescent", "AdamAsync",
                    "AdamAsyncOptimizer", "train")


def train_graph(model, flags, workdir):
    """Train one step and return the path of the checkpoint's MetaGraph (the training graph)."""
    ckpt = os.path.join(workdir, "ckpt")
    cmd = [sys.executable, str(REPO / model / "train.py"), "--data_location", os.path.join(workdir, "data"),
           "--generate_rows", "20000", "--steps", "1", "--no_eval", "--checkpoint", ckpt, *flags]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metas = sorted(glob.glob(os.path.join(ckpt, "model.ckpt-*.meta")))
    if not metas:
        raise SystemExit(f"{model}: no model.ckpt-*.meta in {ckpt} after training")
    return metas[-1]


def rewrite_with_grappler(meta_graph):
    """The graph after Grappler's oneDNN bfloat16 pass alone (what `--bf16_mode grappler` runs)."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.grappler import tf_optimizer
    config = config_pb2.ConfigProto()
    rewriter = config.graph_options.rewrite_options
    rewriter.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    rewriter.optimizers.append("auto_mixed_precision_onednn_bfloat16")
    rewriter.min_graph_nodes = -1
    rewriter.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    if "train_op" not in meta_graph.collection_def:
        raise SystemExit("the saved MetaGraph has no train_op collection to fetch")
    return tf_optimizer.OptimizeGraph(config, meta_graph)


def part_of(name):
    parts = name.split("/")
    if parts[0] == "gradients" or "gradients" in parts[:2]:
        return "backward"
    if any(p in OPTIMIZER_SCOPES or p.startswith("update_") for p in parts):
        return "optimizer"
    return "forward"


def count_ops(graph_def):
    """{part: {"bfloat16": {op: n}, "float32": {op: n}}} over the compute ops (not constants, reads, casts)."""
    from tensorflow.core.framework import types_pb2
    skip = {"Const", "Identity", "ReadVariableOp", "VarHandleOp", "NoOp", "Placeholder", "Shape", "Reshape",
            "StopGradient", "Cast"}
    out = {p: {"bfloat16": collections.Counter(), "float32": collections.Counter()}
           for p in ("forward", "backward", "optimizer")}
    casts = collections.Counter()
    for node in graph_def.node:
        if node.op == "Cast":
            dst = node.attr["DstT"].type
            casts["to bfloat16" if dst == types_pb2.DT_BFLOAT16 else "to float32" if dst == types_pb2.DT_FLOAT
                  else "other"] += 1
            continue
        if node.op in skip:
            continue
        dtypes = {node.attr[a].type for a in DTYPE_ATTRS if a in node.attr}
        kind = "bfloat16" if types_pb2.DT_BFLOAT16 in dtypes else "float32" if types_pb2.DT_FLOAT in dtypes else None
        if kind:
            out[part_of(node.name)][kind][node.op] += 1
    return {p: {k: dict(c.most_common()) for k, c in v.items()} for p, v in out.items()}, dict(casts)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dlrm")
    p.add_argument("--output", default=None, help="PREFIX: writes PREFIX.json (default: print only)")
    args = p.parse_args()
    from tensorflow.core.protobuf import meta_graph_pb2
    result = {"model": args.model, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, flags in (("casts", ["--bf16"]), ("grappler", ["--bf16", "--bf16_mode", "grappler"])):
            meta = meta_graph_pb2.MetaGraphDef()
            with open(train_graph(args.model, flags, os.path.join(tmp, mode)), "rb") as f:
                meta.ParseFromString(f.read())
            graph = meta.graph_def if mode == "casts" else rewrite_with_grappler(meta)
            parts, casts = count_ops(graph)
            result["modes"][mode] = {"ops": parts, "casts": casts}
            print(f"\n{args.model} --bf16_mode {mode}: casts {casts}")
            for part, kinds in parts.items():
                for kind in ("bfloat16", "float32"):
                    ops = ", ".join(f"{op} x{n}" for op, n in kinds[kind].items()) or "-"
                    print(f"  {part:9s} {kind:8s}: {ops}")
    if args.output:
        atomic_write_json(args.output + ".json", result)
        print(f"\nwritten: {args.output}.json")


if __name__ == "__main__":
    main()

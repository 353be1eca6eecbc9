"""Size of an incremental (delta) checkpoint against a full checkpoint: DLRM with --ev --incremental_ckpt.

Trains DLRM --ev for --steps steps (full checkpoint at the end), then resumes it and writes a delta every
--delta_steps steps (the hook's step trigger, instead of the seconds of --incremental_ckpt), --deltas
times, and compares each delta file with the full checkpoint's data and index files. Both runs are in
this process (modelzoo.runner.main), on synthetic Criteo-format rows (modelzoo/synthetic.py: the Kaggle
cardinalities and power-law id frequencies) that are never read twice, so each delta holds the rows of
--delta_steps fresh batches, as in a long training.

    python benchmarks/incremental_ckpt_size.py                      # 200 steps of 512, deltas every 10 steps
    python benchmarks/incremental_ckpt_size.py --batch_size 2048 --delta_steps 50
"""
import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import atomic_write_json  # noqa: E402
from modelzoo.models import load_spec  # noqa: E402
from modelzoo.synthetic import generate_criteo  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402


def full_checkpoint_bytes(checkpoint, step):
    """The state of a full checkpoint (data + index files) and its meta graph, in bytes."""
    files = list(Path(checkpoint).glob(f"model.ckpt-{step}.*"))
    state = sum(f.stat().st_size for f in files if not f.name.endswith(".meta"))
    meta = sum(f.stat().st_size for f in files if f.name.endswith(".meta"))
    return state, meta


def full_checkpoint_parts(checkpoint, step):
    """Bytes of the tables' entries (keys and values) and of the dense variables in a full checkpoint."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(Path(checkpoint) / f"model.ckpt-{step}"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    tables = dense = 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * dtypes[name].size
        if name.endswith("-keys") or name.endswith("-values"):
            tables += nbytes
        else:
            dense += nbytes
    return {"table_bytes": tables, "dense_bytes": dense}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="steps before the full checkpoint (200)")
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--delta_steps", type=int, default=10, help="steps of changes in each delta (10)")
    p.add_argument("--deltas", type=int, default=3, help="deltas measured (3)")
    p.add_argument("--extra", default="", help="more DLRM flags, e.g. '--ev_filter counter'")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "incremental_ckpt_size.json"))
    args = p.parse_args()

    from modelzoo import incremental_ckpt as inc
    from modelzoo.runner import main as run_main
    dlrm_spec = load_spec("dlrm")

    measured = []

    class MeasuredHook(inc.IncrementalCheckpointHook):
        """The runner's hook with a step trigger; keeps each delta's size and content summary."""

        def __init__(self, checkpoint_dir, every_secs, last_step=None, **kwargs):
            super().__init__(checkpoint_dir, every_secs=0, last_step=last_step, every_steps=args.delta_steps)

        def save(self, session):
            path = super().save(session)
            if path:
                meta, arrays = inc.read_delta(path)
                table_bytes = sum(a.nbytes for k, a in arrays.items() if k.startswith("t"))
                dense_bytes = sum(a.nbytes for k, a in arrays.items() if k.startswith("d"))
                rows = sum(t["rows"] for t in meta["tables"] if t["role"] == "rows")
                measured.append({"step": meta["step"], "base_step": meta["base_step"],
                                 "bytes": Path(path).stat().st_size, "rows": rows,
                                 "removed": sum(t["removed"] for t in meta["tables"] if t["role"] == "rows"),
                                 "table_payload_bytes": table_bytes, "dense_payload_bytes": dense_bytes,
                                 "dense_variables": len(meta["dense"])})
            return path

    work = Path(tempfile.mkdtemp(prefix="incremental-ckpt-size-"))
    try:
        rows = (args.steps + args.delta_steps * args.deltas + 1) * args.batch_size
        data = work / "train.txt"
        started = time.time()
        generate_criteo(str(data), rows + rows // 9 + 1, seed=7)  # (the last 10% is held out for eval)
        print(f"generated {rows:,} synthetic rows in {time.time() - started:.0f}s", flush=True)
        ckpt = work / "ckpt"
        flags = ["--train_files", str(data), "--checkpoint", str(ckpt), "--batch_size", str(args.batch_size),
                 "--ev", "--no_eval", "--log_steps", "100", *args.extra.split()]
        # 1. the full checkpoint after --steps steps (--incremental_ckpt given so the layout is the same)
        assert run_main(dlrm_spec, flags + ["--steps", str(args.steps), "--incremental_ckpt", "3600"]) == 0
        full_bytes, meta_bytes = full_checkpoint_bytes(ckpt, args.steps)
        parts = full_checkpoint_parts(ckpt, args.steps)
        table_rows = _rows_in(ckpt / "result.json")
        # 2. resumed: a delta every --delta_steps steps
        inc.IncrementalCheckpointHook, original = MeasuredHook, inc.IncrementalCheckpointHook
        try:
            last = args.steps + args.delta_steps * args.deltas + 1  # (no delta at the last step: it saves in full)
            assert run_main(dlrm_spec, flags + ["--steps", str(last), "--incremental_ckpt", "3600"]) == 0
        finally:
            inc.IncrementalCheckpointHook = original
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for d in measured:
        d["ratio"] = round(d["bytes"] / full_bytes, 4)
        d["rows_share"] = round(d["rows"] / table_rows, 4) if table_rows else None
    cpu = cpu_info()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "model": "dlrm", "data": "synthetic Criteo (modelzoo/synthetic.py)",
        "flags": f"--ev --batch_size {args.batch_size} {args.extra}".strip(), "steps": args.steps,
        "delta_steps": args.delta_steps, "full_checkpoint_bytes": full_bytes, "full_meta_graph_bytes": meta_bytes,
        "full_checkpoint_parts": parts, "table_rows_at_full": table_rows, "deltas": measured,
        "median_delta_bytes": statistics.median(d["bytes"] for d in measured),
        "median_ratio": statistics.median(d["ratio"] for d in measured),
        "machine": f"{cpu['model']}, {cpu['cores']} vCPU",
        "command": "python benchmarks/incremental_ckpt_size.py " + " ".join(sys.argv[1:]),
    }
    print(f"full checkpoint at step {args.steps}: {full_bytes:,} bytes ({table_rows:,} embedding rows; tables "
          f"{parts['table_bytes']:,} B, dense {parts['dense_bytes']:,} B) + meta graph {meta_bytes:,} bytes")
    for d in measured:
        print(f"delta {d['base_step']} -> {d['step']}: {d['bytes']:,} bytes = {100 * d['ratio']:.1f}% of the full "
              f"checkpoint ({d['rows']:,} rows = {100 * (d['rows_share'] or 0):.1f}% of the rows, "
              f"{d['removed']:,} removed; tables {d['table_payload_bytes']:,} B, "
              f"{d['dense_variables']} dense variables {d['dense_payload_bytes']:,} B)")
    atomic_write_json(args.output, result)
    print(f"written {args.output}")


def _rows_in(result_path):
    import json
    tables = json.loads(Path(result_path).read_text()).get("ev_tables", {})
    return sum(t["rows"] for t in tables.values())


if __name__ == "__main__":
    main()

"""Cost of the exact evaluation AUC (modelzoo.metrics.exact_auc) against the held-out rows.

Each (implementation, rows) pair runs in its own process (so its peak memory is its own): a graph of
the metric over batches of --batch CTR-like scores (float32 sigmoid of normal logits, labels about 25%
positive, made in the graph from a stateless seed per batch, so both implementations see the same
rows), every update run once, then the value. `concat` is the metric as it was until issue 27: the
rows concatenated onto two growing vectors at every batch (kept here only as the reference);
`counts` is the current one. Printed and stored: seconds of updates, of the value, the peak RSS above
the process's RSS before the first update, the distinct scores among the rows, the AUC (both
implementations must agree to 1e-12), and seconds of the same loop that only makes the rows (the
loop's own cost). The machine may be shared: compare the ratios within one run, not the seconds
across runs.

    python benchmarks/eval_auc.py [--rows 1M,2M,4M,8M,16M] [--concat_rows 1M,2M,4M,8M]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def concat_auc(labels, predictions, name="concat_auc"):
    """The pre-issue-27 exact AUC, for reference: O(rows) copied at every batch, quadratic in all."""
    import tensorflow as tf

    import numpy as np

    from modelzoo.metrics import _local, roc_auc
    tf1 = tf.compat.v1

    def _roc_auc_or_nan(labels, scores):
        auc = roc_auc(labels, scores)
        return np.float64("nan" if auc is None else auc)

    with tf1.variable_scope(name):
        all_scores, all_labels = _local("scores", tf.float64), _local("labels", tf.float64)
    update = tf.group(
        all_scores.assign(tf.concat([all_scores, tf.cast(tf.reshape(predictions, [-1]), tf.float64)], 0)),
        all_labels.assign(tf.concat([all_labels, tf.cast(tf.reshape(labels, [-1]), tf.float64)], 0)))
    value = tf.numpy_function(_roc_auc_or_nan, [all_labels.read_value(), all_scores.read_value()], tf.float64,
                              stateful=False)
    return value, update


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def measure(impl, rows, batch):
    """One process's measurement: seconds of the loop alone, of updates, of the value, peak RSS above start."""
    import numpy as np
    import tensorflow as tf

    from modelzoo.metrics import exact_auc
    from modelzoo.system import peak_rss_mb
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    step = tf1.placeholder(tf.int32, [])
    logits = -1.2 + tf.random.stateless_normal([batch], seed=tf.stack([step, 1]))
    labels = tf.cast(tf.random.stateless_uniform([batch], seed=tf.stack([step, 2])) < tf.sigmoid(logits), tf.float32)
    scores = tf.sigmoid(logits + 0.8 * labels)
    value, update = (concat_auc if impl == "concat" else exact_auc)(labels, scores)
    steps = -(-rows // batch)
    with tf1.Session(config=tf1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)) as sess:
        sess.run(tf1.local_variables_initializer())
        t0 = time.perf_counter()
        for i in range(steps):
            sess.run(scores.op, {step: i})
        loop = time.perf_counter() - t0
        base = rss_mb()
        t0 = time.perf_counter()
        for i in range(steps):
            sess.run(update, {step: i})
        updates = time.perf_counter() - t0
        t0 = time.perf_counter()
        auc = float(sess.run(value))
        val = time.perf_counter() - t0
        peak = peak_rss_mb() - base
        distinct = np.unique(np.concatenate([sess.run(scores, {step: i}) for i in range(steps)])).size
    return {"impl": impl, "rows": steps * batch, "batch": batch, "loop_seconds": round(loop, 3),
            "update_seconds": round(updates, 3), "value_seconds": round(val, 3),
            "total_seconds": round(updates + val, 3), "peak_rss_above_start_mb": round(peak, 1),
            "distinct_scores": int(distinct), "auc": auc}


def sizes(text):
    return [int(float(t[:-1]) * 1e6) if t.endswith("M") else int(t) for t in text.split(",") if t]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="1M,2M,4M,8M,16M", help="rows for the current metric")
    p.add_argument("--concat_rows", default="1M,2M,4M,8M", help="rows for the old (concatenating) one")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "eval_auc.json"))
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # (internal) impl rows: measure in this process
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.batch)))
        return
    from modelzoo.io_utils import atomic_write_json
    from modelzoo.system import cpu_info
    runs = []
    for impl, rows in [("counts", r) for r in sizes(args.rows)] + [("concat", r) for r in sizes(args.concat_rows)]:
        out = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--one", impl, str(rows)],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"{impl:6s} {r['rows']:>11,} rows ({r['distinct_scores']:,} distinct scores): "
              f"update {r['update_seconds']:8.2f} s  value {r['value_seconds']:6.2f} s"
              f"  peak RSS +{r['peak_rss_above_start_mb']:7.1f} MB  AUC {r['auc']:.12f}  (loop alone "
              f"{r['loop_seconds']:.2f} s)", flush=True)
    by = {(r["impl"], r["rows"]): r for r in runs}
    for (impl, rows), r in by.items():
        other = by.get(("concat" if impl == "counts" else "counts", rows))
        if other and abs(other["auc"] - r["auc"]) > 1e-12:
            raise SystemExit(f"{rows:,} rows: the two implementations disagree: {r['auc']} vs {other['auc']}")
    atomic_write_json(args.output, {"machine": cpu_info(), "cpus": os.cpu_count(), "runs": runs,
                                    "note": "one process per run; machine shared with other work: compare ratios"})
    print(f"stored {args.output}")


if __name__ == "__main__":
    main()

"""The compute ceiling of a model's MLP: samples/s of its matmuls alone, forward and backward.

Times one training step of the bare MLP (modelzoo.layers: input width -> hidden relu layers -> 1,
with the gradients of the weights and of the input, as the embeddings need) on random data, with no
input pipeline, embeddings or optimizer: the end-to-end model cannot be much faster on this machine.

    python benchmarks/dnn_ceiling.py                       # Wide & Deep's DNN at batch 2048
    python benchmarks/dnn_ceiling.py --input 2189 --hidden 1024 512 256 --batch_size 2048
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import atomic_write_json  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402

# Wide & Deep on the Criteo schema: 18 columns x 64 + 8 columns x 128 (>= 100,000 buckets) + 13 numeric.
WIDE_AND_DEEP_INPUT = 18 * 64 + 8 * 128 + 13


def measure(width, hidden, batch, repeats, bf16=False):
    import tensorflow as tf
    tf1 = tf.compat.v1
    from modelzoo.layers import logit, mlp, precision
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [batch, width])
        with precision(tf.bfloat16 if bf16 else tf.float32):  # as the runner opens it for --bf16
            y = logit(mlp(x, hidden, "dnn"), "logit")  # the models' own layers
        grads = tf.gradients(tf.reduce_sum(y), [x, *tf1.trainable_variables()])
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            feed = {x: np.random.default_rng(0).random((batch, width), dtype=np.float32)}
            for _ in range(3):
                sess.run(grads, feed)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                sess.run(grads, feed)
                times.append(time.perf_counter() - start)
    step = statistics.median(times)
    flop = 3 * 2 * batch * sum(a * b for a, b in zip([width, *hidden], [*hidden, 1]))
    return {"step_ms": step * 1000, "gflops": flop / step / 1e9, "samples_per_sec": batch / step,
            "mflop_per_sample": flop / batch / 1e6}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=int, default=WIDE_AND_DEEP_INPUT, help="width of the MLP's input")
    p.add_argument("--hidden", type=int, nargs="+", default=[1024, 512, 256])
    p.add_argument("--batch_size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=15, help="timed steps (median reported)")
    p.add_argument("--bf16", action="store_true", help="the hidden layers in bfloat16, as with --bf16")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "dnn_ceiling.json"))
    args = p.parse_args()
    r = measure(args.input, args.hidden, args.batch_size, args.repeats, args.bf16)
    cpu = cpu_info()
    r.update(input=args.input, hidden=args.hidden, batch_size=args.batch_size, repeats=args.repeats, bf16=args.bf16,
             machine=f"{cpu['model']}, {cpu['cores']} vCPU, {' '.join(cpu['flags'])}")
    shape = "-".join(map(str, [args.input, *args.hidden, 1]))
    print(f"{'bfloat16' if args.bf16 else 'float32'} MLP {shape} at batch {args.batch_size}: "
          f"{r['mflop_per_sample']:.1f} MFLOP per training sample, step {r['step_ms']:.0f} ms, "
          f"{r['gflops']:.0f} GFLOP/s -> ceiling {r['samples_per_sec']:,.0f} samples/s")
    atomic_write_json(args.output, r)


if __name__ == "__main__":
    main()

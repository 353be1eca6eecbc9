"""How long a model's checkpoint takes to save: the default tables (shipped schema) with their optimizer
slots, as the chief saves them when a PS TFJob is stopped (the final checkpoint within the pods' grace
period, distribute_k8s/generate_manifests.py's terminationGracePeriodSeconds).

Builds MODEL's training graph as train.py does (default flags, shipped schema; the one step that creates the
slots reads the real Criteo sample for a Criteo model, else --rows rows of its schema's generator, the rows the
runner writes into an empty --data_location), then times tf.train.Saver.save into --dir REPEATS times.

    python benchmarks/checkpoint_save_time.py --model dlrm [--dir /tmp/ckpt] [--repeats 3]
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "criteo-kaggle-head10k" / "train.txt"
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import atomic_write_json  # noqa: E402
from modelzoo.models import ESTIMATOR_MODELS, load_module  # noqa: E402


def folder_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dlrm", choices=ESTIMATOR_MODELS)
    p.add_argument("--dir", default=None, help="where to save (a temporary folder under /tmp by default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", type=int, default=2000, help="rows generated for a schema other than Criteo's")
    p.add_argument("--output", default=None, help="default benchmarks/results/checkpoint_save_time_MODEL.json")
    args = p.parse_args(argv)
    import tensorflow as tf
    from modelzoo import flags
    from modelzoo.datafiles import resolve
    from modelzoo.hooks import ThroughputMeter
    from modelzoo.run.context import RunContext
    from modelzoo.run.graph import input_fn, make_model_fn
    from modelzoo.run.local import data_generator
    from modelzoo.system import cpu_info
    tf1 = tf.compat.v1
    spec = load_module(args.model).SPEC
    work = Path(args.dir or tempfile.mkdtemp(prefix="ckpt-save-"))
    rows = SAMPLE if spec.schema == "criteo" else work / "rows.txt"
    train_args = flags.parse(spec.name, ["--train_files", str(rows), "--batch_size", "256", "--steps", "1",
                                         "--no_eval"], spec.defaults, spec.speed_defaults, spec.add_flags)
    ctx = RunContext.create(spec, train_args)
    if rows != SAMPLE:
        work.mkdir(parents=True, exist_ok=True)
        data_generator(ctx.schema)(str(rows), args.rows, 0)
    ctx.data = resolve(train_args, ctx.schema)
    seconds, sizes = [], []
    with tf.Graph().as_default():
        features, labels = tf1.data.make_one_shot_iterator(input_fn(ctx, ctx.data.train, True)()).get_next()
        est = make_model_fn(ctx, ThroughputMeter(), (0, 1))(features, labels, tf.estimator.ModeKeys.TRAIN,
                                                            {"model_dir": str(work)})
        saver = tf1.train.Saver(sharded=True)
        with tf1.Session() as sess:
            sess.run([tf1.global_variables_initializer(), tf1.local_variables_initializer(),
                      tf1.tables_initializer()])
            sess.run(est.train_op)  # the optimizer's slots exist in the graph; one step fills nothing else
            for i in range(args.repeats):
                folder = work / f"save-{i}"
                folder.mkdir(parents=True, exist_ok=True)
                start = time.perf_counter()
                saver.save(sess, str(folder / "model.ckpt"), write_meta_graph=False)
                seconds.append(time.perf_counter() - start)
                sizes.append(folder_bytes(folder))
                print(f"save {i}: {sizes[-1] / 1e6:,.0f} MB in {seconds[-1]:.2f} s", flush=True)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "dir": str(work),
               "bytes": sizes[-1], "seconds": seconds, "median_seconds": statistics.median(seconds),
               "mb_per_s": sizes[-1] / 1e6 / statistics.median(seconds), "machine": cpu_info(),
               "rows": "criteo-kaggle-head10k" if rows == SAMPLE else f"{args.rows} generated {spec.schema} rows"}
    output = args.output or str(REPO / "benchmarks" / "results" / f"checkpoint_save_time_{args.model}.json")
    atomic_write_json(output, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "machine"}))


if __name__ == "__main__":
    main()

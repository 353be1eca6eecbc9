"""Every model builds and trains one step in-process, on tiny generated data and tiny tables.

The fast tier's smoke test (`make test-fast`): a graph, one `train_op` run, no subprocess, no checkpoint,
so a broken model function, layer or optimizer shows up in seconds instead of in the full suite's
end-to-end runs. Each model runs with its defaults, with --bf16 and with --ev (TFRA's tables).
"""
import json
import math

import pytest

from conftest import REPO, load_train_module

pytestmark = pytest.mark.fast

# The models with a train.py built on modelzoo.runner. (A registry, modelzoo/models.py, is being added;
# this list then becomes its names.)
MODELS = ("dlrm", "wide_and_deep")
VARIANTS = {"default": [], "bf16": ["--bf16"], "ev": ["--ev"]}
TINY_BUCKETS = 50  # every categorical table capped at this many rows
BATCH = 32


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """256 synthetic Criteo rows and the Criteo schema with tiny tables."""
    from modelzoo.synthetic import generate_criteo
    folder = tmp_path_factory.mktemp("tiny")
    data = folder / "train.txt"
    generate_criteo(str(data), 256, seed=3)
    doc = json.loads((REPO / "modelzoo" / "schemas" / "criteo.json").read_text())
    for col in doc["columns"]:
        if col["kind"] == "categorical":
            col["hash_buckets"] = min(col["hash_buckets"], TINY_BUCKETS)
    schema = folder / "criteo_tiny.json"
    schema.write_text(json.dumps(doc))
    return data, schema


def train_one_step(model, extra, data, schema_file, model_dir):
    """Build MODEL's training graph as train.py does (flags, schema, input, model_fn) and run one step;
    returns (loss, global step before, global step after, the graph's ops)."""
    import tensorflow as tf
    from modelzoo import flags
    from modelzoo.run.context import RunContext
    from modelzoo.run.graph import input_fn, make_model_fn, session_config
    from modelzoo.datafiles import resolve
    from modelzoo.hooks import ThroughputMeter
    tf1 = tf.compat.v1
    spec = load_train_module(model).SPEC
    argv = ["--train_files", str(data), "--schema", str(schema_file), "--batch_size", str(BATCH),
            "--steps", "1", "--seed", "1", "--no_eval", *extra]
    args = flags.parse(spec.name, argv, spec.defaults, spec.speed_defaults, spec.add_flags)
    ctx = RunContext.create(spec, args)
    ctx.data = files = resolve(args, ctx.schema)
    with tf.Graph().as_default():
        tf1.set_random_seed(args.seed)
        batch = input_fn(ctx, files.train, True)()
        features, labels = tf1.data.make_one_shot_iterator(batch).get_next()
        model_fn = make_model_fn(ctx, ThroughputMeter(), (0, 1))
        est = model_fn(features, labels, tf.estimator.ModeKeys.TRAIN, {"model_dir": str(model_dir)})
        step = tf1.train.get_global_step()
        with tf1.train.MonitoredTrainingSession(hooks=est.training_hooks, checkpoint_dir=None,
                                                config=session_config(ctx.opts.speed)) as sess:
            before = sess.run(step)
            _, loss = sess.run([est.train_op, est.loss])
            after = sess.run(step)
        ops = tf1.get_default_graph().get_operations()
    return loss, before, after, ops


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model", MODELS)
def test_model_trains_one_step(model, variant, tiny_data, tmp_path):
    data, schema = tiny_data
    import tensorflow as tf
    loss, before, after, ops = train_one_step(model, VARIANTS[variant], data, schema, tmp_path)
    assert math.isfinite(loss) and loss > 0, f"{model} {variant}: loss {loss}"
    assert (before, after) == (0, 1), f"{model} {variant}: global step {before} -> {after}, expected 0 -> 1"
    # the variant's switch reached the graph: bfloat16 MLP matmuls, TFRA's hash tables
    bf16 = [op.name for op in ops if op.type == "MatMul" and op.get_attr("T") == tf.bfloat16]
    assert bool(bf16) == (variant == "bf16"), f"{model} {variant}: bfloat16 MatMuls {bf16[:5]}"
    tfra = [op.name for op in ops if op.type.startswith("TFRA")]
    assert bool(tfra) == (variant == "ev"), f"{model} {variant}: TFRA ops {tfra[:5]}"

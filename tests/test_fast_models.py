"""Every model builds and trains one step in-process, on tiny generated data and tiny tables.

The fast tier's smoke test (`make test-fast`): a graph, one `train_op` run, no subprocess, no checkpoint,
so a broken model function, layer or optimizer shows up in seconds instead of in the full suite's
end-to-end runs. Each model runs with its defaults, with --bf16 and with --ev (TFRA's tables).
"""
import math

import pytest

from conftest import load_train_module, tiny_schema_data
from modelzoo.models import ESTIMATOR_MODELS, load_spec

pytestmark = pytest.mark.fast

MODELS = ESTIMATOR_MODELS  # every registered model with a train.py built on modelzoo.runner
VARIANTS = {"default": [], "bf16": ["--bf16"], "ev": ["--ev"]}
TINY_BUCKETS = 50  # every categorical table capped at this many rows
BATCH = 32


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """256 synthetic Criteo rows and the Criteo schema with tiny tables."""
    return tiny_schema_data(tmp_path_factory.mktemp("tiny"), "criteo", TINY_BUCKETS)


@pytest.fixture(scope="module")
def tiny_of(tmp_path_factory, tiny_data):
    """A model's tiny data: of its own schema (din: Taobao rows with histories; esmm, mmoe, ple: Ali-CCP rows with
    two labels and a group column)."""
    made = {"criteo": tiny_data}

    def of(model):
        name = load_spec(model).schema
        if name not in made:
            made[name] = tiny_schema_data(tmp_path_factory.mktemp(f"tiny_{name}"), name, TINY_BUCKETS)
        return made[name]
    return of


def train_one_step(model, extra, data, schema_file, model_dir, spec_changes=None):
    """Build MODEL's training graph as train.py does (flags, schema, input, model_fn) and run one step
    (with `spec_changes` replaced in its ModelSpec); returns (loss, global step before, global step after,
    the graph's ops)."""
    import dataclasses
    import tensorflow as tf
    from modelzoo import flags
    from modelzoo.run.context import RunContext
    from modelzoo.run.graph import input_fn, make_model_fn, session_config
    from modelzoo.datafiles import resolve
    from modelzoo.hooks import ThroughputMeter
    tf1 = tf.compat.v1
    spec = dataclasses.replace(load_train_module(model).SPEC, **(spec_changes or {}))
    argv = ["--train_files", str(data), "--schema", str(schema_file), "--batch_size", str(BATCH),
            "--steps", "1", "--seed", "1", "--no_eval", *extra]
    args = flags.parse(spec.name, argv, spec.defaults, spec.speed_defaults, spec.add_flags, spec.has_mlp)
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


# --bf16 acts on MLP layers: a model without one (lr, fm) refuses it (tests/test_baselines.py)
@pytest.mark.parametrize("model, variant", [(m, v) for m in MODELS for v in VARIANTS
                                            if v != "bf16" or load_spec(m).has_mlp])
def test_model_trains_one_step(model, variant, tiny_of, tmp_path):
    data, schema = tiny_of(model)
    import tensorflow as tf
    loss, before, after, ops = train_one_step(model, VARIANTS[variant], data, schema, tmp_path)
    assert math.isfinite(loss) and loss > 0, f"{model} {variant}: loss {loss}"
    assert (before, after) == (0, 1), f"{model} {variant}: global step {before} -> {after}, expected 0 -> 1"
    # the variant's switch reached the graph: bfloat16 MLP matmuls, TFRA's hash tables
    bf16 = [op.name for op in ops if op.type == "MatMul" and op.get_attr("T") == tf.bfloat16]
    assert bool(bf16) == (variant == "bf16"), f"{model} {variant}: bfloat16 MatMuls {bf16[:5]}"
    tfra = [op.name for op in ops if op.type.startswith("TFRA")]
    assert bool(tfra) == (variant == "ev"), f"{model} {variant}: TFRA ops {tfra[:5]}"


def test_a_specs_custom_loss_is_the_loss_that_is_trained(tiny_data, tmp_path):
    """ModelSpec.loss replaces the binary cross-entropy: three times it gives three times the first loss."""
    import tensorflow as tf
    data, schema = tiny_data
    default, _, _, _ = train_one_step("dlrm", [], data, schema, tmp_path / "a")
    tripled = lambda labels, logits: 3.0 * tf.reduce_mean(  # noqa: E731
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
    custom, _, _, _ = train_one_step("dlrm", [], data, schema, tmp_path / "b", {"loss": tripled})
    # (two builds' first losses differ by up to ~0.5% here: the first batch is not bitwise the same; the
    # factor of 3 is far outside that)
    assert custom == pytest.approx(3 * default, rel=0.03), (default, custom)


def test_mlp_follows_the_precision_scope_and_keeps_float32_variables():
    """Inside precision(bfloat16) an mlp's matmuls are bfloat16 (over float32 variables); outside, float32;
    the logit layer stays float32 inside the scope."""
    import tensorflow as tf
    from modelzoo.layers import logit, mlp, precision
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        x = tf1.placeholder(tf.float32, [None, 8])
        with precision(tf.bfloat16):
            scoped = mlp(x, [4, 2], "scoped")
            out = logit(scoped, "out")
        plain = mlp(x, [4, 2], "plain")
        matmuls = {op.name: op.get_attr("T") for op in graph.get_operations() if op.type == "MatMul"}
        assert scoped.dtype == plain.dtype == out.dtype == tf.float32
        assert {n: t for n, t in matmuls.items() if n.startswith("scoped/")} and \
            all(t == tf.bfloat16 for n, t in matmuls.items() if n.startswith("scoped/"))
        assert all(t == tf.float32 for n, t in matmuls.items() if not n.startswith("scoped/"))
        assert all(v.dtype.base_dtype == tf.float32 for v in tf1.global_variables())

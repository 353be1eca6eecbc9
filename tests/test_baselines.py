"""The in-zoo baselines (lr/, fm/) and the shared regularizers (--emb_l2, --dropout).

lr and fm build on the shared linear part (modelzoo.layers.linear_logit) and refuse the flags that act on
MLP layers, which they have not; --emb_l2 penalizes only the embedding rows a batch looks up, on every kind
of table; --dropout reaches every model's MLPs in training graphs only; lr learns the generator's linear
part; the exports of lr, fm and deepfm serve in stock TensorFlow as --predict scores.
"""
import json

import numpy as np
import pytest

from modelzoo.flags import PREDICT
from conftest import REPO, dense_only_auc, for_mode, raw_columns, read_result, run_train, score_in_fresh_process
from modelzoo import flags
from modelzoo.models import ESTIMATOR_MODELS, load_spec

TINY_BUCKETS = 50
BATCH = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """256 generated Criteo rows and the Criteo schema with 50-row tables."""
    from modelzoo.synthetic import generate_criteo
    folder = tmp_path_factory.mktemp("tiny")
    generate_criteo(str(folder / "train.txt"), 256, seed=3)
    doc = json.loads((REPO / "modelzoo" / "schemas" / "criteo.json").read_text())
    for col in doc["columns"]:
        if col["kind"] == "categorical":
            col["hash_buckets"] = min(col["hash_buckets"], TINY_BUCKETS)
    (folder / "tiny.json").write_text(json.dumps(doc))
    return folder / "train.txt", folder / "tiny.json"


def parse(model, argv):
    spec = load_spec(model)
    return flags.parse(spec.name, argv, spec.defaults, spec.speed_defaults, spec.add_flags, spec.has_mlp)


def build(model, extra, tiny, mode="train", batch=BATCH):
    """MODEL's graph as the runner builds it, in `mode`; returns (graph, EstimatorSpec, features)."""
    import tensorflow as tf
    from modelzoo.datafiles import resolve
    from modelzoo.hooks import ThroughputMeter
    from modelzoo.run.context import RunContext
    from modelzoo.run.graph import input_fn, make_model_fn
    tf1 = tf.compat.v1
    data, schema = tiny
    spec = load_spec(model)
    args = parse(model, ["--train_files", str(data), "--schema", str(schema), "--batch_size", str(batch),
                         "--seed", "1", *extra])
    ctx = RunContext.create(spec, args)
    ctx.data = resolve(args, ctx.schema)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(1)
        features, labels = tf1.data.make_one_shot_iterator(input_fn(ctx, ctx.data.train, mode == "train")()).get_next()
        modes = {"train": tf.estimator.ModeKeys.TRAIN, "eval": tf.estimator.ModeKeys.EVAL,
                 "predict": tf.estimator.ModeKeys.PREDICT}
        est = make_model_fn(ctx, ThroughputMeter(), (0, 1))(features, labels, modes[mode], {"model_dir": "unused"})
    return graph, est, features


# -- lr and fm refuse what acts on MLP layers -------------------------------------------------------------

@pytest.mark.fast
@pytest.mark.parametrize("model", ["lr", "fm"])
@pytest.mark.parametrize("flag", [["--bf16"], ["--dropout", "0.2"]])
def test_a_model_without_an_mlp_refuses_the_mlp_flags_in_one_line(model, flag, capsys):
    with pytest.raises(flags.FlagError) as err:
        parse(model, flag)
    assert str(err.value) == f"{flag[0]} acts on a model's MLP layers, and {model} has none; drop {flag[0]}"
    assert err.value.code == 2


@pytest.mark.fast
@pytest.mark.parametrize("model", [m for m in ESTIMATOR_MODELS if load_spec(m).has_mlp])
def test_every_model_with_an_mlp_takes_dropout(model):
    assert parse(model, ["--dropout", "0.3"]).dropout == 0.3


@pytest.mark.fast
@pytest.mark.parametrize("run", ["--evaluate", "--predict", "--export_only"])
@pytest.mark.parametrize("flag", ["--emb_l2", "--dropout"])
def test_the_regularizers_are_refused_where_nothing_trains(run, flag):
    with pytest.raises(flags.FlagError, match=f"{flag} acts on training, and {run} does not train"):
        parse("dcn_v2", [run, flag, "0.1"])


@pytest.mark.fast
def test_deep_dropout_is_refused_pointing_to_the_shared_dropout(capsys):
    with pytest.raises(SystemExit) as err:
        parse("wide_and_deep", ["--deep_dropout", "0.3"])
    assert err.value.code == 2
    assert "--deep_dropout is now the shared --dropout (every model's MLPs); use --dropout 0.3" in \
        capsys.readouterr().err


# -- --dropout ---------------------------------------------------------------------------------------------

def dropout_ops(graph):
    return [op.name for op in graph.get_operations() if "dropout" in op.name.lower()]


@pytest.mark.fast
@pytest.mark.parametrize("model", [m for m in ESTIMATOR_MODELS if load_spec(m).has_mlp])
def test_dropout_is_in_the_training_graph_only_and_never_on_the_logit_layer(model, tiny, tmp_path):
    from conftest import tiny_schema_data
    schema = load_spec(model).schema
    tiny = tiny if schema == "criteo" else tiny_schema_data(tmp_path, schema, TINY_BUCKETS)  # (din: Taobao rows)
    graph, _, _ = build(model, ["--dropout", "0.3"], tiny)
    ops = dropout_ops(graph)
    assert ops, f"{model}: no dropout op in the training graph"
    assert not [n for n in ops if "logit" in n.split("/")[0]], f"{model}: dropout on the logit layer: {ops[:5]}"
    for mode in ("eval", "predict"):  # (the same run's evaluation; the export is the predict graph)
        graph, _, _ = build(model, ["--dropout", "0.3"], tiny, mode)
        assert not dropout_ops(graph), f"{model} {mode}: {dropout_ops(graph)[:5]}"


# -- --emb_l2 ----------------------------------------------------------------------------------------------

ALL_ROWS = 230  # the tiny set's training rows (256 less the 10% held out): one batch holds them all, in any order


def step_tables(model, extra, tiny):
    """One gradient-descent step of MODEL on a batch of every training row (the same rows in any build):
    (the tables' names, their values before and after, the batch's ids, the loss)."""
    import tensorflow as tf
    from modelzoo import features as F
    tf1 = tf.compat.v1
    graph, est, features = build(model, ["--optimizer", "gradientdescent", "--learning_rate", "1.0", *extra], tiny,
                                 batch=ALL_ROWS)
    with graph.as_default():
        tables = [v for v in tf1.global_variables() if v.op.name.startswith("embedding/")]
        with tf1.Session() as sess:
            sess.run([tf1.global_variables_initializer(), tf1.local_variables_initializer()])
            before = sess.run(tables)
            _, loss, ids = sess.run([est.train_op, est.loss, features[F.IDS]])
            after = sess.run(tables)
    return [v.op.name for v in tables], before, after, ids, loss


@pytest.mark.fast
def test_emb_l2_changes_only_the_rows_the_batch_looks_up_by_their_penalty_gradient(tiny):
    """With plain gradient descent at rate 1, the one-step difference between --emb_l2 L and 0 is exactly
    -2 L k / B x the row, for each row looked up k times in the batch of B, and 0 for every other row."""
    lam = 0.5
    names, start, plain, ids, loss0 = step_tables("fm", ["--emb_l2", "0"], tiny)  # (fm's default is 0.01)
    _, start_l2, penalized, ids_l2, loss1 = step_tables("fm", ["--emb_l2", str(lam)], tiny)
    np.testing.assert_array_equal(np.sort(ids, axis=0), np.sort(ids_l2, axis=0))  # the same rows, same start
    for a, b in zip(start, start_l2):
        np.testing.assert_array_equal(a, b)
    assert len(names) == ids.shape[1] == 26 and ids.shape[0] == ALL_ROWS, (names, ids.shape)
    untouched_rows = 0
    for c, name in enumerate(names):
        counts = np.bincount(ids[:, c], minlength=start[c].shape[0])
        expected = -2 * lam * counts[:, None] / ALL_ROWS * start[c]
        # (float32 values of ~0.05 and steps of ~1e-3: 1e-6 is above their rounding and below the smallest
        # penalty change, 2 x 0.5 x 1/230 x ~1e-3)
        np.testing.assert_allclose(penalized[c] - plain[c], expected, rtol=0, atol=1e-6, err_msg=name)
        untouched = counts == 0
        untouched_rows += untouched.sum()
        np.testing.assert_array_equal(penalized[c][untouched], plain[c][untouched])
    assert untouched_rows > 100, untouched_rows  # (the low-cardinality columns leave most of their 50 rows)
    # the penalty is in the trained loss: L x the rows' squared norms per example
    rows = sum(float(np.sum(start[c][ids[:, c]] ** 2)) for c in range(len(names)))
    assert loss1 - loss0 == pytest.approx(lam * rows / ALL_ROWS, rel=1e-3)


@pytest.mark.fast
def test_emb_l2_zero_leaves_the_training_graph_unchanged(tiny):
    plain, _, _ = build("dcn_v2", [], tiny)  # (a model whose default is 0)
    zero, _, _ = build("dcn_v2", ["--emb_l2", "0"], tiny)
    assert [op.type for op in plain.get_operations()] == [op.type for op in zero.get_operations()]


@pytest.mark.fast
@pytest.mark.parametrize("extra", [[], ["--emb_fusion"], ["--tf"], ["--ev"], ["--micro_batch", "4"]],
                         ids=["tables", "fused", "feature_columns", "ev", "micro_batch"])
def test_emb_l2_adds_the_looked_up_rows_penalty_on_every_tables_path(extra, tiny):
    """On each kind of table the first step's loss grows by L x the looked-up rows' squared norms per example:
    the penalty's terms are the rows of every lookup, in the same graph as the loss."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    lam = 10.0
    losses = []
    for flags_l2 in (["--emb_l2", str(lam)], ["--emb_l2", "0"]):
        graph, est, _ = build("fm", [*flags_l2, *extra], tiny, batch=ALL_ROWS)
        with graph.as_default(), tf1.train.MonitoredTrainingSession(hooks=est.training_hooks) as sess:
            losses.append(sess.run(est.loss))
    assert np.isfinite(losses).all(), losses
    # fm's 26 looked-up rows start uniform in +-0.05, 16 wide: the penalty is about L x 26 x 16 x 0.05^2 / 3
    # = 0.35 at L = 10 (the numeric columns' vectors are not table rows); 0.1 is well under it, and far above
    # what the two builds' first losses differ by otherwise (the same rows, the same seeds)
    assert losses[0] - losses[1] > 0.1, (extra, losses)


# -- lr learns the generator's linear part -------------------------------------------------------------------

GENERATED_ROWS, GENERATED_SEED = 20_000, 5  # conftest's generated_criteo


def test_lr_reaches_the_auc_of_the_generators_linear_part(generated_criteo, tmp_path):
    """modelzoo/synthetic.py's hidden logit is a linear part (intercept, integer columns, their missing
    indicators, one effect per id) plus a pairwise term. lr, trained on the first 90% of the rows, must score the
    held-out 10% within a measured distance of that linear part itself, and well above the integer columns
    alone (so the categorical weights are learned, not just the counts)."""
    from modelzoo.metrics import roc_auc
    from modelzoo.synthetic import iter_chunks
    chunk = next(iter_chunks(GENERATED_ROWS, seed=GENERATED_SEED, chunk_rows=GENERATED_ROWS))
    held_out = slice(GENERATED_ROWS - GENERATED_ROWS // 10, GENERATED_ROWS)
    oracle = roc_auc(chunk["label"][held_out], chunk["linear_logit"][held_out])  # 0.7800
    dense = dense_only_auc(str(generated_criteo), GENERATED_ROWS - GENERATED_ROWS // 10, GENERATED_ROWS // 10)
    run_train("lr", ["--train_files", generated_criteo, "--checkpoint", tmp_path / "lr", "--batch_size", 256,
                     "--steps", 300, "--seed", 1])
    auc = read_result(tmp_path / "lr")["auc"]
    # Measured (2026-12-06, AMD EPYC Zen 4 (family 25 model 17), one run each): AUC 0.7145 at 300 steps at the default
    # FTRL rate 0.4 (0.7157 at the earlier 0.1, 0.7185 at 700 steps); the linear
    # part 0.7800, the integer columns alone 0.6640. The gap is what 18,000 rows cannot teach: the effects of
    # rare ids (the linear part without the effects of ids seen fewer than 20 times in training: 0.7585) and the
    # integer columns' missing indicators, which a blank count (read as 0) hides. Tolerance 0.075 over the
    # measured 0.066; and at least 0.03 above the integer columns alone (measured 0.050).
    assert auc >= oracle - 0.075, (auc, oracle)
    assert auc >= dense + 0.03, (auc, dense)


# -- exports ---------------------------------------------------------------------------------------------

EXPORT_RUNS = {"lr": ("lr", ["--schema", "SMALL"]), "fm_ev": ("fm", ["--ev"]),
               "deepfm_ev_bf16": ("deepfm", ["--ev", "--bf16"])}  # (fm's terms + a DNN, in bfloat16)


def test_lr_fm_and_deepfm_exports_serve_in_stock_tensorflow_as_predict_scores(tmp_path):
    """Each export loads in a process without modelzoo or TFRA, holds only stock ops, and scores the held-out
    rows as --predict does (to predictions.csv's 6 decimals)."""
    from conftest import small_schema_file
    from modelzoo.schema import load_schema
    from modelzoo.synthetic import generate_criteo
    generate_criteo(str(tmp_path / "train.txt"), 2000, seed=7)
    small_schema_file(tmp_path / "small.json")
    exports, predicted = {}, {}
    for name, (model, extra) in EXPORT_RUNS.items():
        extra = [str(tmp_path / "small.json") if f == "SMALL" else f for f in extra]
        common = ["--train_files", tmp_path / "train.txt", "--checkpoint", tmp_path / name, "--batch_size", 128,
                  "--seed", 3, "--smartstaged=false", *extra]
        run_train(model, [*common, "--steps", 8, "--no_eval"])
        exports[name] = read_result(tmp_path / name)["export_dir"]
        run_train(model, [*for_mode(model, common, PREDICT), "--predict"])
        lines = (tmp_path / name / "predictions.csv").read_text().splitlines()[1:]
        predicted[name] = np.array([float(line.split(",")[1]) for line in lines])
    held_out = (tmp_path / "train.txt").read_text().splitlines()[-200:]
    scores = score_in_fresh_process(exports, raw_columns(load_schema("criteo"), held_out), tmp_path)
    for name in EXPORT_RUNS:
        assert scores[name].shape == predicted[name].shape == (200,), name
        np.testing.assert_allclose(scores[name], predicted[name], rtol=0, atol=1e-5, err_msg=name)
        assert np.ptp(scores[name]) > 1e-3, f"{name}: every row scored alike"

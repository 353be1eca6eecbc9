"""Wide & Deep end to end: real-data AUC, two optimizers, widths, --evaluate, --predict, crosses, flags."""
import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from sklearn.metrics import roc_auc_score

from conftest import CRITEO_SAMPLE, REPO, dense_only_auc, load_train_module, read_result, run_train


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One W&D run with the default schema and model on the real Criteo sample (last 10% held out):
    one epoch (36 steps of 256), as is usual for Criteo; more epochs over 9,000 rows overfit."""
    if not CRITEO_SAMPLE.is_file():
        pytest.skip(f"real Criteo sample not found at {CRITEO_SAMPLE} (../shared/data beside the checkout)")
    ckpt = tmp_path_factory.mktemp("wd") / "ckpt"
    proc = run_train("wide_and_deep", ["--train_files", CRITEO_SAMPLE, "--checkpoint", ckpt,
                                       "--batch_size", 256, "--epochs", 1])
    return ckpt, proc


def test_real_criteo_sample_reaches_auc_070_above_the_dense_only_baseline(real_run):
    """Measured (2026-12-02): AUC 0.7555 against the dense-only baseline's 0.7219 (+0.034); with the wide
    and deep embeddings multiplied by 0 the same run reaches 0.7332 (+0.011), so the margin is 0.02."""
    ckpt, proc = real_run
    result = read_result(ckpt)
    assert result["auc"] >= 0.70, result["auc"]
    baseline = dense_only_auc(CRITEO_SAMPLE, result["train_rows"], result["eval_rows"])
    assert result["auc"] >= baseline + 0.02, (result["auc"], baseline)
    assert (result["model"], result["train_rows"], result["eval_rows"], result["steps"]) == \
        ("wide_and_deep", 8999, 1000, 36)
    assert "==== summary ====" in proc.stdout


def test_wide_part_is_trained_by_ftrl_and_deep_part_by_the_optimizer_with_deeprec_widths(real_run):
    ckpt, _ = real_run
    latest = tf.train.latest_checkpoint(str(ckpt))
    shapes = dict(tf.train.list_variables(latest))
    # deep: 64-wide embeddings, 128 for the columns with >= 100,000 buckets; DNN 1024-512-256
    assert shapes["embedding/C1"] == [2500, 64] and shapes["embedding/C3"] == [300000, 128]
    width = 18 * 64 + 8 * 128 + 13
    assert shapes["dnn/layer0/kernel"] == [width, 1024]
    assert shapes["dnn/layer2/kernel"] == [512, 256] and shapes["dnn_logit/layer0/kernel"] == [256, 1]
    # wide: one weight per hashed value and per numeric column, with FTRL's accumulators
    assert shapes["linear/embedding/C3"] == [300000, 1] and shapes["linear/numeric/kernel"] == [13, 1]
    assert "linear/embedding/C3/Ftrl" in shapes and "linear/embedding/C3/Ftrl_1" in shapes
    assert not any(n.startswith("linear/") and "Adam" in n for n in shapes)  # (lazy Adam: LazyAdam slots)
    # the deep part's lazy Adam slots, and no FTRL slot outside the wide part
    assert "embedding/C3/LazyAdam" in shapes and "dnn/layer0/kernel/LazyAdam_1" in shapes
    assert not any("Ftrl" in n and not n.startswith("linear/") for n in shapes)
    wide = tf.train.load_variable(latest, "linear/embedding/C1")
    assert np.count_nonzero(wide) > 0  # FTRL moved the weights of the values seen


def test_evaluate_scores_the_checkpoint_again_without_training(real_run):
    ckpt, _ = real_run
    before = read_result(ckpt)
    proc = run_train("wide_and_deep", ["--train_files", CRITEO_SAMPLE, "--checkpoint", ckpt, "--evaluate"])
    after = read_result(ckpt)
    assert after["steps"] == 36 and after["steps_this_run"] == 0
    assert after["auc"] == pytest.approx(before["auc"], abs=1e-6)
    assert after["samples_per_sec"] == before["samples_per_sec"]  # the training figures are kept
    assert after["export_dir"] == before["export_dir"]
    assert "AUC" in proc.stdout


def test_predict_writes_one_score_per_eval_row_in_file_order(real_run):
    ckpt, _ = real_run
    proc = run_train("wide_and_deep", ["--train_files", CRITEO_SAMPLE, "--checkpoint", ckpt, "--predict"])
    path = ckpt / "predictions.csv"
    assert str(path) in proc.stdout
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1000
    expected_labels = [int(line.split("\t")[0]) for line in CRITEO_SAMPLE.read_text().splitlines()[8999:]]
    labels = [int(r["label"]) for r in rows]
    assert labels == expected_labels
    probs = np.array([float(r["probability"]) for r in rows])
    assert ((probs > 0) & (probs < 1)).all()
    assert roc_auc_score(labels, probs) == pytest.approx(read_result(ckpt)["auc"], abs=1e-4)


def test_evaluate_without_a_checkpoint_is_refused_with_a_message(tmp_path):
    proc = run_train("wide_and_deep", ["--data_location", tmp_path / "none", "--checkpoint", tmp_path / "c",
                                       "--evaluate"], check=False)
    assert proc.returncode == 1
    assert "--evaluate needs a trained model" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["--evaluate", "--predict"], "give one of them"),
    (["--global_batch_size", "512", "--batch_size", "256"], "conflict"),
    (["--lr_scaling", "linear"], "it needs --hvd"),
    (["--dropout", "1.5"], "expected a dropout rate in [0, 1)"),
    (["--deep_dropout", "0.3"], "--deep_dropout is now the shared --dropout"),
    (["--linear_l1_regularization", "-1"], "expected a number >= 0"),
    (["--evaluate", "--hvd"], "--hvd acts on training, and --evaluate does not train"),
])
def test_conflicting_or_invalid_flags_exit_2_before_any_work(tmp_path, argv, message):
    proc = run_train("wide_and_deep", [*argv, "--checkpoint", tmp_path / "c"], check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "c").exists()


def test_deep_learning_rate_is_the_deep_parts_and_the_wide_part_trains_at_lrs_rate():
    wd, lr = load_train_module("wide_and_deep"), load_train_module("lr")
    from modelzoo import flags
    parse = lambda argv: flags.parse(wd.SPEC.name, argv, wd.SPEC.defaults, wd.SPEC.speed_defaults,  # noqa: E731
                                     wd.SPEC.add_flags)
    assert parse([]).learning_rate == wd.SPEC.defaults["learning_rate"]
    assert parse(["--deep_learning_rate", "0.005"]).learning_rate == 0.005
    args = parse(["--global_batch_size", "512"])
    assert args.batch_size == 512 and args.linear_learning_rate == flags.LINEAR_FTRL_RATE == lr.SPEC.defaults["learning_rate"]


def test_schema_crosses_hash_the_joint_values_into_their_own_wide_weights(tmp_path, generated_criteo):
    doc = json.loads((REPO / "modelzoo" / "schemas" / "criteo.json").read_text())
    for col in doc["columns"]:
        if col["kind"] == "categorical":
            col["hash_buckets"] = min(col["hash_buckets"], 1000)
    doc["crosses"] = [{"name": "C1_x_C2", "columns": ["C1", "C2"], "hash_buckets": 5000}]
    schema_path = tmp_path / "crossed.json"
    schema_path.write_text(json.dumps(doc))

    from modelzoo import features
    from modelzoo.schema import load_schema
    schema = load_schema(str(schema_path))
    raw = {c.name: tf.constant(["a", "a", "b"]) for c in schema.categorical}
    raw.update({c.name: tf.constant([1, 2, 3], tf.int64) for c in schema.numeric})
    raw["C2"] = tf.constant(["x", "y", "x"])
    ids = features.transform(raw, schema)[features.CROSS_IDS].numpy()[:, 0]
    assert ids.shape == (3,) and len(set(ids)) == 3 and (0 <= ids).all() and (ids < 5000).all()

    ckpt = tmp_path / "ckpt"
    run_train("wide_and_deep", ["--train_files", generated_criteo, "--schema", schema_path, "--checkpoint", ckpt,
                                "--batch_size", 512, "--steps", 10, "--deep_hidden_units", 64, 32, "--no_eval"])
    latest = tf.train.latest_checkpoint(str(ckpt))
    assert dict(tf.train.list_variables(latest))["linear/cross/C1_x_C2"] == [5000, 1]
    assert np.count_nonzero(tf.train.load_variable(latest, "linear/cross/C1_x_C2")) > 0


def test_bad_cross_in_a_schema_is_refused_naming_it(tmp_path):
    from modelzoo.schema import SchemaError, parse_schema
    doc = json.loads((REPO / "modelzoo" / "schemas" / "criteo.json").read_text())
    doc["crosses"] = [{"name": "bad", "columns": ["C1", "I1"], "hash_buckets": 10}]
    with pytest.raises(SchemaError, match="cross 1 \\('bad'\\).*categorical columns"):
        parse_schema(doc, "x.json")


def test_bf16_runs_the_dnn_in_bfloat16_with_dropout_and_float32_weights(tmp_path, generated_criteo, small_schema):
    ckpt = tmp_path / "ckpt"
    run_train("wide_and_deep", ["--train_files", generated_criteo, "--schema", small_schema, "--checkpoint", ckpt,
                                "--batch_size", 512, "--steps", 5, "--bf16", "--dropout", 0.3,
                                "--deep_hidden_units", 64, 32, "--no_eval"])
    latest = tf.train.latest_checkpoint(str(ckpt))
    assert tf.train.load_variable(latest, "dnn/layer0/kernel").dtype == np.float32
    from pathlib import Path

    from tensorflow.core.protobuf import meta_graph_pb2
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(Path(latest + ".meta").read_bytes())
    nodes = meta.graph_def.node
    bf16_matmuls = [n.name for n in nodes if n.op == "MatMul" and n.attr["T"].type == tf.bfloat16]
    assert any(n.startswith("dnn/") for n in bf16_matmuls)
    assert not any(n.startswith(("dnn_logit", "linear")) for n in bf16_matmuls)
    assert any("dropout" in n.name for n in nodes)

"""DLRM end to end: real-data AUC, result.json, SavedModel round trip, resume, refusals, BF16."""
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import criteo_sample  # noqa: F401 (a fixture)
from conftest import (REPO, bf16_matmuls, dense_only_auc, load_train_module, raw_columns, read_result, run_train,
                      score_in_fresh_process, small_schema_file)

RESULT_KEYS = {"model", "flags", "train_rows", "eval_rows", "steps", "batch_size", "samples_per_sec",
               "wall_seconds", "peak_rss_mb", "auc", "logloss", "accuracy", "tf_version", "cpu"}


def dlrm_spec():
    return load_train_module("dlrm")


def test_interaction_dot_is_the_lower_triangle_of_pairwise_dots():
    dlrm = dlrm_spec()
    rng = np.random.default_rng(0)
    bottom = rng.standard_normal((3, 4)).astype(np.float32)
    emb = rng.standard_normal((3, 5, 4)).astype(np.float32)
    out = dlrm.interact(tf.constant(bottom), tf.constant(emb), "dot").numpy()
    vectors = np.concatenate([bottom[:, None], emb], 1)
    pairs = [vectors[:, i] @ vectors[:, j].T for i in range(6) for j in range(i)]
    expected = np.concatenate([bottom, np.stack([np.diag(p) for p in pairs], 1)], 1)
    assert out.shape == (3, 4 + 15)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert dlrm.interact(tf.constant(bottom), tf.constant(emb), "cat").shape == (3, 24)


PER_COLUMN = "--emb_fusion=false"  # real_run's table layout


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One DLRM run on the real Criteo sample (last 10% held out), shared by the tests below. It pins one
    table per column: its seeded AUC repeats run to run (0.7525 twice), while with the default fused table
    the sparse gradient's sums run on two threads in varying order and one seed's AUC on these 1,000 rows
    moves by up to 0.01 (seed 1: 0.7327, 0.7424, 0.7439). The median of 7 seeds is 0.7424 fused and 0.7388
    per column (benchmarks/criteo_sample_auc.py, 2026-12-03), and 0.7307 with the embeddings multiplied by 0."""
    sample = REPO.parent / "shared" / "data" / "criteo-kaggle-head10k" / "train.txt"
    if not sample.is_file():
        pytest.skip(f"real Criteo sample not found at {sample}")
    ckpt = tmp_path_factory.mktemp("dlrm") / "ckpt"
    proc = run_train("dlrm", ["--train_files", sample, "--checkpoint", ckpt, "--batch_size", 256,
                              "--steps", 100, "--timeline", 50, PER_COLUMN])
    return sample, ckpt, proc


def test_real_criteo_sample_reaches_auc_070_above_the_dense_only_baseline_and_writes_a_complete_result(real_run):
    """Measured (2026-12-02): AUC 0.7525 against the dense-only baseline's 0.7219 (+0.031); with the
    embeddings multiplied by 0 the same run reaches 0.7277 (+0.006), so a margin of 0.015 tells them apart."""
    sample, ckpt, proc = real_run
    result = read_result(ckpt)
    assert RESULT_KEYS <= set(result)
    assert result["auc"] >= 0.70, result["auc"]
    baseline = dense_only_auc(sample, result["train_rows"], result["eval_rows"])
    assert result["auc"] >= baseline + 0.015, (result["auc"], baseline)
    assert (result["train_rows"], result["eval_rows"], result["steps"]) == (8999, 1000, 100)
    assert result["samples_per_sec"] > 0 and result["peak_rss_mb"] > 0
    assert 0 < result["logloss"] < 0.7 and 0.5 < result["accuracy"] <= 1
    assert "==== summary ====" in proc.stdout and "AUC" in proc.stdout


FUSED_SEEDS = (1, 2, 3)


def test_shipped_fused_layout_beats_the_dense_only_baseline_by_the_margin_in_the_median_of_three_seeds(
        tmp_path, criteo_sample):  # noqa: F811
    """The shipped default (one fused table), 100 steps of 256, on one thread (--intra 1 --inter 1) and with the
    batches in their seeded order (--smartstaged false: smart staging lets the parallel decoder hand batches over
    out of order, which a loaded machine does), where its seeded runs repeat exactly (on two threads the sparse
    gradient's sums run in varying order). Measured 2026-12-07 (Zen 4) while a 45.8M-row run loaded both cores:
    seeds 1-3 gave 0.7439, 0.7339, 0.7461 twice with --smartstaged false, and 0.7439, 0.7265, 0.7448 then
    0.7439, 0.7339, 0.7461 with it on (the suite once failed on a median of 0.7339 so). One seed
    cannot tell it from embeddings that contribute nothing: measured (2026-12-06, 2-vCPU AMD EPYC Zen 4,
    benchmarks/criteo_sample_auc.py --steps 100 "--extra=--intra 1 --inter 1": criteo_sample_auc_dlrm_fused_
    1thread.json) seeds 1, 2, 3 and 2021 reach 0.7439, 0.7337, 0.7461 and 0.7280, and the same runs with
    the embeddings multiplied by 0 (a scratch copy of dlrm/train.py: ..._zero_embeddings_1thread.json)
    0.7307, 0.7246, 0.7279. So the median of seeds 1-3 is checked: 0.7439 (+0.022 over the dense-only
    0.7219) against 0.7279 (+0.006) without embeddings; a margin of 0.015 tells them apart."""
    import subprocess
    import sys
    procs = {seed: subprocess.Popen([sys.executable, str(REPO / "dlrm" / "train.py"), "--train_files",
                                     str(criteo_sample), "--checkpoint", str(tmp_path / f"s{seed}"), "--batch_size",
                                     "256", "--steps", "100", "--seed", str(seed), "--intra", "1", "--inter", "1",
                                     "--smartstaged", "false", "--log_steps", "1000"],
                                    cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for seed in FUSED_SEEDS}
    for seed, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, (seed, err[-2000:])
    results = [read_result(tmp_path / f"s{seed}") for seed in FUSED_SEEDS]
    assert all(r["flags"]["emb_fusion"] for r in results)  # the shipped default layout
    aucs = sorted(r["auc"] for r in results)
    baseline = dense_only_auc(criteo_sample, results[0]["train_rows"], results[0]["eval_rows"])
    assert aucs[1] >= baseline + 0.015, (aucs, baseline)

def test_timeline_writes_chrome_traces(real_run):
    _, ckpt, _ = real_run
    traces = sorted((Path(ckpt) / "timeline").glob("timeline-*.json"))
    assert traces, "no timeline-*.json written"
    assert "traceEvents" in json.loads(traces[0].read_text())


def test_saved_model_scores_equal_estimator_predict(real_run):
    sample, ckpt, _ = real_run
    dlrm = dlrm_spec()
    from modelzoo import flags
    from modelzoo.datafiles import Slice
    from modelzoo.features import make_dataset
    from modelzoo.run.context import RunContext
    from modelzoo.run.graph import build_estimator
    from modelzoo.schema import load_schema

    args = flags.parse("dlrm", ["--batch_size", "256", PER_COLUMN], speed_defaults=dlrm.SPEC.speed_defaults,
                       add_model_flags=dlrm.add_flags)
    schema = load_schema("criteo").with_embedding_dim(dlrm.EMBEDDING_DIM)
    rows = Slice(str(sample), 9899, 9999)
    estimator = build_estimator(RunContext.create(dlrm.SPEC, args, schema), str(ckpt))
    predicted = np.array([p["probabilities"] for p in estimator.predict(
        lambda: make_dataset([rows], schema, "\t", 64, training=False, smartstaged=True).map(lambda f, y: f))])

    lines = Path(sample).read_text().splitlines()[9899:9999]
    fields = [line.split("\t") for line in lines]
    raw = {}
    for k, col in enumerate(schema.columns):
        if col.kind == "numeric":
            raw[col.name] = tf.constant([int(f[k]) if f[k] else 0 for f in fields], tf.int64)
        elif col.kind == "categorical":
            raw[col.name] = tf.constant([f[k] for f in fields])
    export = read_result(ckpt)["export_dir"]
    served = tf.saved_model.load(export).signatures["serving_default"](**raw)["probabilities"].numpy()
    assert served.shape == (100,)
    np.testing.assert_allclose(served, predicted, rtol=1e-5, atol=1e-6)


def test_rerun_resumes_from_the_checkpoint_and_refuses_another_layout(real_run):
    sample, ckpt, _ = real_run
    proc = run_train("dlrm", ["--train_files", sample, "--checkpoint", ckpt, "--batch_size", 256,
                              "--steps", 110, "--no_eval", PER_COLUMN])
    assert "resuming from step 100" in proc.stdout
    result = read_result(ckpt)
    assert result["steps"] == 110 and result["steps_this_run"] == 10
    again = run_train("dlrm", ["--train_files", sample, "--checkpoint", ckpt, "--batch_size", 256,
                               "--steps", 110, "--no_eval", PER_COLUMN])
    assert "nothing to train" in again.stdout
    kept = read_result(ckpt)
    assert kept["steps_this_run"] == 0 and kept["samples_per_sec"] == result["samples_per_sec"]
    refused = run_train("dlrm", ["--train_files", sample, "--checkpoint", ckpt, "--interaction_op", "cat", PER_COLUMN],
                        check=False)
    assert refused.returncode == 1
    assert "cannot be resumed" in refused.stderr and "interaction_op" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_generated_default_data_and_bf16_keep_float32_weights(tmp_path, small_schema):
    data, ckpt = tmp_path / "nodata", tmp_path / "ckpt"
    proc = run_train("dlrm", ["--data_location", data, "--generate_rows", 20000, "--schema", small_schema,
                              "--checkpoint", ckpt, "--batch_size", 512, "--steps", 20, "--bf16"])
    assert "generating a synthetic Criteo-format sample of 20,000 rows" in proc.stdout
    from modelzoo.system import bf16_message, cpu_info, onednn_enabled
    assert bf16_message(cpu_info(), onednn_enabled()) in proc.stdout  # this CPU's flags and oneDNN's state
    result = read_result(ckpt)
    assert result["generated_data"] and result["train_rows"] == 18000 and result["auc"] is not None
    latest = tf.train.latest_checkpoint(str(ckpt))
    dtypes = {name: tf.train.load_variable(latest, name).dtype for name, _ in tf.train.list_variables(latest)}
    assert dtypes["bottom_mlp/layer0/kernel"] == np.float32 and dtypes["top_mlp/layer0/kernel"] == np.float32
    matmuls = bf16_matmuls(ckpt)
    assert any(n.startswith("bottom_mlp") for n in matmuls)
    assert not any(n.startswith("logit") for n in matmuls)  # the logit stays float32


def test_malformed_input_stops_with_file_line_and_problem(tmp_path, generated_criteo):
    lines = generated_criteo.read_text().splitlines()[:3000]
    lines[1234] = "\t".join(lines[1234].split("\t")[:-3])  # in the training rows
    lines[2800] = lines[2800].replace("\t", "\tx", 1)  # in the held-out rows: a non-numeric I1
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    proc = run_train("dlrm", ["--train_files", bad, "--checkpoint", tmp_path / "c1", "--batch_size", 512,
                              "--steps", 8, "--no_eval"], check=False)
    assert proc.returncode == 1
    assert f"{bad}:1235: expected 40 fields, found 37" in proc.stderr
    assert "Traceback" not in proc.stderr
    # one step of 2,700 rows reads each training row exactly once; evaluation reads its rows once
    proc = run_train("dlrm", ["--train_files", bad, "--checkpoint", tmp_path / "c2", "--batch_size", 2700,
                              "--steps", 1, "--bad_rows", "skip"])
    result = read_result(tmp_path / "c2")
    assert result["bad_rows_skipped"] == {"train": 1, "eval": 1}
    assert "bad rows skipped: 1 in training, 1 in evaluation" in proc.stdout


def test_eval_rows_of_one_class_report_auc_undefined_not_a_number(tmp_path, generated_criteo, small_schema):
    """The AUC of labels of one class is undefined (metrics.exact_auc: NaN): result.json says null (valid
    JSON, not NaN), the summary "n/a: one class", and a warning says why."""
    lines = generated_criteo.read_text().splitlines()[:2000]
    lines[1800:] = ["0" + line[1:] for line in lines[1800:]]  # the held-out rows: every label 0
    data = tmp_path / "one_class.txt"
    data.write_text("\n".join(lines) + "\n")
    proc = run_train("dlrm", ["--train_files", data, "--schema", small_schema, "--checkpoint", tmp_path / "c",
                              "--batch_size", 256, "--steps", 2])
    assert '"auc": null' in (tmp_path / "c" / "result.json").read_text()
    result = read_result(tmp_path / "c")
    assert result["auc"] is None and result["auc_undefined"] == "one class in the eval labels"
    assert result["logloss"] is not None
    assert "eval: AUC n/a: one class | logloss" in proc.stdout
    assert "warning: AUC undefined: the 200 eval rows hold one class only" in proc.stderr


def test_refused_flag_exits_2_before_any_work(tmp_path):
    proc = run_train("dlrm", ["--workqueue", "--checkpoint", tmp_path / "c"], check=False)
    assert proc.returncode == 2 and "--workqueue needs a parameter-server job" in proc.stderr
    assert not (tmp_path / "c").exists()


def test_tf_baseline_trains_stock_feature_columns_and_serves_what_it_trained(tmp_path, generated_criteo, small_schema):
    """--tf builds the embeddings with tf.feature_column (hash-bucket + embedding columns through
    input_layer), the stock recipe the speed switches are measured against: it trains, its SavedModel
    scores (in a fresh process) what --predict (Estimator.predict) scores, and its checkpoint (another
    variable layout) is not resumed without --tf."""
    ckpt = tmp_path / "tf"
    common = ["--train_files", generated_criteo, "--schema", small_schema, "--batch_size", 256, "--steps", 12]
    run_train("dlrm", [*common, "--checkpoint", ckpt, "--tf"])
    result = read_result(ckpt)
    assert result["flags"]["tf"] is True and 0.5 < result["auc"] < 1.0
    names = [name for name, _ in tf.train.list_variables(str(ckpt))]
    assert "embedding/input_layer/C1_embedding/embedding_weights" in names
    assert "embedding/C1" not in names
    proc = run_train("dlrm", [*common, "--checkpoint", ckpt, "--steps", 14], check=False)
    assert proc.returncode == 1 and "--tf: checkpoint has 'stock (--tf)', this run 'model zoo'" in proc.stderr
    export = sorted((ckpt / "export").glob("*"))[-1]
    from modelzoo.schema import load_schema
    lines = generated_criteo.read_text().splitlines()[-5:]
    scores = score_in_fresh_process({"tf": str(export)}, raw_columns(load_schema(str(small_schema)), lines), tmp_path)
    assert scores["tf"].shape == (5,) and ((scores["tf"] > 0) & (scores["tf"] < 1)).all()
    predicted = run_train("dlrm", [*common[:4], "--checkpoint", ckpt, "--tf", "--predict"])
    assert "predictions: 2,000 eval rows" in predicted.stdout
    rows = (ckpt / "predictions.csv").read_text().splitlines()[-5:]  # file order: the same last 5 rows
    assert [int(r.split(",")[0]) for r in rows] == [int(line.split("\t")[0]) for line in lines]
    np.testing.assert_allclose(scores["tf"], [float(r.split(",")[1]) for r in rows], rtol=0, atol=1e-5)


def test_stock_feature_columns_hash_like_the_model_zoos_tables():
    """FeatureColumnTables looks up the row EmbeddingTables would (the same string hash), except that
    an empty string is stock TensorFlow's missing value: the zero vector."""
    from modelzoo import features as F
    from modelzoo.schema import load_schema
    tf1 = tf.compat.v1
    schema = load_schema("criteo").with_embedding_dim(4)
    values = ["a1b2c3d4", "", "68fd1e64"]
    graph = tf.Graph()
    with graph.as_default():
        raw = {c.name: tf.constant(values) for c in schema.categorical}
        raw.update({c.name: tf.zeros([len(values)], tf.int64) for c in schema.numeric})
        stock = F.FeatureColumnTables(schema).lookup(raw)[0]
        table = [v for v in tf1.global_variables() if v.name.startswith("embedding/input_layer/C1_embedding")][0]
        ids = F.transform(raw, schema)[F.IDS][:, 0]
        expected = tf.gather(table, ids)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            got, want = sess.run([stock, expected])
    np.testing.assert_allclose(got[[0, 2]], want[[0, 2]], rtol=1e-6)
    assert not got[1].any()


def categorical_only(tmp_path, generated_criteo, rows=3000):
    """The small Criteo schema and rows without their 13 numeric columns, as Avazu-like data has none."""
    doc = json.loads(small_schema_file(tmp_path / "small.json").read_text())
    keep = [k for k, c in enumerate(doc["columns"]) if c["kind"] != "numeric"]
    doc["columns"] = [doc["columns"][k] for k in keep]
    doc["name"] = "criteo_categorical"
    (tmp_path / "cat.json").write_text(json.dumps(doc))
    lines = Path(generated_criteo).read_text().splitlines()[:rows]
    (tmp_path / "train.txt").write_text("".join("\t".join(line.split("\t")[k] for k in keep) + "\n"
                                                for line in lines))
    return tmp_path / "cat.json", tmp_path / "train.txt"


@pytest.mark.parametrize("op", ["dot", "cat"])
def test_a_schema_without_numeric_columns_trains_without_the_dense_part(tmp_path, generated_criteo, op):
    """No numeric column (Avazu): no bottom MLP, the 26 embeddings interact alone; it trains, evaluates,
    exports and serves."""
    schema, data = categorical_only(tmp_path, generated_criteo)
    ckpt = tmp_path / "ckpt"
    proc = run_train("dlrm", ["--train_files", data, "--schema", schema, "--checkpoint", ckpt, "--steps", 20,
                              "--batch_size", 128, "--interaction_op", op])
    result = read_result(ckpt)
    assert result["steps"] == 20 and 0 <= result["auc"] <= 1 and result["eval_rows"] == 300, proc.stdout
    names = [n for n, _ in tf.train.list_variables(str(ckpt))]
    assert not any(n.startswith("bottom_mlp") for n in names) and any(n.startswith("top_mlp") for n in names)
    top_in = dict(tf.train.list_variables(str(ckpt)))["top_mlp/layer0/kernel"][0]
    assert top_in == (26 * 25 // 2 if op == "dot" else 26 * 16)  # the pairs of 26 embeddings, or them all
    signature = tf.saved_model.load(result["export_dir"]).signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == sorted(f"C{i}" for i in range(1, 27))


def test_schema_crosses_are_refused_by_dlrm_which_has_no_wide_part(tmp_path, capsys):
    dlrm = dlrm_spec()
    from modelzoo.runner import main
    doc = json.loads((REPO / "modelzoo" / "schemas" / "criteo.json").read_text())
    doc["crosses"] = [{"name": "C1_x_C2", "columns": ["C1", "C2"], "hash_buckets": 100}]
    schema = tmp_path / "crossed.json"
    schema.write_text(json.dumps(doc))
    assert main(dlrm.SPEC, ["--schema", str(schema), "--checkpoint", str(tmp_path / "ckpt"),
                            "--data_location", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err == (f"dlrm/train.py: error: --schema {schema}: its crosses (C1_x_C2) feed a wide (linear) part, "
                   "which dlrm has not; remove 'crosses' from the schema\n")
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "none").exists()  # before any work


@pytest.mark.parametrize("model,dims,words", [
    ("dlrm", "4,32", "the last width must be the model's embedding width (dlrm: 16), e.g. 4,16"),
    ("wide_and_deep", "16,32", "the last width must be the model's embedding width (wide_and_deep: 64 or 128)"),
    ("wide_and_deep", "1,2,128", "scaled to the 64-wide tables the widths merge into [1, 64]"),
])
def test_dynamic_ev_dims_that_the_model_would_rescale_are_refused(model, dims, words):
    from modelzoo import flags
    from modelzoo.runner import model_schema
    spec = load_train_module(model).SPEC
    args = flags.parse(model, ["--ev", "--dynamic_ev", "--dynamic_ev_dims", dims], spec.defaults,
                       spec.speed_defaults, spec.add_flags)
    with pytest.raises(flags.FlagError) as err:
        model_schema(spec, args)
    assert err.value.message.startswith(f"--dynamic_ev_dims {dims}: {words}"), err.value.message


def test_dynamic_ev_dims_of_the_models_width_are_accepted_and_each_table_width_announced():
    from modelzoo import flags
    from modelzoo.embedding_variables import describe
    from modelzoo.runner import model_schema
    for model, dims, announced in (("dlrm", "4,16", ["16-wide tables: row widths [4, 16]"]),
                                   ("wide_and_deep", "16,64", ["64-wide tables: row widths [16, 64]",
                                                               "128-wide tables: row widths [32, 128]"])):
        spec = load_train_module(model).SPEC
        args = flags.parse(model, ["--ev", "--dynamic_ev", "--dynamic_ev_dims", dims], spec.defaults,
                           spec.speed_defaults, spec.add_flags)
        line = describe(args, model_schema(spec, args))
        assert all(words in line for words in announced), line

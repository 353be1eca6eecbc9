"""DeepFM: fm/'s terms and a DNN over the same field vectors, its first order trained with FTRL as lr/'s; on the
real Criteo sample it beats the dense-only logistic regression by the margin the other models' tests use."""
import pytest

from conftest import CRITEO_SAMPLE, criteo_sample, dense_only_auc, read_result, run_train  # noqa: F401
from conftest import tiny_schema_data
from test_fast_models import train_one_step


@pytest.mark.fast
def test_fm_and_dnn_read_one_set_of_field_vectors_and_the_first_order_trains_with_ftrl(tmp_path):
    data, schema = tiny_schema_data(tmp_path, "criteo", 50)
    _, _, _, ops = train_one_step("deepfm", [], data, schema, tmp_path / "m")
    shapes = {op.name: op.get_attr("shape").dim for op in ops if op.type in ("VarHandleOp", "VariableV2")}
    shapes = {name: [d.size for d in dims] for name, dims in shapes.items()}
    tables = sorted(n for n in shapes if n.startswith("embedding/") and "/" not in n[len("embedding/"):])
    # one 16-wide table per categorical column, read by both the FM term and the DNN (no second set)
    assert len(tables) == 26 and all(shapes[n][1] == 16 for n in tables), tables
    assert shapes["fm/numeric_factors"] == [13, 16]
    assert shapes["dnn/layer0/kernel"] == [(26 + 13) * 16, 400] and shapes["dnn/layer2/kernel"] == [400, 400]
    assert shapes["dnn_logit/layer0/kernel"] == [400, 1]
    # the first order (lr/'s linear part) with FTRL's slots, every other variable with lazy Adam's
    assert shapes["linear/embedding/C1"] == [50, 1] and shapes["linear/numeric/kernel"] == [13, 1]
    assert "linear/embedding/C1/Ftrl" in shapes and "embedding/C1/LazyAdam" in shapes
    assert not [n for n in shapes if "Ftrl" in n and not n.startswith("linear/")]
    assert not [n for n in shapes if "LazyAdam" in n and n.startswith("linear/")]


def test_deepfm_trains_on_the_criteo_sample_above_the_dense_only_baseline(tmp_path, criteo_sample):  # noqa: F811
    ckpt = tmp_path / "ckpt"
    run_train("deepfm", ["--train_files", CRITEO_SAMPLE, "--checkpoint", ckpt, "--global_batch_size", 256,
                         "--steps", 100, "--seed", 1])
    result = read_result(ckpt)
    assert result["model"] == "deepfm" and result["export_dir"]
    # Measured (2026-12-06, benchmarks/criteo_sample_auc.py --model deepfm, seeds 1-3:
    # benchmarks/results/criteo_sample_auc_deepfm.json): AUC 0.7513, 0.7542, 0.7561 against the dense-only
    # baseline's 0.7219 (+0.029 at least; seed 1 0.7513 in each of two runs). Without the defaults' regularizers
    # (--emb_l2 0 --dropout 0: ..._deepfm_no_regularizers.json) seed 1 ends at 0.7219, the floor itself.
    # The other models' margin of 0.015 tells them apart.
    baseline = dense_only_auc(CRITEO_SAMPLE, result["train_rows"], result["eval_rows"])
    assert result["auc"] >= baseline + 0.015, (result["auc"], baseline)

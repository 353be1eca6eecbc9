"""DCN-v2 through the shared runner on the Criteo sample: it trains, evaluates and exports, and beats
the dense-only logistic regression."""
from conftest import CRITEO_SAMPLE, criteo_sample, read_result, run_train  # noqa: F401


def test_dcn_v2_trains_on_the_criteo_sample_above_the_dense_only_baseline(tmp_path, criteo_sample):  # noqa: F811
    ckpt = tmp_path / "ckpt"
    run_train("dcn_v2", ["--train_files", CRITEO_SAMPLE, "--checkpoint", ckpt, "--batch_size", 256,
                         "--steps", 40, "--bf16"])
    result = read_result(ckpt)
    assert result["model"] == "dcn_v2" and result["export_dir"]
    assert result["auc"] > 0.7219, result["auc"]  # data/generate_criteo.dense_lr_auc on the sample

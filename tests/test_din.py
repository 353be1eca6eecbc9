"""DIN end to end on the Taobao-shaped generator: the stock-op export of a model with sequence inputs (fixed
tables, --emb_fusion with micro-batches, --ev with a filter) loads in a fresh process without TFRA or this
repository and scores the held-out rows as --predict does; warm start from an --ev export; and attention over
the history beats its mean, which beats no history, on one small seed by a measured margin."""
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import REPO, raw_columns, read_result, run_train, score_in_fresh_process

ROWS = 3000
COMMON = ["--batch_size", 128, "--steps", 6, "--seed", 3, "--no_eval"]
RUNS = {
    "din": [],
    "din_fused_micro": ["--emb_fusion", "--micro_batch", 2, "--smartstaged=false"],
    "din_ev": ["--ev", "--ev_filter", "counter", "--ev_filter_freq", 2],
    "din_mean": ["--history_pooling", "mean"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from modelzoo.synthetic_sequences import generate_taobao
    root = tmp_path_factory.mktemp("din")
    generate_taobao(root / "train.txt", ROWS, seed=4)

    def train_and_predict(name):
        flags = ["--train_files", root / "train.txt", "--checkpoint", root / name, *COMMON, *RUNS[name]]
        run_train("din", flags)
        scoring = [f for f in flags if f != "--no_eval"]  # (training's flags are refused with --predict)
        for flag in ("--steps", "--micro_batch"):
            if flag in scoring:
                del scoring[scoring.index(flag):scoring.index(flag) + 2]
        run_train("din", [*scoring, "--predict"])
        lines = (root / name / "predictions.csv").read_text().splitlines()[1:]
        return read_result(root / name)["export_dir"], np.array([float(line.split(",")[1]) for line in lines])

    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {name: pool.submit(train_and_predict, name) for name in RUNS}
        out = {name: job.result() for name, job in jobs.items()}
    out["root"] = root
    return out


def test_din_exports_are_stock_tensorflow_and_score_sequence_rows_like_predict(runs, tmp_path):
    """The serving request holds one '|'-joined string per row for each history column (raw_columns)."""
    from modelzoo.schema import load_schema
    lines = (runs["root"] / "train.txt").read_text().splitlines()[-ROWS // 10:]
    raw = raw_columns(load_schema("taobao"), lines)
    assert "user" not in raw and raw["hist_item"][0].count("|") >= 0
    scores = score_in_fresh_process({name: str(runs[name][0]) for name in RUNS}, raw, tmp_path)
    for name in RUNS:
        predicted = runs[name][1]
        assert scores[name].shape == predicted.shape == (len(lines),), name
        np.testing.assert_allclose(scores[name], predicted, rtol=0, atol=1e-5, err_msg=name)  # (6 decimals)
        assert np.ptp(scores[name]) > 1e-3, f"{name}: every row scored alike"


def test_din_warm_starts_from_an_ev_export(runs, tmp_path):
    root = runs["root"]
    proc = run_train("din", ["--train_files", root / "train.txt", "--checkpoint", tmp_path / "warm", *COMMON,
                             "--ev", "--warm_start_from", runs["din_ev"][0]])
    # one table per categorical column: the histories read their candidates' (item, cat), none of their own
    assert "warm start: initialized from" in proc.stdout and " 5 embedding tables" in proc.stdout, proc.stdout[-2000:]


def test_attention_beats_mean_beats_no_history_on_one_small_seed(tmp_path):
    """40,000 generated rows (seed 11), 2 epochs, one run each. Measured 2026-12-06 on the Zen 4 host: see the
    margins beside the assertions (benchmarks/sequence_models.py runs 3 seeds at 100,000 rows)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from sequence_models import compare
    r = compare([11], 40_000, 2, tmp_path)[11]
    auc = {p: r[p]["auc"] for p in ("attention", "mean", "none")}
    assert auc["attention"] - auc["mean"] > MARGIN_ATTENTION_MEAN, auc
    assert auc["mean"] - auc["none"] > MARGIN_MEAN_NONE, auc


MARGIN_ATTENTION_MEAN = 0.01
MARGIN_MEAN_NONE = 0.01

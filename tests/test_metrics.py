"""The one exact AUC (modelzoo.metrics.roc_auc) on hand-computed cases; the streaming metrics (AUC to 1e-9:
float64, log loss, accuracy) agree with scikit-learn on the same predictions; labels of one class give no
AUC (None, or NaN inside a tensor), not a number that looks like one."""
import numpy as np
import pytest
import tensorflow as tf
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from modelzoo import metrics as metrics_module
from modelzoo.metrics import eval_metrics, roc_auc

pytestmark = pytest.mark.fast  # the fast tier (make test-fast)

tf1 = tf.compat.v1


@pytest.mark.parametrize("labels, scores, auc", [
    ([0, 1], [0.1, 0.9], 1.0),  # the positive ranked first
    ([1, 0], [0.1, 0.9], 0.0),
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 3 of the 4 positive-negative pairs in order
    ([0, 1], [0.5, 0.5], 0.5),  # a tie counts half
    ([0, 1, 0, 1], [0.2, 0.2, 0.2, 0.9], 0.75),  # pairs (p=0.2 vs n=0.2) x2 half, (0.9 vs n) x2 won: 3/4
    ([0, 0, 1, 0, 1], [3, 1, 3, 2, 3], 5 / 6),  # ranks 1, 2 and 4, 4, 4 (three tied 3s): (8 - 3) / (2 * 3)
])
def test_roc_auc_on_hand_cases_with_ties(labels, scores, auc):
    assert roc_auc(labels, scores) == pytest.approx(auc, abs=1e-12)
    assert roc_auc(np.array(labels, np.float32), np.array(scores, np.float32)) == pytest.approx(auc, abs=1e-7)


@pytest.mark.parametrize("label", [0, 1])
def test_roc_auc_of_one_class_is_none_not_nan(label):
    assert roc_auc([label] * 5, [0.1, 0.2, 0.3, 0.4, 0.5]) is None
    assert roc_auc([], []) is None


def test_roc_auc_refuses_labels_that_are_not_0_or_1_and_mismatched_lengths():
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        roc_auc([0, 1, 1], [0.1, 0.2])


def streamed(labels, scores, batches, state=None, every=None):
    """Run the metrics over `batches` slices like an evaluation loop does; `state` (a dict) receives the
    exact AUC's local variables' largest sizes, `every` (a list) the AUC after each batch."""
    with tf.Graph().as_default():
        y = tf1.placeholder(tf.float32, [None])
        p = tf1.placeholder(tf.float32, [None])
        metrics = eval_metrics(y, p)
        sizes = {v.op.name.split("/")[-1]: tf.size(v) for v in tf1.local_variables() if "exact_auc" in v.op.name}
        with tf1.Session() as sess:
            sess.run(tf1.local_variables_initializer())
            for part in np.array_split(np.arange(len(labels)), batches):
                sess.run([m[1] for m in metrics.values()], {y: labels[part], p: scores[part]})
                for name, size in sess.run(sizes).items() if state is not None else ():
                    state[name] = max(state.get(name, 0), int(size))
                if every is not None:
                    every.append(sess.run(metrics["auc"][0]))
            return sess.run({k: m[0] for k, m in metrics.items()})


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_exact_auc_matches_sklearn_with_and_without_ties(seed, ties):
    rng = np.random.default_rng(seed)
    labels = (rng.random(20_000) < 0.25).astype(np.float32)
    scores = np.clip(0.25 + 0.08 * labels + 0.1 * rng.standard_normal(20_000), 0.001, 0.999)
    if ties:
        scores = np.round(scores, 2)  # many tied scores, as a saturated model produces
    scores = scores.astype(np.float32)
    got = streamed(labels, scores, batches=7)
    assert abs(got["auc"] - roc_auc_score(labels, scores)) < 1e-9
    assert abs(got["logloss"] - log_loss(labels, scores)) < 1e-4
    assert abs(got["accuracy"] - accuracy_score(labels, scores > 0.5)) < 1e-6


def test_exact_auc_is_closer_than_the_thresholded_tf_auc():
    """Scores in a narrow band: tf.metrics.auc's 200 thresholds miss, the exact AUC does not."""
    rng = np.random.default_rng(3)
    labels = (rng.random(50_000) < 0.2).astype(np.float32)
    scores = (0.200 + 0.004 * labels + 0.004 * rng.standard_normal(50_000)).astype(np.float32)
    truth = roc_auc_score(labels, scores)
    with tf.Graph().as_default():
        approx, update = tf1.metrics.auc(labels, scores)
        with tf1.Session() as sess:
            sess.run(tf1.local_variables_initializer())
            sess.run(update)
            approx = sess.run(approx)
    exact = streamed(labels, scores, batches=3)["auc"]
    assert abs(exact - truth) < 1e-9
    assert abs(approx - truth) > 10 * abs(exact - truth)


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_labels_of_one_class_give_nan_as_scikit_learn_does(label):
    labels = np.full(100, label, np.float32)
    with pytest.warns(UndefinedMetricWarning, match="Only one class"):  # scikit-learn: NaN and a warning
        assert np.isnan(roc_auc_score(labels, np.linspace(0, 1, 100)))
    got = streamed(labels, np.linspace(0, 1, 100, dtype=np.float32), batches=2)
    assert np.isnan(got["auc"])


@pytest.mark.parametrize("ties", [False, True])
def test_exact_auc_merging_counts_over_many_batches_matches_sklearn(monkeypatch, ties):
    """MERGE_ROWS lowered to 500 so 40,000 rows in 97 batches go through many merges of the buffer into
    the per-score counts, and the AUC read mid-way (counts plus a part-filled buffer) is right too.
    Measured: |difference| about 1e-16; the bound is 1e-12."""
    monkeypatch.setattr(metrics_module, "MERGE_ROWS", 500)
    rng = np.random.default_rng(4)
    labels = (rng.random(40_000) < 0.3).astype(np.float32)
    scores = 1 / (1 + np.exp(-(0.6 * labels + rng.standard_normal(40_000))))
    if ties:
        scores = np.round(scores, 3)
    scores = scores.astype(np.float32)
    state, every = {}, []
    got = streamed(labels, scores, batches=97, state=state, every=every)
    assert abs(got["auc"] - roc_auc_score(labels, scores)) < 1e-12
    seen = sum(part.size for part in np.array_split(np.arange(40_000), 97)[:40])  # the first 40 batches' rows
    assert abs(every[39] - roc_auc_score(labels[:seen], scores[:seen])) < 1e-12
    distinct = np.unique(scores).size
    assert state["scores"] == distinct if ties else state["scores"] < 40_000
    # the buffer waits for as many rows as are counted: never more than twice that plus a batch
    assert state["pending_scores"] <= 2 * max(500, state["scores"]) + 413


def test_exact_auc_memory_follows_distinct_scores_not_rows(monkeypatch):
    """200,000 rows of 1,001 distinct scores: the counts hold 1,001 scores and the buffer stays at the
    merge size (rows concatenated, as the metric once kept them, would be 200,000 of each)."""
    monkeypatch.setattr(metrics_module, "MERGE_ROWS", 2000)
    rng = np.random.default_rng(5)
    labels = (rng.random(200_000) < 0.2).astype(np.float32)
    scores = (rng.integers(0, 1001, 200_000) / 1000).astype(np.float32)
    state = {}
    got = streamed(labels, scores, batches=100, state=state)
    assert abs(got["auc"] - roc_auc_score(labels, scores)) < 1e-12
    assert state["scores"] == 1001 and state["pending_scores"] <= 4000


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_one_class_after_merges_is_nan(monkeypatch, label):
    monkeypatch.setattr(metrics_module, "MERGE_ROWS", 10)
    got = streamed(np.full(1000, label, np.float32), np.linspace(0, 1, 1000, dtype=np.float32), batches=30)
    assert np.isnan(got["auc"])


def test_exact_auc_refuses_labels_that_are_not_0_or_1():
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be 0 or 1"):
        streamed(np.array([0, 2, 1], np.float32), np.array([0.1, 0.2, 0.3], np.float32), batches=1)


def test_float64_scores_are_kept_in_float64(monkeypatch):
    """Scores 1e-12 apart rank apart (AUC 1.0; float32 would tie them: 0.5), in the buffer and merged."""
    from modelzoo.metrics import exact_auc
    monkeypatch.setattr(metrics_module, "MERGE_ROWS", 3)
    with tf.Graph().as_default():
        y = tf1.placeholder(tf.float32, [None])
        p = tf1.placeholder(tf.float64, [None])
        value, update = exact_auc(y, p)
        with tf1.Session() as sess:
            sess.run(tf1.local_variables_initializer())
            sess.run(update, {y: [0, 1], p: [0.3, 0.3 + 1e-12]})
            assert sess.run(value) == 1.0  # (2 rows in the buffer)
            sess.run(update, {y: [0, 1], p: [0.2, 0.2 + 1e-12]})  # 4 rows: merged into the counts
            assert sess.run(value) == pytest.approx(roc_auc_score([0, 1, 0, 1], [0.3, 0.3 + 1e-12, 0.2, 0.2 + 1e-12]))
            assert sess.run(value) == 0.75

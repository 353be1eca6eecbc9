"""Exact AUC (to 1e-9: it is computed in float64), log loss and accuracy agree with scikit-learn on the
same predictions; labels of one class give NaN, not a number that looks like an AUC."""
import numpy as np
import pytest
import tensorflow as tf
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from modelzoo.metrics import eval_metrics

pytestmark = pytest.mark.fast  # the fast tier (make test-fast)

tf1 = tf.compat.v1


def streamed(labels, scores, batches):
    """Run the metrics over `batches` slices like an evaluation loop does."""
    with tf.Graph().as_default():
        y = tf1.placeholder(tf.float32, [None])
        p = tf1.placeholder(tf.float32, [None])
        metrics = eval_metrics(y, p)
        with tf1.Session() as sess:
            sess.run(tf1.local_variables_initializer())
            for part in np.array_split(np.arange(len(labels)), batches):
                sess.run([m[1] for m in metrics.values()], {y: labels[part], p: scores[part]})
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

"""Evaluation metrics: exact AUC, log loss and accuracy as tf.compat.v1 streaming metrics.

`tf.metrics.auc` approximates the ROC curve with 200 thresholds; on CTR data whose scores sit in a
narrow band that error reaches the third decimal. `exact_auc` keeps every (score, label) pair of the
evaluation and computes the Mann-Whitney statistic with tied scores sharing their average rank, the
same number as scikit-learn's `roc_auc_score`. With labels of one class the AUC is undefined
(scikit-learn raises): it is NaN here, and the runner reports it as such (result.json: null).
"""
import tensorflow as tf

tf1 = tf.compat.v1


def _growing_local(name, dtype):
    """A local (per-evaluation) vector that grows by concatenation."""
    return tf1.Variable(tf.zeros([0], dtype), name=name, trainable=False, validate_shape=False,
                        shape=tf.TensorShape([None]), use_resource=True,
                        collections=[tf1.GraphKeys.LOCAL_VARIABLES, tf1.GraphKeys.METRIC_VARIABLES])


def auc_from_scores(scores, labels):
    """Exact ROC AUC of float64 `scores` against 0/1 `labels` (ties get their average rank); NaN when
    the labels hold one class only (no positive-negative pair to rank)."""
    order = tf.argsort(scores, stable=True)
    sorted_scores = tf.gather(scores, order)
    sorted_labels = tf.gather(labels, order)
    n = tf.size(scores)
    ranks = tf.cast(tf.range(1, n + 1), tf.float64)
    _, tie_group = tf.unique(sorted_scores)
    mean_rank = tf.math.unsorted_segment_mean(ranks, tie_group, tf.reduce_max(tie_group) + 1)
    ranks = tf.gather(mean_rank, tie_group)
    positives = tf.reduce_sum(sorted_labels)
    negatives = tf.cast(n, tf.float64) - positives
    u = tf.reduce_sum(ranks * sorted_labels) - positives * (positives + 1.0) / 2.0
    pairs = positives * negatives
    return tf.where(pairs > 0, tf.math.divide_no_nan(u, pairs), tf.constant(float("nan"), tf.float64))


def exact_auc(labels, predictions, name="exact_auc"):
    """(value, update_op) of the exact AUC over everything seen since the local init."""
    with tf1.variable_scope(name):
        all_scores = _growing_local("scores", tf.float64)
        all_labels = _growing_local("labels", tf.float64)
    update = tf.group(
        all_scores.assign(tf.concat([all_scores, tf.cast(tf.reshape(predictions, [-1]), tf.float64)], 0)),
        all_labels.assign(tf.concat([all_labels, tf.cast(tf.reshape(labels, [-1]), tf.float64)], 0)))
    value = auc_from_scores(all_scores.read_value(), all_labels.read_value())
    return value, update


def eval_metrics(labels, probabilities):
    """The metrics every model reports: auc, logloss, accuracy."""
    eps = 1e-7
    p = tf.clip_by_value(probabilities, eps, 1 - eps)
    logloss = -(labels * tf.math.log(p) + (1 - labels) * tf.math.log(1 - p))
    return {
        "auc": exact_auc(labels, probabilities),
        "logloss": tf1.metrics.mean(logloss),
        "accuracy": tf1.metrics.accuracy(labels, tf.cast(probabilities > 0.5, tf.float32)),
    }


def streaming_sum(values, name="streaming_sum"):
    """(value, update_op) of the sum of `values` over an evaluation (tf.compat.v1 has no metrics.sum)."""
    with tf1.variable_scope(name):
        total = tf1.Variable(tf.zeros([], tf.float64), name="total", trainable=False, use_resource=True,
                             collections=[tf1.GraphKeys.LOCAL_VARIABLES, tf1.GraphKeys.METRIC_VARIABLES])
    update = total.assign_add(tf.cast(tf.reduce_sum(values), tf.float64))
    return total.read_value(), update

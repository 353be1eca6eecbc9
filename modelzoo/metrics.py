"""Evaluation metrics: the one exact AUC (numpy), and log loss, accuracy and AUC as tf.compat.v1
streaming metrics.

`tf.metrics.auc` approximates the ROC curve with 200 thresholds; on CTR data whose scores sit in a
narrow band that error reaches the third decimal. `roc_auc` is the Mann-Whitney statistic with tied
scores sharing their average rank, the same number as scikit-learn's `roc_auc_score`; `exact_auc`
keeps every (score, label) pair of an evaluation and runs it. With labels of one class the AUC is
undefined: `roc_auc` returns None (scikit-learn raises), `exact_auc`'s tensor holds NaN (a tensor
cannot be None) and the runner reports it as null with the reason in result.json; so does gdmix_lr.
"""
import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1


def _growing_local(name, dtype):
    """A local (per-evaluation) vector that grows by concatenation."""
    return tf1.Variable(tf.zeros([0], dtype), name=name, trainable=False, validate_shape=False,
                        shape=tf.TensorShape([None]), use_resource=True,
                        collections=[tf1.GraphKeys.LOCAL_VARIABLES, tf1.GraphKeys.METRIC_VARIABLES])


def roc_auc(labels, scores):
    """Exact ROC AUC of `scores` against 0/1 `labels` (ties at their average rank); None when the labels
    hold one class only (no positive-negative pair to rank)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"roc_auc: {labels.size} labels but {scores.size} scores")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"roc_auc: labels must be 0 or 1, got {np.unique(labels[~np.isin(labels, (0.0, 1.0))])[:5]}")
    positives = labels.sum()
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # each run of equal scores
    ends = np.r_[starts[1:], scores.size]
    ranks = np.repeat((starts + 1 + ends) / 2.0, ends - starts)  # ranks start+1..end share their mean
    u = ranks[labels[order] == 1].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def _roc_auc_or_nan(labels, scores):
    auc = roc_auc(labels, scores)
    return np.float64("nan" if auc is None else auc)


def exact_auc(labels, predictions, name="exact_auc"):
    """(value, update_op) of the exact AUC over everything seen since the local init."""
    with tf1.variable_scope(name):
        all_scores = _growing_local("scores", tf.float64)
        all_labels = _growing_local("labels", tf.float64)
    update = tf.group(
        all_scores.assign(tf.concat([all_scores, tf.cast(tf.reshape(predictions, [-1]), tf.float64)], 0)),
        all_labels.assign(tf.concat([all_labels, tf.cast(tf.reshape(labels, [-1]), tf.float64)], 0)))
    value = tf.numpy_function(_roc_auc_or_nan, [all_labels.read_value(), all_scores.read_value()], tf.float64,
                              stateful=False, name="roc_auc")
    value.set_shape([])
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

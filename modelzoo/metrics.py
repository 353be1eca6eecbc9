"""Evaluation metrics: the one exact AUC (numpy), and log loss, accuracy and AUC as tf.compat.v1
streaming metrics; GAUC (per-group AUC, row-weighted) when the schema names a group column.

`tf.metrics.auc` approximates the ROC curve with 200 thresholds; on CTR data whose scores sit in a
narrow band that error reaches the third decimal. `roc_auc` is the Mann-Whitney statistic with tied
scores sharing their average rank, the same number as scikit-learn's `roc_auc_score`; `exact_auc`
streams the same statistic over an evaluation: it keeps, per distinct score, its positive and
negative counts (so its memory follows the distinct scores, not the rows: float32 probabilities have at
most ~8.4M distinct values per power of two), and rows wait in a buffer that is merged into those
counts only when it holds as many rows as the counts have scores (amortized O(N log N) for N rows;
concatenating every batch onto one growing vector, as this once did, was quadratic). With labels of
one class the AUC is undefined: `roc_auc` returns None (scikit-learn raises), `exact_auc`'s tensor
holds NaN (a tensor cannot be None) and the runner reports it as null with the reason in result.json;
so does gdmix_lr.
"""
import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1

MERGE_ROWS = 1 << 20  # rows buffered before the first merge (8 MB in float32); later ones wait for as many as counted


def _local(name, dtype, shape=(0,)):
    """A local (per-evaluation) variable; a vector may change its length (validate_shape False)."""
    return tf1.Variable(tf.zeros(shape, dtype), name=name, trainable=False, validate_shape=False,
                        shape=tf.TensorShape([None] * len(shape)), use_resource=True,
                        collections=[tf1.GraphKeys.LOCAL_VARIABLES, tf1.GraphKeys.METRIC_VARIABLES])


def _check_labels(labels):
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"roc_auc: labels must be 0 or 1, got {np.unique(labels[~np.isin(labels, (0.0, 1.0))])[:5]}")


def roc_auc(labels, scores):
    """Exact ROC AUC of `scores` against 0/1 `labels` (ties at their average rank); None when the labels
    hold one class only (no positive-negative pair to rank)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"roc_auc: {labels.size} labels but {scores.size} scores")
    _check_labels(labels)
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


def score_counts(keys, positives, negatives, scores, labels):
    """Counts per distinct score (`keys` ascending, with their positive and negative counts) with the rows
    (`scores`, 0/1 `labels`) added: the sorted distinct scores of both and each one's two counts."""
    _check_labels(labels)
    rows = np.argsort(scores)  # O(F log F) for the F rows; `keys` are sorted already
    merged = np.concatenate([keys, scores[rows]])  # (the scores' own type: float32 stays float32)
    order = np.argsort(merged, kind="stable")  # two sorted runs: the stable sort (Timsort) merges them, O(M + F)
    merged = merged[order]
    starts = np.flatnonzero(np.r_[True, merged[1:] != merged[:-1]])  # each run of equal scores
    if merged.size == 0:
        return merged, np.zeros(0), np.zeros(0)
    pos = np.add.reduceat(np.concatenate([positives, labels[rows]])[order], starts)
    neg = np.add.reduceat(np.concatenate([negatives, 1.0 - labels[rows]])[order], starts)
    return merged[starts], pos, neg


def auc_of_counts(positives, negatives):
    """The Mann-Whitney AUC from counts per distinct score in ascending order: each positive wins over the
    negatives below its score and half of those at it (ties at average rank); NaN with one class."""
    n_pos, n_neg = positives.sum(), negatives.sum()
    if n_pos == 0 or n_neg == 0:
        return np.float64("nan")
    below = np.cumsum(negatives) - negatives
    return np.float64((positives * (below + 0.5 * negatives)).sum() / (n_pos * n_neg))


def _auc_of_state(keys, positives, negatives, scores, labels):
    return auc_of_counts(*score_counts(keys, positives, negatives, scores, labels)[1:])


def _appended(buffers, filled, capacity, values):
    """Append `values` (one [rows] tensor per buffer) to the local `buffers` after their `filled` rows,
    doubling them (at least to fit) when full: amortized O(1) a row. Returns the new row count."""
    rows = tf.size(values[0], out_type=tf.int64)

    # (the buffer's length is kept apart: a read of the buffer alive while a slice of it is written makes
    # TensorFlow copy the whole buffer first, O(rows seen) a batch)
    def grow():
        more = tf.maximum(capacity, filled + rows - capacity)
        with tf.control_dependencies([b.assign(tf.concat([b, tf.zeros([more], b.dtype)], 0)) for b in buffers]):
            with tf.control_dependencies([capacity.assign_add(more)]):
                return tf.constant(True)

    grown = tf.cond(filled + rows > capacity, grow, lambda: tf.constant(False))
    with tf.control_dependencies([grown]):
        start = filled.read_value()
        written = [b[start:start + rows].assign(v) for b, v in zip(buffers, values)]
    with tf.control_dependencies(written):
        return filled.assign_add(rows)


def exact_auc(labels, predictions, name="exact_auc"):
    """(value, update_op) of the exact AUC over everything seen since the local init: the module
    docstring says how (counts per distinct score and a buffer merged geometrically). Scores are kept in
    their own float32 or float64 (exact either way; any other type as float64), labels as float32 (0/1
    exactly, and anything else still refused), the counts as float64 (exact to 2^53 rows)."""
    kind = predictions.dtype if predictions.dtype in (tf.float32, tf.float64) else tf.float64
    with tf1.variable_scope(name):
        keys = _local("scores", kind)
        positives, negatives = _local("positives", tf.float64), _local("negatives", tf.float64)
        pending_scores, pending_labels = _local("pending_scores", kind), _local("pending_labels", tf.float32)
        filled, capacity = _local("pending_rows", tf.int64, ()), _local("pending_capacity", tf.int64, ())
    scores = tf.cast(tf.reshape(predictions, [-1]), kind)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.float32)
    total = _appended((pending_scores, pending_labels), filled, capacity, (scores, labels))

    def pending():
        return pending_scores[:filled.read_value()], pending_labels[:filled.read_value()]

    def merge():
        merged = tf.numpy_function(score_counts, [keys, positives, negatives, *pending()],
                                   [kind, tf.float64, tf.float64], stateful=False, name="score_counts")
        with tf.control_dependencies([v.assign(m) for v, m in zip((keys, positives, negatives), merged)]):
            with tf.control_dependencies([filled.assign(0)]):
                return tf.constant(True)

    threshold = tf.maximum(tf.constant(MERGE_ROWS, tf.int64), tf.size(keys, out_type=tf.int64))
    update = tf.cond(total >= threshold, merge, lambda: tf.constant(False))
    value = tf.numpy_function(_auc_of_state, [keys, positives, negatives, *pending()], tf.float64,
                              stateful=False, name="roc_auc")
    value.set_shape([])
    return value, update


def group_auc_of(labels, scores, groups):
    """GAUC as the DIN paper defines it: the mean of each group's AUC (ties at their average rank, as
    `roc_auc`) weighted by the group's rows, over the groups holding both classes. Returns (gauc, groups
    used, groups in all, rows of the groups used) as float64; gauc is NaN when no group holds both classes.
    One stable sort by (group, score), no loop over groups."""
    labels = np.asarray(labels, np.float64).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    if not labels.size == scores.size == groups.size:
        raise ValueError(f"group_auc: {labels.size} labels, {scores.size} scores, {groups.size} groups")
    _check_labels(labels)
    if labels.size == 0:
        return tuple(np.float64(v) for v in (np.nan, 0, 0, 0))
    order = np.lexsort((scores, groups))  # by group, then by score (stable)
    g, s, y = groups[order], scores[order], labels[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_of = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    starts = np.flatnonzero(new_group | np.r_[True, s[1:] != s[:-1]])  # each run of equal scores in a group
    ends = np.r_[starts[1:], s.size]
    position = starts - group_start[group_of[starts]]  # a run's first row's place in its group, from 0
    ranks = np.repeat(position + (1 + ends - starts) / 2.0, ends - starts)  # its rows share their mean rank
    size = np.bincount(group_of).astype(np.float64)
    positives = np.bincount(group_of, weights=y, minlength=size.size)
    negatives = size - positives
    rank_sum = np.bincount(group_of, weights=ranks * y, minlength=size.size)
    both = (positives > 0) & (negatives > 0)
    pos, neg = positives[both], negatives[both]
    auc = (rank_sum[both] - pos * (pos + 1) / 2) / (pos * neg)
    rows = size[both].sum()
    gauc = (auc * size[both]).sum() / rows if rows else np.nan
    return np.float64(gauc), np.float64(both.sum()), np.float64(size.size), np.float64(rows)


def group_auc(labels, scores, group_keys, name="group_auc"):
    """{gauc, gauc_groups (the groups with both classes), gauc_groups_all, gauc_rows (their rows)}, each a
    (value, update_op) metric over everything seen since the local init. The rows wait in buffers grown
    by doubling (as exact_auc's), and `group_auc_of` reads them whole when the value is asked for, so a
    group whose rows come in several batches (or shards) is one group."""
    with tf1.variable_scope(name):
        buffers = (_local("scores", tf.float32), _local("labels", tf.float32), _local("groups", tf.int64))
        filled, capacity = _local("rows", tf.int64, ()), _local("capacity", tf.int64, ())
    values = (tf.cast(tf.reshape(scores, [-1]), tf.float32), tf.cast(tf.reshape(labels, [-1]), tf.float32),
              tf.cast(tf.reshape(group_keys, [-1]), tf.int64))
    update = _appended(buffers, filled, capacity, values)
    scores_seen, labels_seen, groups_seen = [b[:filled.read_value()] for b in buffers]
    out = tf.numpy_function(group_auc_of, [labels_seen, scores_seen, groups_seen], [tf.float64] * 4,
                            stateful=False, name="group_auc")
    for value in out:
        value.set_shape([])
    return dict(zip(("gauc", "gauc_groups", "gauc_groups_all", "gauc_rows"), ((v, update) for v in out)))


def eval_metrics(labels, probabilities, group_keys=None, task=None):
    """The metrics every model reports: auc, logloss, accuracy, and with `group_keys` (a group column) gauc
    and its coverage; `task` (a multi-task model's) suffixes the names: auc/TASK."""
    eps = 1e-7
    p = tf.clip_by_value(probabilities, eps, 1 - eps)
    logloss = -(labels * tf.math.log(p) + (1 - labels) * tf.math.log(1 - p))
    metrics = {
        "auc": exact_auc(labels, probabilities, name=f"exact_auc_{task}" if task else "exact_auc"),
        "logloss": tf1.metrics.mean(logloss),
        "accuracy": tf1.metrics.accuracy(labels, tf.cast(probabilities > 0.5, tf.float32)),
    }
    if group_keys is not None:
        metrics.update(group_auc(labels, probabilities, group_keys, name=f"group_auc_{task}" if task else "group_auc"))
    return {name + (f"/{task}" if task else ""): value for name, value in metrics.items()}


def streaming_sum(values, name="streaming_sum"):
    """(value, update_op) of the sum of `values` over an evaluation (tf.compat.v1 has no metrics.sum)."""
    with tf1.variable_scope(name):
        total = tf1.Variable(tf.zeros([], tf.float64), name="total", trainable=False, use_resource=True,
                             collections=[tf1.GraphKeys.LOCAL_VARIABLES, tf1.GraphKeys.METRIC_VARIABLES])
    update = total.assign_add(tf.cast(tf.reduce_sum(values), tf.float64))
    return total.read_value(), update

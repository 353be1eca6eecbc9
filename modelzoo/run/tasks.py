"""The multi-task head of a ModelSpec with `tasks` (run/spec.Task): each task's target and rows, its
probability, the default loss, the PREDICT outputs and the per-task evaluation metrics. The model_fn
(run/graph.py) calls these; a single-task model never reaches them."""
import tensorflow as tf

from modelzoo.metrics import eval_metrics

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] in a loss on probabilities


def label_dict(labels, schema):
    """{column: [B] float32} whether the input gave one label tensor or a dict of several."""
    return labels if isinstance(labels, dict) else {schema.label.name: labels}


def target(labels, task):
    """The task's 0/1 target: its label column, or the product of its columns (ESMM's click x buy)."""
    out = labels[task.columns[0]]
    for column in task.columns[1:]:
        out = out * labels[column]
    return out


def space(labels, task):
    """The rows the task is observed on ([B] bool), or None for every row."""
    return None if task.within is None else labels[task.within] > 0.5


def refuse_outside(labels, tasks):
    """The labels, once no row has a task's target 1 outside its `within` rows (a buy without a click:
    ESMM's product would say 0); else the step fails with that one line (the runner names the file)."""
    checks = []
    for task in tasks:
        if task.within is not None:
            outside = tf.logical_and(target(labels, task) > 0.5, tf.logical_not(space(labels, task)))
            checks.append(tf.debugging.Assert(tf.logical_not(tf.reduce_any(outside)), [
                f"a row has {' x '.join(task.columns)} = 1 where {task.within} = 0; task {task.name} is observed "
                f"only within {task.within} (e.g. buy <= click): refused"]))
    with tf.control_dependencies(checks):
        return {name: tf.identity(value) for name, value in labels.items()}


def probabilities(spec, logits):
    """{task: probability [B] float32}: the spec's `predict`, or the sigmoid of the head named as the task."""
    if spec.predict is not None:
        probs = spec.predict(logits)
    else:
        probs = {t.name: tf.sigmoid(logits[t.name]) for t in spec.tasks}
    return {t.name: tf.cast(tf.reshape(probs[t.name], [-1]), tf.float32) for t in spec.tasks}


def _masked_mean(values, mask):
    """The mean of `values` over `mask`'s rows (all rows with None), 0 when the mask is empty."""
    if mask is None:
        return tf.reduce_mean(values)
    weights = tf.cast(mask, values.dtype)
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def default_loss(spec):
    """(labels, logits, weights) -> Σ weight x the mean binary cross-entropy over the task's rows: on the
    head's logit when a head is named as the task, else on the task's clipped probability (a product)."""
    def loss(labels, logits, weights):
        total, probs = 0.0, None
        for task in spec.tasks:
            if not weights[task.name]:
                continue
            y = target(labels, task)
            if task.name in logits:
                xent = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits[task.name])
            else:
                probs = probs or probabilities(spec, logits)
                p = tf.clip_by_value(probs[task.name], EPSILON, 1 - EPSILON)
                xent = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
            total += weights[task.name] * _masked_mean(xent, space(labels, task))
        return total
    return loss


def loss_function(spec, args=None):
    """(labels {column: [B]}, logits {head: [B]}) -> the spec's loss with its tasks' weights (--task_weights
    replacing a Task's)."""
    from modelzoo.flags import task_weights
    weights = task_weights(args, spec.tasks, spec.name)
    loss = spec.loss or default_loss(spec)
    return lambda labels, logits: loss(labels, logits, weights)


def predictions(spec, probs, logits):
    """PREDICT's outputs: `probabilities` (the first task's, as single-task models give) and
    `probabilities_<task>` for every task."""
    first = spec.tasks[0].name
    out = {"probabilities": probs[first], **{f"probabilities_{name}": p for name, p in probs.items()}}
    if first in logits:
        out["logits"] = logits[first]
    return out


def metrics(spec, labels, probs, groups=None):
    """The first task's metrics under the plain names (result.json's auc, logloss), and every task's as
    NAME/TASK, each over the task's rows (CVR: the clicked rows)."""
    out = {}
    for task in spec.tasks:
        rows = space(labels, task)

        def kept(x, rows=rows):
            return x if rows is None or x is None else tf.boolean_mask(x, rows)
        out.update(eval_metrics(kept(target(labels, task)), kept(probs[task.name]), kept(groups), task=task.name))
    first = "/" + spec.tasks[0].name
    out.update({name[:-len(first)]: value for name, value in list(out.items()) if name.endswith(first)})
    return out

"""Dense layers shared by the models, with the BF16 precision and dropout scopes, the linear and
factorization-machine parts of the baselines, and the multi-task models' experts and gates (MMoE, PLE).

`--bf16` runs the MLPs in bfloat16 while their variables stay float32 ("master weights"): a custom
getter creates every variable as float32 and hands the layer a bfloat16 cast of it, so the
optimizer updates float32 values and checkpoints stay float32 (loadable with or without --bf16).
The runner opens `precision(...)` around a model's build_logits, so every `mlp` of every model
follows --bf16 without the model passing it; the logit layer (`logit`) stays float32.
`--dropout` works the same way: the runner opens `dropout(rate)` in training graphs only (0 for
evaluation, prediction and export), and every `mlp` applies it after each relu layer; `logit` never.
"""
import contextlib

import tensorflow as tf

from modelzoo.features import recorded

tf1 = tf.compat.v1

_PRECISION = [tf.float32]  # the innermost `precision` scope's compute dtype
_DROPOUT = [0.0]  # the innermost `dropout` scope's rate
LINEAR_SCOPE = "linear"  # the variables of `linear_logit` (Wide & Deep trains them with FTRL)


@contextlib.contextmanager
def precision(dtype):
    """MLP compute dtype (tf.float32 or tf.bfloat16) for the `mlp` calls inside the block."""
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.float32, tf.bfloat16):
        raise ValueError(f"precision: expected float32 or bfloat16, got {dtype.name}")
    _PRECISION.append(dtype)
    try:
        yield dtype
    finally:
        _PRECISION.pop()


def active_precision():
    return _PRECISION[-1]


@contextlib.contextmanager
def dropout(rate):
    """Dropout rate of the `mlp` calls inside the block (the runner opens it: --dropout when training, else 0)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: expected a rate in [0, 1), got {rate}")
    _DROPOUT.append(float(rate))
    try:
        yield rate
    finally:
        _DROPOUT.pop()


def active_dropout():
    return _DROPOUT[-1]


def bf16_getter(getter, name, shape=None, dtype=None, *args, **kwargs):
    """Store bfloat16 variables as float32 and read them through a cast."""
    if dtype == tf.bfloat16:
        var = getter(name, shape, tf.float32, *args, **kwargs)
        return tf.cast(var, tf.bfloat16)
    return getter(name, shape, dtype, *args, **kwargs)


def dense(x, units, name, activation=None):
    """x @ W + b in x's dtype; glorot-uniform weights, zero bias (a fused MatMul+BiasAdd+Relu for
    Grappler's remapper when `activation` is relu)."""
    with tf1.variable_scope(name):
        w = tf1.get_variable("kernel", [x.shape[-1], units], x.dtype,
                             initializer=tf1.glorot_uniform_initializer())
        b = tf1.get_variable("bias", [units], x.dtype, initializer=tf1.zeros_initializer())
        y = tf.nn.bias_add(tf.matmul(x, w), b)
        return activation(y) if activation else y


def mlp(x, units, name, dtype=None, last_activation=True, rate=None):
    """A stack of relu layers (the last one linear unless `last_activation`); float32 in and out,
    computed in `dtype` (None: the active `precision` scope, bfloat16 with --bf16).
    Dropout at `rate` (None: the active `dropout` scope, --dropout in training graphs) follows every relu layer."""
    bf16 = tf.as_dtype(dtype or active_precision()) == tf.bfloat16
    rate = active_dropout() if rate is None else rate
    getter = bf16_getter if bf16 else None
    with tf1.variable_scope(name, custom_getter=getter, reuse=tf1.AUTO_REUSE):
        y = tf.cast(x, tf.bfloat16) if bf16 else x
        for i, n in enumerate(units):
            relu = last_activation or i < len(units) - 1
            y = dense(y, n, f"layer{i}", tf.nn.relu if relu else None)
            if relu and rate:
                y = tf.nn.dropout(y, rate=rate)
        return tf.cast(y, tf.float32) if bf16 else y


def logit(x, name):
    """The one-unit linear output layer, float32 even inside a bfloat16 scope (as the loss), never dropped out."""
    return mlp(x, [1], name, dtype=tf.float32, last_activation=False, rate=0.0)


def linear_logit(inputs):
    """Logistic regression's logit [B, 1] over a model's inputs (modelzoo.run.spec.ModelInputs): one weight per
    categorical value (a 1-wide table of the same kind as the model's, so --ev, --emb_fusion, --tf and the
    partitioners apply), one per crossed value and one per numeric column, plus a bias; all start at zero."""
    zeros = tf1.zeros_initializer()
    # the weights are input-layer tables: --input_layer_partitioner slices them (the crosses too)
    with tf1.variable_scope(LINEAR_SCOPE, reuse=tf1.AUTO_REUSE, partitioner=inputs.tables.partitioner):
        weights = inputs.tables.sibling(inputs.schema.with_embedding_dim(1), initializer=zeros)
        terms = weights.lookup(inputs.ids)
        for i, cross in enumerate(inputs.schema.crosses):
            table = tf1.get_variable(f"cross/{cross.name}", [cross.hash_buckets, 1], initializer=zeros)
            terms += recorded([tf.nn.embedding_lookup(table, inputs.cross_ids[:, i])])  # (--emb_l2 sees them)
        if inputs.dense is not None:
            terms.append(dense(inputs.dense, 1, "numeric"))  # weights and the bias
        else:
            terms.append(tf1.get_variable("bias", [1, 1], initializer=zeros) + tf.zeros_like(terms[0]))
        return tf.add_n(terms)


def fm_pairwise(vectors):
    """The second-order term of a factorization machine (Rendle 2010): sum over pairs i < j of <v_i, v_j>,
    computed in O(n k) as 0.5 * ((sum_i v_i)^2 - sum_i v_i^2) summed over the k factors.
    vectors [B, n, k] -> [B, 1]."""
    summed = tf.reduce_sum(vectors, axis=1)
    return 0.5 * tf.reduce_sum(tf.square(summed) - tf.reduce_sum(tf.square(vectors), axis=1), axis=1, keepdims=True)


def expert_mlps(x, count, units, name):
    """`count` expert MLPs (`units`, following --bf16 and --dropout) over x, stacked: [B, count, units[-1]]."""
    return tf.stack([mlp(x, units, f"{name}{k}") for k in range(count)], axis=1)


def gated_mixture(x, experts, name):
    """A gate (a float32 dense layer from x and a softmax over the experts) and the experts' mixture by it:
    experts [B, E, D] -> [B, D]."""
    gate = tf.nn.softmax(dense(x, experts.shape[1], name))
    return tf.reduce_sum(gate[:, :, None] * experts, axis=1)


def mmoe(x, tasks, count, units):
    """MMoE (Ma et al. 2018): `count` shared experts over x and one gate per task -> {task: its mixture}."""
    shared = expert_mlps(x, count, units, "expert")
    with tf1.variable_scope("gates", reuse=tf1.AUTO_REUSE):
        return {task: gated_mixture(x, shared, task) for task in tasks}


def ple(x, tasks, levels, task_experts, shared_experts, units):
    """PLE (Tang et al. 2020): `levels` extraction levels of CGC (customized gate control). Each level has
    `task_experts` experts per task and `shared_experts` shared ones; a task's gate mixes its own and the
    shared experts into that task's input of the next level, the shared gate mixes every expert into the
    shared input of the next level (none after the last level: nothing reads it). Every expert is an MLP of
    `units` over its input. -> {task: the last level's mixture}."""
    inputs, shared_in = {task: x for task in tasks}, x
    for level in range(levels):
        with tf1.variable_scope(f"level{level}", reuse=tf1.AUTO_REUSE):
            own = {task: expert_mlps(inputs[task], task_experts, units, f"{task}_expert") for task in tasks}
            common = expert_mlps(shared_in, shared_experts, units, "shared_expert")
            with tf1.variable_scope("gates"):
                mixed = {task: gated_mixture(inputs[task], tf.concat([own[task], common], axis=1), task)
                         for task in tasks}
                if level < levels - 1:
                    shared_in = gated_mixture(shared_in, tf.concat([*own.values(), common], axis=1), "shared")
        inputs = mixed
    return inputs


def task_towers(mixed, units, shared_input=None):
    """{task: input} -> {task: logit [B, 1]}: a tower per task (an MLP of `units`) and its logit (the heads of
    MMoE and PLE). With `shared_input` (the experts' input) each tower reads it beside its mixture: a feature
    one task needs and the experts, shaped by the others, pass on weakly still reaches that task's tower."""
    def tower_in(x):
        return x if shared_input is None else tf.concat([x, shared_input], axis=1)
    return {task: logit(mlp(tower_in(x), units, f"{task}_tower"), f"{task}_logit") for task, x in mixed.items()}


def task_towers_by_flags(mixed, x, args):
    """task_towers as add_task_tower_flags's --tower_units and --tower_input say, `x` the experts' input."""
    return task_towers(mixed, args.tower_units, x if args.tower_input == "mixture_and_input" else None)


def field_vectors(inputs, dim):
    """One `dim`-wide vector per field [B, fields, dim], the input of a factorization machine's pairwise term:
    each categorical column's embedding, then each numeric column's learned vector scaled by its normalized
    value (x_j v_j, Rendle's real-valued features; FuxiCTR's and DeepCTR's numeric fields), so numeric columns
    enter both orders. The numeric vectors are the variable `fm/numeric_factors` (fm/ and deepfm/)."""
    vectors = inputs.tables.lookup_stacked(inputs.ids)  # [B, categorical, dim]
    if inputs.dense is None:
        return vectors
    with tf1.variable_scope("fm", reuse=tf1.AUTO_REUSE):  # (micro-batches build the model again)
        factors = tf1.get_variable("numeric_factors", [inputs.dense.shape[-1], dim],
                                   initializer=tf1.random_uniform_initializer(-0.05, 0.05))
    factors = tf.convert_to_tensor(factors)  # (in a PS job the dense layers' partitioner splits it: join the parts)
    return tf.concat([vectors, inputs.dense[:, :, None] * factors[None]], axis=1)


def embedded_inputs(inputs):
    """Every categorical column's embedding (a multi_value column's pooled by its combiner) and the dense values,
    concatenated: [B, sum of widths + numeric] (the shared input of towers and experts)."""
    parts = inputs.tables.pooled(inputs)
    return tf.concat(parts + ([inputs.dense] if inputs.dense is not None else []), axis=1)

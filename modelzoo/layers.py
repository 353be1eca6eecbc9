"""Dense layers shared by the models, with the BF16 precision scope.

`--bf16` runs the MLPs in bfloat16 while their variables stay float32 ("master weights"): a custom
getter creates every variable as float32 and hands the layer a bfloat16 cast of it, so the
optimizer updates float32 values and checkpoints stay float32 (loadable with or without --bf16).
The runner opens `precision(...)` around a model's build_logits, so every `mlp` of every model
follows --bf16 without the model passing it; the logit layer (`logit`) stays float32.
"""
import contextlib

import tensorflow as tf

tf1 = tf.compat.v1

_PRECISION = [tf.float32]  # the innermost `precision` scope's compute dtype


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


def mlp(x, units, name, dtype=None, last_activation=True, dropout=0.0):
    """A stack of relu layers (the last one linear unless `last_activation`); float32 in and out,
    computed in `dtype` (None: the active `precision` scope, bfloat16 with --bf16).
    `dropout` (a rate, for training graphs only) follows every relu layer."""
    bf16 = tf.as_dtype(dtype or active_precision()) == tf.bfloat16
    getter = bf16_getter if bf16 else None
    with tf1.variable_scope(name, custom_getter=getter, reuse=tf1.AUTO_REUSE):
        y = tf.cast(x, tf.bfloat16) if bf16 else x
        for i, n in enumerate(units):
            relu = last_activation or i < len(units) - 1
            y = dense(y, n, f"layer{i}", tf.nn.relu if relu else None)
            if relu and dropout:
                y = tf.nn.dropout(y, rate=dropout)
        return tf.cast(y, tf.float32) if bf16 else y


def logit(x, name):
    """The one-unit linear output layer, float32 even inside a bfloat16 scope (as the loss)."""
    return mlp(x, [1], name, dtype=tf.float32, last_activation=False)

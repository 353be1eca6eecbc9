"""Optimizer factory shared by every model in the zoo.

The accepted names follow Alibaba DeepRec's ``--optimizer`` flag so that the
model scripts keep DeepRec's command line::

    adam, adamasync, adagraddecay, adagrad, gradientdescent, ftrl

Stock TensorFlow 2.15 (used here through ``tf.compat.v1`` in graph mode) has
no ``AdamAsyncOptimizer`` and no ``AdagradDecayOptimizer``; both are DeepRec
C++ kernels. This module provides pure-TF equivalents built from gather /
scatter ops, so they run anywhere stock TF runs (CPU or GPU).

``adam`` -> ``tf.compat.v1.train.AdamOptimizer`` (stock)
    Dense Adam. On an ``IndexedSlices`` gradient (embedding lookups) stock TF
    still decays ``m`` and ``v`` and moves ``var`` on *every* row of the table
    each step, so the cost is O(table) per step, not O(batch). Kept because
    it is the reference algorithm; prefer ``adamasync`` for embedding models.

``adamasync`` -> :class:`LazyAdamOptimizer`
    Identical to Adam on dense gradients. On sparse gradients only the rows
    present in the batch are read and written (``m[rows]``, ``v[rows]``,
    ``var[rows]``), like ``tf.contrib.opt.LazyAdamOptimizer`` and DeepRec's
    AdamAsync sparse kernel. Bias correction uses Adam's shared
    ``beta1_power``/``beta2_power``, advanced once per ``apply_gradients``.
    Differences from DeepRec's AdamAsync: DeepRec's C++ kernel can keep the
    beta powers per variable to avoid parameter-server contention in
    asynchronous training and has an optional ``apply_sparse_rmsprop`` mode;
    neither exists here (with one synchronous trainer and every variable
    updated every step, per-variable and shared powers are the same numbers).

``adagraddecay`` -> :class:`AdagradDecayOptimizer`
    Adagrad whose squared-gradient accumulator is multiplied by
    ``accumulator_decay_rate`` once per ``accumulator_decay_step`` global
    steps, so it cannot grow without bound during long incremental training
    and new data keeps moving the weights. See the class docstring for the
    exact rule and the (small) differences from DeepRec's kernel.

``adagrad`` -> ``tf.compat.v1.train.AdagradOptimizer(initial_accumulator_value=0.1)``
``gradientdescent`` -> ``tf.compat.v1.train.GradientDescentOptimizer``
``ftrl`` -> ``tf.compat.v1.train.FtrlOptimizer`` (stock defaults)

Stock Adagrad, FTRL and SGD already have row-sparse kernels, so they only
touch the batch rows of an embedding table.

Every optimizer here starts its slots through :class:`UnfoldedConstant`
(:class:`UnfoldedSlots`): with stock slot initializers each slot of a table
ends up holding two table-sized buffers (see the class docstring).
"""

import tensorflow as tf

from modelzoo.flags import OPTIMIZERS  # accepted --optimizer names, in DeepRec's order

tf1 = tf.compat.v1

__all__ = [
    "OPTIMIZERS",
    "LazyAdamOptimizer",
    "AdamOptimizer",
    "AdagradOptimizer",
    "FtrlOptimizer",
    "UnfoldedConstant",
    "AdagradDecayOptimizer",
    "build_optimizer",
    "describe",
]


_DESCRIPTIONS = {
    "adam": "Stock TF Adam; dense update, touches every embedding row each "
            "step (slow on large tables).",
    "adamasync": "Lazy Adam (DeepRec AdamAsync equivalent): Adam that updates "
                 "only the embedding rows present in the batch.",
    "adagraddecay": "DeepRec AdagradDecay: Adagrad whose accumulator decays by "
                    "a fixed rate every N global steps.",
    "adagrad": "Stock TF Adagrad (initial_accumulator_value=0.1).",
    "gradientdescent": "Stock TF plain SGD.",
    "ftrl": "Stock TF FTRL-Proximal.",
}


class UnfoldedConstant:
    """An initializer that fills a variable with one value through the stateful ``Empty`` op.

    Why: Grappler's constant folding turns ``Fill(shape, value)`` (what ``zeros_initializer`` and
    ``constant_initializer`` build) into a ``Const`` node as large as the variable. The init
    executor's kernel keeps that tensor for the session's life, the variable starts out sharing its
    buffer, and the first sparse update (``EnsureSparseVariableAccess``) copies the variable: two
    table-sized buffers per optimizer slot, and checkpoints unchanged. ``Empty`` is stateful, so
    nothing folds it (measured: benchmarks/results/peak_memory_wide_and_deep.json).
    """

    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=tf.float32, partition_info=None):
        dtype = tf.as_dtype(dtype or tf.float32).base_dtype
        dims = tf.constant(tf.TensorShape(shape).as_list(), tf.int32)
        filled = tf.raw_ops.Empty(shape=dims, dtype=dtype, init=True)  # zeros, in a buffer of its own
        return filled if self.value == 0 else filled + tf.constant(self.value, dtype)


def _uniform_value(initializer):
    """The one value a stock constant initializer fills with, or None for any other initializer."""
    if isinstance(initializer, tf1.zeros_initializer):
        return 0
    if isinstance(initializer, tf1.constant_initializer) and getattr(initializer.value, "ndim", 0) == 0 \
            and not isinstance(initializer.value, (list, tuple)):
        return initializer.value
    return None


class UnfoldedSlots:
    """Mixin for tf.compat.v1 optimizers: slots of a fixed shape that start at one value (Adam's m and
    v, Adagrad's and FTRL's accumulators) are initialized by :class:`UnfoldedConstant`, so each slot
    holds one buffer, not two. Slot names, values and checkpoints are the stock ones."""

    def _zeros_slot(self, var, slot_name, op_name):
        if _is_dynamic_rows(var) or not var.get_shape().is_fully_defined():
            return super()._zeros_slot(var, slot_name, op_name)
        return self._get_or_make_slot_with_initializer(var, UnfoldedConstant(0), var.get_shape(),
                                                       var.dtype.base_dtype, slot_name, op_name)

    def _get_or_make_slot_with_initializer(self, var, initializer, shape, dtype, slot_name, op_name):
        value = _uniform_value(initializer)
        if value is not None and not _is_dynamic_rows(var) and tf.TensorShape(shape).is_fully_defined():
            initializer = UnfoldedConstant(value)
        return super()._get_or_make_slot_with_initializer(var, initializer, shape, dtype, slot_name, op_name)


class AdamOptimizer(UnfoldedSlots, tf1.train.AdamOptimizer):
    """Stock Adam, its m and v slots initialized unfolded."""


class AdagradOptimizer(UnfoldedSlots, tf1.train.AdagradOptimizer):
    """Stock Adagrad, its accumulator initialized unfolded."""


class FtrlOptimizer(UnfoldedSlots, tf1.train.FtrlOptimizer):
    """Stock FTRL-Proximal, its accum and linear slots initialized unfolded."""

    def _create_slots(self, var_list):
        # the stock method, except that its accum initializer (ones * value, a local function the mixin
        # cannot recognize) is a constant_initializer, which the mixin swaps for UnfoldedConstant
        for v in var_list:
            self._get_or_make_slot_with_initializer(v, tf1.constant_initializer(self._initial_accumulator_value),
                                                    v.shape, v.dtype, "accum", self._accum_name or self._name)
            self._zeros_slot(v, "linear", self._linear_name or self._name)


# --------------------------------------------------------------------------
# Small helpers that hide the ref-variable / resource-variable split.
# Ref variables go through tf.compat.v1 state ops; resource variables through
# the Resource* raw ops on the handle (that is what stock TF optimizers use).
# --------------------------------------------------------------------------
def _scatter_update(var, indices, updates, resource, use_locking):
    if resource:
        return tf.raw_ops.ResourceScatterUpdate(
            resource=var.handle, indices=indices, updates=updates)
    return tf1.scatter_update(var, indices, updates, use_locking=use_locking)


def _scatter_sub(var, indices, updates, resource, use_locking):
    if resource:
        return tf.raw_ops.ResourceScatterSub(
            resource=var.handle, indices=indices, updates=updates)
    return tf1.scatter_sub(var, indices, updates, use_locking=use_locking)


def _assign(var, value, resource, use_locking):
    if resource:
        return tf.raw_ops.AssignVariableOp(resource=var.handle, value=value)
    return tf1.assign(var, value, use_locking=use_locking)


def _assign_sub(var, value, resource, use_locking):
    if resource:
        return tf.raw_ops.AssignSubVariableOp(resource=var.handle, value=value)
    return tf1.assign_sub(var, value, use_locking=use_locking)


class LazyAdamOptimizer(UnfoldedSlots, tf1.train.AdamOptimizer):
    """Adam that updates only the rows present in a sparse gradient.

    Why: stock ``AdamOptimizer._apply_sparse`` multiplies the whole ``m`` and
    ``v`` slots by beta1/beta2 and applies ``assign_sub`` to the whole
    variable, i.e. three full passes over an embedding table per step. Here
    the sparse path gathers the batch rows, computes the Adam update for
    those rows only and scatters them back; rows absent from the batch keep
    their ``var``, ``m`` and ``v`` bit-for-bit.

    Dense gradients use the inherited (stock, fused) Adam kernels, so a dense
    variable trains exactly as with ``AdamOptimizer``. Duplicate indices are
    summed by the base ``Optimizer`` (``_apply_sparse_duplicate_indices`` /
    ``_resource_apply_sparse_duplicate_indices``) before the methods below
    see them, which the gather/scatter_update scheme requires.

    Update for each row ``r`` in the batch (``t`` = shared Adam step)::

        lr_t  = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
        m[r]  = beta1 * m[r] + (1 - beta1) * g[r]
        v[r]  = beta2 * v[r] + (1 - beta2) * g[r]^2
        var[r] -= lr_t * m[r] / (sqrt(v[r]) + epsilon)
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, use_locking=False, name="LazyAdam"):
        super().__init__(learning_rate=learning_rate, beta1=beta1,
                         beta2=beta2, epsilon=epsilon,
                         use_locking=use_locking, name=name)

    def _lazy_apply_sparse(self, grad_values, var, indices, resource):
        dtype = var.dtype.base_dtype
        beta1_power, beta2_power = self._get_beta_accumulators()
        beta1_power = tf.cast(beta1_power, dtype)
        beta2_power = tf.cast(beta2_power, dtype)
        lr_t = tf.cast(self._lr_t, dtype)
        beta1_t = tf.cast(self._beta1_t, dtype)
        beta2_t = tf.cast(self._beta2_t, dtype)
        epsilon_t = tf.cast(self._epsilon_t, dtype)
        lr = lr_t * tf.sqrt(1 - beta2_power) / (1 - beta1_power)

        m = self.get_slot(var, "m")
        v = self.get_slot(var, "v")
        # tf.gather reads only the batch rows (ResourceGather / GatherV2).
        m_rows = beta1_t * tf.gather(m, indices) + (1 - beta1_t) * grad_values
        v_rows = (beta2_t * tf.gather(v, indices)
                  + (1 - beta2_t) * tf.square(grad_values))
        delta = lr * m_rows / (tf.sqrt(v_rows) + epsilon_t)

        m_update = _scatter_update(m, indices, m_rows, resource,
                                   self._use_locking)
        v_update = _scatter_update(v, indices, v_rows, resource,
                                   self._use_locking)
        var_update = _scatter_sub(var, indices, delta, resource,
                                  self._use_locking)
        return tf.group(var_update, m_update, v_update)

    def _apply_sparse(self, grad, var):
        return self._lazy_apply_sparse(grad.values, var, grad.indices,
                                       resource=False)

    def _resource_apply_sparse(self, grad, var, indices):
        return self._lazy_apply_sparse(grad, var, indices, resource=True)


class AdagradDecayOptimizer(UnfoldedSlots, tf1.train.Optimizer):
    """Adagrad with a periodically decayed accumulator (DeepRec AdagradDecay).

    Why: plain Adagrad's accumulator only grows, so after weeks of
    incremental training the effective step ``lr / sqrt(accum)`` goes to zero
    and new samples stop moving the model. Decaying per *period* of global
    steps (not per step) treats all samples of one period alike.

    Slots per variable:

    * ``accumulator``: same shape as the variable, starts at
      ``initial_accumulator_value``.
    * ``decay_power`` (int64): one entry per row (shape ``[rows]``; a scalar
      for rank-0 variables). It holds the period index
      ``k = global_step // accumulator_decay_step`` at which that row's
      accumulator was last decayed; starts at 0.

    Update rule (dense: every row; sparse: only the rows in the batch, with
    duplicate indices summed first by the base ``Optimizer``)::

        k = global_step // accumulator_decay_step   # global_step read before
                                                    # apply_gradients bumps it
        if k > decay_power[r]:
            accum[r] *= accumulator_decay_rate ** (k - decay_power[r])
            accum[r]  = max(accum[r], accumulator_baseline)
            decay_power[r] = k
        accum[r] += g[r]^2
        var[r]   -= lr * g[r] / sqrt(accum[r])

    Differences from DeepRec's C++ kernel (``ApplyAdagradDecay`` /
    ``SparseApplyAdagradDecay``):

    * DeepRec decays by a single factor ``decay_rate`` per update and
      advances ``decay_power`` by 1, so a row that was idle for several
      periods catches up one period per later update. Here the row is decayed
      by ``decay_rate ** periods_missed`` at once, as if it had been decayed
      at every period boundary. The two agree whenever a row is updated at
      least once per period (always true for dense variables).
    * DeepRec uses ``global_step + 1`` to compute ``k``; here ``k`` uses the
      value of ``global_step`` before this step's increment, so each decay
      happens one step later than in DeepRec.
    * DeepRec's baseline is fixed to ``initial_accumulator_value``; here it is
      the separate ``accumulator_baseline`` argument (default 0.0, i.e. only
      the decay bounds the accumulator from below; pass
      ``accumulator_baseline=initial_accumulator_value`` for DeepRec's rule).
    * DeepRec's ``decay_power`` slot has the full shape of the variable and
      the dense kernel looks at element 0 only; here it is one int64 per row.
    * Built from stock gather/scatter ops instead of a fused kernel; the
      sparse cost is still O(batch rows), not O(table).

    Defaults (DeepRec's, except the baseline): ``initial_accumulator_value=0.1``,
    ``accumulator_decay_step=100000``, ``accumulator_decay_rate=0.9``,
    ``accumulator_baseline=0.0``.
    """

    def __init__(self, learning_rate, global_step,
                 initial_accumulator_value=0.1,
                 accumulator_decay_step=100000,
                 accumulator_decay_rate=0.9,
                 accumulator_baseline=0.0,
                 use_locking=False, name="AdagradDecay"):
        if global_step is None:
            raise ValueError("AdagradDecayOptimizer needs global_step (the "
                             "decay period is counted in global steps).")
        if initial_accumulator_value <= 0.0:
            raise ValueError("initial_accumulator_value must be positive: %s"
                             % initial_accumulator_value)
        if int(accumulator_decay_step) != accumulator_decay_step or \
                accumulator_decay_step <= 0:
            raise ValueError("accumulator_decay_step must be a positive "
                             "integer: %s" % accumulator_decay_step)
        if not 0.0 < accumulator_decay_rate <= 1.0:
            raise ValueError("accumulator_decay_rate must be in (0, 1]: %s"
                             % accumulator_decay_rate)
        if accumulator_baseline < 0.0:
            raise ValueError("accumulator_baseline must be >= 0: %s"
                             % accumulator_baseline)
        super().__init__(use_locking, name)
        self._learning_rate = learning_rate
        self._global_step = global_step
        self._initial_accumulator_value = initial_accumulator_value
        self._accumulator_decay_step = int(accumulator_decay_step)
        self._accumulator_decay_rate = accumulator_decay_rate
        self._accumulator_baseline = accumulator_baseline
        # Tensors created in _prepare().
        self._learning_rate_tensor = None
        self._decay_rate_tensor = None
        self._baseline_tensor = None
        self._period_tensor = None

    # -- slots --------------------------------------------------------------
    def _create_slots(self, var_list):
        for v in var_list:
            dtype = v.dtype.base_dtype
            shape = v.get_shape()
            if _is_dynamic_rows(v):
                # An embedding variable's slots are tables with the rows' width (TFRA): the
                # accumulator as usual, decay_power as a float per element (the period, exact to 2^24).
                self._get_or_make_slot_with_initializer(
                    v, tf1.constant_initializer(self._initial_accumulator_value), shape, dtype,
                    "accumulator", self._name)
                self._get_or_make_slot_with_initializer(
                    v, tf1.zeros_initializer(), shape, dtype, "decay_power", self._name)
                continue
            if shape.is_fully_defined():
                acc_init = tf1.constant_initializer(
                    self._initial_accumulator_value, dtype=dtype)
            else:
                def acc_init(v=v, dtype=dtype):
                    return tf.fill(tf.shape(v), tf.cast(
                        self._initial_accumulator_value, dtype))
            self._get_or_make_slot_with_initializer(
                v, acc_init, shape, dtype, "accumulator", self._name)

            if shape.rank == 0:
                power_shape = tf.TensorShape([])
            else:
                power_shape = shape[:1]
            if power_shape.is_fully_defined():
                power_init = tf1.zeros_initializer(dtype=tf.int64)
            else:
                def power_init(v=v):
                    return tf.zeros(tf.shape(v)[:1], dtype=tf.int64)
            self._get_or_make_slot_with_initializer(
                v, power_init, power_shape, tf.int64, "decay_power",
                self._name)

    def _prepare(self):
        lr = self._call_if_callable(self._learning_rate)
        self._learning_rate_tensor = tf.convert_to_tensor(
            lr, name="learning_rate")
        self._decay_rate_tensor = tf.convert_to_tensor(
            self._accumulator_decay_rate, name="accumulator_decay_rate")
        self._baseline_tensor = tf.convert_to_tensor(
            self._accumulator_baseline, name="accumulator_baseline")
        # Read once per apply_gradients; apply_gradients increments
        # global_step only after all updates, so this is the pre-step value.
        step = tf.cast(tf.convert_to_tensor(self._global_step), tf.int64)
        self._period_tensor = tf.math.floordiv(
            step, tf.constant(self._accumulator_decay_step, tf.int64),
            name="accumulator_decay_period")

    # -- shared math --------------------------------------------------------
    def _decayed(self, accum, power, dtype):
        """Returns (accum after catch-up decay, new decay_power).

        ``accum`` has the rows on axis 0; ``power`` is one entry per row.
        """
        k = tf.cast(self._period_tensor, power.dtype)
        missed = tf.maximum(k - power, 0)
        rate = tf.cast(self._decay_rate_tensor, dtype)
        baseline = tf.cast(self._baseline_tensor, dtype)
        factor = tf.pow(rate, tf.cast(missed, dtype))
        need = missed > 0
        rank = accum.shape.rank
        if power.shape.rank == rank:  # per element (embedding-variable slots): no broadcast
            need_b = need
        elif rank is not None and rank > 1:
            bshape = tf.concat([tf.shape(factor),
                                tf.ones([rank - 1], tf.int32)], 0)
            factor = tf.reshape(factor, bshape)
            need_b = tf.reshape(need, bshape)
        else:
            need_b = need
        decayed = tf.maximum(accum * factor, baseline)
        # Clamp to the baseline only where a decay actually happened.
        accum = tf.where(tf.broadcast_to(need_b, tf.shape(accum)),
                         decayed, accum)
        return accum, tf.maximum(power, k)

    def _apply_dense_shared(self, grad, var, resource):
        dtype = var.dtype.base_dtype
        acc = self.get_slot(var, "accumulator")
        power = self.get_slot(var, "decay_power")
        acc_value = tf.convert_to_tensor(acc)
        power_value = tf.convert_to_tensor(power)
        acc_new, power_new = self._decayed(acc_value, power_value, dtype)
        acc_new = acc_new + tf.square(grad)
        lr = tf.cast(self._learning_rate_tensor, dtype)
        delta = lr * grad * tf.math.rsqrt(acc_new)
        return tf.group(
            _assign(acc, acc_new, resource, self._use_locking),
            _assign(power, power_new, resource, self._use_locking),
            _assign_sub(var, delta, resource, self._use_locking))

    def _apply_sparse_shared(self, grad_values, var, indices, resource):
        dtype = var.dtype.base_dtype
        acc = self.get_slot(var, "accumulator")
        power = self.get_slot(var, "decay_power")
        acc_rows, power_rows = self._decayed(
            tf.gather(acc, indices), tf.gather(power, indices), dtype)
        acc_rows = acc_rows + tf.square(grad_values)
        lr = tf.cast(self._learning_rate_tensor, dtype)
        delta = lr * grad_values * tf.math.rsqrt(acc_rows)
        return tf.group(
            _scatter_update(acc, indices, acc_rows, resource,
                            self._use_locking),
            _scatter_update(power, indices, power_rows, resource,
                            self._use_locking),
            _scatter_sub(var, indices, delta, resource, self._use_locking))

    # -- Optimizer hooks ----------------------------------------------------
    def _apply_dense(self, grad, var):
        return self._apply_dense_shared(grad, var, resource=False)

    def _resource_apply_dense(self, grad, var):
        return self._apply_dense_shared(grad, var, resource=True)

    def _apply_sparse(self, grad, var):
        return self._apply_sparse_shared(grad.values, var, grad.indices,
                                         resource=False)

    def _resource_apply_sparse(self, grad, var, indices):
        return self._apply_sparse_shared(grad, var, indices, resource=True)


def _is_dynamic_rows(var):
    """True for TFRA's TrainableWrapper: the looked-up rows of an embedding variable (--ev)."""
    return type(var).__name__ == "TrainableWrapper"


def _check_name(name):
    key = str(name).strip().lower()
    if key not in OPTIMIZERS:
        raise ValueError("Unknown optimizer %r; accepted names: %s"
                         % (name, ", ".join(OPTIMIZERS)))
    return key


def describe(name):
    """One-line human description of an optimizer name (README flag table)."""
    return _DESCRIPTIONS[_check_name(name)]


def build_optimizer(name, learning_rate, global_step=None):
    """Returns the ``tf.compat.v1`` optimizer for a DeepRec ``--optimizer`` name.

    Args:
      name: one of :data:`OPTIMIZERS` (case-insensitive).
      learning_rate: float or scalar tensor.
      global_step: only used by ``adagraddecay``; when ``None`` the graph's
        global step is fetched/created with
        ``tf.compat.v1.train.get_or_create_global_step()``.

    Raises:
      ValueError: unknown name; the message lists the accepted names.
    """
    key = _check_name(name)
    if key == "adam":
        return AdamOptimizer(learning_rate)
    if key == "adamasync":
        return LazyAdamOptimizer(learning_rate)
    if key == "adagraddecay":
        if global_step is None:
            global_step = tf1.train.get_or_create_global_step()
        return AdagradDecayOptimizer(learning_rate, global_step)
    if key == "adagrad":
        return AdagradOptimizer(learning_rate, initial_accumulator_value=0.1)
    if key == "gradientdescent":
        return tf1.train.GradientDescentOptimizer(learning_rate)
    if key == "ftrl":
        return FtrlOptimizer(learning_rate)
    raise AssertionError("unreachable: %s" % key)  # pragma: no cover

"""The solvers of a generalized linear mixed model (GLMix): regularized logistic regressions.

Every coordinate of the model minimizes, over its coefficients b (intercept first),

    sum_i w_i * logloss(y_i, offset_i + x_i . b)  +  l2 / 2 * |b|^2

where the penalty skips the intercept unless `regularize_intercept` (GDMix's `regularize_bias`,
off in its MovieLens example) and the sum is over rows, not averaged: l2 is absolute, as in GDMix.

- The fixed effect (one model on all rows) is solved by scipy's L-BFGS, with the loss and the
  gradient computed by a TensorFlow graph that holds the data (GDMix's way).
- A random effect (one model per entity) is solved for all the entities of a partition at once:
  damped Newton in TensorFlow, where each entity's rows are padded into a [entities, rows, features]
  block (entities grouped by row count so the padding stays small), the per-entity gradients and
  Hessians are batched matmuls, and the Newton systems are batched Cholesky solves. GDMix runs one
  scipy call per entity; `scipy_solve` is that reference, used by the tests and the benchmark.
"""
import time
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special
import tensorflow.compat.v1 as tf

# The most padded cells (entities x rows x features) one batched Newton solve holds: 2^22 float64
# values are 32 MB per copy of the features, about what a server's L3 cache holds, so the several
# passes of a Newton iteration over the block mostly hit the cache (on the 2-vCPU EPYC, 2^22 was
# clearly faster than 2^24 on benchmarks/random_effect_speed.py, and no slower than 2^20 or 2^21).
MAX_BLOCK_CELLS = 1 << 22
# Backtracking halvings per Newton step before an entity's step is given up for this iteration.
MAX_HALVINGS = 30
# Added (relative to the mean diagonal) to the float32 Hessian's diagonal so that its Cholesky
# factorization exists when an unregularized intercept's curvature vanishes (an entity whose rows all
# have one label). It changes the Newton direction slightly, never the solution (the stopping rule is
# on the float64 gradient).
HESSIAN_JITTER = 1e-6


def with_intercept(features):
    """[n, d] features -> [n, d + 1] with a leading column of ones (the intercept)."""
    return np.hstack([np.ones((features.shape[0], 1)), features])


def penalty_mask(dim, regularize_intercept):
    """1 for the penalized coefficients, 0 for the intercept (first) unless it is penalized too."""
    mask = np.ones(dim)
    if not regularize_intercept:
        mask[0] = 0.0
    return mask


def objective_numpy(coefficients, x, labels, weights, offsets, l2, mask):
    """Loss and gradient of one regularized LR in numpy (the per-entity reference)."""
    z = offsets + x @ coefficients
    loss = np.sum(weights * (np.logaddexp(0.0, z) - labels * z)) + 0.5 * l2 * np.sum(mask * coefficients ** 2)
    grad = x.T @ (weights * (scipy.special.expit(z) - labels)) + l2 * mask * coefficients
    return loss, grad


def scipy_solve(x, labels, weights, offsets, l2, regularize_intercept=False, max_iter=15000, tolerance=1e-10,
                initial=None):
    """One entity's model by scipy's L-BFGS with a numpy loss: what GDMix does for each entity.
    `x` includes the intercept column. Returns the coefficients."""
    mask = penalty_mask(x.shape[1], regularize_intercept)
    start = np.zeros(x.shape[1]) if initial is None else initial
    result = scipy.optimize.minimize(objective_numpy, start, args=(x, labels, weights, offsets, l2, mask), jac=True,
                                     method="L-BFGS-B",
                                     options={"maxiter": max_iter, "gtol": tolerance, "ftol": 1e-15, "maxcor": 10})
    return result.x


@dataclass
class Solution:
    coefficients: np.ndarray   # [d + 1] (fixed effect) or [entities, d + 1] (random effect), intercept first
    iterations: np.ndarray     # solver iterations (per entity for a random effect)
    converged: np.ndarray      # gradient below the tolerance (per entity for a random effect)
    loss_evaluations: int      # passes over the data (fixed effect) or Newton iterations run (random effect)
    seconds: float


class FixedEffectSolver:
    """L-BFGS over all rows, loss and gradient from a TF graph that keeps the data in memory, so each
    evaluation feeds only the coefficients.

    L-BFGS is run on standardized features (each column scaled to unit spread and, when the intercept
    is not penalized, centered), with the penalty rescaled to match: the same objective and solution in
    better-conditioned coordinates. It matters on one-hot groups and near-constant columns (MovieLens's
    release year / 2000 spans 0.96..1.0), where plain L-BFGS needs hundreds of iterations."""

    def __init__(self, x, labels, weights, offsets, l2, regularize_intercept=False, threads=0):
        self.dim = x.shape[1]
        self.rows = x.shape[0]
        self.total_weight = float(np.sum(weights))
        mean = np.zeros(self.dim) if regularize_intercept else np.average(x, axis=0, weights=weights)
        spread = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=weights))
        mean[0], spread[0] = 0.0, 1.0
        self.mean, self.scale = mean, np.where(spread > 1e-12, spread, 1.0)
        standardized = (x - self.mean) / self.scale
        standardized[:, 0] = 1.0
        self.graph = tf.Graph()
        with self.graph.as_default():
            inputs = {name: tf.placeholder(tf.float64, value.shape, name=name)
                      for name, value in (("x", standardized), ("labels", labels), ("weights", weights),
                                          ("offsets", offsets))}
            data = {name: tf.Variable(ph, trainable=False, collections=[], name=name + "_data")
                    for name, ph in inputs.items()}
            self.coefficients = tf.placeholder(tf.float64, [self.dim], name="coefficients")
            # |b|^2 over the original coefficients b = g / scale (the intercept is handled by `to_original`).
            penalty = tf.constant(penalty_mask(self.dim, regularize_intercept) / self.scale ** 2)
            z = data["offsets"] + tf.linalg.matvec(data["x"], self.coefficients)
            losses = data["weights"] * tf.nn.sigmoid_cross_entropy_with_logits(labels=data["labels"], logits=z)
            self.loss = tf.reduce_sum(losses) + 0.5 * l2 * tf.reduce_sum(penalty * tf.square(self.coefficients))
            residual = data["weights"] * (tf.sigmoid(z) - data["labels"])
            self.gradient = tf.linalg.matvec(data["x"], residual, transpose_a=True) + l2 * penalty * self.coefficients
            initializers = [v.initializer for v in data.values()]
        config = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
        self.session = tf.Session(graph=self.graph, config=config)
        self.session.run(initializers, {inputs["x"]: standardized, inputs["labels"]: labels,
                                        inputs["weights"]: weights, inputs["offsets"]: offsets})
        self.evaluations = 0

    def to_original(self, g):
        b = g / self.scale
        b[0] = g[0] - np.sum(b[1:] * self.mean[1:])
        return b

    def to_standardized(self, b):
        g = b * self.scale
        g[0] = b[0] + np.sum(b[1:] * self.mean[1:])
        return g

    def loss_and_gradient(self, coefficients):
        self.evaluations += 1
        return self.session.run([self.loss, self.gradient], {self.coefficients: coefficients})

    def solve(self, max_iter=100, tolerance=1e-8, initial=None):
        """Minimize with L-BFGS until the largest (standardized) gradient element is below `tolerance`
        times the total weight (the loss is a sum over rows), or max_iter."""
        start = time.time()
        gtol = tolerance * max(1.0, self.total_weight)
        self.evaluations = 0
        x0 = np.zeros(self.dim) if initial is None else self.to_standardized(np.asarray(initial, dtype=np.float64))
        result = scipy.optimize.minimize(self.loss_and_gradient, x0, jac=True, method="L-BFGS-B",
                                         options={"maxiter": max_iter, "gtol": gtol, "ftol": 1e-15, "maxcor": 10})
        gradient = self.loss_and_gradient(result.x)[1]
        return Solution(self.to_original(result.x), np.array(result.nit),
                        np.array(np.max(np.abs(gradient)) <= gtol), self.evaluations, time.time() - start)

    def close(self):
        self.session.close()


def solve_fixed_effect(x, labels, weights, offsets, l2, regularize_intercept=False, max_iter=100, tolerance=1e-8,
                       initial=None, threads=0):
    """The fixed effect's coefficients (x includes the intercept column)."""
    solver = FixedEffectSolver(x, labels, weights, offsets, l2, regularize_intercept, threads)
    try:
        return solver.solve(max_iter, tolerance, initial)
    finally:
        solver.close()


class BatchedNewton:
    """Damped Newton for many small regularized LRs at once, as one TF graph over a padded block:
    x [entities, rows, d], labels/weights/offsets [entities, rows] (padding has weight 0)."""

    def __init__(self, dim, regularize_intercept=False, threads=0):
        self.dim = dim
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.x = tf.placeholder(tf.float64, [None, None, dim], name="x")
            self.labels = tf.placeholder(tf.float64, [None, None], name="labels")
            self.weights = tf.placeholder(tf.float64, [None, None], name="weights")
            self.offsets = tf.placeholder(tf.float64, [None, None], name="offsets")
            self.initial = tf.placeholder(tf.float64, [None, dim], name="initial")
            self.l2 = tf.placeholder(tf.float64, [], name="l2")
            self.max_iter = tf.placeholder(tf.int32, [], name="max_iter")
            self.tolerance = tf.placeholder(tf.float64, [], name="tolerance")
            self.mask = tf.constant(penalty_mask(dim, regularize_intercept))
            self.outputs = self._build()
        config = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
        self.session = tf.Session(graph=self.graph, config=config)

    def _logits(self, coefficients):
        return self.offsets + tf.einsum("erd,ed->er", self.x, coefficients)

    def _objective(self, coefficients, logits):
        losses = self.weights * tf.nn.sigmoid_cross_entropy_with_logits(labels=self.labels, logits=logits)
        return tf.reduce_sum(losses, 1) + 0.5 * self.l2 * tf.reduce_sum(self.mask * tf.square(coefficients), 1)

    def _gradient(self, coefficients, logits):
        residual = self.weights * (tf.sigmoid(logits) - self.labels)
        return tf.einsum("erd,er->ed", self.x, residual) + self.l2 * self.mask * coefficients

    def _newton_direction(self, x32, curvature, gradient):
        """-H^-1 g per entity. The Hessian is formed and factorized in float32 (half the time of its
        float64 batched matmul); the gradient, the objective and the stopping rule stay float64, so the
        solution is the float64 one: a slightly inexact Hessian only slows Newton's last digits.
        An entity whose float32 factorization fails takes a diagonally scaled gradient step."""
        hessian = tf.matmul(x32 * curvature[:, :, None], x32, transpose_a=True)
        diagonal = tf.linalg.diag_part(hessian) + tf.cast(self.l2 * self.mask, tf.float32)
        jitter = HESSIAN_JITTER * (tf.reduce_mean(diagonal, 1, keepdims=True) + 1.0)
        hessian = tf.linalg.set_diag(hessian, diagonal + jitter)
        direction = -tf.linalg.cholesky_solve(tf.linalg.cholesky(hessian), tf.cast(gradient, tf.float32)[:, :, None])
        direction = tf.cast(direction[:, :, 0], tf.float64)
        fallback = -gradient / tf.cast(diagonal + jitter, tf.float64)
        finite = tf.reduce_all(tf.math.is_finite(direction), 1, keepdims=True)
        return tf.where_v2(finite, direction, fallback)

    def _build(self):
        entities = tf.shape(self.x)[0]
        threshold = self.tolerance * tf.maximum(tf.constant(1.0, tf.float64), tf.reduce_sum(self.weights, 1))
        x32 = tf.cast(self.x, tf.float32)

        def newton_step(iteration, coefficients, iterations, active):
            logits = self._logits(coefficients)
            gradient = self._gradient(coefficients, logits)
            active = tf.logical_and(active, tf.reduce_max(tf.abs(gradient), 1) > threshold)
            curvature = tf.cast(self.weights * tf.sigmoid(logits) * tf.sigmoid(-logits), tf.float32)
            direction = self._newton_direction(x32, curvature, gradient)
            direction = tf.where_v2(active[:, None], direction, tf.zeros_like(direction))
            # Backtracking (Armijo) per entity: halve the step of the entities whose objective did not
            # decrease enough; the others keep theirs.
            current = self._objective(coefficients, logits)
            slope = tf.reduce_sum(gradient * direction, 1)
            moved_logits = tf.einsum("erd,ed->er", self.x, direction)

            def not_done(halvings, step, accepted):
                return tf.logical_and(halvings < MAX_HALVINGS, tf.logical_not(tf.reduce_all(accepted)))

            def halve(halvings, step, accepted):
                step = tf.where_v2(accepted, step, step * 0.5)
                trial = self._objective(coefficients + step[:, None] * direction,
                                        logits + step[:, None] * moved_logits)
                return halvings + 1, step, trial <= current + 1e-4 * step * slope

            first = self._objective(coefficients + direction, logits + moved_logits)
            _, step, accepted = tf.while_loop(not_done, halve, [0, tf.ones([entities], tf.float64),
                                                                first <= current + 1e-4 * slope])
            step = tf.where_v2(accepted, step, tf.zeros_like(step))
            coefficients = coefficients + step[:, None] * direction
            return iteration + 1, coefficients, iterations + tf.cast(active, tf.int32), active

        def keep_going(iteration, coefficients, iterations, active):
            return tf.logical_and(iteration < self.max_iter, tf.reduce_any(active))

        _, coefficients, iterations, _ = tf.while_loop(
            keep_going, newton_step, [0, self.initial, tf.zeros([entities], tf.int32), tf.ones([entities], tf.bool)])
        final_gradient = self._gradient(coefficients, self._logits(coefficients))
        converged = tf.reduce_max(tf.abs(final_gradient), 1) <= threshold
        return coefficients, iterations, converged

    def run(self, x, labels, weights, offsets, initial, l2, max_iter, tolerance):
        return self.session.run(self.outputs, {
            self.x: x, self.labels: labels, self.weights: weights, self.offsets: offsets, self.initial: initial,
            self.l2: l2, self.max_iter: max_iter, self.tolerance: tolerance})

    def close(self):
        self.session.close()


def padded_length(counts):
    """Row counts rounded up on a ladder of four steps per doubling (8, 10, 12, 14, 16, 20, ...), so that
    padding wastes at most a quarter of a block; 0 stays 0."""
    counts = np.asarray(counts, dtype=np.int64)
    step = np.maximum(1, 1 << np.maximum(0, np.floor(np.log2(np.maximum(counts, 1))).astype(np.int64) - 2))
    return -(-counts // step) * step


def padded_blocks(entity_rows, num_entities, dim, max_cells=None):
    """Group entities by row count (padded by `padded_length`) and cut each group into blocks
    of at most `max_cells` cells. Yields (entity indices, padded length, row index matrix [e, len]
    with -1 for padding)."""
    max_cells = max_cells or MAX_BLOCK_CELLS
    order = np.argsort(entity_rows, kind="stable")
    counts = np.bincount(entity_rows, minlength=num_entities)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    padded = padded_length(counts)
    for length in np.unique(padded[padded > 0]):
        members = np.flatnonzero(padded == length)
        per_block = max(1, max_cells // (int(length) * dim))
        for first in range(0, members.size, per_block):
            block = members[first:first + per_block]
            position = np.arange(length)[None, :]
            rows = np.where(position < counts[block][:, None], starts[block][:, None] + position, -1)
            yield block, int(length), np.where(rows >= 0, order[np.maximum(rows, 0)], -1)


def solve_random_effect(x, labels, weights, offsets, entity_rows, num_entities, l2, regularize_intercept=False,
                        max_iter=50, tolerance=1e-8, initial=None, threads=0, solver=None):
    """Every entity's model at once. `x` [n, d] includes the intercept column; `entity_rows` [n] holds each
    row's entity index in [0, num_entities). An entity has converged when its largest gradient element
    is below `tolerance` times its total weight. Entities without rows keep their initial coefficients."""
    start = time.time()
    dim = x.shape[1]
    coefficients = np.zeros((num_entities, dim)) if initial is None else np.array(initial, dtype=np.float64)
    iterations = np.zeros(num_entities, dtype=np.int64)
    converged = np.zeros(num_entities, dtype=bool)
    counts = np.bincount(entity_rows, minlength=num_entities)
    converged[counts == 0] = True
    own_solver = solver is None
    solver = solver or BatchedNewton(dim, regularize_intercept, threads)
    runs = 0
    try:
        for block, _length, rows in padded_blocks(entity_rows, num_entities, dim):
            present = rows >= 0
            safe = np.maximum(rows, 0)
            block_x = np.where(present[:, :, None], x[safe], 0.0)
            out = solver.run(block_x, np.where(present, labels[safe], 0.0), np.where(present, weights[safe], 0.0),
                             np.where(present, offsets[safe], 0.0), coefficients[block], l2, max_iter, tolerance)
            coefficients[block], iterations[block], converged[block] = out
            runs += int(out[1].max(initial=0))
    finally:
        if own_solver:
            solver.close()
    return Solution(coefficients, iterations, converged, runs, time.time() - start)


def random_effect_scores(x, coefficients, entity_rows):
    """Each row's score under its entity's model; rows whose entity has no model (index -1) score 0."""
    known = entity_rows >= 0
    scores = np.zeros(x.shape[0])
    scores[known] = np.einsum("nd,nd->n", x[known], coefficients[entity_rows[known]])
    return scores

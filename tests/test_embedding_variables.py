"""Tests for modelzoo/embedding_variables.py (--ev: dynamic hash embeddings on TFRA 0.7.2).

Each test builds a small tf.compat.v1 graph around one DynamicTable (or the feature path that feeds
it), trains it with fed keys and a linear loss sum(out * w) whose gradient with respect to a looked-up
row is exactly the fed w (summed over duplicates), and checks the stored rows, slots and counters
against numbers computed here from the update rules.

The rows a step reads are fetched together with the training op; the gradients are made to wait
for them (`_train_op`), so the fetched rows are always the values before that step's update.
"""
import math
import os
import socket
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conftest import graph_ancestors  # noqa: E402
from modelzoo import features as F  # noqa: E402
from modelzoo.embedding_variables import (  # noqa: E402
    BANK_ROWS, CountingBloomFilter, initial_rows_numpy, DynamicEmbeddingTables, DynamicTable, EVOptions, keys_of)
from modelzoo.optimizers import build_optimizer  # noqa: E402
from modelzoo.schema import parse_schema  # noqa: E402

de = pytest.importorskip("tensorflow_recommenders_addons.dynamic_embedding")
tf1 = tf.compat.v1

DIM = 4
SEEDED = tf1.random_uniform_initializer(-0.05, 0.05, seed=1)

# slot names each optimizer gives a dynamic table (TFRA makes every slot a table keyed like the rows)
SLOTS = {"adam": {"m", "v"}, "adamasync": {"m", "v"}, "adagraddecay": {"accumulator", "decay_power"},
         "adagrad": {"accumulator"}, "gradientdescent": set(), "ftrl": {"accum", "linear"}}


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def _train_op(opt, loss, gs, before):
    """apply_gradients whose gradients wait for `before` (the rows the step reads), so a fetch of
    those rows in the same run is the pre-update value (the linear loss's gradient alone does not
    need them)."""
    ordered = []
    with tf.control_dependencies([before]):
        for grad, var in opt.compute_gradients(loss):
            if grad is None:
                continue
            if isinstance(grad, tf.IndexedSlices):
                grad = tf.IndexedSlices(tf.identity(grad.values), tf.identity(grad.indices), grad.dense_shape)
            else:
                grad = tf.identity(grad)
            ordered.append((grad, var))
    return opt.apply_gradients(ordered, global_step=gs)


def _build(options, optimizer="gradientdescent", lr=1.0, dim=DIM, initializer=SEEDED, training=True,
           devices=None, name="c", evict=False):
    """One DynamicTable trained on fed keys with loss sum(out * w)."""
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        gs = tf1.train.get_or_create_global_step()
        keys = tf1.placeholder(tf.int64, [None], name="keys")
        table = DynamicTable(name, dim, options, training, initializer, devices)
        out = table.lookup(keys)
        h = SimpleNamespace(graph=graph, gs=gs, keys=keys, table=table, out=out, train=None, opt=None)
        if training:
            h.w = tf1.placeholder(tf.float32, [None, dim], name="w")
            h.loss = tf.reduce_sum(out * h.w)
            h.opt = de.DynamicEmbeddingOptimizer(build_optimizer(optimizer, lr, global_step=gs))
            h.train = tf.group(_train_op(h.opt, h.loss, gs, out), *table.finish([h.opt], gs))
            h.evict = table.evict(gs) if evict else None
        h.init = tf1.global_variables_initializer()
    return h


def _session(h, target=""):
    sess = tf1.Session(target, graph=h.graph)
    sess.run(h.init)
    return sess


def _step(sess, h, keys, w=None):
    """One training step on `keys`; returns the rows the step read (before its update)."""
    keys = np.asarray(keys, np.int64)
    if w is None:
        w = np.ones([len(keys), h.table.dim], np.float32)
    out, _ = sess.run([h.out, h.train], {h.keys: keys, h.w: np.asarray(w, np.float32)})
    return out


def _rows(sess, var):
    """{key: row} of a de.Variable (all shards)."""
    keys, values = sess.run(var.export())
    return {int(k): v for k, v in zip(keys, values)}


def _keys(sess, var):
    return sorted(_rows(sess, var))


def _slots_by_name(h, width_index=0):
    """{slot name: slot de.Variable} of one width table."""
    out = {}
    for wrapper, _ in h.table.trained:
        if wrapper.params is not h.table.tables[width_index]:
            continue
        for name in h.opt.get_slot_names():
            slot = h.opt.get_slot(wrapper, name)
            if slot is not None:
                out[name] = slot.params
    return out


# ---------------------------------------------------------------------------------------------------
# 1. no collisions
# ---------------------------------------------------------------------------------------------------
def _colliding_ids(buckets=1000):
    """Two raw ids 'id<i>' that the hash-bucket path puts in the same bucket."""
    names = [f"id{i}" for i in range(400)]
    ids = tf.strings.to_hash_bucket_fast(names, buckets).numpy()
    first = {}
    for name, bucket in zip(names, ids):
        if bucket in first:
            return first[bucket], name, int(bucket)
        first[bucket] = name
    raise AssertionError("no two of 400 ids share one of 1000 buckets (birthday bound says they must)")


def _one_column_schema(buckets=1000):
    return parse_schema({"columns": [{"name": "label", "kind": "label"},
                                     {"name": "C1", "kind": "categorical", "hash_buckets": buckets,
                                      "embedding_dim": DIM}]})


def test_colliding_hash_bucket_ids_get_distinct_keys_and_rows_with_ev():
    a, b, bucket = _colliding_ids()
    schema = _one_column_schema()
    w = np.array([[1.0, 0, 0, 0], [0, 2.0, 0, 0]], np.float32)

    # hash-bucket path: one id, one shared row that both gradients move
    graph = tf.Graph()
    with graph.as_default():
        raw = {"C1": tf1.placeholder(tf.string, [None])}
        ids = F.transform(raw, schema)[F.IDS]
        emb = F.EmbeddingTables(schema, fused=False, initializer=SEEDED).lookup(ids)[0]
        loss = tf.reduce_sum(emb * w)
        with tf.control_dependencies([emb]):
            train = tf1.train.GradientDescentOptimizer(1.0).minimize(loss)
        table = next(v for v in tf1.global_variables() if v.op.name == "embedding/C1")
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            before = sess.run(table)
            got_ids, got, _ = sess.run([ids, emb, train], {raw["C1"]: [a, b]})
            after = sess.run(table)
    assert got_ids[:, 0].tolist() == [bucket, bucket]
    np.testing.assert_array_equal(got[0], got[1])  # they read one row
    changed = np.flatnonzero(np.any(after != before, axis=1))
    assert changed.tolist() == [bucket]
    np.testing.assert_allclose(after[bucket], before[bucket] - w[0] - w[1], rtol=0, atol=1e-6)

    # --ev path: two keys, two rows, each moved by its own gradient only
    graph = tf.Graph()
    with graph.as_default():
        gs = tf1.train.get_or_create_global_step()
        raw = {"C1": tf1.placeholder(tf.string, [None])}
        ids = F.transform(raw, schema, keyed=True)[F.IDS]
        tables = DynamicEmbeddingTables(schema, False, EVOptions(), True, initializer=SEEDED)
        emb = tables.lookup(ids)[0]
        opt = de.DynamicEmbeddingOptimizer(tf1.train.GradientDescentOptimizer(1.0))
        train = tf.group(_train_op(opt, tf.reduce_sum(emb * w), gs, emb), *tables.finish([opt], gs))
        dyn = tables.tables["C1"]
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            got_keys, got, _ = sess.run([ids, emb, train], {raw["C1"]: [a, b]})
            bank, stored = sess.run(dyn.bank), _rows(sess, dyn.tables[0])
    ka, kb = (int(k) for k in got_keys[:, 0])
    assert ka != kb
    assert [ka, kb] == tf.strings.to_hash_bucket_fast([a, b], (1 << 63) - 1).numpy().tolist()
    assert [ka, kb] == keys_of(tf.constant([a, b])).numpy().tolist()
    assert sorted(stored) == sorted([ka, kb])
    np.testing.assert_array_equal(got, initial_rows_numpy(bank, [ka, kb]))
    np.testing.assert_allclose(stored[ka], initial_rows_numpy(bank, [ka])[0] - w[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(stored[kb], initial_rows_numpy(bank, [kb])[0] - w[1], rtol=0, atol=1e-6)
    assert not np.allclose(stored[ka], stored[kb])


# ---------------------------------------------------------------------------------------------------
# 2./3. admission: counter and counting Bloom filter
# ---------------------------------------------------------------------------------------------------
def _check_threshold_admission(options, optimizer):
    """filter_freq=3: ids seen once or twice read zeros and are not stored; the 3rd sighting
    (duplicates in a batch count) stores the bank row, which trains from then on."""
    h = _build(options, optimizer=optimizer, lr=0.5)
    a, b, c = 11, 4096 + 22, 33
    slots = _slots_by_name(h)
    assert slots, "the test needs an optimizer with slots"
    with _session(h) as sess:
        bank = sess.run(h.table.bank)

        def stored():
            return sess.run(h.table.tables[0].size()), [sess.run(s.size()) for s in slots.values()]

        out = _step(sess, h, [a], w=[[1, 2, 3, 4]])  # a: 1
        np.testing.assert_array_equal(out, np.zeros([1, DIM]))
        assert stored() == (0, [0] * len(slots))
        out = _step(sess, h, [a, b], w=np.full([2, DIM], 5.0))  # a: 2, b: 1
        np.testing.assert_array_equal(out, np.zeros([2, DIM]))
        assert stored() == (0, [0] * len(slots))
        np.testing.assert_array_equal(sess.run(h.table.bank), bank)  # nothing moved

        # a: 3rd sighting; b: 2nd and 3rd in this batch; c: 1st
        w = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
        out = _step(sess, h, [a, b, b, c], w=w)
        np.testing.assert_array_equal(out[0], initial_rows_numpy(bank, [a])[0])
        np.testing.assert_array_equal(out[1], initial_rows_numpy(bank, [b])[0])
        np.testing.assert_array_equal(out[2], initial_rows_numpy(bank, [b])[0])
        np.testing.assert_array_equal(out[3], np.zeros(DIM))
        assert stored() == (2, [2] * len(slots))
        rows = _rows(sess, h.table.tables[0])
        assert sorted(rows) == sorted([a, b])
        for name, slot in slots.items():
            assert _keys(sess, slot) == sorted([a, b]), name
        # adagrad: acc = 0.1 + g^2, row -= lr * g / sqrt(acc); b's gradient is the sum of its two rows
        for key, g in [(a, w[0]), (b, w[1] + w[2])]:
            acc = 0.1 + g.astype(np.float64) ** 2
            np.testing.assert_allclose(rows[key], initial_rows_numpy(bank, [key])[0] - 0.5 * g / np.sqrt(acc),
                                       rtol=0, atol=1e-6)
        # from then on a trains: it reads its stored row and moves again
        out = _step(sess, h, [a], w=w[:1])
        np.testing.assert_array_equal(out[0], rows[a])
        assert not np.allclose(_rows(sess, h.table.tables[0])[a], rows[a])
        assert sess.run(h.table.tables[0].size()) == 2
    return h


def test_counter_filter_admits_an_id_at_its_third_sighting():
    h = _check_threshold_admission(EVOptions(filter="counter", filter_freq=3), "adagrad")
    assert h.table.counter is not None and h.table.cbf is None


def test_counter_filter_counts_every_sighting_exactly():
    h = _build(EVOptions(filter="counter", filter_freq=3))
    with _session(h) as sess:
        _step(sess, h, [1, 2, 2])
        _step(sess, h, [2, 3, 3, 3, 1])
        assert {k: int(v[0]) for k, v in _rows(sess, h.table.counter).items()} == {1: 2, 2: 3, 3: 3}
        assert _keys(sess, h.table.tables[0]) == [2, 3]


def test_cbf_filter_admits_an_id_at_its_third_sighting():
    h = _check_threshold_admission(EVOptions(filter="cbf", filter_freq=3, cbf_max_elements=10_000), "adagrad")
    assert h.table.counter is None  # no exact per-id state: only the fixed counter array


def test_cbf_size_follows_max_elements_and_fpr_not_the_ids_seen():
    # Bloom sizing: cells = ceil(-n ln p / ln(2)^2) = 95,851 for n=10,000 at p=1%; hashes = round(cells/n ln 2) = 7
    h = _build(EVOptions(filter="cbf", filter_freq=3, cbf_max_elements=10_000, cbf_fpr=0.01),
               optimizer="adagrad")
    cbf = h.table.cbf
    assert (cbf.cells, cbf.hashes) == (95_851, 7)
    assert cbf.counts.shape.as_list() == [95_851]
    ids = keys_of(tf.constant([f"u{i}" for i in range(5000)])).numpy()  # fingerprints, as in training
    with _session(h) as sess:
        for start in range(0, 5000, 1000):  # 5,000 distinct ids, each seen once
            out = _step(sess, h, ids[start:start + 1000])
            assert not out.any()
        counts = sess.run(cbf.counts)
        assert counts.shape == (95_851,)
        assert int(counts.sum()) == 5000 * 7  # every sighting added to its 7 cells, nothing else
        assert sess.run(h.table.tables[0].size()) == 0
        assert all(sess.run(s.size()) == 0 for s in _slots_by_name(h).values())
        # the per-id tables a counter filter would keep do not exist
        assert h.table.counter is None and h.table.status is None


def test_cbf_estimate_never_undercounts():
    graph = tf.Graph()
    with graph.as_default():
        cbf = CountingBloomFilter("cbf", max_elements=20, fpr=0.1)  # small: many collisions
        keys = tf1.placeholder(tf.int64, [None])
        amounts = tf1.placeholder(tf.int32, [None])
        add, estimate = cbf.add(keys, amounts), cbf.estimate(keys)
        rng = np.random.default_rng(0)
        ids = rng.integers(0, 1 << 62, 200)
        true = rng.integers(1, 4, 200)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(add, {keys: ids, amounts: true})
            est = sess.run(estimate, {keys: ids})
    assert (est >= true).all()
    assert (est > true).any()  # the filter is overloaded: some ids are over-counted


def test_cbf_collisions_admit_early_never_late():
    # 8 counters and 6 hashes: almost every id shares cells with earlier ones
    h = _build(EVOptions(filter="cbf", filter_freq=3, cbf_max_elements=1, cbf_fpr=0.5))
    assert (h.table.cbf.cells, h.table.cbf.hashes) == (8, 6)
    admitted_at = []
    with _session(h) as sess:
        for key in range(1000, 1030):
            for sighting in (1, 2, 3):
                if _step(sess, h, [key]).any():
                    admitted_at.append(sighting)
                    break
            else:
                admitted_at.append(None)
        stored = sess.run(h.table.tables[0].size())
    assert None not in admitted_at, f"an id was not admitted at its 3rd sighting: {admitted_at}"
    assert stored == 30
    assert min(admitted_at) < 3  # over-counted through collisions: admitted early


def test_cbf_second_sighting_is_not_admitted_with_a_roomy_filter():
    """The estimate must be read before this batch is added: otherwise an id's own sightings are
    counted twice and it is admitted at its 2nd sighting (race between the estimate's gather and the
    filter's scatter_add in one step)."""
    h = _build(EVOptions(filter="cbf", filter_freq=3, cbf_max_elements=100_000))
    ids = keys_of(tf.constant([f"v{i}" for i in range(480)])).numpy()
    with _session(h) as sess:
        for start in range(0, 480, 8):
            batch = ids[start:start + 8]
            _step(sess, h, batch)
            assert not _step(sess, h, batch).any()
        assert sess.run(h.table.tables[0].size()) == 0
    # and structurally: the filter's update waits for the estimate it must not change
    adds = [op for op in (getattr(u, "op", u) for u in h.table.updates)
            if op.type in ("ResourceScatterAdd", "ScatterAdd")]
    assert len(adds) == 1
    add = adds[0]
    gathers = {op for op in h.graph.get_operations() if op.type in ("ResourceGather", "GatherV2", "Gather")
               and any(i.op.name.startswith(h.table.cbf.counts.op.name) for i in op.inputs)}
    assert gathers, "no read of the CBF counters found"
    assert gathers & graph_ancestors(add), "the CBF add is not ordered after the estimate's read"


# ---------------------------------------------------------------------------------------------------
# 4. eviction
# ---------------------------------------------------------------------------------------------------
def test_gstep_eviction_removes_rows_not_updated_in_the_last_steps():
    opts = EVOptions(elimination="gstep", steps_to_live=2, track_updates=True)
    h = _build(opts, optimizer="adamasync", lr=0.1, evict=True)
    schedule = {0: [1, 2, 9], 1: [3, 9], 2: [9], 3: [9], 4: [4, 9], 5: [9]}  # global step -> keys
    with _session(h) as sess:
        for step in range(6):
            assert sess.run(h.gs) == step
            _step(sess, h, schedule[step])
        assert _keys(sess, h.table.tables[0]) == [1, 2, 3, 4, 9]
        # gs = 6, steps_to_live = 2: keys last updated at steps 0, 0, 1 are stale; 4 and 9 stay
        assert int(sess.run(h.evict)) == 3
        assert int(sess.run(h.table.evicted)) == 3
        assert _keys(sess, h.table.tables[0]) == [4, 9]
        for name, slot in _slots_by_name(h).items():
            assert _keys(sess, slot) == [4, 9], name
        assert _keys(sess, h.table.status) == [4, 9]
        assert int(sess.run(h.evict)) == 0  # nothing more is due
        assert int(sess.run(h.table.evicted)) == 3
        for _ in range(6, 10):
            _step(sess, h, [9])
        assert int(sess.run(h.evict)) == 1  # key 4 (step 4 < 10 - 2)
        assert int(sess.run(h.table.evicted)) == 4  # the variable accumulates
        assert _keys(sess, h.table.tables[0]) == [9]


def test_gstep_last_step_is_ordered_with_the_global_step_increment():
    """The step recorded for an updated row must be one well-defined value: the step the batch
    trained at (or consistently the step after). It must not depend on whether the status upsert
    happens to read global_step before or after apply_gradients increments it."""
    h = _build(EVOptions(elimination="gstep", steps_to_live=2, track_updates=True), evict=True)
    # structural: the global_step read that status upserts is ordered with the increment
    status_handles = {t.resource_handle.op for t in h.table.status.tables}
    upserts = [op for op in h.graph.get_operations() if "Insert" in op.type
               and any(i.op in status_handles for i in op.inputs)]
    increments = [op for op in h.graph.get_operations() if op.type in ("AssignAddVariableOp", "AssignAdd")
                  and op.inputs[0].op.name == h.gs.op.name]
    assert upserts and len(increments) == 1
    gs_reads = {op for up in upserts for op in graph_ancestors(up)
                if op.type in ("ReadVariableOp", "Identity") and op.inputs and op.inputs[0].op.name == h.gs.op.name}
    assert gs_reads, "no read of global_step feeds the status upsert"
    before = gs_reads <= graph_ancestors(increments[0])
    after = all(increments[0] in graph_ancestors(up) for up in upserts)
    assert before or after, "status records global_step unordered with its increment (a race)"
    # behavioural: one offset for every row
    with _session(h) as sess:
        for step in range(150):
            _step(sess, h, [step, 10_000])
        recorded = {k: int(v[0]) for k, v in _rows(sess, h.table.status).items()}
    offsets = {k: v - k for k, v in recorded.items() if k < 10_000}
    assert len(offsets) == 150 and len(set(offsets.values())) == 1, offsets
    assert set(offsets.values()) <= {0, 1}
    assert recorded[10_000] == 149 + offsets[0]


def test_l2_eviction_removes_rows_trained_to_a_small_norm():
    # a constant bank of 0.1 (initial norm 0.2 at width 4, signs by id): after one SGD step (lr=1) a row is
    # its initial row - w, so w = initial - target gives each row a known norm
    opts = EVOptions(elimination="l2", l2_threshold=0.05)
    h = _build(opts, initializer=tf1.constant_initializer(0.1), evict=True)
    target = np.array([[0.01, 0, 0, 0],      # norm 0.01 -> evicted
                       [0.03, 0.0, 0.0, 0.02],  # norm 0.036 -> evicted
                       [0.0, 0.06, 0.0, 0.0],   # norm 0.06 -> kept
                       [0.3, 0.4, 0.0, 0.0],    # norm 0.5 -> kept
                       [0.0, 0.0, 0.0, 0.0]], np.float32)  # norm 0 -> evicted
    keys = [1, 2, 3, 4, 5]
    start = initial_rows_numpy(np.full([BANK_ROWS, DIM], 0.1, np.float32), keys)
    with _session(h) as sess:
        _step(sess, h, keys, w=start - target)
        norms = {k: float(np.linalg.norm(v)) for k, v in _rows(sess, h.table.tables[0]).items()}
        np.testing.assert_allclose([norms[k] for k in keys], [0.01, math.hypot(0.03, 0.02), 0.06, 0.5, 0.0],
                                   rtol=1e-5, atol=1e-7)
        assert int(sess.run(h.evict)) == 3
        assert int(sess.run(h.table.evicted)) == 3
        assert _keys(sess, h.table.tables[0]) == [3, 4]
        assert int(sess.run(h.evict)) == 0


def test_l2_eviction_keeps_rows_that_start_below_the_threshold():
    """W&D's wide weights (--ev: width-1 tables, zero bank) start at norm 0: each used to go at every eviction,
    taking its FTRL slots with it. Rows are evicted only when training shrank them below the threshold."""
    opts = EVOptions(elimination="l2", l2_threshold=0.05)
    h = _build(opts, dim=1, initializer=tf1.zeros_initializer(), evict=True)
    with _session(h) as sess:
        _step(sess, h, [1, 2, 3], w=[[-0.01], [0.0], [-0.2]])  # rows 0.01, 0 and 0.2
        assert int(sess.run(h.evict)) == 0
        assert _keys(sess, h.table.tables[0]) == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------
# 5. slots follow rows
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adamasync", "adagrad"])
def test_slot_tables_follow_the_row_table_through_eviction(optimizer):
    h = _build(EVOptions(elimination="gstep", steps_to_live=1, track_updates=True),
               optimizer=optimizer, lr=0.1, evict=True)
    slots = _slots_by_name(h)
    assert set(slots) == SLOTS[optimizer]
    assert [set(map(id, s)) for s in h.table.slot_tables] == [set(map(id, slots.values()))]
    g = np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)
    with _session(h) as sess:
        bank = sess.run(h.table.bank)
        _step(sess, h, [7, 8, 9], w=np.tile(g, [3, 1]))
        _step(sess, h, [7, 8], w=np.tile(g, [2, 1]))
        _step(sess, h, [7, 8], w=np.tile(g, [2, 1]))
        assert _keys(sess, h.table.tables[0]) == [7, 8, 9]
        for name, slot in slots.items():
            assert _keys(sess, slot) == [7, 8, 9], name
        assert int(sess.run(h.evict)) == 1  # 9: last updated at step 0 < 3 - 1
        assert _keys(sess, h.table.tables[0]) == [7, 8]
        for name, slot in slots.items():
            assert _keys(sess, slot) == [7, 8], name
        # 9 comes back: bank row and fresh slots, as if never seen
        out = _step(sess, h, [9], w=g)
        np.testing.assert_array_equal(out[0], bank[9])
        got = {name: _rows(sess, slot)[9] for name, slot in slots.items()}
        old = {name: _rows(sess, slot)[7] for name, slot in slots.items()}
    g = g[0].astype(np.float64)
    if optimizer == "adamasync":
        # (1 - beta) g from m = v = 0 (1 - 0.999 is 0.99999e-3 in float32)
        np.testing.assert_allclose(got["m"], 0.1 * g, rtol=1e-6)
        np.testing.assert_allclose(got["v"], 0.001 * g ** 2, rtol=1e-4)
        assert not np.allclose(old["m"], got["m"])  # a key trained 3 times has another m
    else:
        np.testing.assert_allclose(got["accumulator"], 0.1 + g ** 2, rtol=1e-6)
        np.testing.assert_allclose(old["accumulator"], 0.1 + 3 * g ** 2, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# 6. adaptive embedding
# ---------------------------------------------------------------------------------------------------
def test_adaptive_rare_ids_share_a_hash_bucket_row_until_the_threshold():
    buckets = 10
    h = _build(EVOptions(adaptive=True, adaptive_threshold=3, adaptive_buckets=buckets))
    a, b = 7, 17  # same bucket (key mod 10)
    static = h.table.static
    assert static.shape.as_list() == [buckets, DIM] and static in h.graph.get_collection("trainable_variables")
    w1, w2, w3, w4 = (np.full([1, DIM], x, np.float32) for x in (0.1, 0.2, 0.4, 0.8))
    with _session(h) as sess:
        bank, s0 = sess.run([h.table.bank, static])
        np.testing.assert_array_equal(_step(sess, h, [a], w1)[0], s0[7])  # a: 1
        np.testing.assert_array_equal(_step(sess, h, [b], w2)[0], s0[7] - w1[0])  # b: 1, same row
        np.testing.assert_array_equal(_step(sess, h, [a], w3)[0], s0[7] - w1[0] - w2[0])  # a: 2
        assert sess.run(h.table.tables[0].size()) == 0
        s_before = sess.run(static)
        np.testing.assert_allclose(s_before[7], s0[7] - w1[0] - w2[0] - w3[0], atol=1e-6)
        np.testing.assert_array_equal(np.delete(s_before, 7, 0), np.delete(s0, 7, 0))
        out = _step(sess, h, [a], w4)  # a: 3 -> its own row, from the bank
        np.testing.assert_array_equal(out[0], bank[a])
        assert _keys(sess, h.table.tables[0]) == [a]
        np.testing.assert_allclose(_rows(sess, h.table.tables[0])[a], bank[a] - w4[0], atol=1e-6)
        np.testing.assert_array_equal(sess.run(static), s_before)  # the bucket no longer trains on a
        np.testing.assert_array_equal(_step(sess, h, [b], w1)[0], s_before[7])  # b: 2, still the bucket
        assert sess.run(h.table.tables[0].size()) == 1


# ---------------------------------------------------------------------------------------------------
# 7. dynamic dimension
# ---------------------------------------------------------------------------------------------------
def test_dynamic_dimension_narrow_rows_until_promotion_then_wide():
    h = _build(EVOptions(dynamic=True, dynamic_dims=[2, 4], dynamic_freqs=[3]), optimizer="adagrad",
               lr=0.1, evict=True)
    narrow, wide = h.table.tables
    assert (narrow.dim, wide.dim) == (2, 4)
    a, b = 5, 6
    with _session(h) as sess:
        bank = sess.run(h.table.bank)
        out = _step(sess, h, [a, b])
        np.testing.assert_array_equal(out[:, 2:], np.zeros([2, 2]))
        np.testing.assert_array_equal(out[:, :2], bank[[a, b], :2])
        _step(sess, h, [a])
        assert (sess.run(narrow.size()), sess.run(wide.size())) == (2, 0)
        out = _step(sess, h, [a])  # a: 3rd sighting -> a full-width row of its own
        np.testing.assert_array_equal(out[0], bank[a])
        assert _keys(sess, narrow) == [a, b] and _keys(sess, wide) == [a]
        narrow_slots = [_keys(sess, s) for s in h.table.slot_tables[0]]
        assert narrow_slots == [[a, b]]
        assert int(sess.run(h.evict)) == 0  # no elimination: promotions are not counted as evictions
        assert _keys(sess, narrow) == [b] and _keys(sess, wide) == [a]
        assert [_keys(sess, s) for s in h.table.slot_tables[0]] == [[b]]
        assert [_keys(sess, s) for s in h.table.slot_tables[1]] == [[a]]
        wide_a = _rows(sess, wide)[a]
        out = _step(sess, h, [a, b])
        np.testing.assert_array_equal(out[0], wide_a)
        np.testing.assert_array_equal(out[1, 2:], [0, 0])


# ---------------------------------------------------------------------------------------------------
# 8. every optimizer
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", list(SLOTS))
def test_every_optimizer_trains_a_dynamic_table(optimizer):
    graph = tf.Graph()
    with graph.as_default():
        gs = tf1.train.get_or_create_global_step()
        keys = tf1.placeholder(tf.int64, [None])
        table = DynamicTable("c", DIM, EVOptions(), True, SEEDED)
        out = table.lookup(keys)
        target = tf.constant([[1.0, -1.0, 0.5, 0.0]])
        loss = tf.reduce_mean(tf.reduce_sum(tf.square(out - target), axis=1))
        opt = de.DynamicEmbeddingOptimizer(build_optimizer(optimizer, 0.1, global_step=gs))
        train = tf.group(opt.minimize(loss, global_step=gs), *table.finish([opt], gs))
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            feed = {keys: [3, 1, 4, 1, 5, 9, 2, 6]}
            losses = [sess.run([loss, train], feed)[0] for _ in range(8)]
            stored = sess.run(table.tables[0].size())
            slot_keys = [sorted(sess.run(s.export())[0].tolist()) for s in table.slot_tables[0]]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.9 * losses[0], losses
    assert stored == 7
    assert set(opt.get_slot_names()) == SLOTS[optimizer]
    assert len(table.slot_tables[0]) == len(SLOTS[optimizer])
    assert slot_keys == [[1, 2, 3, 4, 5, 6, 9]] * len(SLOTS[optimizer])


# ---------------------------------------------------------------------------------------------------
# 9. checkpoints and serving
# ---------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_serving_lookup(tmp_path):
    h = _build(EVOptions(), optimizer="adamasync", lr=0.1)
    with h.graph.as_default():
        saver = tf1.train.Saver()
    with _session(h) as sess:
        for _ in range(3):
            _step(sess, h, [1, 2, 3, 2], w=np.arange(16, dtype=np.float32).reshape(4, 4) / 10)
        rows = _rows(sess, h.table.tables[0])
        slots = {n: _rows(sess, s) for n, s in _slots_by_name(h).items()}
        path = saver.save(sess, str(tmp_path / "model"), global_step=h.gs)
    assert sorted(rows) == [1, 2, 3] and set(slots) == {"m", "v"}

    # the same training graph, restored: keys, rows and slots equal
    again = _build(EVOptions(), optimizer="adamasync", lr=0.1)
    with again.graph.as_default():
        restore = tf1.train.Saver()
    with tf1.Session(graph=again.graph) as sess:
        assert sess.run(again.table.tables[0].size()) == 0
        restore.restore(sess, path)
        assert int(sess.run(again.gs)) == 3
        got = _rows(sess, again.table.tables[0])
        got_slots = {n: _rows(sess, s) for n, s in _slots_by_name(again).items()}
    assert sorted(got) == sorted(rows)
    for k in rows:
        np.testing.assert_array_equal(got[k], rows[k])
        for n in slots:
            np.testing.assert_array_equal(got_slots[n][k], slots[n][k])

    # a serving graph: stored rows for known ids, zeros for unknown ones
    serve = _build(EVOptions(), training=False)
    assert serve.table.counter is None and serve.table.status is None
    with serve.graph.as_default():
        restore = tf1.train.Saver()
    with tf1.Session(graph=serve.graph) as sess:
        restore.restore(sess, path)
        out = sess.run(serve.out, {serve.keys: [3, 99, 1, 2, 4096 + 1]})
        assert sess.run(serve.table.tables[0].size()) == 3  # serving lookups insert nothing
    np.testing.assert_array_equal(out[[0, 2, 3]], [rows[3], rows[1], rows[2]])
    np.testing.assert_array_equal(out[[1, 4]], np.zeros([2, DIM]))


# ---------------------------------------------------------------------------------------------------
# 10. parameter servers
# ---------------------------------------------------------------------------------------------------
def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def cluster():
    ps0, ps1, worker = _free_ports(3)
    spec = tf1.train.ClusterSpec({"ps": [f"localhost:{ps0}", f"localhost:{ps1}"],
                                  "worker": [f"localhost:{worker}"]})
    servers = [tf1.train.Server(spec, job_name=job, task_index=i, start=True)
               for job, i in [("ps", 0), ("ps", 1), ("worker", 0)]]
    return servers[2].target, servers


def _ps_run(target, devices, batches, scope):
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        with tf.device("/job:ps/task:0/device:CPU:0"):
            gs = tf1.train.get_or_create_global_step()
            weight = tf1.get_variable("w", [DIM, 1], initializer=tf1.constant_initializer(0.3))
        with tf.device("/job:worker/task:0/device:CPU:0"):
            keys = tf1.placeholder(tf.int64, [None])
            labels = tf1.placeholder(tf.float32, [None])
            with tf1.variable_scope(scope):
                table = DynamicTable("c", DIM, EVOptions(), True, SEEDED, devices=devices)
            logits = tf.reshape(tf.matmul(table.lookup(keys), weight), [-1])
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
            opt = de.DynamicEmbeddingOptimizer(build_optimizer("adagrad", 0.5, global_step=gs))
            train = tf.group(opt.minimize(loss, global_step=gs), *table.finish([opt], gs))
        with tf1.Session(target, graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            losses = [sess.run([loss, train], {keys: k, labels: y})[0] for k, y in batches]
            shards = [sess.run(t.export()) for t in table.tables[0].tables]
            rows = _rows(sess, table.tables[0])
            slot_shards = [[sess.run(t.export()[0]) for t in s.tables] for s in table.slot_tables[0]]
            final_w = sess.run(weight)
    return SimpleNamespace(table=table, losses=losses, shards=shards, rows=rows, slot_shards=slot_shards,
                           weight=final_w)


def test_ps_sharded_tables_partition_keys_and_train_like_one_ps(cluster):
    target, _ = cluster
    rng = np.random.default_rng(3)
    key_pool = keys_of(tf.constant([f"user{i}" for i in range(40)])).numpy()
    batches = [(rng.choice(key_pool, 16), rng.integers(0, 2, 16).astype(np.float32)) for _ in range(5)]
    ps0, ps1 = "/job:ps/task:0/device:CPU:0", "/job:ps/task:1/device:CPU:0"
    one = _ps_run(target, [ps0], batches, "one")
    two = _ps_run(target, [ps0, ps1], batches, "two")

    # placement: each shard's hash table (rows, slots) lives on its PS task
    for run, devices in [(one, [ps0]), (two, [ps0, ps1])]:
        for var in [run.table.tables[0]] + run.table.slot_tables[0]:
            placed = [tf.DeviceSpec.from_string(t.resource_handle.op.device) for t in var.tables]
            assert [(d.job, d.task) for d in placed] == [("ps", i) for i in range(len(devices))], var.name

    seen = set(np.concatenate([k for k, _ in batches]).tolist())
    assert set(one.rows) == seen and len(one.shards) == 1
    shard_keys = [set(k.tolist()) for k, _ in two.shards]
    assert all(shard_keys), "a PS shard holds nothing"
    assert shard_keys[0] | shard_keys[1] == seen and not shard_keys[0] & shard_keys[1]
    assert all(k % 2 == 0 for k in shard_keys[0]) and all(k % 2 == 1 for k in shard_keys[1])
    for slot in two.slot_shards:  # the slots are sharded like the rows
        assert [set(k.tolist()) for k in slot] == shard_keys

    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5)
    np.testing.assert_allclose(two.weight, one.weight, rtol=1e-5)
    for k in seen:
        np.testing.assert_allclose(two.rows[k], one.rows[k], rtol=1e-5, atol=1e-7)
    assert one.losses[-1] != one.losses[0]


def test_ids_sharing_a_bank_row_start_apart_and_the_graph_matches_its_numpy_twin():
    """New rows are bank[id mod 4096] with signs from the id's higher bits: ids of one bank row start
    with the same magnitudes but different signs, and the TF and numpy versions agree bit for bit."""
    from modelzoo.embedding_variables import initial_rows
    bank = np.random.default_rng(0).uniform(-0.05, 0.05, [BANK_ROWS, 16]).astype(np.float32)
    keys = keys_of(tf.constant([f"id{i}" for i in range(2000)])).numpy()
    same_row = [5, 5 + BANK_ROWS * 3, 5 + BANK_ROWS * 12345]
    got = initial_rows(tf.constant(bank), tf.constant(np.concatenate([keys, same_row]))).numpy()
    np.testing.assert_array_equal(got, initial_rows_numpy(bank, np.concatenate([keys, same_row])))
    a, b, c = got[-3:]
    np.testing.assert_array_equal(np.abs(a), np.abs(b))
    assert not np.array_equal(a, b) and not np.array_equal(b, c) and not np.array_equal(a, c)
    # over many fingerprints every element is + or - about half of the time (the init stays symmetric)
    share_negative = (np.sign(got[:2000]) != np.sign(bank[keys % BANK_ROWS])).mean(axis=0)
    assert np.all(np.abs(share_negative - 0.5) < 0.05)


def test_importing_tfra_leaves_optimizers_of_ref_variables_working():
    """TFRA 0.7.2 swaps TF's slot creator for one that needs `variables.RefVariable` (gone from there
    since TF 2.13); modelzoo.embedding_variables puts it back, or every later ref-variable slot fails."""
    with tf.Graph().as_default():
        var = tf1.Variable([1.0, 2.0], use_resource=False)
        train = tf1.train.AdamOptimizer(0.1).minimize(tf.reduce_sum(var * var))
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(train)
            assert sess.run(var)[1] < 2.0


# ---------------------------------------------------------------------------------------------------
# --emb_fusion: one table for every column, a filter and hash buckets per column
# ---------------------------------------------------------------------------------------------------
def _fused(options, columns=26):
    """DLRM's --ev default: one fused table for `columns` columns of width DIM, trained on fed ids [B, C]."""
    schema = parse_schema({"columns": [{"name": "label", "kind": "label"}] + [
        {"name": f"C{i + 1}", "kind": "categorical", "hash_buckets": 10, "embedding_dim": DIM}
        for i in range(columns)]})
    graph = tf.Graph()
    with graph.as_default():
        gs = tf1.train.get_or_create_global_step()
        ids = tf1.placeholder(tf.int64, [None, columns])
        tables = DynamicEmbeddingTables(schema, True, options, True, initializer=SEEDED)
        emb = tables.lookup_stacked(ids)  # [B, C, DIM]
        opt = de.DynamicEmbeddingOptimizer(tf1.train.GradientDescentOptimizer(0.1))
        train = tf.group(_train_op(opt, tf.reduce_sum(emb), gs, emb), *tables.finish([opt], gs))
        table = tables.tables[f"fused_dim{DIM}"]
        init = tf1.global_variables_initializer()
    return SimpleNamespace(graph=graph, ids=ids, emb=emb, train=train, table=table, init=init)


def test_fused_cbf_keeps_each_columns_false_positive_rate_at_the_bound():
    """26 columns each bring --ev_cbf_max_elements ids: the filter of the fused table is sized per column, so
    a column's fresh id is admitted at its first sighting (a false positive, --ev_filter_freq 2) at about
    --ev_cbf_fpr, whatever the other 25 columns hold. (A single filter for the table, sized for one column's
    ids, holds 26 times as many: nearly every fresh id would be admitted.)"""
    n, fpr = 500, 0.01
    h = _fused(EVOptions(filter="cbf", filter_freq=2, cbf_max_elements=n, cbf_fpr=fpr))
    cbf = h.table.cbf
    assert h.table.columns == 26 and cbf.counts.shape.as_list() == [26 * cbf.cells]
    rng = np.random.default_rng(0)
    seen, fresh = (rng.integers(0, 1 << 62, (n, 26)) for _ in range(2))
    with tf1.Session(graph=h.graph) as sess:
        sess.run(h.init)
        for start in range(0, n, 100):  # every column's n ids, seen once (a few admitted early: false positives)
            sess.run(h.train, {h.ids: seen[start:start + 100]})
        early = sess.run(h.table.tables[0].size())
        assert early < 26 * n * fpr
        counts = sess.run(cbf.counts).reshape(26, cbf.cells)
        assert (counts.sum(axis=1) == n * cbf.hashes).all()  # each column's sightings in its own range
        out, _ = sess.run([h.emb, h.train], {h.ids: fresh})  # one sighting of n fresh ids per column
        admitted = np.abs(out).sum(axis=2) > 0  # [n, 26]: read a row of its own at the first sighting
    rate = admitted.mean()
    assert rate < 1.5 * fpr, f"false-positive rate {rate:.4f} with 26 columns of {n} ids (bound {fpr})"
    assert admitted.mean(axis=0).max() < 4 * fpr  # no column is worse off than the others


def test_fused_cbf_admission_of_a_column_ignores_the_other_columns_ids():
    """The same id value in another column is another key; and however many ids the other columns bring,
    a column's id is admitted at its own --ev_filter_freq-th sighting, not before."""
    n = 200
    h = _fused(EVOptions(filter="cbf", filter_freq=3, cbf_max_elements=n, cbf_fpr=0.01), columns=4)
    rng = np.random.default_rng(1)
    with tf1.Session(graph=h.graph) as sess:
        sess.run(h.init)
        for _ in range(5):  # columns 1..3: n ids each, five times (each admitted), column 0: nothing new
            batch = rng.integers(0, 1 << 62, (n, 4))
            batch[:, 0] = 12345
            for _ in range(3):
                sess.run(h.train, {h.ids: batch})
        ours = np.array([[7, 1, 2, 3]], np.int64)  # id 7 in column 0; columns 1..3 see 1, 2, 3
        firsts = [sess.run([h.emb, h.train], {h.ids: ours})[0][0, 0] for _ in range(3)]
    assert not firsts[0].any() and not firsts[1].any() and firsts[2].any()


def test_fused_adaptive_buckets_are_per_column():
    """--adaptive_emb in a fused table: each column has its own --adaptive_emb_buckets rows; a rare id of one
    column never shares a bucket row with another column's ids."""
    buckets = 8
    h = _fused(EVOptions(adaptive=True, adaptive_threshold=5, adaptive_buckets=buckets), columns=3)
    static = h.table.static
    assert static.shape.as_list() == [3 * buckets, DIM]
    with tf1.Session(graph=h.graph) as sess:
        sess.run(h.init)
        before = sess.run(static)
        sess.run(h.train, {h.ids: np.array([[11, 0, 0]], np.int64) * np.array([[1, 0, 0]])})  # column 0 only
        # (columns 1 and 2 saw id 0: their rows moved too, each in its own range)
        after = sess.run(static)
    moved = np.flatnonzero(np.abs(after - before).sum(axis=1) > 0)
    assert len(moved) == 3 and sorted(m // buckets for m in moved) == [0, 1, 2], moved


def test_a_table_under_a_partitioning_scope_reads_its_bank_whole():
    """--dense_layer_partitioner (the PS manifests' 16 KB) slices the initializer bank into parts: the table
    still starts a new id from its row of the whole bank (it failed with TypeError on the parts before)."""
    graph = tf.Graph()
    with graph.as_default():
        with tf1.variable_scope("dense", partitioner=tf1.fixed_size_partitioner(2)):
            table = DynamicTable("c", DIM, EVOptions(), True, SEEDED)
        keys = np.array([5, 4100, 77], np.int64)
        out = table.lookup(tf.constant(keys))
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            bank, rows = sess.run([table.bank.as_tensor(), out])
    assert len(list(table.bank)) == 2  # two slices
    np.testing.assert_array_equal(rows, initial_rows_numpy(bank, keys))

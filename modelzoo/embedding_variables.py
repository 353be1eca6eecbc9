"""Embedding variables (--ev): dynamic hash embeddings keyed by the raw id, as in DeepRec.

Each categorical column's embedding is a hash table from a 64-bit id (the fingerprint of the raw
string) to its row, so two distinct ids never share a row and memory grows with the ids admitted, not
with a declared bucket count. TensorFlow Recommenders-Addons 0.7.2 (`dynamic_embedding`) gives the
tables (CuckooHashTable kernels), their optimizer slots as tables, sharding over parameter-server
devices, and checkpoint saveables. This module adds what it lacks:

- id-deterministic initialization: a new id's row is row `id mod 4096` of a seeded initializer bank
  (DeepRec's default_value_dim) with each element's sign set by one of the id's higher bits, so the
  same id starts alike whatever the sharding or the step, and distinct ids almost never start alike
  (a symmetric initializer keeps its distribution);
- admission (--ev_filter counter|cbf): an id gets a row only at its N-th sighting; before that it
  reads the zero vector, is not stored and gets no update;
- adaptive embedding (--adaptive_emb): ids not yet frequent read a small hash-bucket table instead;
- dynamic dimension (--dynamic_ev): rare ids get narrower rows, zero-padded to the model's width;
- eviction (--ev_elimination gstep|l2) of rows and their slots, every N steps and at each checkpoint,
  counted in a variable per table;
- the per-table report that goes into result.json (`ev_tables`).

The SavedModel needs no TFRA: modelzoo/export.py freezes the tables into stock ops (`frozen`).
"""
import math
import weakref

import tensorflow as tf

from modelzoo import incremental_ckpt, tf_config
from modelzoo.incremental_ckpt import TABLES_COLLECTION  # the training graph's DynamicTable objects (incremental saves)
from modelzoo.features import KEY_SPACE, ColumnTables, keys_of  # noqa: F401 (keys_of: the tables' key function)
from modelzoo.options import EVOptions  # noqa: F401 (the tables' options, also imported from here)

tf1 = tf.compat.v1

BANK_ROWS = 4096  # DeepRec's default_value_dim: a new id starts from row id % 4096 of the bank ...
SIGN_SHIFT = 12  # ... with the signs of its elements set by the id's next bits (bits 12..62)
EVICT_COLLECTION = "modelzoo_ev_evict"  # the eviction op, found by the checkpoint listener


def _tfra_compat():
    """TFRA 0.7.2 replaces TF's slot creator with one that checks `variables.RefVariable`, which TF 2.13+
    moved to `ref_variable`: once TFRA is imported, every optimizer slot of a ref (non-resource) variable
    would fail with AttributeError. Put the name back where TFRA looks for it."""
    from tensorflow.python.ops import ref_variable, variables
    if not hasattr(variables, "RefVariable"):
        variables.RefVariable = ref_variable.RefVariable


_tfra_compat()


def _de():
    from tensorflow_recommenders_addons import dynamic_embedding as de
    return de


def load_kernels():
    """Register TFRA's ops in this process (a PS task's server runs them for the tables it holds)."""
    _de()


def describe(args, schema):
    """One line for the run's announcement."""
    opts = EVOptions.from_args(args)
    tables = "one table per width" if args.emb_fusion else "one table per categorical column"
    shared = len(schema.lists) - len(schema.tables) + len(schema.categorical)  # (list columns reading another's)
    parts = [f"{len(schema.tables)} columns as dynamic hash tables keyed by the raw id ({tables}"
             + (f"; {shared} list column(s) read their owner's" if shared else "") + "; the "
             "schema's hash buckets are not used)"]
    if opts.filter:
        parts.append(f"admission after {opts.filter_freq} sightings ({opts.filter}"
                     + (f", a filter for {opts.cbf_max_elements:,} ids per column)" if opts.filter == "cbf" else ")"))
    if opts.adaptive:
        parts.append(f"ids seen < {opts.adaptive_threshold} times in {opts.adaptive_buckets:,} hash buckets per column")
    if opts.dynamic:
        for width in sorted({c.embedding_dim for c in schema.tables}):  # (each table width its own)
            parts.append(f"{width}-wide tables: row widths {opts.widths(width)} (promotion at "
                         f"{opts.promotions(width)} sightings)")
    if opts.elimination:
        parts.append(f"eviction of rows {describe_eviction(opts)} every {opts.evict_steps:,} steps and at "
                     "checkpoints")
    if args.incremental_ckpt:
        parts.append(f"incremental checkpoints every {args.incremental_ckpt}s")
    return "embedding variables: " + "; ".join(parts)


def ps_devices(training=True):
    """One table shard per parameter-server task of TF_CONFIG's cluster (None: this process).

    Only training runs on the cluster: tf.estimator evaluates (evaluation_master '') and exports in a
    local session, which has no /job:ps devices. Those graphs get as many shards on this process's
    CPU, so they restore the training checkpoint's `_mht_KofN` tables and the SavedModel needs no cluster.
    """
    config = tf_config.from_environment()
    tasks = len(config.addresses("ps")) if config else 0
    if not training:
        return ["/device:CPU:0"] * tasks or None
    return [f"/job:ps/replica:0/task:{i}/device:CPU:0" for i in range(tasks)] or None


def identity(args):
    """The checkpoint-identity entry for embedding variables (None without --ev): the layout, the shards
    (one per PS task of TF_CONFIG, else 1: the tables' checkpoint names hold the count) and whether a fused
    table keeps a counting Bloom filter and hash buckets per column (their shapes)."""
    if not args.ev:
        return None
    per_column = args.emb_fusion and (args.ev_filter == "cbf" or args.adaptive_emb)
    return {**EVOptions.from_args(args).layout(), "shards": len(ps_devices() or [None]),
            "fused_filters": "one per column" if per_column else None}


class CountingBloomFilter:
    """Counts of ids in a fixed array of counters: memory bounded by the size, not by the ids seen.

    Sized like a Bloom filter for `max_elements` ids at false-positive rate `fpr`; each id increments
    `hashes` cells (double hashing of its 64-bit key) and its count is the smallest of them, which can
    only over-count (a colliding id admitted early), never under-count. With `columns` (the columns of an
    --emb_fusion table) each column has a range of `cells` of its own, so each column's false-positive
    rate is the configured one at `max_elements` ids of that column, whatever the other columns hold.
    """

    def __init__(self, name, max_elements, fpr, columns=1):
        self.cells = max(8, math.ceil(-max_elements * math.log(fpr) / math.log(2) ** 2))  # per column
        self.hashes = max(1, round(self.cells / max_elements * math.log(2)))
        self.columns = columns
        self.counts = tf1.get_variable(name, [columns * self.cells], tf.int32, tf1.zeros_initializer(),
                                       trainable=False)

    def _positions(self, keys, columns=None):
        """[N, hashes] cells of each key, in its column's range (`columns`: each key's column, or None)."""
        m = tf.constant(self.cells, tf.int64)
        h1 = tf.math.floormod(keys, m)
        h2 = tf.math.floormod(tf.math.floordiv(keys, m), m - 1) + 1
        cells = tf.math.floormod(h1[:, None] + tf.range(self.hashes, dtype=tf.int64)[None, :] * h2[:, None], m)
        return cells if columns is None else cells + tf.cast(columns, tf.int64)[:, None] * m

    def estimate(self, keys, columns=None):
        return tf.reduce_min(tf.gather(self.counts, self._positions(keys, columns)), axis=1)

    def add(self, keys, amounts, columns=None):
        positions = self._positions(keys, columns)
        increments = tf.tile(amounts[:, None], [1, self.hashes])
        return tf1.scatter_add(self.counts, tf.reshape(positions, [-1]), tf.reshape(increments, [-1]))

    def distinct_estimate(self, session):
        """Distinct ids counted so far, from the share of non-zero cells of each column's range (Swamidass &
        Baldi); None when a range is full."""
        nonzero = (session.run(self.counts).reshape(self.columns, self.cells) > 0).sum(axis=1)
        if (nonzero >= self.cells).any():
            return None
        return round(sum(-self.cells / self.hashes * math.log(1 - int(n) / self.cells) for n in nonzero))


def initial_rows(bank, keys):
    """Rows that new ids start from: bank[id mod 4096], element j's sign from bit 12 + j mod 51 of the id."""
    keys = tf.reshape(keys, [-1])
    shifts = SIGN_SHIFT + tf.range(bank.shape[1], dtype=tf.int64) % 51
    bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(keys[:, None], shifts[None, :]), 1)
    return tf.gather(bank, tf.math.floormod(keys, BANK_ROWS)) * (1.0 - 2.0 * tf.cast(bits, bank.dtype))


def initial_rows_numpy(bank, keys):
    """numpy twin of initial_rows (tests, tools)."""
    import numpy as np
    keys = np.asarray(keys, np.int64).reshape(-1)
    shifts = SIGN_SHIFT + np.arange(bank.shape[1]) % 51
    bits = (keys[:, None] >> shifts[None, :]) & 1
    return bank[keys % BANK_ROWS] * (1 - 2 * bits).astype(bank.dtype)


def _bank_variable_class():
    de = _de()

    class BankVariable(de.Variable):
        """A dynamic table whose missing ids read their initial_rows."""
        bank = None

        def _create_default_values_by_initializer(self, keys):
            return initial_rows(self.bank, keys)

    return BankVariable


class DynamicTable:
    """One dynamic table: a column, or with --emb_fusion all `columns` columns of one width (keys salted
    per column; the counting Bloom filter and the adaptive hash buckets have a part per column).

    Rows of width `dim` (with --dynamic_ev, one table per width). Looks up a flat vector of keys.
    """

    def __init__(self, name, dim, options, training, initializer, devices=None, columns=1, frozen=None):
        de = _de()
        self.name, self.dim, self.options, self.training = name, dim, options, training
        self.columns = columns
        self.widths = options.widths(dim)
        self.devices = devices
        scope = tf1.get_variable_scope().name
        self.full_name = f"{scope}/{name}" if scope else name
        bank_class = _bank_variable_class()
        with tf1.variable_scope(name):
            self.bank = tf1.get_variable("init_bank", [BANK_ROWS, dim], tf.float32, initializer, trainable=False)
            # (sliced over the PS tasks under --dense_layer_partitioner: read whole)
            bank = self.bank.as_tensor() if hasattr(self.bank, "as_tensor") else self.bank
            self.evicted = tf1.get_variable("evicted", [], tf.int64, tf1.zeros_initializer(), trainable=False)
            self.static = None
            if options.adaptive:
                self.static = tf1.get_variable("rare_buckets", [columns * options.adaptive_buckets, dim],
                                               tf.float32, initializer)
            self.cbf = None
            if training and options.filter == "cbf":
                self.cbf = CountingBloomFilter("cbf", options.cbf_max_elements, options.cbf_fpr, columns)
        self.tables = []
        for width in self.widths:
            suffix = "" if width == dim else f"_w{width}"
            if frozen is not None:  # a stock serving graph (modelzoo/export.py): no TFRA op
                self.tables.append(frozen.rows(f"{self.full_name}/rows{suffix}", width))
                continue
            var = bank_class(name=f"{self.full_name}/rows{suffix}", key_dtype=tf.int64, value_dtype=tf.float32,
                             dim=width, devices=devices, trainable=True)
            var.bank = bank[:, :width]
            self.tables.append(var)
        self.counter = self.status = None  # training state only: not in evaluation or serving graphs
        if training and options.counting:
            self.counter = de.Variable(name=f"{self.full_name}/count", key_dtype=tf.int64, value_dtype=tf.int32,
                                       dim=1, devices=devices, trainable=False)
        if training and options.track_updates:
            self.status = de.Variable(name=f"{self.full_name}/last_step", key_dtype=tf.int64,
                                      value_dtype=tf.int64, dim=1, devices=devices, trainable=False)
        self.trained = []  # (trainable wrapper, its keys) per lookup of each width table
        self.updates = []  # counter / filter ops that must run with the training step
        self.slot_tables = []  # filled by finish(): the optimizer's slot tables of each width table

    # -- lookups -----------------------------------------------------------------------------------
    def lookup(self, keys, columns=None, training=True):
        """keys [N] int64 -> [N, dim] float32. `columns` [N]: each key's column in a fused table. `training`
        False: the serving lookup even in a training table (an evaluation inside the training session)."""
        uniq, index = tf.unique(keys)
        if columns is not None:  # (a key belongs to one column: its salt)
            columns = tf.math.unsorted_segment_max(tf.cast(columns, tf.int64), index, tf.size(uniq))
        if not (self.training and training):
            return tf.gather(self._serve_rows(uniq, columns), index)
        rows = self._train_rows(uniq, index, columns)
        if self.status is not None:
            # the step these rows are trained at: read before the optimizer's increment (which waits
            # for the gradients, which wait for these rows)
            self.step = tf.identity(tf1.train.get_or_create_global_step().read_value())
            with tf.control_dependencies([self.step]):
                rows = tf.identity(rows)
        return tf.gather(rows, index)

    def _base_rows(self, uniq, columns=None):
        """What an id without a row of its own reads: the zero vector, or its hash bucket (adaptive; in a
        fused table, among its column's buckets)."""
        if self.static is not None:
            bucket = tf.math.floormod(uniq, self.options.adaptive_buckets)
            if columns is not None:
                bucket += columns * self.options.adaptive_buckets
            return tf.nn.embedding_lookup(self.static, bucket)
        return tf.zeros([tf.size(uniq), self.dim])

    def _train_rows(self, uniq, index, columns=None):
        de = _de()
        opts = self.options
        sightings = tf.math.unsorted_segment_sum(tf.ones_like(index), index, tf.size(uniq))
        admitted = count = None
        if self.counter is not None:
            count = tf.reshape(self.counter.lookup(uniq), [-1]) + sightings
            self.updates.append(self.counter.upsert(uniq, count[:, None]))
        if opts.filter == "counter" or opts.adaptive:
            admitted = count >= opts.admission_freq
        elif opts.filter == "cbf":
            _, exists = self.tables[-1].lookup(uniq, return_exists=True)
            estimate = self.cbf.estimate(uniq, columns)
            admitted = tf.logical_or(exists, estimate + sightings >= opts.filter_freq)
            with tf.control_dependencies([estimate]):  # this batch's sightings are added after reading
                self.updates.append(self.cbf.add(uniq, tf.where(exists, tf.zeros_like(sightings), sightings),
                                                 columns))
        if len(self.tables) == 1 and admitted is None:
            rows, wrapper = de.embedding_lookup(self.tables[0], uniq, name=f"{self.name}_lookup",
                                                return_trainable=True)
            self.trained.append((wrapper, uniq))
            return rows
        if len(self.tables) > 1:
            tier = tf.add_n([tf.cast(count >= f, tf.int32) for f in opts.promotions(self.dim)])
        rows = self._base_rows(uniq, columns)
        if admitted is not None and self.static is not None:
            rows = tf.where(admitted[:, None], tf.zeros_like(rows), rows)
        elif admitted is not None:
            rows = tf.zeros_like(rows)
        for k, (table, width) in enumerate(zip(self.tables, self.widths)):
            chosen = admitted if len(self.tables) == 1 else tf.equal(tier, k)
            where = tf.where(chosen)[:, 0]
            keys = tf.gather(uniq, where)
            found, wrapper = de.embedding_lookup(table, keys, name=f"{self.name}_lookup_w{width}",
                                                 return_trainable=True)
            self.trained.append((wrapper, keys))
            if width < self.dim:
                found = tf.pad(found, [[0, 0], [0, self.dim - width]])
            rows += tf.scatter_nd(where[:, None], found, tf.shape(rows, out_type=tf.int64))
        return rows

    def _serve_rows(self, uniq, columns=None):
        """Evaluation and serving: stored rows; ids without one read what training gave them."""
        rows = self._base_rows(uniq, columns)
        for table, width in zip(self.tables, self.widths):  # narrow to wide: the widest row wins
            values, exists = table.lookup(uniq, return_exists=True)
            if width < self.dim:
                values = tf.pad(values, [[0, 0], [0, self.dim - width]])
            rows = tf.where(exists[:, None], values, rows)
        return rows

    # -- after the optimizers are built ------------------------------------------------------------
    def finish(self, optimizers, global_step, after=None):
        """Find the slot tables the optimizers made; return the ops to run with every training step.

        `after` (the op that applies the step's updates and increments the global step): the status stamps
        are then read after it, as the global step less one (with one trainer, the step the lookup read);
        in a parameter-server job an update that lands after an incremental save read the rows is thus
        stamped with at least that save's step (modelzoo/incremental_ckpt.py)."""
        for table in self.tables:
            slots = []
            for wrapper, _ in self.trained:
                if wrapper.params is not table:
                    continue
                for opt in optimizers:
                    for slot_name in opt.get_slot_names():
                        slot = opt.get_slot(wrapper, slot_name)
                        if slot is not None and all(slot.params is not s for s in slots):
                            slots.append(slot.params)
            self.slot_tables.append(slots)
        ops = list(self.updates)
        if self.status is not None:
            stamp = self.step
            if after is not None:
                with tf.control_dependencies([after]):
                    stamp = tf.identity(global_step.read_value()) - 1
            for _wrapper, keys in self.trained:
                step = tf.fill([tf.size(keys), 1], tf.cast(stamp, tf.int64))
                ops.append(self.status.upsert(keys, step))
        return ops

    def evict(self, global_step):
        """Remove stale (gstep) or small (l2) rows with their slots, status and counts; drop the narrow
        rows of ids promoted to a wider one (--dynamic_ev). Returns the number of rows evicted."""
        opts = self.options
        removed_total = []
        ops = []
        for shard in range(len(self.tables[-1].tables)):
            device = self.tables[-1].devices[shard]
            with tf.device(device):
                gone = []
                if opts.elimination == "gstep":
                    keys, steps = self.status.tables[shard].export()
                    stale = tf.reshape(steps, [-1]) < tf.cast(global_step, tf.int64) - opts.steps_to_live
                    gone.append(tf.boolean_mask(keys, stale))
                elif opts.elimination == "l2":
                    for table in self.tables:
                        keys, values = table.tables[shard].export()
                        # a row that starts below the threshold is kept (W&D's wide weights start at 0: each
                        # would go at every eviction): only what training shrank goes (signs keep the norm)
                        start = tf.norm(tf.gather(table.bank, tf.math.floormod(keys, BANK_ROWS)), axis=1)
                        shrunk = (tf.norm(values, axis=1) < opts.l2_threshold) & (start >= opts.l2_threshold)
                        gone.append(tf.boolean_mask(keys, shrunk))
                if gone:
                    gone = tf.unique(tf.concat(gone, 0))[0]
                    removed_total.append(tf.size(gone, out_type=tf.int64))
                    for table, slots in zip(self.tables, self.slot_tables):
                        ops += [t.tables[shard].remove(gone) for t in [table] + slots]
                    ops += [t.tables[shard].remove(gone) for t in (self.status, self.counter) if t is not None]
                if len(self.tables) > 1:  # promoted ids leave the narrower tables
                    for table, slots, freq in zip(self.tables[:-1], self.slot_tables[:-1],
                                                  opts.promotions(self.dim)):
                        keys, _ = table.tables[shard].export()
                        counts = tf.reshape(self.counter.tables[shard].lookup(keys), [-1])
                        promoted = tf.boolean_mask(keys, counts >= freq)
                        ops += [t.tables[shard].remove(promoted) for t in [table] + slots]
        if not removed_total:
            with tf.control_dependencies(ops):
                return tf.identity(tf.constant(0, tf.int64))
        with tf.control_dependencies(ops):  # (add_n of one tensor makes no op: identity carries the deps)
            count = tf.identity(tf.add_n(removed_total))
        with tf.control_dependencies([self.evicted.assign_add(count)]):
            return tf.identity(count)

    # -- reporting ---------------------------------------------------------------------------------
    def report_tensors(self):
        """Tensors for the report, fetched at the end of training."""
        out = {"rows": [t.size() for t in self.tables], "evicted": self.evicted.read_value()}
        out["slot_rows"] = [[s.size() for s in slots] for slots in self.slot_tables]
        if self.counter is not None:
            _, counts = self.counter.export()
            out["counted"] = self.counter.size()
            out["below_threshold"] = tf.reduce_sum(tf.cast(
                tf.reshape(counts, [-1]) < self.options.admission_freq, tf.int64))
        if self.status is not None:
            out["status_rows"] = self.status.size()
        return out

    def report(self, fetched, session):
        """The `ev_tables` entry: rows stored, ids filtered, ids evicted, payload memory in MB."""
        opts = self.options
        rows = [int(r) for r in fetched["rows"]]
        payload = 0
        for width, stored, slots in zip(self.widths, rows, fetched["slot_rows"] or [[]] * len(rows)):
            payload += stored * (8 + 4 * width) + sum(int(s) * (8 + 4 * width) for s in slots)
        entry = {"rows": sum(rows), "evicted": int(fetched["evicted"])}
        if len(rows) > 1:
            entry["rows_by_width"] = {str(w): r for w, r in zip(self.widths, rows)}
        if "counted" in fetched:
            payload += int(fetched["counted"]) * 12
        if "status_rows" in fetched:
            payload += int(fetched["status_rows"]) * 16
        if opts.filter == "counter":
            entry["filtered"] = int(fetched["below_threshold"])
        elif opts.filter == "cbf":
            payload += self.cbf.columns * self.cbf.cells * 4
            distinct = self.cbf.distinct_estimate(session)
            entry["filtered"] = None if distinct is None else max(0, distinct - sum(rows) - entry["evicted"])
            entry["filtered_is_estimate"] = True
        elif opts.adaptive:
            entry["in_hash_buckets"] = int(fetched["below_threshold"])
            payload += self.columns * opts.adaptive_buckets * self.dim * 4
        entry["memory_mb"] = round(payload / 2 ** 20, 3)
        return entry


class DynamicEmbeddingTables(ColumnTables):
    """--ev's counterpart of features.EmbeddingTables (same lookups): one DynamicTable per column, or
    with `fused` one per width holding every column of that width (one table op per step)."""

    scope = "ev"

    def __init__(self, schema, fused, options, training, initializer=None, devices=None, root=None, frozen=None):
        super().__init__(schema, fused)
        self.frozen = frozen  # export.FrozenSource: the tables' rows frozen into stock ops (serving)
        self.options = options
        self.training = training
        self.initializer = initializer or tf1.random_uniform_initializer(-0.05, 0.05)
        self.devices = devices
        self.root = root or self  # siblings (W&D's wide weights) report and finish through the root
        self.tables = {}  # name -> DynamicTable, in creation order
        if self.root is self:
            self.all_tables = []

    def _scope(self):
        return tf1.variable_scope(self.scope)

    def sibling(self, schema, initializer=None):
        """Tables of the same kind for another set of widths (in the caller's variable scope)."""
        return DynamicEmbeddingTables(schema, self.fused, self.options, self.training, initializer,
                                      self.devices, self.root, self.frozen)

    def _table(self, name, dim, columns=1):
        if name not in self.tables:
            # the training graph's table of that name when there is one: an evaluation built into the training
            # graph (run/graph.py) reads it without inserting keys or counting sightings (lookup's `training`)
            scope = tf1.get_variable_scope().name
            full_name = f"{scope}/{name}" if scope else name
            table = next((t for t in tf1.get_collection(TABLES_COLLECTION) if t.full_name == full_name), None) or \
                DynamicTable(name, dim, self.options, self.training, self.initializer, self.devices, columns,
                             self.frozen)
            self.tables[name] = table
            self.root.all_tables.append(table)
        return self.tables[name]

    def _column_lookup(self, column, ids):
        return self._table(column.name, column.embedding_dim).lookup(ids, training=self.training)

    def _fused_lookup(self, ids, members, dim):
        """One table for the columns of width `dim`: each column's keys XOR a distinct 64-bit salt, so
        equal ids of two columns stay apart (a bijection per column); each key's column (`members`) picks
        its part of the filter and of the hash buckets."""
        group = self._group(dim)
        salts = tf.constant([_salt(c.name) for c in group], tf.int64)
        keys = tf.bitwise.bitwise_xor(ids, tf.gather(salts, members))
        return self._table(f"fused_dim{dim}", dim, len(group)).lookup(keys, members, training=self.training)

    # -- training-step and reporting hooks for the runner -----------------------------------------
    def finish(self, optimizers, global_step, after=None):
        """After the optimizers: the ops to group with the train op, and the eviction op for the hooks."""
        ops = []
        for table in self.all_tables:
            ops += table.finish(optimizers, global_step, after)
            tf1.add_to_collection(TABLES_COLLECTION, table)
        if self.options.evicts:
            evicted = tf.add_n([t.evict(global_step) for t in self.all_tables])
            tf1.add_to_collection(EVICT_COLLECTION, evicted)
        return ops

    def hooks(self, report):
        """Eviction every --ev_evict_steps steps, and the end-of-training report into `report`."""
        hooks = [ReportHook(self.all_tables, report)]
        if self.options.elimination or self.options.dynamic:
            hooks.insert(0, EvictionHook(self.options, every_steps=self.options.evict_steps))
        return hooks

    # -- the tables interface the runner's model_fn calls (features.ColumnTables: no-ops for fixed tables) --
    keyed = True  # looked up by the raw 64-bit keys, not by hash-bucket ids

    def wrap_optimizer(self, optimizer):
        """TFRA's wrapper: the slots as tables, the updated rows written back to the tables."""
        return _de().DynamicEmbeddingOptimizer(optimizer)

    def training_hooks(self, report, model_dir, last_step):
        """The chief's hooks: --incremental_ckpt's delta writer (the deltas are restored by `saver`), then
        the eviction and the end-of-training report (`hooks`)."""
        hooks = []
        if self.options.incremental_secs:
            hooks.append(incremental_ckpt.IncrementalCheckpointHook(model_dir, self.options.incremental_secs,
                                                                    last_step))
        return hooks + self.hooks(report)

    def saver(self, keep_checkpoint_max):
        """--incremental_ckpt: the training Saver whose restore applies the deltas after the full checkpoint."""
        return incremental_ckpt.training_saver(keep_checkpoint_max) if self.options.incremental_secs else None

    def warm_start_tables(self):
        """The DynamicTable objects a --warm_start_from loads rows into."""
        return self.root.all_tables


def _salt(name):
    import hashlib
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") & KEY_SPACE


def _evict_op():
    ops = tf1.get_collection(EVICT_COLLECTION)
    return ops[0] if ops else None


def describe_eviction(options):
    if options.elimination == "gstep":
        return f"not updated in the last {options.steps_to_live:,} steps"
    if options.elimination == "l2":
        return f"L2 norm below {options.l2_threshold:g} (rows that start below it are kept)"
    return "narrow rows of promoted ids"


class EvictionHook(tf1.train.SessionRunHook):
    """Runs the eviction every N global steps and logs what went."""

    def __init__(self, options, every_steps):
        self.options, self.every_steps, self.last = options, every_steps, None

    def begin(self):
        self.op = _evict_op()
        self.step = tf1.train.get_global_step()

    def after_create_session(self, session, coord):
        self.last = session.run(self.step)

    def after_run(self, run_context, run_values):
        step = run_context.session.run(self.step)
        if step - self.last >= self.every_steps:
            self.last = step
            evict_and_log(run_context.session, self.op, step, self.options)


# graph -> the global step of its last eviction (the hook and the listener share it); weak: the
# Estimator builds a graph per train/evaluate call, which must not outlive it
_LAST_EVICTION = weakref.WeakKeyDictionary()


def evict_and_log(session, op, step, options):
    """Evict once per global step (a checkpoint right after the periodic pass does not repeat it)."""
    if step == 0 or _LAST_EVICTION.get(op.graph) == step:
        return 0
    _LAST_EVICTION[op.graph] = step
    count = int(session.run(op))
    if options.elimination:
        print(f"ev: step {step:,}: evicted {count:,} rows ({describe_eviction(options)})", flush=True)
    return count


class EvictionListener(tf1.train.CheckpointSaverListener):
    """Evicts right before each checkpoint, so a checkpoint never holds rows already due to go."""

    def __init__(self, options):
        self.options = options

    def begin(self):
        self.op = _evict_op()

    def before_save(self, session, global_step_value):
        if self.op is not None:
            evict_and_log(session, self.op, global_step_value, self.options)


class ReportHook(tf1.train.SessionRunHook):
    """At the end of training, the per-table report (rows, filtered, evicted, memory) into `report`."""

    def __init__(self, tables, report):
        self.tables, self.report = tables, report

    def begin(self):
        self.tensors = {t.full_name: t.report_tensors() for t in self.tables}

    def end(self, session):
        fetched = session.run(self.tensors)
        self.report.clear()
        for table in self.tables:
            self.report[table.full_name] = table.report(fetched[table.full_name], session)


def saving_listeners(args):
    return [EvictionListener(EVOptions.from_args(args))] if args.ev and (args.ev_elimination or args.dynamic_ev) \
        else []

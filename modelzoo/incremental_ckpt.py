"""Incremental checkpoints (--incremental_ckpt SECS), as DeepRec's: between full checkpoints, delta checkpoints.

Every SECS seconds (checked after each training step) the chief writes
CHECKPOINT/incremental/delta-<step>.npz, which holds only what changed since the last save, full or delta:

- for each embedding-variable table (each width's rows, their optimizer slots, the last-update status and
  the sighting counts): the rows updated since the last save with their values, and the keys removed
  since then (eviction, or a --dynamic_ev promotion out of a narrow table), so a restore deletes them;
- the dense variables (every global variable that is not a table: MLPs, their slots, the global step,
  filters' counts...) whose value changed, whole, or as (flat index, value) pairs when few elements changed.

A row changed since the last save is one whose status (DynamicTable.status: key -> global step of its last
update, kept when --incremental_ckpt is on) is at least the step of that save; rows are created and updated
only by training steps, which stamp the status. The stamp is read after the step's updates are applied (one
less than the global step then: the step the rows were trained at, with one trainer), so in a
parameter-server job an update of another trainer that lands after a save read the rows is stamped with at
least that save's step and goes into the next delta. Removals are found against the keys each table held at the
last save (kept in memory, sorted): a table whose size is not what the recorded changes explain has its keys
exported and compared. The counts table (--ev_filter counter, --adaptive_emb, --dynamic_ev) changes for ids
that are not trained, so it is compared value by value with its copy from the last save.

A delta is the training state as it is: unlike a full checkpoint (embedding_variables.EvictionListener), it
does not run the eviction first, so --incremental_ckpt changes nothing in the training (what the periodic
eviction removes goes into the next delta's removals). Each delta names the full checkpoint it continues
(`full_step`) and the save it is relative to (`base_step`): restore = the latest full checkpoint at step F,
then the deltas whose full_step is F, in step order, as long as each one's base_step is the step of the one
before. A full checkpoint makes the deltas up to its step obsolete: they are deleted once it is written.
Files appear atomically (a temporary file renamed), so a run killed while writing leaves the previous deltas
intact.

The restore happens when the training session is created, in the training graph's Saver.restore (the
runner gives the Estimator `training_saver`): the full checkpoint, then its deltas, before any hook runs, so
training goes on from the last delta's step with the input skipping the rows that step had trained on. In a
parameter-server job the chief does it, into the PS tasks (a restarted chief, or a restarted PS).
`latest_step(checkpoint)` is that step, for the runner's "resuming from step" and its step count.
"""
import json
import os
import re
import time
import weakref

import numpy as np
import tensorflow as tf

from modelzoo.io_utils import atomic_writer

tf1 = tf.compat.v1

TABLES_COLLECTION = "modelzoo_ev_tables"  # the training graph's DynamicTable objects (embedding_variables adds them)

FOLDER = "incremental"
FORMAT = 1
_DELTA = re.compile(r"^delta-(\d+)\.npz$")
_HOOKS = weakref.WeakKeyDictionary()  # graph -> its IncrementalCheckpointHook (found by the listener)


# -- the files --------------------------------------------------------------------------------------------
def delta_folder(checkpoint):
    return os.path.join(checkpoint, FOLDER)


def delta_path(checkpoint, step):
    return os.path.join(delta_folder(checkpoint), f"delta-{step}.npz")


def list_deltas(checkpoint):
    """[(step, path)] of the delta files in the checkpoint folder, by step."""
    folder = delta_folder(checkpoint)
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, name)) for name in os.listdir(folder)
             for m in [_DELTA.match(name)] if m]
    return sorted(found)


def read_meta(path):
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


def read_delta(path):
    """(meta, {array name: array}) of a delta file."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("meta"))), arrays


def step_of(prefix):
    """The step in a checkpoint's name (model.ckpt-STEP): the step its saver was called at, which the
    listener records as the deltas' `full_step` (in a parameter-server job the global step saved inside
    may be a little higher: the workers step while the chief saves)."""
    return int(prefix.rsplit("-", 1)[1])


def full_step_of(checkpoint):
    """The step of the latest full checkpoint in the folder, None without one."""
    latest = tf.train.latest_checkpoint(checkpoint)
    return step_of(latest) if latest else None


def dense_value(checkpoint, name):
    """A dense variable's value as a resume restores it: the latest full checkpoint's, patched by the deltas
    after it (None without a full checkpoint)."""
    latest = tf.train.latest_checkpoint(checkpoint)
    if not latest:
        return None
    value = np.array(tf.train.load_variable(latest, name), copy=True)
    for _, path, _ in delta_chain(checkpoint, step_of(latest)):
        meta, arrays = read_delta(path)
        for entry in meta["dense"]:
            if entry["name"] == name:
                j = entry["id"]
                if entry["sparse"]:
                    value.reshape(-1)[arrays[f"d{j}.index"]] = arrays[f"d{j}.values"]
                else:
                    value = np.array(arrays[f"d{j}.value"], copy=True)
    return value


def delta_chain(checkpoint, full_step):
    """[(step, path, meta)]: the deltas that continue the full checkpoint at `full_step`, in order."""
    chain, previous = [], full_step
    for step, path in list_deltas(checkpoint):
        if step <= full_step:
            continue
        try:
            meta = read_meta(path)
        except (OSError, ValueError, KeyError):  # not a delta this module wrote: not part of the chain
            continue
        if meta.get("full_step") != full_step:
            continue  # from another full checkpoint (an older run): ignored, deleted at the next save
        if meta.get("base_step") != previous:
            break  # a gap: what follows cannot be applied
        chain.append((step, path, meta))
        previous = step
    return chain


def latest_step(checkpoint):
    """The step a run resumes from: the latest full checkpoint's, or the last delta's after it (0 if none)."""
    full = full_step_of(checkpoint)
    if full is None:
        return 0
    chain = delta_chain(checkpoint, full)
    return chain[-1][0] if chain else full


def _write_npz(path, arrays):
    """np.savez to `path` atomically (io_utils.atomic_writer: temporary file, fsync, rename)."""
    with atomic_writer(path, "wb") as f:
        np.savez(f, **arrays)


def _remove_deltas(checkpoint, keep=lambda step: False):
    """Delete the delta files (and leftover temporary files) except those whose step `keep` accepts."""
    folder = delta_folder(checkpoint)
    if not os.path.isdir(folder):
        return
    for step, path in list_deltas(checkpoint):
        if not keep(step):
            os.unlink(path)
    for name in os.listdir(folder):
        if name.startswith(".tmp-"):
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass


# -- numpy helpers ----------------------------------------------------------------------------------------
def _sorted_by_key(keys, values=None):
    order = np.argsort(keys, kind="stable")
    return keys[order], (None if values is None else values[order])


def _changed_elements(old, new):
    """Flat indices where `new` differs from `old` bit for bit (None: compare as a whole)."""
    if old is None or old.shape != new.shape or old.dtype != new.dtype:
        return None
    if new.dtype.kind not in "biuf" or new.dtype.itemsize not in (1, 2, 4, 8):
        return None if not np.array_equal(old, new) else np.zeros(0, np.int64)
    kind = f"u{new.dtype.itemsize}"
    return np.flatnonzero(old.reshape(-1).view(kind) != new.reshape(-1).view(kind))


# -- the graph side ---------------------------------------------------------------------------------------
class _Tracked:
    """One de.Variable of a DynamicTable (rows of a width, a slot, the status or the counts), with the ops
    the deltas need (built in `begin`, before the graph is finalized) and its keys at the last save."""

    def __init__(self, var, owner, role):
        self.var, self.owner, self.role = var, owner, role
        self.name = var.name
        self.dim = int(var.dim)
        self.value_dtype = var.value_dtype.as_numpy_dtype
        self.shards = [t._resource_handle.op.name for t in var.tables]  # their checkpoint entries: NAME-keys/-values
        self.keys = np.zeros(0, np.int64)  # sorted keys at the last save
        self.values = None  # the counts only: values at the last save, in `keys` order
        self.size = var.size()
        self.export = var.export()
        if role in ("rows", "slot"):
            self.lookup_keys = tf1.placeholder(tf.int64, [None], name="lookup_keys")
            self.lookup = var.lookup(self.lookup_keys, return_exists=True)
        self.put_keys = tf1.placeholder(tf.int64, [None], name="put_keys")
        self.put_values = tf1.placeholder(var.value_dtype, [None, self.dim], name="put_values")
        self.drop_keys = tf1.placeholder(tf.int64, [None], name="drop_keys")
        removed = var.remove(self.drop_keys)
        with tf.control_dependencies([removed]):
            self.apply = var.upsert(self.put_keys, self.put_values)

    def feed(self, keys=None, values=None, removed=None):
        empty = np.zeros(0, np.int64)
        return {self.put_keys: empty if keys is None else keys,
                self.put_values: np.zeros((0, self.dim), self.value_dtype) if values is None else values,
                self.drop_keys: empty if removed is None else removed}


class _Dense:
    def __init__(self, var):
        self.var, self.name = var, var.op.name
        self.placeholder = tf1.placeholder(var.dtype.base_dtype, var.shape, name="value")
        self.assign = tf1.assign(var, self.placeholder)
        self.value = None  # at the last save


class IncrementalCheckpointHook(tf1.train.SessionRunHook):
    """Writes a delta every `every_secs` seconds (or, for tests, every `every_steps` steps) between full
    checkpoints, and restores the deltas after the full checkpoint when the session is created. Chief only;
    IncrementalCheckpointListener must be among the saving listeners (it tells the hook of full saves).

    `last_step` (--steps): no delta is written at or after it (the end of training writes a full
    checkpoint), and a restore that reaches it stops training at once (the end-of-training save then makes
    the restored state a full checkpoint). `clock` is injectable for tests.
    """

    def __init__(self, checkpoint_dir, every_secs, last_step=None, every_steps=None, clock=time.monotonic,
                 log=True):
        self.checkpoint_dir, self.every_secs, self.every_steps = checkpoint_dir, every_secs, every_steps
        self.last_step, self.clock, self.log = last_step, clock, log
        self.full_step = None  # the full checkpoint the deltas continue (None: no delta can be written yet)
        self.base_step = None  # the step of the last save, full or delta
        self.ready = False
        self.written = []  # (step, path, bytes) of the deltas written by this hook

    # -- SessionRunHook --------------------------------------------------------------------------------------
    def begin(self):
        graph = tf1.get_default_graph()
        tables = tf1.get_collection(TABLES_COLLECTION)
        if any(t.status is None for t in tables):
            raise ValueError("--incremental_ckpt needs the tables' last-update status (EVOptions.track_updates)")
        self.global_step = tf1.train.get_global_step()
        with tf.name_scope("incremental_ckpt"):
            self.groups = []
            for table in tables:
                rows = []
                for k, var in enumerate(table.tables):
                    rows.append(_Tracked(var, table, "rows"))
                    slots = table.slot_tables[k] if k < len(table.slot_tables) else []
                    rows += [_Tracked(slot, table, "slot") for slot in slots]
                counter = _Tracked(table.counter, table, "counter") if table.counter is not None else None
                self.groups.append({"table": table, "status": _Tracked(table.status, table, "status"),
                                    "counter": counter, "rows": rows})
            self.tracked = {}
            for group in self.groups:
                for t in [group["status"], group["counter"], *group["rows"]]:
                    if t is not None:
                        if t.name in self.tracked:
                            raise ValueError(f"two embedding-variable tables are named {t.name}")
                        self.tracked[t.name] = t
            self.dense = {}
            for var in tf1.global_variables():
                d = _Dense(var)
                self.dense[d.name] = d
        self.restored = None  # the deltas the session's restore applied (Saver.restore); None: initialized
        self.ready = False
        _HOOKS[graph] = self

    def restore_deltas(self, session, full_step):
        """Called by Saver.restore once the full checkpoint at `full_step` is restored: apply its deltas."""
        self.ready = False
        chain = delta_chain(self.checkpoint_dir, full_step)
        if chain:
            self._apply(session, chain)
        self.full_step, self.restored = full_step, (full_step, chain)

    def after_create_session(self, session, coord):
        restored, self.restored = self.restored, None
        step = int(session.run(self.global_step))
        if restored is None:  # the variables were initialized: a new model, which older deltas do not continue
            _remove_deltas(self.checkpoint_dir)
            if self.full_step != step:
                self.full_step = None  # no full checkpoint at this step was seen: no delta until one is
            restored_from, restored = None, []
        else:  # (the deltas of other chains are obsolete; a full save at this step may have come first)
            restored_from, restored = restored
            in_chain = {s for s, _, _ in restored}
            _remove_deltas(self.checkpoint_dir, keep=lambda s: s in in_chain and s > self.full_step)
        now = step
        self._snapshot(session, now)
        self.ready = True
        if restored:
            print(f"incremental: restored {len(restored)} deltas after full checkpoint {restored_from}: "
                  f"now at step {now}", flush=True)
            if self.last_step is not None and now >= self.last_step and coord is not None:
                print(f"incremental: step {now:,} >= --steps {self.last_step:,}: nothing to train; the end of "
                      "training saves it as a full checkpoint", flush=True)
                coord.request_stop()

    def after_run(self, run_context, run_values):
        self.steps_since += 1
        due = self.every_steps and self.steps_since >= self.every_steps
        if due or (self.every_secs and self.clock() - self.saved_at >= self.every_secs):
            self.save(run_context.session)

    # -- called by the listener ------------------------------------------------------------------------------
    def full_saved(self, session, step):
        """A full checkpoint at `step` was written: it is the new base; the deltas up to it are obsolete."""
        self.full_step = step
        _remove_deltas(self.checkpoint_dir, keep=lambda s: s > step)
        if self.ready:  # (at session creation the hook takes its own snapshot, after any restore)
            self._snapshot(session, step)

    # -- saving ----------------------------------------------------------------------------------------------
    def _snapshot(self, session, step):
        """Remember the state just saved (or restored): table keys, counts, dense values."""
        fetched = session.run({"keys": {n: t.export[0] for n, t in self.tracked.items() if t.role != "counter"},
                               "counts": {n: t.export for n, t in self.tracked.items() if t.role == "counter"},
                               "dense": {n: d.var for n, d in self.dense.items()}})
        for name, keys in fetched["keys"].items():
            self.tracked[name].keys = np.sort(keys)
        for name, (keys, values) in fetched["counts"].items():
            self.tracked[name].keys, self.tracked[name].values = _sorted_by_key(keys, values)
        for name, value in fetched["dense"].items():
            self.dense[name].value = np.array(value, copy=True)
        self.base_step = step
        self._reset_timer()

    def _reset_timer(self):
        self.saved_at = self.clock()
        self.steps_since = 0

    def save(self, session):
        """Write the delta since the last save now; returns its path (None when there is nothing to write:
        no step since the last save, no full checkpoint to continue, or --steps reached)."""
        step = int(session.run(self.global_step))
        if self.full_step is None or step <= self.base_step or (
                self.last_step is not None and step >= self.last_step):
            self._reset_timer()
            return None
        started = time.perf_counter()
        base = self.base_step
        fetched = session.run({
            "status": [g["status"].export for g in self.groups],
            "counts": [g["counter"].export if g["counter"] else () for g in self.groups],
            "sizes": [[t.size for t in g["rows"]] for g in self.groups],
            "dense": {n: d.var for n, d in self.dense.items()}})
        entries = []  # (tracked, upsert keys, upsert values, removed keys, new sorted keys[, new values])
        changed_by_group = []
        for g, (keys, steps), counts in zip(self.groups, fetched["status"], fetched["counts"]):
            status = g["status"]
            keys, steps = _sorted_by_key(keys, steps)
            changed = keys[steps.reshape(-1) >= base]  # (new keys are stamped with a step >= base too)
            changed = np.union1d(changed, np.setdiff1d(keys, status.keys, assume_unique=True))
            upsert = np.searchsorted(keys, changed)
            entries.append([status, changed, steps[upsert], np.setdiff1d(status.keys, keys, assume_unique=True),
                            keys, None])
            changed_by_group.append(changed)
            if g["counter"] is not None:
                entries.append(self._count_changes(g["counter"], *counts))
        # rows and slots: the changed keys' values where they exist; removals from the keys at the last save
        rows = [(t, changed, size) for g, changed, sizes in zip(self.groups, changed_by_group, fetched["sizes"])
                for t, size in zip(g["rows"], sizes)]
        looked = session.run([t.lookup for t, _, _ in rows],
                             {t.lookup_keys: changed for t, changed, _ in rows})
        unexplained = []
        for (t, changed, size), (values, exists) in zip(rows, looked):
            keys, values = changed[exists], values[exists]
            gone = np.intersect1d(changed[~exists], t.keys, assume_unique=True)
            kept = np.union1d(np.setdiff1d(t.keys, gone, assume_unique=True), keys)
            entry = [t, keys, values, gone, kept, None]
            entries.append(entry)
            if len(kept) != int(size):  # removals (or rows) the status does not show: compare the key sets
                unexplained.append(entry)
        if unexplained:
            self._reconcile(session, unexplained)
        arrays, meta_tables, rows_written, rows_removed = {}, [], 0, 0
        for i, (t, keys, values, gone, _, _) in enumerate(entries):
            if not len(keys) and not len(gone):
                continue
            meta_tables.append({"id": i, "name": t.name, "table": t.owner.full_name, "role": t.role,
                                "dim": t.dim, "shards": t.shards, "rows": len(keys), "removed": len(gone)})
            if len(keys):
                arrays[f"t{i}.keys"], arrays[f"t{i}.values"] = keys.astype(np.int64), values
            if len(gone):
                arrays[f"t{i}.removed"] = gone.astype(np.int64)
            if t.role in ("rows", "slot"):
                rows_written += len(keys) if t.role == "rows" else 0
                rows_removed += len(gone) if t.role == "rows" else 0
        meta_dense, dense_now = [], {}
        for j, (name, value) in enumerate(sorted(fetched["dense"].items())):
            d, value = self.dense[name], np.asarray(value)
            where = _changed_elements(d.value, value)
            if where is not None and not len(where):
                continue
            sparse = where is not None and len(where) * (8 + value.dtype.itemsize) < value.nbytes // 2
            if sparse:
                arrays[f"d{j}.index"], arrays[f"d{j}.values"] = where.astype(np.int64), value.reshape(-1)[where]
            else:
                arrays[f"d{j}.value"] = value
            meta_dense.append({"id": j, "name": name, "sparse": bool(sparse), "shape": list(value.shape),
                               "dtype": str(value.dtype)})
            dense_now[name] = np.array(value, copy=True)
        meta = {"format": FORMAT, "step": step, "base_step": base, "full_step": self.full_step,
                "time": time.time(), "tables": meta_tables, "dense": meta_dense}
        arrays["meta"] = np.array(json.dumps(meta))
        path = delta_path(self.checkpoint_dir, step)
        _write_npz(path, arrays)
        for t, _, _, _, now_keys, now_values in entries:  # the new base, once the delta is on disk
            t.keys = now_keys
            if t.role == "counter":
                t.values = now_values
        for name, value in dense_now.items():
            self.dense[name].value = value
        size = os.path.getsize(path)
        self.written.append((step, path, size))
        self.base_step = step
        self._reset_timer()
        if self.log:
            print(f"incremental: step {step:,}: delta of {rows_written:,} rows ({rows_removed:,} removed) and "
                  f"{len(meta_dense)} dense variables since step {base:,}, {size / 2 ** 20:.2f} MB in "
                  f"{time.perf_counter() - started:.2f}s -> {path}", flush=True)
        return path

    @staticmethod
    def _count_changes(t, keys, values):
        """The counts: new or changed values against the copy from the last save."""
        keys, values = _sorted_by_key(keys, values)
        at = np.minimum(np.searchsorted(t.keys, keys), max(len(t.keys) - 1, 0))
        if len(t.keys):
            differs = (t.keys[at] != keys) | np.any(t.values[at] != values, axis=1)
        else:
            differs = np.ones(len(keys), bool)
        return [t, keys[differs], values[differs], np.setdiff1d(t.keys, keys, assume_unique=True), keys, values]

    @staticmethod
    def _reconcile(session, entries):
        """Tables whose size the status does not explain: their removed keys from a full key export (and
        any row the status missed, looked up)."""
        exported = session.run([e[0].export[0] for e in entries])
        extra_lookups = []
        for entry, now in zip(entries, exported):
            t, keys = entry[0], entry[1]
            now = np.sort(now)
            entry[3] = np.setdiff1d(t.keys, now, assume_unique=True)
            extra = np.setdiff1d(now, np.union1d(t.keys, keys), assume_unique=True)
            entry[4] = now
            if len(extra):
                extra_lookups.append((entry, extra))
        if extra_lookups:
            looked = session.run([e[0].lookup for e, _ in extra_lookups],
                                 {e[0].lookup_keys: extra for e, extra in extra_lookups})
            for (entry, extra), (values, _) in zip(extra_lookups, looked):
                keys = np.concatenate([entry[1], extra])
                order = np.argsort(keys)
                entry[1], entry[2] = keys[order], np.concatenate([entry[2], values])[order]

    # -- restoring -------------------------------------------------------------------------------------------
    def _apply(self, session, chain):
        """Apply the deltas in order: table rows removed and upserted per delta, dense values patched."""
        dense = {n: np.array(v, copy=True) for n, v in
                 session.run({n: d.var for n, d in self.dense.items()}).items()}
        touched = set()
        for _step, path, _ in chain:
            meta, arrays = read_delta(path)
            feed, ops = {}, []
            for entry in meta["tables"]:
                t = self.tracked.get(entry["name"])
                if t is None:
                    raise ValueError(f"incremental: {path} holds table {entry['name']}, which this model lacks")
                i = entry["id"]
                feed.update(t.feed(arrays.get(f"t{i}.keys"), arrays.get(f"t{i}.values"),
                                   arrays.get(f"t{i}.removed")))
                ops.append(t.apply)
            if ops:
                session.run(ops, feed)
            for entry in meta["dense"]:
                name, j = entry["name"], entry["id"]
                if name not in dense:
                    raise ValueError(f"incremental: {path} holds variable {name}, which this model lacks")
                if entry["sparse"]:
                    flat = dense[name].reshape(-1)
                    flat[arrays[f"d{j}.index"]] = arrays[f"d{j}.values"]
                else:
                    dense[name] = np.array(arrays[f"d{j}.value"], copy=True)
                touched.add(name)
        if touched:
            session.run([self.dense[n].assign for n in sorted(touched)],
                        {self.dense[n].placeholder: dense[n] for n in touched})


class Saver(tf1.train.Saver):
    """The training graph's saver under --incremental_ckpt: a restore is the full checkpoint, then the deltas
    after it. They are applied here, while the session is created, so that whatever reads the restored state
    when the session starts (the input's count of rows to skip, in a parameter-server job) reads the last
    delta's, and on every session the chief creates (a restarted PS gets the full checkpoint and its deltas)."""

    def restore(self, sess, save_path):
        super().restore(sess, save_path)
        hook = _HOOKS.get(sess.graph)
        if hook is not None:
            hook.restore_deltas(sess, step_of(save_path))


def training_saver(keep_checkpoint_max):
    """The Saver the Estimator would make (tf.estimator's _train_with_estimator_spec), restoring the deltas."""
    return Saver(sharded=True, max_to_keep=keep_checkpoint_max, defer_build=True, save_relative_paths=True)


class IncrementalCheckpointListener(tf1.train.CheckpointSaverListener):
    """Tells the graph's IncrementalCheckpointHook of each full checkpoint (the new base for the deltas;
    the deltas up to its step are deleted once it is written)."""

    def after_save(self, session, global_step_value):
        hook = _HOOKS.get(session.graph)
        if hook is not None:
            hook.full_saved(session, int(global_step_value))
        return False  # (True would stop training)

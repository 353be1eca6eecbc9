"""The SavedModel export, in stock TensorFlow ops only, and the warm start from an earlier model.

Every model (with --ev too) is exported from its checkpoint file in a fresh graph on this machine,
without devices: a parameter-server job's checkpoint exports here like a single process's one.
An --ev model's dynamic tables (TFRA's hash-table kernels, which TF Serving lacks) are frozen:
each table's rows become a dense variable [rows + 1, width] whose last row is zeros, and a stock
`tf.lookup.StaticHashTable` maps the 64-bit key to its row (absent: the zero row). An id without a
stored row then reads exactly what it read in training and evaluation (the zero vector, its
--adaptive_emb hash bucket; narrow --dynamic_ev rows zero-padded), because the serving lookup
(embedding_variables.DynamicTable._serve_rows) is the same code over the frozen rows. A PS job's
shards (`_mht_KofN`) are joined. The rows and keys are saved as variables (not constants), so a
large model is not limited by the 2 GB graph proto.

The frozen variables are named TABLE/frozen_keys and TABLE/frozen_values (TABLE: the dynamic
table's name, e.g. ev/C3/rows), so an export is also a source for --warm_start_from.
"""
import os
import re
import time

import numpy as np

FROZEN_KEYS, FROZEN_VALUES = "frozen_keys", "frozen_values"


class ExportError(Exception):
    """A checkpoint that cannot be exported, or a --warm_start_from source that does not fit."""


def _tf():
    import tensorflow as tf
    return tf


def checkpoint_prefix(path):
    """A checkpoint folder, a checkpoint file prefix or a SavedModel folder -> the prefix to read."""
    tf = _tf()
    saved = os.path.join(path, "variables", "variables")
    if os.path.isfile(os.path.join(path, "saved_model.pb")) and os.path.exists(saved + ".index"):
        return saved
    if os.path.isdir(path):
        return tf.train.latest_checkpoint(path)
    return path if os.path.exists(path + ".index") else None


def table_rows(reader, name):
    """(keys [n] int64, values [n, width] float32) of dynamic table `name` (e.g. ev/C3/rows) in a
    checkpoint (TFRA's shards `.../ev_C3_rows_mht_KofN-keys|-values`, joined) or in a stock export
    (name/frozen_keys, name/frozen_values without the zero row); None when the source lacks it."""
    shapes = reader.get_variable_to_shape_map()
    if f"{name}/{FROZEN_KEYS}" in shapes:
        values = reader.get_tensor(f"{name}/{FROZEN_VALUES}")
        return reader.get_tensor(f"{name}/{FROZEN_KEYS}"), values[:-1]
    pattern = re.compile(rf"(^|/){re.escape(name.replace('/', '_'))}_mht_(\d+)of(\d+)-keys$")
    shards = sorted((int(m.group(2)), n[:-len("-keys")]) for n in shapes for m in [pattern.search(n)] if m)
    if not shards:
        return None
    keys = np.concatenate([reader.get_tensor(base + "-keys") for _, base in shards]).astype(np.int64)
    values = np.concatenate([reader.get_tensor(base + "-values") for _, base in shards]).astype(np.float32)
    return keys, values.reshape(len(keys), -1)


class FrozenRows:
    """A stock stand-in for one TFRA table in a serving graph: `lookup(keys, return_exists=True)` as
    de.Variable's, over a dense variable of rows and a StaticHashTable from key to row."""

    def __init__(self, name, width, rows):
        tf = _tf()
        tf1 = tf.compat.v1
        self.name, self.rows = name, rows
        count = len(rows[0])
        with tf1.variable_scope(tf1.VariableScope(tf1.AUTO_REUSE, name=name)):  # (`name` is absolute)
            self.keys = tf1.get_variable(FROZEN_KEYS, [count], tf.int64, tf1.zeros_initializer(), trainable=False)
            self.values = tf1.get_variable(FROZEN_VALUES, [count + 1, width], tf.float32, tf1.zeros_initializer(),
                                           trainable=False)
        # (initialized by the SavedModel's main op, after its variables are restored)
        # key -1 (never an id's key: those are non-negative) -> the zero row, so that a table without
        # rows still initializes (a StaticHashTable refuses an empty import)
        init = tf.lookup.KeyValueTensorInitializer(tf.concat([self.keys.read_value(), [-1]], 0),
                                                   tf.range(count + 1, dtype=tf.int64))
        self.table = tf.lookup.StaticHashTable(init, default_value=count)
        self.count = count

    def lookup(self, keys, return_exists=False):
        tf = _tf()
        index = self.table.lookup(keys)
        values = tf.gather(self.values, index)
        return (values, index < self.count) if return_exists else values

    def load(self, session):
        keys, values = self.rows
        width = self.values.shape[1]
        self.keys.load(keys, session)
        self.values.load(np.concatenate([values, np.zeros([1, width], np.float32)]), session)


class FrozenSource:
    """What DynamicTable reads in a stock serving graph: each table's rows from one checkpoint."""

    def __init__(self, reader):
        self.reader = reader
        self.made = []  # the FrozenRows of the graph, loaded from the checkpoint once it is restored

    def rows(self, name, width):
        found = table_rows(self.reader, name)
        if found is None:
            raise ExportError(f"the checkpoint has no rows for the embedding table {name}; it was not written "
                              "by an --ev run with these flags")
        if found[1].shape[1] != width:
            raise ExportError(f"the checkpoint's table {name} has rows of width {found[1].shape[1]}, this "
                              f"model {width}")
        self.made.append(FrozenRows(name, width, found))
        return self.made[-1]


def export_saved_model(model_fn, schema, checkpoint_file, export_base):
    """Write EXPORT_BASE/TIMESTAMP/ (through EXPORT_BASE/temp-TIMESTAMP/, renamed when complete) with a
    `serving_default` signature: raw columns in, `probabilities` out (a multi-task model's: the first task's,
    and `probabilities_<task>` for every task). Returns the folder."""
    tf = _tf()
    tf1 = tf.compat.v1
    from modelzoo.features import raw_dtypes
    reader = tf.train.load_checkpoint(checkpoint_file)
    graph = tf.Graph()
    with graph.as_default():
        inputs = {name: tf1.placeholder(dtype, [None], name=name) for name, dtype in raw_dtypes(schema).items()}
        source = FrozenSource(reader)
        spec = model_fn(dict(inputs), None, tf.estimator.ModeKeys.PREDICT,
                        {"frozen": source, "model_dir": os.path.dirname(checkpoint_file)})
        outputs = spec.export_outputs["serving_default"].outputs  # probabilities (and probabilities_<task>)
        frozen = source.made
        frozen_vars = {v.ref() for f in frozen for v in (f.keys, f.values)}
        restored = [v for v in tf1.global_variables() if v.ref() not in frozen_vars]
        signature = tf1.saved_model.predict_signature_def(inputs, dict(outputs))
        with tf1.Session(graph=graph) as session:
            tf1.train.Saver(restored, sharded=True).restore(session, checkpoint_file)
            for table in frozen:
                table.load(session)
            timestamp = int(time.time())
            while os.path.exists(os.path.join(export_base, str(timestamp))):
                timestamp += 1
            temp = os.path.join(export_base, f"temp-{timestamp}")
            builder = tf1.saved_model.Builder(temp)
            builder.add_meta_graph_and_variables(
                session, [tf1.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": signature},
                main_op=tf.group(tf1.tables_initializer(), tf1.local_variables_initializer()),
                saver=tf1.train.Saver(sharded=True), strip_default_attrs=True, clear_devices=True)
            builder.save()
    final = os.path.join(export_base, str(timestamp))
    os.replace(temp, final)
    return final


# -- warm start ------------------------------------------------------------------------------------

# bookkeeping of a run, never carried over by a warm start
NOT_WARM_STARTED = re.compile(r"^(global_step|input_progress|bad_rows_skipped|.*/evicted|.*/cbf)$")


def warm_start_source(path):
    """The checkpoint prefix behind --warm_start_from PATH, or a one-line ExportError."""
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise ExportError(f"--warm_start_from {path}: no such file or folder")
    prefix = checkpoint_prefix(path)
    if prefix is None:
        raise ExportError(f"--warm_start_from {path}: neither a checkpoint (folder or file prefix) nor a "
                          "SavedModel exported by this model zoo")
    return prefix


def warm_start(source_path, dynamic_tables):
    """Build the warm start of this training graph from `source_path`: the model's variables (trainable
    ones and the --ev initializer banks) take the source's values when their variables are initialized,
    and returns a Scaffold init_fn that loads the source's rows into the dynamic tables (`dynamic_tables`:
    embedding_variables.DynamicTable objects). Only a fresh run is warm-started (a resume restores its
    own checkpoint instead). Refuses, in one line, a source that lacks a variable or has another shape."""
    tf = _tf()
    tf1 = tf.compat.v1
    prefix = warm_start_source(source_path)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    assignment = {}
    trainable = {v.ref() for v in tf1.trainable_variables()}
    for var in tf1.global_variables():
        name = var.op.name
        if "TrainableWrapper" in name or NOT_WARM_STARTED.match(name) or \
                not (var.ref() in trainable or name.endswith("/init_bank")):
            continue
        base = re.sub(r"/part_\d+$", "", name)  # a partitioned variable's slice
        if base not in shapes:
            raise ExportError(f"--warm_start_from {source_path}: it has no variable {base} (made by another "
                              "model, schema or --ev/--emb_fusion layout?)")
        whole = var._save_slice_info.full_shape if getattr(var, "_save_slice_info", None) else var.shape.as_list()
        if list(shapes[base]) != list(whole):
            raise ExportError(f"--warm_start_from {source_path}: variable {base} has shape {shapes[base]} there, "
                              f"{whole} in this run")
        assignment.setdefault(base, []).append(var)
    tf1.train.init_from_checkpoint(prefix, {base: (vs[0] if len(vs) == 1 else vs) for base, vs in assignment.items()})
    loads = []
    for table in dynamic_tables:
        for var in table.tables:
            rows = table_rows(reader, var.name)
            if rows is None:
                raise ExportError(f"--warm_start_from {source_path}: it has no rows for the embedding table "
                                  f"{var.name} (not an --ev model with this layout)")
            if rows[1].shape[1] != var.dim:
                raise ExportError(f"--warm_start_from {source_path}: table {var.name} has rows of width "
                                  f"{rows[1].shape[1]} there, {var.dim} in this run")
            loads.append(_upsert(var, rows))
        if table.counter is not None:  # the sightings behind admission and promotion go with the rows
            loads.append(_upsert(table.counter, _counts(reader, table)))

    def init_fn(scaffold, session):
        for op, keys, values, rows in loads:
            session.run(op, {keys: rows[0], values: rows[1]})
        tables = sum(len(t.tables) for t in dynamic_tables)
        print(f"warm start: initialized from {prefix} ({len(assignment)} variables, {tables} embedding "
              f"tables, {sum(len(r[0]) for op, _, _, r in loads[:tables]):,} rows)", flush=True)
    return init_fn


def _upsert(var, rows):
    tf = _tf()
    keys = tf.compat.v1.placeholder(tf.int64, [None])
    values = tf.compat.v1.placeholder(var.value_dtype, [None, var.dim])
    return var.upsert(keys, values), keys, values, (rows[0], rows[1].astype(var.value_dtype.as_numpy_dtype))


def _counts(reader, table):
    """Each warm-started id's sightings: the source checkpoint's counts, or (an export keeps none) the
    least count that puts the id in the table holding its row (admitted; promoted to that width)."""
    found = table_rows(reader, f"{table.full_name}/count")
    if found is not None:
        return found
    opts = table.options
    needed = opts.promotions(table.dim) if len(table.tables) > 1 else [opts.admission_freq]
    needed = ([0] + needed) if len(table.tables) > 1 else needed
    counts = {}
    for var, least in zip(table.tables, needed):
        for key in table_rows(reader, var.name)[0].tolist():
            counts[key] = max(counts.get(key, 0), least)
    return np.array(list(counts), np.int64), np.array(list(counts.values()), np.int32).reshape(-1, 1)

"""Feature columns built from a schema: decoding, normalization, hashing and embedding tables.

The same `transform` turns raw columns (strings and integers, as in the files and in the serving
signature) into model inputs (`dense` values and categorical `ids`). It runs either inside the
tf.data pipeline (--smartstaged, overlapping the training step) or at the start of the model graph
(stock behaviour, and always for serving), so training and serving hash ids identically.
"""
import abc
import contextlib

import tensorflow as tf

from modelzoo.datafiles import row_pattern

tf1 = tf.compat.v1

DENSE = "dense"
IDS = "ids"
CROSS_IDS = "cross_ids"  # [B, crosses] int64, when the schema has crosses
LABEL = "_label"  # the label riding with the features, for --predict's output file (`_label/NAME`: one of several)
GROUP = "_group"  # the group column's 64-bit keys riding with the features, for GAUC (evaluation only)
BAD_ROWS = "_bad_rows"  # rows dropped by --bad_rows skip in this batch (a scalar riding with the features)
SHUFFLE_BUFFER = 50_000


def raw_dtypes(schema):
    """dtype of each raw input column as it is read from a file or given to the serving signature."""
    out = {}
    for col in schema.columns:
        if col.kind == "categorical":
            out[col.name] = tf.string
        elif col.kind == "numeric":
            out[col.name] = tf.int64 if col.dtype == "int64" else tf.float32
    return out


def decode_lines(lines, schema, delimiter):
    """Decode a batch of text lines into raw columns and the float label (`schema`'s columns in the
    file's order: DataSpec.layout; "ignore" columns are split off and dropped). With several label
    columns the label is {column: [B] float32}; the group column, if any, rides in the raw columns as
    GROUP (its values' 64-bit keys): `transform` never reads it, the serving signature never asks for it."""
    defaults = []
    for col in schema.columns:
        if col.kind == "label":
            defaults.append(tf.constant([], tf.int64))  # required: an empty label is malformed
        elif col.kind == "numeric":  # (a bare [0] would read the column as int32: 2**31 and up would fail)
            defaults.append(tf.constant([0], tf.int64) if col.dtype == "int64" else [0.0])
        else:
            defaults.append([""])
    fields = tf.io.decode_csv(lines, defaults, field_delim=delimiter, use_quote_delim=False)
    raw, labels = {}, {}
    for col, value in zip(schema.columns, fields):
        if col.kind == "ignore":
            continue
        if col.kind == "label":
            bad = tf.logical_or(value < 0, value > 1)
            check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), ["a label is not 0 or 1"])
            with tf.control_dependencies([check]):
                labels[col.name] = tf.cast(value, tf.float32)
        elif col.kind == "group":
            raw[GROUP] = keys_of(value)
        else:
            raw[col.name] = value
    return raw, (labels if len(labels) > 1 else next(iter(labels.values())))


def label_features(labels):
    """The label(s) as features riding to --predict's output: LABEL, or LABEL/NAME for each of several."""
    if isinstance(labels, dict):
        return {f"{LABEL}/{name}": value for name, value in labels.items()}
    return {LABEL: labels}


def pop_label_features(features):
    """The label features `label_features` added, taken out of `features` ({} when none rode)."""
    return {key: features.pop(key) for key in [k for k in features if k == LABEL or k.startswith(LABEL + "/")]}


def _normalize(col, value):
    x = tf.cast(value, tf.float32)
    if col.normalization == "log1p":
        return tf.math.log1p(tf.maximum(x, 0.0))
    if col.normalization == "standard":
        return (x - col.mean) / col.std
    if col.normalization == "minmax":
        return (tf.clip_by_value(x, col.min, col.max) - col.min) / (col.max - col.min)
    return x


KEY_SPACE = (1 << 63) - 1  # --ev ids are fingerprints in [0, 2^63 - 1): collisions are negligible


def keys_of(values):
    """Raw categorical values (strings) -> 64-bit keys of the dynamic tables (here, not in
    embedding_variables.py, which builds on this module: no import cycle)."""
    return tf.strings.to_hash_bucket_fast(values, KEY_SPACE)


def _ids(col, value, keyed=False):
    if keyed:  # --ev: the raw id's 64-bit key, for a dynamic table (no buckets, no vocabulary index)
        return keys_of(value)
    if col.hash_buckets:
        return tf.strings.to_hash_bucket_fast(value, col.hash_buckets)
    vocab = tf.constant(list(col.vocabulary))
    hits = tf.equal(tf.expand_dims(value, -1), vocab)
    return tf.where(tf.reduce_any(hits, -1), tf.argmax(tf.cast(hits, tf.int32), -1, output_type=tf.int64),
                    tf.cast(len(col.vocabulary), tf.int64))


def transform(raw, schema, keyed=False, stock_columns=False):
    """Raw columns -> {'dense': [B, numeric] float32, 'ids': [B, categorical] int64}.

    `ids` are hash buckets or vocabulary indices, or with `keyed` (--ev) 64-bit keys of the raw ids.
    With `stock_columns` (--tf) `ids` is the dict of raw categorical strings: FeatureColumnTables
    hashes them itself, as stock TensorFlow's feature columns do.
    """
    if stock_columns:
        out = {IDS: {c.name: tf.reshape(raw[c.name], [-1]) for c in schema.categorical}}
    else:
        out = {IDS: tf.stack([_ids(c, tf.reshape(raw[c.name], [-1]), keyed) for c in schema.categorical], axis=1)}
    if schema.numeric:
        out[DENSE] = tf.stack([_normalize(c, tf.reshape(raw[c.name], [-1])) for c in schema.numeric], axis=1)
    if schema.crosses:
        out[CROSS_IDS] = tf.stack([_cross_ids(x, raw) for x in schema.crosses], axis=1)
    return out


def _cross_ids(cross, raw):
    joint = tf.strings.join([tf.reshape(raw[name], [-1]) for name in cross.columns], separator="\x1f")
    return tf.strings.to_hash_bucket_fast(joint, cross.hash_buckets)


def is_raw(features):
    """True when the features are still raw columns (no --smartstaged, or serving)."""
    return IDS not in features


def _slice_dataset(piece):
    compression = "GZIP" if piece.path.endswith(".gz") else ""
    ds = tf.data.TextLineDataset(piece.path, compression_type=compression)
    return ds.skip(piece.start).take(piece.rows)


WORKQUEUE_READ_AHEAD = 2  # batches a --workqueue trainer decodes ahead of its step
WORKQUEUE_SHUFFLE_BUFFER = 10_000  # rows a --workqueue trainer shuffles among


def make_dataset(slices, schema, delimiter, batch_size, training, smartstaged, bad_rows="error",
                 seed=None, repeat=True, shard=(1, 0), keyed=False, trainer_shard=(1, 0), skip_rows=0,
                 lines=None, layout=None):
    """Lines -> batches of features and labels.

    Batches first, then decodes whole batches (one vectorized op instead of one per row) in parallel
    map calls, prefetched, as stock TensorFlow's input recipes do. With `smartstaged` the feature
    transform (hashing, normalization) runs there too, so the training step starts from ready ids;
    without it the raw columns go to the model graph, which transforms them in the step.

    `shard` = (processes, this one), for Horovod: every process shuffles the lines alike (same seed),
    cuts the same global batches of `batch_size` x processes lines, and decodes only its own rows of
    each (every processes-th), so the processes' batches of one step together are exactly the batch a
    single process would train on, and every row is used once per epoch.

    `trainer_shard` = (trainers, this one), for parameter-server training: each trainer reads only
    its own files (every trainers-th slice) when there are at least as many as trainers, else every
    trainers-th line. `lines` replaces the slices by a dataset of lines (the --workqueue's items).
    `skip_rows` (an int or a scalar tensor read when the iterator starts) skips the rows of the
    shuffled stream that earlier runs have trained on, so a resumed or restarted trainer goes on
    where it stopped instead of repeating them (the shuffle is seeded, so the stream is the same).

    `layout` is the schema with its columns in the files' order (DataSpec.layout: a header's order),
    for splitting the lines; the features come out in the schema's order either way.

    Every row must match the schema's row pattern (datafiles.row_pattern; float32 values must also be
    finite): with `bad_rows` "skip" the others are dropped and counted (BAD_ROWS in each batch's
    features), with "error" the first batch holding one fails.
    """
    processes, index = shard
    trainers, trainer = trainer_shard
    if lines is not None:
        ds = lines
    else:
        by_file = len(slices) >= trainers
        if by_file:
            slices = slices[trainer::trainers]
        ds = _slice_dataset(slices[0])
        for piece in slices[1:]:
            ds = ds.concatenate(_slice_dataset(piece))
        if not by_file:
            ds = ds.shard(trainers, trainer)
    if training:
        # (a work queue's items come in a shuffled order already; a smaller buffer takes fewer of them)
        ds = ds.shuffle(SHUFFLE_BUFFER if lines is None else WORKQUEUE_SHUFFLE_BUFFER, seed=seed,
                        reshuffle_each_iteration=True)
        if repeat and lines is None:  # (the work queue's items end when the job's epochs are dealt out)
            ds = ds.repeat()
        if not isinstance(skip_rows, int) or skip_rows:
            ds = ds.skip(skip_rows)
    ds = ds.batch(batch_size * processes)
    layout = layout or schema
    pattern = row_pattern(layout, delimiter)
    floats = [c.name for c in schema.numeric if c.dtype == "float32"]
    skip = bad_rows == "skip"

    def stop_unless(good, tensor):
        """--bad_rows error: `tensor`, once every row is good; else the step fails, and the runner's
        DataError names the file, line and problem (found by datafiles.diagnose)."""
        check = tf.debugging.Assert(tf.reduce_all(good), ["a malformed row (see modelzoo/datafiles.row_problem)"])
        with tf.control_dependencies([check]):
            return tf.identity(tensor)

    def parse(lines):
        if processes > 1:
            lines = lines[index::processes]
        # Every row is checked against the schema's pattern, in both modes: decode_csv alone takes rows the
        # pattern refuses (a NUL byte or invalid UTF-8 in a text field, " 5" or "01" for 5 or 1), so without
        # the check the same file would train in one mode what the other refuses.
        good = tf.strings.regex_full_match(lines, pattern)
        skipped = tf.reduce_sum(tf.cast(tf.logical_not(good), tf.int64))
        lines = tf.boolean_mask(lines, good) if skip else stop_unless(good, lines)
        raw, label = decode_lines(lines, layout, delimiter)
        if floats:  # a float32 value beyond its range reads as inf, which no pattern refuses
            finite = tf.reduce_all(tf.stack([tf.math.is_finite(raw[name]) for name in floats], axis=1), axis=1)
            if skip:
                skipped += tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
                raw = {name: tf.boolean_mask(value, finite) for name, value in raw.items()}
                label = tf.nest.map_structure(lambda y: tf.boolean_mask(y, finite), label)
            else:
                label = tf.nest.map_structure(lambda y: stop_unless(finite, y), label)
        features = transform(raw, schema, keyed) if smartstaged else raw
        if smartstaged and GROUP in raw:
            features[GROUP] = raw[GROUP]
        if skip:
            features[BAD_ROWS] = skipped
        return features, label

    # Out-of-order batches are fine for one smart-staged process; the processes of a job must stay in
    # step, and without --smartstaged the seeded order is kept (two runs see the same batches).
    # A work-queue trainer reads only a little ahead: what it has taken, the others cannot.
    ahead = tf.data.AUTOTUNE if lines is None else WORKQUEUE_READ_AHEAD
    ds = ds.map(parse, num_parallel_calls=ahead, deterministic=not (training and smartstaged) or processes > 1)
    return ds.prefetch(ahead)


_RECORDING = []  # the lists of the open `record_lookups` blocks


@contextlib.contextmanager
def record_lookups():
    """Collects the rows every table lookup inside the block returns ([B, dim] or [B, C, dim] tensors, one row
    per occurrence of an id), on every kind of tables: the runner's --emb_l2 penalizes them."""
    rows = []
    _RECORDING.append(rows)
    try:
        yield rows
    finally:
        _RECORDING.pop()


def recorded(tensors):
    """`tensors` (a list of looked-up rows), noted in the open `record_lookups` blocks."""
    for rows in _RECORDING:
        rows.extend(tensors)
    return tensors


class TrainingInterface:
    """What the runner's model_fn asks of every kind of tables besides the lookups, so that it builds one
    training step for all of them: fixed tables (these no-ops) and --ev's dynamic ones
    (embedding_variables.DynamicEmbeddingTables, which override them)."""

    keyed = False  # the ids are hash-bucket (or vocabulary) indexes, not raw 64-bit keys

    def wrap_optimizer(self, optimizer):
        return optimizer

    def finish(self, optimizers, global_step, after=None):
        """Ops to group with the train op, after the optimizers."""
        return []

    def training_hooks(self, report, model_dir, last_step):
        """The chief's hooks; `report` receives the tables' end-of-training figures (result.json)."""
        return []

    def saver(self, keep_checkpoint_max):
        """A training Saver other than the Estimator's default (None: the default)."""
        return None

    def warm_start_tables(self):
        """Tables (not variables) a --warm_start_from loads rows into."""
        return []


class ColumnTables(TrainingInterface, abc.ABC):
    """The lookups every kind of embedding table shares: one table per categorical column, or with
    `fused` one table per embedding width holding all columns of that width (--emb_fusion).
    Subclasses give the scope, a column's lookup and a fused group's lookup."""

    scope = "embedding"
    partitioner = None  # --input_layer_partitioner: fixed tables sliced across the PS tasks

    def __init__(self, schema, fused):
        self.columns = schema.categorical
        self.fused = fused

    def _scope(self):
        return tf1.variable_scope(self.scope, reuse=tf1.AUTO_REUSE, partitioner=self.partitioner)

    def lookup(self, ids):
        """ids [B, C] -> list of C embeddings [B, dim_c] in schema order."""
        with self._scope():
            if not self.fused:
                return recorded([self._column_lookup(c, ids[:, i]) for i, c in enumerate(self.columns)])
            out = [None] * len(self.columns)
            for dim in sorted({c.embedding_dim for c in self.columns}):
                members = [i for i, c in enumerate(self.columns) if c.embedding_dim == dim]
                group = recorded([self._fused_lookup(ids, members, dim)])[0]
                for k, i in enumerate(members):
                    out[i] = group[:, k, :]
            return out

    def lookup_stacked(self, ids):
        """ids [B, C] -> [B, C, dim] for schemas whose columns share one width (DLRM)."""
        dims = {c.embedding_dim for c in self.columns}
        if len(dims) != 1:
            raise ValueError(f"lookup_stacked needs one embedding width, the schema has {sorted(dims)}")
        if not self.fused:
            return tf.stack(self.lookup(ids), axis=1)
        with self._scope():
            return recorded([self._fused_lookup(ids, list(range(len(self.columns))), dims.pop())])[0]

    @abc.abstractmethod
    def _column_lookup(self, column, ids):
        """One column's ids [B] -> embeddings [B, dim]."""

    @abc.abstractmethod
    def _fused_lookup(self, ids, members, dim):
        """The `members` columns of width `dim` from one table: ids [B, C] -> [B, len(members), dim]."""


class EmbeddingTables(ColumnTables):
    """Fixed tables of the schema's hash-bucket (or vocabulary) size, looked up by gathers."""

    def __init__(self, schema, fused, initializer=None):
        super().__init__(schema, fused)
        self.initializer = initializer or tf1.random_uniform_initializer(-0.05, 0.05)

    def sibling(self, schema, initializer=None):
        """Tables of the same kind for another set of widths (in the caller's variable scope)."""
        tables = EmbeddingTables(schema, self.fused, initializer)
        tables.partitioner = self.partitioner
        return tables

    def _column_lookup(self, column, ids):
        return tf.nn.embedding_lookup(self._table(column.name, column.num_ids, column.embedding_dim), ids)

    def _fused_lookup(self, ids, members, dim):
        """One table for the `members` columns, each column's ids offset past the previous ones."""
        sizes = [self.columns[i].num_ids for i in members]
        offsets = tf.constant([sum(sizes[:k]) for k in range(len(sizes))], tf.int64)
        if members != list(range(ids.shape[1])):
            ids = tf.gather(ids, members, axis=1)
        return tf.nn.embedding_lookup(self._table(f"fused_dim{dim}", sum(sizes), dim), ids + offsets)

    def _table(self, name, rows, dim):
        return tf1.get_variable(name, [rows, dim], tf.float32, initializer=self.initializer)


class FeatureColumnTables(TrainingInterface):
    """--tf, the stock TensorFlow baseline (DeepRec's --tf): every categorical column is a
    `categorical_column_with_hash_bucket` (or `_with_vocabulary_list`) of the raw strings, embedded
    by an `embedding_column` through `input_layer`, as stock TensorFlow's recipes build them: the
    hashing runs in the training step and each lookup is a sparse lookup with a combiner. The ids
    equal EmbeddingTables' (the same string hash), except that an empty string is a missing value
    here and reads the zero vector. The models call it as they call EmbeddingTables, with the raw
    strings as `ids`."""

    scope = ColumnTables.scope
    partitioner = None

    def __init__(self, schema, initializer=None):
        self.columns = schema.categorical
        self.initializer = initializer or tf1.random_uniform_initializer(-0.05, 0.05)

    def sibling(self, schema, initializer=None):
        tables = FeatureColumnTables(schema, initializer)
        tables.partitioner = self.partitioner
        return tables

    def _feature_column(self, column):
        if column.hash_buckets:
            ids = tf.feature_column.categorical_column_with_hash_bucket(column.name, column.hash_buckets)
        else:
            ids = tf.feature_column.categorical_column_with_vocabulary_list(
                column.name, list(column.vocabulary), num_oov_buckets=1)
        return tf.feature_column.embedding_column(ids, column.embedding_dim, combiner="mean",
                                                  initializer=self.initializer)

    def lookup(self, ids):
        """ids: {column name: [B] raw strings} -> list of embeddings [B, dim_c] in schema order."""
        with tf1.variable_scope(self.scope, reuse=tf1.AUTO_REUSE, partitioner=self.partitioner):
            columns = [self._feature_column(c) for c in self.columns]
            outputs = {}
            tf1.feature_column.input_layer(ids, columns, cols_to_output_tensors=outputs)
            return recorded([outputs[c] for c in columns])

    def lookup_stacked(self, ids):
        """{column: [B] raw strings} -> [B, C, dim] for schemas whose columns share one width (DLRM)."""
        return tf.stack(self.lookup(ids), axis=1)

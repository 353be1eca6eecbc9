"""Feature columns built from a schema: decoding, normalization, hashing and embedding tables.

The same `transform` turns raw columns (strings and integers, as in the files and in the serving
signature) into model inputs (`dense` values, categorical `ids`, and each multi_value or sequence
column's ids as a ragged tensor under LISTS + its name). It runs either inside the
tf.data pipeline (--smartstaged, overlapping the training step) or at the start of the model graph
(stock behaviour, and always for serving), so training and serving hash ids identically.
"""
import abc
import contextlib

import tensorflow as tf

from modelzoo import line_index, parquet
from modelzoo.datafiles import row_pattern

tf1 = tf.compat.v1

DENSE = "dense"
IDS = "ids"
CROSS_IDS = "cross_ids"  # [B, crosses] int64, when the schema has crosses
LABEL = "_label"  # the label riding with the features, for --predict's output file (`_label/NAME`: one of several)
GROUP = "_group"  # the group column's 64-bit keys riding with the features, for GAUC (evaluation only)
BAD_ROWS = "_bad_rows"  # rows dropped by --bad_rows skip in this batch (a scalar riding with the features)
SHUFFLE_BUFFER = 50_000
LISTS = "lists/"  # LISTS + a multi_value or sequence column's name: its ids, tf.RaggedTensor [B, (n)] int64


def raw_dtypes(schema):
    """dtype of each raw input column as it is read from a file or given to the serving signature."""
    out = {}
    for col in schema.columns:
        if col.kind in ("categorical", "multi_value", "sequence"):  # (a list column: one string a row, "a|b|c")
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


def split_list(col, value):
    """A list column's raw value -> its tokens, tf.RaggedTensor [B, (n)] string: the field split by the
    column's separator (or already a ragged tensor of tokens, as a Parquet list column is read), empty tokens
    dropped (an empty field is no id, not one empty id), cut to max_length: a multi_value keeps its first
    ids, a sequence (oldest first) its newest."""
    if isinstance(value, tf.RaggedTensor):
        tokens = value if value.dtype == tf.string else value.with_flat_values(tf.strings.as_string(value.flat_values))
    else:
        tokens = tf.strings.split(tf.reshape(value, [-1]), sep=col.separator)
    tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
    return tokens[:, -col.max_length:] if col.kind == "sequence" else tokens[:, :col.max_length]


def lists_of(features):
    """The list columns' ragged ids of transformed features: {column name: [B, (n)] int64}."""
    return {k[len(LISTS):]: v for k, v in features.items() if k.startswith(LISTS)}


def transform(raw, schema, keyed=False, stock_columns=False):
    """Raw columns -> {'dense': [B, numeric] float32, 'ids': [B, categorical] int64, LISTS + name: [B, (n)]
    int64 for each multi_value and sequence column}.

    `ids` are hash buckets or vocabulary indices, or with `keyed` (--ev) 64-bit keys of the raw ids.
    With `stock_columns` (--tf) `ids` is the dict of raw categorical strings: FeatureColumnTables
    hashes them itself, as stock TensorFlow's feature columns do.
    A list column's ids are those of the column whose table it reads (shares_embedding_with), computed over
    its tokens only: padding is made in the model, from the lengths, and never looked up.
    """
    if stock_columns:
        out = {IDS: {c.name: tf.reshape(raw[c.name], [-1]) for c in schema.categorical}}
    else:
        out = {IDS: tf.stack([_ids(c, tf.reshape(raw[c.name], [-1]), keyed) for c in schema.categorical], axis=1)}
    if schema.numeric:
        out[DENSE] = tf.stack([_normalize(c, tf.reshape(raw[c.name], [-1])) for c in schema.numeric], axis=1)
    if schema.crosses:
        out[CROSS_IDS] = tf.stack([_cross_ids(x, raw) for x in schema.crosses], axis=1)
    for col in schema.lists:
        tokens = split_list(col, raw[col.name])
        out[LISTS + col.name] = tokens.with_flat_values(_ids(schema.table_of(col), tokens.flat_values, keyed))
    return out


def _cross_ids(cross, raw):
    joint = tf.strings.join([tf.reshape(raw[name], [-1]) for name in cross.columns], separator="\x1f")
    return tf.strings.to_hash_bucket_fast(joint, cross.hash_buckets)


def is_raw(features):
    """True when the features are still raw columns (no --smartstaged, or serving)."""
    return IDS not in features


def _slice_dataset(piece):
    """One slice's lines. A plain-text slice past the file's first line (the held-out rows of a single
    file) seeks to its bytes through the file's line index; one from the start is read by TextLineDataset.
    A gzip file cannot seek: its lines before the slice are decompressed each time (said once)."""
    gz = piece.path.endswith(".gz")
    if piece.start > 1 and not gz:
        return line_index.dataset(piece.path, piece.start, piece.stop)
    if gz:
        line_index.say_gzip_cost(piece.path, piece.start)
    ds = tf.data.TextLineDataset(piece.path, compression_type="GZIP" if gz else "")
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
        ds = read_slices(slices, _slice_dataset, trainers, trainer)
    ds = ordered(ds, batch_size * processes, training, seed, repeat, skip_rows, queued=lines is not None)
    layout = layout or schema
    pattern = row_pattern(layout, delimiter)
    floats = [c.name for c in schema.numeric if c.dtype == "float32"]
    skip = bad_rows == "skip"

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
        return finished(raw, label, schema, smartstaged, keyed, skipped if skip else None)

    return decoded(ds, parse, training, smartstaged, processes, queued=lines is not None)


def read_slices(slices, read, trainers, trainer, whole=False):
    """The rows of `slices` in file order (`read(slice)`: one slice's dataset; with `whole`, `read(slices)`
    reads them all), a parameter-server trainer's share: its own files (every trainers-th slice) when there
    are at least as many as trainers, else every trainers-th row."""
    by_file = len(slices) >= trainers
    if by_file:
        slices = slices[trainer::trainers]
    if whole:
        ds = read(slices)
    else:
        ds = read(slices[0])
        for piece in slices[1:]:
            ds = ds.concatenate(read(piece))
    return ds if by_file else ds.shard(trainers, trainer)


def ordered(ds, rows, training, seed, repeat, skip_rows, queued, ragged=False):
    """Rows -> batches of `rows` in the order make_dataset documents: training shuffles (seeded), repeats
    and skips the rows already trained on; a work queue's rows (`queued`) are shuffled in a smaller buffer.
    With `ragged`, rows of varying length (list columns) are batched into RaggedTensors."""
    if training:
        # (a work queue's items come in a shuffled order already; a smaller buffer takes fewer of them)
        ds = ds.shuffle(WORKQUEUE_SHUFFLE_BUFFER if queued else SHUFFLE_BUFFER, seed=seed,
                        reshuffle_each_iteration=True)
        if repeat and not queued:  # (the work queue's items end when the job's epochs are dealt out)
            ds = ds.repeat()
        if not isinstance(skip_rows, int) or skip_rows:
            ds = ds.skip(skip_rows)
    return ds.ragged_batch(rows) if ragged else ds.batch(rows)


def stop_unless(good, tensor):
    """--bad_rows error: `tensor`, once every row is good; else the step fails, and the runner's
    DataError names the file, line (or row group) and problem (found by datafiles.diagnose)."""
    check = tf.debugging.Assert(tf.reduce_all(good), ["a malformed row (see modelzoo/datafiles.row_problem)"])
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def finished(raw, label, schema, smartstaged, keyed, skipped):
    """A decoded batch as the model_fn takes it: transformed with --smartstaged, with --bad_rows skip's count
    and the group column's keys (GROUP)."""
    group = schema.group
    if group is not None and group.name in raw:  # (a Parquet reader's column: decode_lines keyed it already)
        raw = {**raw, GROUP: keys_of(tf.reshape(raw[group.name], [-1]))}
        del raw[group.name]
    features = transform(raw, schema, keyed) if smartstaged else raw
    if smartstaged and GROUP in raw:
        features[GROUP] = raw[GROUP]
    if skipped is not None:
        features[BAD_ROWS] = skipped
    return features, label


def decoded(ds, parse, training, smartstaged, processes, queued):
    """Batches -> `parse`d batches, decoded in parallel and prefetched."""
    # Out-of-order batches are fine for one smart-staged process; the processes of a job must stay in
    # step, and without --smartstaged the seeded order is kept (two runs see the same batches).
    # A work-queue trainer reads only a little ahead: what it has taken, the others cannot.
    ahead = WORKQUEUE_READ_AHEAD if queued else tf.data.AUTOTUNE
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
    """The lookups every kind of embedding table shares: one table per column that owns one
    (schema.tables: the categorical columns and the list columns sharing no other's), or with `fused` one
    table per embedding width holding all of them of that width (--emb_fusion). A list column with
    shares_embedding_with reads its owner's table, so an id is one row for both.
    Subclasses give the scope, a column's lookup and a fused group's lookup."""

    scope = "embedding"
    partitioner = None  # --input_layer_partitioner: fixed tables sliced across the PS tasks

    def __init__(self, schema, fused):
        self.schema = schema
        self.categorical = schema.categorical
        self.columns = schema.tables  # (schema.categorical when the schema has no list column)
        self.fused = fused

    def _scope(self):
        return tf1.variable_scope(self.scope, reuse=tf1.AUTO_REUSE, partitioner=self.partitioner)

    def _gather(self, requests):
        """[(owners, ids [N, len(owners)])] -> [[N, len(owners), dim]]: the rows of each owner's ids (owners:
        columns owning a table, of one width). One table op per table (per width with --emb_fusion) for all
        the requests, so an id read by two columns sharing a table, or twice in a batch, is one lookup of one
        row: with --ev, one TFRA lookup, whose update and sightings count it once per occurrence."""
        groups = {}
        for k, (owners, _) in enumerate(requests):
            groups.setdefault(owners[0].embedding_dim if self.fused else owners[0].name, []).append(k)
        out = [None] * len(requests)
        for key, ks in groups.items():
            flat = [tf.reshape(requests[k][1], [-1]) for k in ks]
            ids = flat[0] if len(ks) == 1 else tf.concat(flat, 0)
            if self.fused:
                position = {c.name: i for i, c in enumerate(self._group(key))}
                members = [tf.tile(tf.constant([position[c.name] for c in requests[k][0]], tf.int64),
                                   [tf.shape(requests[k][1], out_type=tf.int64)[0]]) for k in ks]
                rows = self._fused_lookup(ids, members[0] if len(ks) == 1 else tf.concat(members, 0), key)
            else:
                rows = self._column_lookup(requests[ks[0]][0][0], ids)
            parts = [rows] if len(ks) == 1 else tf.split(rows, tf.stack([tf.size(f) for f in flat]), num=len(ks))
            for k, part in zip(ks, parts):
                out[k] = tf.reshape(part, [-1, len(requests[k][0]), rows.shape[-1]])
        return recorded(out)

    def _group(self, dim):
        """The columns of the fused table of width `dim`, in its order."""
        return [c for c in self.columns if c.embedding_dim == dim]

    def _categorical_requests(self, ids, keep):
        """Requests for the categorical columns at positions `keep`: one per column, or one per width fused."""
        if not self.fused:
            return [([self.categorical[i]], ids[:, i:i + 1]) for i in keep], [[i] for i in keep]
        groups = [[i for i in keep if self.categorical[i].embedding_dim == dim]
                  for dim in sorted({self.categorical[i].embedding_dim for i in keep})]
        return [([self.categorical[i] for i in g], ids if g == list(range(ids.shape[1])) else tf.gather(ids, g, axis=1))
                for g in groups], groups

    def _lookup_some(self, ids, keep, extra=()):
        """The categorical columns at positions `keep` (-> [B, dim] each, in that order) and the `extra`
        requests (-> their rows), in one _gather."""
        requests, groups = self._categorical_requests(ids, keep)
        rows = self._gather(requests + list(extra))
        out = {}
        for g, r in zip(groups, rows):
            for k, i in enumerate(g):
                out[i] = r[:, k, :]
        return [out[i] for i in keep], rows[len(requests):]

    def lookup(self, ids):
        """ids [B, C] -> list of C embeddings [B, dim_c] in schema order."""
        with self._scope():
            return self._lookup_some(ids, list(range(len(self.categorical))))[0]

    def lookup_stacked(self, ids):
        """ids [B, C] -> [B, C, dim] for schemas whose columns share one width (DLRM)."""
        dims = {c.embedding_dim for c in self.categorical}
        if len(dims) != 1:
            raise ValueError(f"lookup_stacked needs one embedding width, the schema has {sorted(dims)}")
        if not self.fused:
            return tf.stack(self.lookup(ids), axis=1)
        with self._scope():
            return self._gather([(self.categorical, ids)])[0]

    # -- list columns (ModelInputs.lists) -------------------------------------------------------------
    def _ragged_request(self, name, rt):
        return [self.schema.table_of(name)], rt.flat_values

    def lookup_ragged(self, column, rt):
        """A list column's ids [B, (n)] -> tf.RaggedTensor [B, (n), dim] from its table (its owner's when
        shared): one lookup over the ids present, never padding."""
        with self._scope():
            return rt.with_flat_values(self._gather([self._ragged_request(column, rt)])[0][:, 0, :])

    def pooled(self, inputs, exclude=()):
        """[B, dim] per categorical and multi_value column not named in `exclude`, in schema order: a single
        id's row, a multi_value's rows pooled by its combiner (an empty field pools to zeros). Sequence
        columns are never pooled here (`sequence`). One lookup per table for all of them."""
        keep = [i for i, c in enumerate(self.categorical) if c.name not in exclude]
        lists = [c for c in self.schema.lists if c.kind == "multi_value" and c.name not in exclude]
        with self._scope():
            singles, rows = self._lookup_some(inputs.ids, keep, [self._ragged_request(c.name, inputs.lists[c.name])
                                                                  for c in lists])
        by_name = {self.categorical[i].name: e for i, e in zip(keep, singles)}
        for col, flat in zip(lists, rows):
            by_name[col.name] = pool(inputs.lists[col.name].with_flat_values(flat[:, 0, :]), col.combiner)
        return [by_name[c.name] for c in self.schema.columns if c.name in by_name]

    def sequence(self, inputs, name):
        """A sequence column -> (emb [B, max_length, dim] float32, zeros at padding, mask [B, max_length] bool)."""
        col = next(c for c in self.schema.lists if c.name == name)
        return padded(self.lookup_ragged(name, inputs.lists[name]), col.max_length)

    def lookup_shared(self, owner, ids, rt, max_length):
        """A categorical column's ids [B] and the ids [B, (n)] of a sequence reading its table, in one lookup
        (a shared id is one row, with --ev one TFRA lookup) -> (emb [B, dim], (seq [B, max_length, dim],
        mask [B, max_length]))."""
        col = self.schema.table_of(owner)
        with self._scope():
            single, many = self._gather([([col], ids), ([col], rt.flat_values)])
        return single[:, 0, :], padded(rt.with_flat_values(many[:, 0, :]), max_length)

    def ids_of(self, inputs, name):
        """A categorical column's ids [B] in `inputs`."""
        return inputs.ids[:, [c.name for c in self.categorical].index(name)]

    @abc.abstractmethod
    def _column_lookup(self, column, ids):
        """One column's ids [N] -> embeddings [N, dim]."""

    @abc.abstractmethod
    def _fused_lookup(self, ids, members, dim):
        """The fused table of width `dim`: ids [N] and each id's column, its position in _group(dim) [N]
        -> [N, dim]."""


def pool(rows, combiner):
    """tf.RaggedTensor [B, (n), dim] -> [B, dim] by `combiner` (sum or mean); an empty row gives zeros. (By
    unsorted_segment_sum over nrows: embedding_lookup_sparse drops trailing empty rows.)"""
    total = tf.math.unsorted_segment_sum(rows.flat_values, rows.value_rowids(), rows.nrows())
    if combiner == "mean":
        total /= tf.maximum(tf.cast(rows.row_lengths(), total.dtype), 1.0)[:, None]
    return total


def padded(rows, max_length):
    """tf.RaggedTensor [B, (n), dim] -> (emb [B, max_length, dim], zeros at padding; mask [B, max_length])."""
    emb = rows.to_tensor(shape=[None, max_length, rows.flat_values.shape[-1]])
    return emb, tf.sequence_mask(rows.row_lengths(), max_length)


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
        """One table for the columns of width `dim`, each column's ids offset past the previous ones."""
        sizes = [c.num_ids for c in self._group(dim)]
        offsets = tf.constant([sum(sizes[:k]) for k in range(len(sizes))], tf.int64)
        table = self._table(f"fused_dim{dim}", sum(sizes), dim)
        return tf.nn.embedding_lookup(table, ids + tf.gather(offsets, members))

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

    def pooled(self, inputs, exclude=()):
        """[B, dim] per categorical column not named in `exclude` (--tf refuses list columns:
        flags.validate_with_schema)."""
        return [e for c, e in zip(self.columns, self.lookup(inputs.ids)) if c.name not in exclude]


def parquet_rows(slices, schema):
    """The rows of Parquet `slices`, in file order (modelzoo/parquet.py reads them)."""
    paths = tf.data.Dataset.from_tensor_slices(([s.path for s in slices], [s.start for s in slices],
                                                [s.stop for s in slices]))
    return paths.flat_map(parquet.range_dataset(schema))


def make_parquet_dataset(slices, schema, batch_size, training, smartstaged, bad_rows="error", seed=None,
                         repeat=True, shard=(1, 0), keyed=False, trainer_shard=(1, 0), skip_rows=0, rows=None):
    """make_dataset for Parquet slices (`rows`: a work queue's dataset of rows instead), in the
    same order, batches and shards: the same rows give the same batches as their CSV copy."""
    processes, index = shard
    trainers, trainer = trainer_shard
    ds = rows if rows is not None else read_slices(slices, lambda group: parquet_rows(group, schema),
                                                   trainers, trainer, whole=True)
    ds = ordered(ds, batch_size * processes, training, seed, repeat, skip_rows, queued=rows is not None,
                 ragged=bool(schema.lists))
    labels = [c.name for c in schema.labels]
    skip = bad_rows == "skip"

    def parse(rows, good):
        raw = parquet.unpacked(rows, schema)
        if processes > 1:
            mine = tf.range(index, tf.shape(good, out_type=tf.int64)[0], processes)
            raw, good = {k: tf.gather(v, mine) for k, v in raw.items()}, tf.gather(good, mine)
        skipped = tf.reduce_sum(tf.cast(tf.logical_not(good), tf.int64))
        if skip:
            raw = {k: tf.ragged.boolean_mask(v, good) if isinstance(v, tf.RaggedTensor) else tf.boolean_mask(v, good)
                   for k, v in raw.items()}
        else:
            raw = {k: stop_unless(good, v) if k == labels[0] else v for k, v in raw.items()}
        label = raw.pop(labels[0]) if len(labels) == 1 else {name: raw.pop(name) for name in labels}
        return finished(raw, label, schema, smartstaged, keyed, skipped if skip else None)

    return decoded(ds, parse, training, smartstaged, processes, queued=rows is not None)

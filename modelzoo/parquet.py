"""Parquet input: .parquet files read by row group with pyarrow into the CSV reader's batches.

Stock TensorFlow has no Parquet dataset, so each slice of a file is a `Dataset.from_generator` over
`ParquetFile.iter_batches` (the slices read in file order, a few record batches ahead). Rows
come out as `features.decode_lines` gives them: {column: [B] tensor of the CSV dtype} and the float
label (a dict of them with several labels), so the same shuffle, holdout, sharding, --smartstaged
transform, --bad_rows and prefetch follow. Where Parquet and CSV could differ, the CSV reading wins:
- an integer id is read as its decimal text, the string the CSV reader hashes (one id, one row);
- nulls read as the CSV defaults: 0 for a number, "" for an id, no ids for a list; a null label is bad;
- list columns (list<string> or list<int>) come out as tf.RaggedTensor [B, (n)] of strings, nulls and
  empty strings dropped (a CSV field's empty tokens are dropped too);
- columns are matched by name (as with a header line): a schema column missing from a file, a file
  column the schema does not name (declare it "ignore") or a column of an unreadable type is refused
  per file at start-up, naming the file and column; a bad value (a label not 0/1, a number that is not
  finite in float32) is named by file, row group and column (`diagnose`, as datafiles.diagnose does).
A file's rows are counted from its footer, and a slice starting inside it reads from the row group
holding its first row (only that group's leading rows are read past), never from row 1.
"""
import numpy as np

from modelzoo.datafiles import DataError, opened

SUFFIX = ".parquet"
READ_ROWS = 4096  # rows per record batch read (a row group is read in such batches: memory stays bounded)
READ_AHEAD = 2  # record batches read ahead of the one being consumed


def is_parquet(path):
    return str(path).endswith(SUFFIX)


def _pq():
    import pyarrow.parquet as pq
    return pq


def open_file(path):
    """A pyarrow ParquetFile (its footer read); errors name the file."""
    try:
        return opened(path, _pq().ParquetFile)
    except DataError:
        raise
    except Exception as err:  # pyarrow's ArrowInvalid (not a Parquet file, a damaged footer) and its kin
        raise DataError(f"{path}: cannot be read as Parquet: {str(err).splitlines()[0]}") from None


def _type_problem(col, arrow_type):
    """Why a Parquet column of `arrow_type` cannot be read as schema column `col`, or None."""
    import pyarrow as pa
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    text = pa.types.is_string(t) or pa.types.is_large_string(t)
    integer = pa.types.is_integer(t)
    if col.kind == "label":
        ok, want = integer or pa.types.is_boolean(t) or pa.types.is_floating(t), "0/1 integers (or booleans)"
    elif col.kind == "numeric" and col.dtype == "int64":
        ok, want = integer, "integers (the schema's dtype is int64)"
    elif col.kind == "numeric":
        ok, want = integer or pa.types.is_floating(t), "numbers"
    elif col.kind in ("multi_value", "sequence"):
        inner = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else None
        ok = inner is not None and (pa.types.is_string(inner) or pa.types.is_large_string(inner)
                                    or pa.types.is_integer(inner))
        want = "a list of strings or integers"
    else:  # categorical, group
        ok, want = text or integer, "strings or integers"
    return None if ok else f"column {col.name} is {arrow_type}, but the schema's {col.kind} column needs {want}"


def check_file(path, schema):
    """The file's rows (from its footer), once its columns fit the schema; else a DataError in one line."""
    f = open_file(path)
    fields = {field.name: field.type for field in f.schema_arrow}
    names = {c.name for c in schema.columns}
    missing = [c.name for c in schema.columns if c.kind != "ignore" and c.name not in fields]
    if missing:
        raise DataError(f"{path}: no column {', '.join(missing[:8])} (the schema {schema.name}'s); its columns: "
                        f"{', '.join(list(fields)[:12])}{', ...' if len(fields) > 12 else ''}")
    extra = [n for n in fields if n not in names]
    if extra:
        raise DataError(f"{path}: column(s) {extra[:8]} that the schema {schema.name} does not have; add them to "
                        "the schema (kind \"ignore\" to leave them unread)")
    for col in schema.columns:
        problem = col.kind != "ignore" and _type_problem(col, fields[col.name])
        if problem:
            raise DataError(f"{path}: {problem}")
    rows = f.metadata.num_rows
    if rows == 0:
        raise DataError(f"{path}: file is empty, expected rows of data")
    return rows


def read_columns(schema):
    """The columns a reader takes from a file, in schema order (ignored ones are never read)."""
    return [c for c in schema.columns if c.kind != "ignore"]


def _text(arr):
    """Strings (an integer id as its decimal text, as the CSV reader reads it), null as ""."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    return pc.fill_null(arr, "").to_numpy(zero_copy_only=False).astype(object)


def _list(arr):
    """A list column as (values, row lengths): nulls and empty strings dropped, a null list empty."""
    import pyarrow as pa
    import pyarrow.compute as pc
    values = pc.list_flatten(arr)
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = pc.cast(values, pa.string())
    keep = pc.fill_null(pc.not_equal(values, ""), False).to_numpy(zero_copy_only=False)
    lengths = np.bincount(parents[keep], minlength=len(arr)).astype(np.int64)
    return values.to_numpy(zero_copy_only=False)[keep].astype(object), lengths


FLOAT32_MAX = float(np.finfo(np.float32).max)


def decode_batch(batch, schema):
    """A pyarrow RecordBatch -> (the arrays `signature` describes, the first problem as (column, what) or
    None). A row with a bad value is marked not good (the last array), its values zeros."""
    import pyarrow.compute as pc
    out, good, problem = [], np.ones(batch.num_rows, bool), None
    for col in read_columns(schema):
        arr = batch.column(col.name)
        if col.kind in ("multi_value", "sequence"):
            out.extend(_list(arr))
            continue
        if col.kind not in ("label", "numeric"):
            out.append(_text(arr))
            continue
        values = pc.fill_null(pc.cast(arr, "float64"), np.nan if col.kind == "label" else 0.0).to_numpy(
            zero_copy_only=False)
        if col.kind == "label":
            bad = ~np.isin(values, (0.0, 1.0))
            what = "a label that is not 0 or 1 (or is null)"
        elif col.dtype == "float32":
            bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
            what = "a value that is not a finite float32 number"
        else:
            values = pc.fill_null(arr, 0).cast("int64").to_numpy(zero_copy_only=False)
            bad = np.zeros(len(values), bool)
        if bad.any():
            good &= ~bad
            problem = problem or (col.name, f"row {int(np.argmax(bad)) + 1} of the group holds {what}")
            values = np.where(bad, 0, values)
        out.append(values.astype(np.float32) if col.kind == "label" or col.dtype == "float32" else values)
    out.append(good)
    return out, problem


def signature(schema):
    """The TensorSpecs of decode_batch's arrays."""
    import tensorflow as tf
    specs = []
    for col in read_columns(schema):
        if col.kind in ("multi_value", "sequence"):
            specs += [tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64)]
        elif col.kind == "label" or (col.kind == "numeric" and col.dtype == "float32"):
            specs.append(tf.TensorSpec([None], tf.float32))
        elif col.kind == "numeric":
            specs.append(tf.TensorSpec([None], tf.int64))
        else:
            specs.append(tf.TensorSpec([None], tf.string))
    return tuple(specs) + (tf.TensorSpec([None], tf.bool),)


def row_groups(meta, start, stop):
    """[(row group, rows of it to pass, rows of it to take)] covering rows [start, stop) of a file, from
    its footer: the groups before `start` are never read."""
    out, begin = [], 0
    for g in range(meta.num_row_groups):
        end = begin + meta.row_group(g).num_rows
        if end > start and begin < stop:
            first = max(start - begin, 0)
            out.append((g, first, min(stop, end) - begin - first))
        begin = end
    return out


def batches(path, start, stop, schema, with_group=False):
    """decode_batch's arrays for rows [start, stop) of one file, in order (with `with_group`, each with its
    row group and problem)."""
    f = open_file(path)
    names = [c.name for c in read_columns(schema)]
    for group, passed, taken in row_groups(f.metadata, start, stop):
        for batch in f.iter_batches(READ_ROWS, row_groups=[group], columns=names, use_threads=False):
            if passed >= batch.num_rows:
                passed -= batch.num_rows
                continue
            batch = batch.slice(passed, taken)
            passed, taken = 0, taken - batch.num_rows
            arrays, problem = decode_batch(batch, schema)
            yield (arrays, group, problem) if with_group else tuple(arrays)
            if taken <= 0:
                break


def diagnose(slices, schema):
    """The first bad value of `slices`: 'file: row group G, column C: problem', or None."""
    for piece in slices:
        for _, group, problem in batches(piece.path, piece.start, piece.stop, schema, with_group=True):
            if problem:
                return f"{piece.path}: row group {group}, column {problem[0]}: {problem[1]}"
    return None


def range_dataset(schema):
    """(path, start, stop) tensors -> the dataset of those rows, one element per row; the record batches
    are read (and decoded) a few ahead, in a background thread, while the earlier ones are consumed."""
    import tensorflow as tf
    spec = signature(schema)

    @tf.autograph.experimental.do_not_convert
    def read(path, start, stop):
        def generate(path, start, stop):
            yield from batches(path.decode(), int(start), int(stop), schema)
        ds = tf.data.Dataset.from_generator(generate, args=(path, start, stop), output_signature=spec)
        return ds.map(lambda *arrays: rows_of(arrays, schema)).prefetch(READ_AHEAD).unbatch()
    return read


def rows_of(arrays, schema):
    """decode_batch's arrays as ({column: tensor or RaggedTensor}, good)."""
    import tensorflow as tf
    raw, k = {}, 0
    for col in read_columns(schema):
        if col.kind in ("multi_value", "sequence"):
            raw[col.name] = tf.RaggedTensor.from_row_lengths(arrays[k], arrays[k + 1])
            k += 2
        else:
            raw[col.name] = arrays[k]
            k += 1
    return raw, arrays[k]


def read_slices(slices, schema):
    """The rows of `slices`, in file order."""
    import tensorflow as tf
    paths = tf.data.Dataset.from_tensor_slices(([s.path for s in slices], [s.start for s in slices],
                                                [s.stop for s in slices]))
    return paths.flat_map(range_dataset(schema))


def make_dataset(slices, schema, batch_size, training, smartstaged, bad_rows="error", seed=None, repeat=True,
                 shard=(1, 0), keyed=False, trainer_shard=(1, 0), skip_rows=0, rows=None):
    """features.make_dataset for Parquet slices (`rows`: a work queue's dataset of rows instead), in the
    same order, batches and shards: the same rows give the same batches as their CSV copy."""
    import tensorflow as tf
    from modelzoo import features as F
    processes, index = shard
    trainers, trainer = trainer_shard
    ds = rows if rows is not None else F.read_slices(slices, lambda group: read_slices(group, schema),
                                                     trainers, trainer, whole=True)
    ds = F.ordered(ds, batch_size * processes, training, seed, repeat, skip_rows, queued=rows is not None,
                   ragged=bool(schema.lists))
    labels = [c.name for c in schema.labels]
    skip = bad_rows == "skip"

    def parse(raw, good):
        if processes > 1:
            mine = tf.range(index, tf.shape(good, out_type=tf.int64)[0], processes)
            raw, good = {k: tf.gather(v, mine) for k, v in raw.items()}, tf.gather(good, mine)
        skipped = tf.reduce_sum(tf.cast(tf.logical_not(good), tf.int64))
        if skip:
            raw = {k: tf.ragged.boolean_mask(v, good) if isinstance(v, tf.RaggedTensor) else tf.boolean_mask(v, good)
                   for k, v in raw.items()}
        else:
            raw = {k: F.stop_unless(good, v) if k == labels[0] else v for k, v in raw.items()}
        label = raw.pop(labels[0]) if len(labels) == 1 else {name: raw.pop(name) for name in labels}
        return F.finished(raw, label, schema, smartstaged, keyed, skipped if skip else None)

    return F.decoded(ds, parse, training, smartstaged, processes, queued=rows is not None)


def _as_text(value, label=False):
    """A sampled value as the CSV reader would see its field: null "", a boolean 0/1, an integral label 0/1."""
    if value is None:
        return ""
    if isinstance(value, bool) or (label and isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return str(value)


def sample_text(path, label, rows):
    """For schema.infer: the file's column names, its first `rows` rows' values by column (text; a list
    column's values are lists of ids), the list columns, its rows (from the footer), how they were counted
    and its format in words."""
    import pyarrow as pa
    f = open_file(path)
    names = [field.name for field in f.schema_arrow]
    if label not in names:
        raise DataError(f"{path}: no column {label!r} (--label); its columns: {', '.join(names[:30])}")
    if f.metadata.num_rows == 0:
        raise DataError(f"{path}: file is empty, expected rows of data")
    lists = set()
    for field in f.schema_arrow:
        t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            t = t.value_type
            lists.add(field.name)
        if pa.types.is_nested(t) or not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                                         or pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise DataError(f"{path}: column {field.name} is {field.type}; the models read numbers, strings, "
                            "and lists of strings or integers")
    taken, got = [], 0
    for batch in f.iter_batches(min(rows, 65536)):
        taken.append(batch.slice(0, rows - got))
        got += taken[-1].num_rows
        if got >= rows:
            break
    table = pa.Table.from_batches(taken)
    columns = []
    for name in names:
        values = table.column(name).to_pylist()
        if name in lists:
            columns.append([[_as_text(x) for x in v if x not in (None, "")] if v else [] for v in values])
        else:
            columns.append([_as_text(v, name == label) for v in values])
    return names, columns, lists, f.metadata.num_rows, "from the Parquet footer", "Parquet, columns by name"

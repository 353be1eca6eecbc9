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

from modelzoo.data_errors import DataError, opened

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
    return pc.fill_null(pc.cast(arr, pa.large_string()), "")


def _flat(arr):
    """Strings (a pyarrow large_string array without nulls) as (one bytes blob, offsets [n + 1]): what TensorFlow
    takes from Python as two tensors, cut back into strings by flat_strings (a numpy array of n Python strings
    would be converted one by one, the most of the reading's time)."""
    _, offsets, data = arr.buffers()
    offs = np.frombuffer(offsets, np.int64)[arr.offset:arr.offset + len(arr) + 1]
    blob = b"" if data is None else memoryview(data)[offs[0]:offs[-1]].tobytes()
    return np.array(blob, object), (offs - offs[0]).astype(np.int64)


def flat_strings(blob, offsets):
    import tensorflow as tf
    return tf.strings.substr(blob, offsets[:-1], offsets[1:] - offsets[:-1])


def _list(arr):
    """A list column as (blob, offsets, row lengths) of its ids: nulls and empty strings dropped, a null list
    empty."""
    import pyarrow as pa
    import pyarrow.compute as pc
    values = pc.cast(pc.list_flatten(arr), pa.large_string())
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
    keep = pc.fill_null(pc.not_equal(values, ""), False)
    lengths = np.bincount(parents[keep.to_numpy(zero_copy_only=False)], minlength=len(arr)).astype(np.int64)
    return (*_flat(pc.filter(values, keep)), lengths)


FLOAT32_MAX = float(np.finfo(np.float32).max)
LISTS = ("multi_value", "sequence")


def _pack_of(col):
    """The scalar columns travel stacked by dtype ([n, k] tensors: strings, ints, floats), so that a row is a
    few tensors (shuffling and batching rows costs per tensor)."""
    if col.kind == "label" or (col.kind == "numeric" and col.dtype == "float32"):
        return "floats"
    return "ints" if col.kind == "numeric" else "strings"


def _packs(schema):
    """{pack: its columns}, for the packs the schema has, in a fixed order."""
    packs = {name: [c for c in read_columns(schema) if c.kind not in LISTS and _pack_of(c) == name]
             for name in ("strings", "ints", "floats")}
    return {name: cols for name, cols in packs.items() if cols}


def decode_batch(batch, schema):
    """A pyarrow RecordBatch -> (the arrays `signature` describes, the first problem as (column, what) or
    None). A row with a bad value is marked not good (the last array), its values zeros."""
    import pyarrow as pa
    import pyarrow.compute as pc
    out, good, problem = [], np.ones(batch.num_rows, bool), None
    for pack, cols in _packs(schema).items():
        if pack == "strings":
            out.extend(_flat(pa.concat_arrays([_text(batch.column(c.name)) for c in cols])))
            continue
        stacked = []
        for col in cols:
            arr = batch.column(col.name)
            if pack == "ints":
                stacked.append(pc.fill_null(arr, 0).cast("int64").to_numpy(zero_copy_only=False))
                continue
            values = pc.fill_null(pc.cast(arr, "float64"), np.nan if col.kind == "label" else 0.0).to_numpy(
                zero_copy_only=False)
            if col.kind == "label":
                bad, what = ~np.isin(values, (0.0, 1.0)), "a label that is not 0 or 1 (or is null)"
            else:
                bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
                what = "a value that is not a finite float32 number"
            if bad.any():
                good &= ~bad
                problem = problem or (col.name, f"row {int(np.argmax(bad)) + 1} of the group holds {what}")
                values = np.where(bad, 0, values)
            stacked.append(values.astype(np.float32))
        out.append(np.stack(stacked, axis=1))
    for col in read_columns(schema):
        if col.kind in LISTS:
            out.extend(_list(batch.column(col.name)))
    out.append(good)
    return out, problem


def signature(schema):
    """The TensorSpecs of decode_batch's arrays."""
    import tensorflow as tf
    blob = [tf.TensorSpec([], tf.string), tf.TensorSpec([None], tf.int64)]
    specs = []
    for pack, cols in _packs(schema).items():
        specs += blob if pack == "strings" else \
            [tf.TensorSpec([None, len(cols)], tf.int64 if pack == "ints" else tf.float32)]
    specs += [spec for c in read_columns(schema) if c.kind in LISTS
              for spec in blob + [tf.TensorSpec([None], tf.int64)]]
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
    group = None
    try:
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
    except Exception as err:  # pyarrow's: a damaged page, an integer beyond int64 (tf.data reports it as it comes)
        raise DataError(f"{path}: row group {group}: cannot be read: {str(err).splitlines()[0]}") from None


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
    """decode_batch's arrays as ({pack: [n, k] tensor, list column: RaggedTensor [n, (m)]}, good [n])."""
    import tensorflow as tf
    raw, k = {}, 0
    for pack, cols in _packs(schema).items():
        if pack == "strings":
            raw[pack] = tf.transpose(tf.reshape(flat_strings(arrays[k], arrays[k + 1]), [len(cols), -1]))
            k += 2
        else:
            raw[pack] = arrays[k]
            k += 1
    for col in read_columns(schema):
        if col.kind in LISTS:
            raw[col.name] = tf.RaggedTensor.from_row_lengths(flat_strings(arrays[k], arrays[k + 1]), arrays[k + 2])
            k += 3
    return raw, arrays[k]


def unpacked(rows, schema):
    """rows_of's (batched) dict -> {column: [B] tensor, or RaggedTensor [B, (n)] for a list column}."""
    raw = {col.name: rows[pack][:, k] for pack, cols in _packs(schema).items() for k, col in enumerate(cols)}
    raw.update({col.name: rows[col.name] for col in read_columns(schema) if col.kind in LISTS})
    return raw


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

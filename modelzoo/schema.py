"""Declarative feature schemas: a model's feature set is data (a JSON file), not code.

A schema lists the columns of the input file in order. Each column has a kind:
- `label`: a 0/1 target; a multi-task schema declares several (`click`, `conversion`), the first is the
  main one (the `auc` of result.json, the `probabilities` output);
- `numeric`: an integer or float feature with a normalization (`log1p`, `standard`, `minmax`, `none`);
- `categorical`: a string or integer id mapped to a row of an embedding table, either by hashing into
  `hash_buckets` rows or through a `vocabulary` list (unknown values share one extra row);
- `multi_value`: several ids of one field joined by `separator` (`"a|b|c"`, order-free), at most
  `max_length` kept, embedded and pooled by `combiner` (`sum` or `mean`);
- `sequence`: an ordered history, oldest first, joined by `separator`; the newest `max_length` are kept,
  handed to the model unpooled (padded and masked) for attention;
  a `multi_value` or `sequence` column either has a table of its own (`hash_buckets` or `vocabulary`, and
  `embedding_dim`) or reads a categorical column's (`shares_embedding_with`: the history of item ids and
  the candidate item read one table, as DIN needs); empty tokens are dropped, an empty field is no id;
- `group`: the column whose values group rows for GAUC (e.g. the user id): read, never embedded, never
  asked for by the serving signature; at most one; it takes only `name` and `kind`;
- `ignore`: a column of the file that no model reads (a row id such as Avazu's `id`); it takes only
  `name` and `kind`.
With a header line (modelzoo/datafiles.py) the file's columns are matched to these by name, in any
order; without one, by position. `python -m modelzoo.schema infer FILE --label COLUMN` writes a
schema from a sample of a file (see `infer`).
An optional `crosses` list names crossed features for wide (linear) models:
`{"name": "C1_x_C2", "columns": ["C1", "C2"], "hash_buckets": 100000}`.
This module has no TensorFlow import; modelzoo/features.py turns a schema into tensors.
"""
import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Tuple

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KINDS = ("label", "numeric", "categorical", "multi_value", "sequence", "group", "ignore")
LIST_KINDS = ("multi_value", "sequence")  # a field holding several ids
COMBINERS = ("sum", "mean")
# keys added after checkpoints were made: left out of Schema.fingerprint at their defaults, so that those
# checkpoints keep their identity
_LATER_KEYS = {"separator": "|", "max_length": 0, "combiner": "mean", "shares_embedding_with": ""}
NORMALIZATIONS = ("log1p", "standard", "minmax", "none")
MAX_VOCABULARY = 10_000  # vocabularies are matched by comparison; larger sets should hash


class SchemaError(ValueError):
    """A schema file that does not say what a model needs; the message names file and column."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    dtype: str = "float32"
    normalization: str = "none"
    mean: float = 0.0
    std: float = 1.0
    min: float = 0.0
    max: float = 1.0
    hash_buckets: int = 0
    vocabulary: Tuple[str, ...] = field(default_factory=tuple)
    embedding_dim: int = 0
    separator: str = "|"  # multi_value and sequence: between the ids of one field
    max_length: int = 0  # multi_value and sequence: ids kept (the first of a multi_value, the newest of a sequence)
    combiner: str = "mean"  # multi_value: how its ids' rows are pooled
    shares_embedding_with: str = ""  # multi_value and sequence: the categorical column whose table it reads
    expected_ids: int = 0  # a table's distinct ids expected in the data (--ev's memory plan; 0: hash_buckets)

    @property
    def num_ids(self):
        """Rows of this column's embedding table."""
        return self.hash_buckets if self.hash_buckets else len(self.vocabulary) + 1

    @property
    def stored_ids(self):
        """The ids a dynamic table (--ev) of this column is planned to store: expected_ids when the schema
        gives it (`infer` writes its estimate), else the table's rows."""
        return self.expected_ids or self.num_ids

    @property
    def owns_table(self):
        """Whether the column has an embedding table of its own (a shared list column reads its owner's)."""
        return self.kind == "categorical" or (self.kind in LIST_KINDS and not self.shares_embedding_with)


@dataclass(frozen=True)
class Cross:
    """A crossed feature for linear (wide) models: the joint value of two or more categorical
    columns, hashed into `hash_buckets` rows."""
    name: str
    columns: Tuple[str, ...]
    hash_buckets: int


@dataclass(frozen=True)
class Schema:
    name: str
    columns: Tuple[Column, ...]
    source: str = "<memory>"
    crosses: Tuple[Cross, ...] = ()

    @property
    def label(self):
        """The first (main) label."""
        return self.labels[0]

    @property
    def labels(self):
        """Every label column, in schema order (one per task of a multi-task model)."""
        return [c for c in self.columns if c.kind == "label"]

    @property
    def group(self):
        """The GAUC group column, or None."""
        return next((c for c in self.columns if c.kind == "group"), None)

    @property
    def lists(self):
        """The multi_value and sequence columns, in schema order."""
        return [c for c in self.columns if c.kind in LIST_KINDS]

    @property
    def tables(self):
        """The columns that own an embedding table, in schema order: the categorical columns and the list
        columns that share no other column's table."""
        return [c for c in self.columns if c.owns_table]

    def table_of(self, column):
        """The column whose embedding table `column` (a column or its name) reads."""
        col = column if isinstance(column, Column) else next(c for c in self.columns if c.name == column)
        if col.shares_embedding_with:
            return next(c for c in self.columns if c.name == col.shares_embedding_with)
        return col

    @property
    def numeric(self):
        return [c for c in self.columns if c.kind == "numeric"]

    @property
    def categorical(self):
        return [c for c in self.columns if c.kind == "categorical"]

    @property
    def field_count(self):
        return len(self.columns)

    def reordered(self, names):
        """The same columns in the order `names` gives them (a file's header order), for reading."""
        by_name = {c.name: c for c in self.columns}
        return Schema(self.name, tuple(by_name[n] for n in names), self.source, self.crosses)

    def fingerprint(self):
        """Changes whenever a checkpoint made with this schema could no longer be restored."""
        def described_column(col):
            # (expected_ids plans memory and shapes nothing: a schema that adds it keeps its checkpoints)
            return {k: v for k, v in asdict(col).items()
                    if k != "expected_ids" and (k not in _LATER_KEYS or v != _LATER_KEYS[k])}
        described = [described_column(c) for c in self.columns] + [asdict(x) for x in self.crosses]
        text = json.dumps(described, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_embedding_dim(self, dim):
        """The same schema with every categorical column embedded in `dim` dimensions, or in
        `dim(column)` dimensions when `dim` is a function (a model's own sizing rule)."""
        width = dim if callable(dim) else (lambda col: dim)
        cols = tuple(Column(**{**asdict(c), "embedding_dim": width(c)}) if c.owns_table else c
                     for c in self.columns)
        return Schema(self.name, cols, self.source, self.crosses)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    """A finite int or float (JSON's true/false are not numbers; an int too large for a float is not finite)."""
    try:
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    except OverflowError:
        return False


# The type each optional key must have in the JSON (checked before any comparison, so that a string
# where a number belongs is named rather than raising TypeError), and how to say it.
VALUE_TYPES = {
    "dtype": (lambda v: isinstance(v, str), "a string"),
    "normalization": (lambda v: isinstance(v, str), "a string"),
    **{key: (_is_number, "a finite number") for key in ("mean", "std", "min", "max")},
    "hash_buckets": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "embedding_dim": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "vocabulary": (lambda v: isinstance(v, list) and all(isinstance(x, str) or _is_int(x) for x in v),
                   "a list of strings or integers"),
    "separator": (lambda v: isinstance(v, str) and len(v) == 1, "one character"),
    "max_length": (lambda v: _is_int(v) and v > 0, "an integer > 0"),
    "combiner": (lambda v: v in COMBINERS, f"one of {COMBINERS}"),
    "shares_embedding_with": (lambda v: isinstance(v, str) and v, "a column name"),
    "expected_ids": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
}
LIST_KEYS = ("separator", "max_length", "combiner", "shares_embedding_with")  # only for LIST_KINDS


def _column(raw, where):
    if not isinstance(raw, dict) or "name" not in raw or "kind" not in raw:
        raise SchemaError(f"{where}: expected an object with 'name' and 'kind', got {raw!r}"[:300])
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise SchemaError(f"{where}: 'name' must be a non-empty string, got {raw['name']!r}"[:300])
    unknown = set(raw) - set(Column.__dataclass_fields__)
    if unknown:
        raise SchemaError(f"{where} ({raw['name']}): unknown keys {sorted(unknown)}; "
                          f"accepted: {sorted(Column.__dataclass_fields__)}")
    kind = raw["kind"]
    if kind not in KINDS:
        raise SchemaError(f"{where} ({raw['name']}): kind {kind!r} is not one of {KINDS}"[:300])
    if kind in ("ignore", "group") and set(raw) != {"name", "kind"}:
        raise SchemaError(f"{where} ({raw['name']}): an {kind!r} column takes only 'name' and 'kind', got "
                          f"{sorted(set(raw) - {'name', 'kind'})}")
    misplaced = sorted(k for k in raw if k in LIST_KEYS and kind not in LIST_KINDS)
    if kind == "sequence" and "combiner" in raw:
        misplaced.append("combiner")  # a sequence is never pooled by the runner
    if misplaced:
        raise SchemaError(f"{where} ({raw['name']}): {misplaced} apply to "
                          f"{'multi_value' if kind == 'sequence' else 'multi_value or sequence'} columns only")
    if kind in LIST_KINDS and "max_length" not in raw:
        raise SchemaError(f"{where} ({raw['name']}): a {kind} column needs max_length (the ids kept a row)")
    if raw.get("shares_embedding_with") and \
            sorted(k for k in ("hash_buckets", "vocabulary", "embedding_dim", "expected_ids") if k in raw):
        raise SchemaError(f"{where} ({raw['name']}): a column that shares_embedding_with another takes that "
                          f"column's table: no hash_buckets, vocabulary or embedding_dim of its own (nor expected_ids)")
    for key, (ok, what) in VALUE_TYPES.items():
        if key in raw and not ok(raw[key]):
            raise SchemaError(f"{where} ({raw['name']}): {key} must be {what}, got {raw[key]!r}"[:300])
    values = dict(raw)
    if "vocabulary" in values:
        values["vocabulary"] = tuple(str(v) for v in values["vocabulary"])
    col = Column(**values)
    if col.dtype not in ("int64", "float32"):
        raise SchemaError(f"{where} ({col.name}): dtype {col.dtype!r} is not int64 or float32")
    if kind == "numeric" and col.normalization not in NORMALIZATIONS:
        raise SchemaError(f"{where} ({col.name}): normalization {col.normalization!r} is not one of "
                          f"{NORMALIZATIONS}")
    if kind == "numeric" and col.normalization == "standard" and not col.std > 0:
        raise SchemaError(f"{where} ({col.name}): 'standard' normalization needs std > 0")
    if kind == "numeric" and col.normalization == "minmax" and not col.max > col.min:
        raise SchemaError(f"{where} ({col.name}): 'minmax' normalization needs max > min")
    if col.owns_table:
        if bool(col.hash_buckets) == bool(col.vocabulary):
            raise SchemaError(f"{where} ({col.name}): a {kind} column needs exactly one of "
                              "'hash_buckets' (> 0) or 'vocabulary' (a list)")
        if col.hash_buckets < 0:
            raise SchemaError(f"{where} ({col.name}): hash_buckets must be positive")
        if len(col.vocabulary) > MAX_VOCABULARY:
            raise SchemaError(f"{where} ({col.name}): vocabulary of {len(col.vocabulary)} entries is larger "
                              f"than {MAX_VOCABULARY}; use hash_buckets")
        if col.embedding_dim <= 0:
            raise SchemaError(f"{where} ({col.name}): embedding_dim must be a positive integer")
    elif col.expected_ids:
        raise SchemaError(f"{where} ({col.name}): expected_ids counts the ids of a column's own table; "
                          f"a {kind} column has none")
    return col


def parse_schema(doc, source="<memory>"):
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), list):
        raise SchemaError(f"{source}: expected an object with a 'columns' list")
    if not isinstance(doc.get("crosses", []), list) or not isinstance(doc.get("name", ""), str):
        raise SchemaError(f"{source}: expected 'crosses' to be a list and 'name' a string")
    cols = tuple(_column(c, f"{source}: column {i + 1}") for i, c in enumerate(doc["columns"]))
    names = [c.name for c in cols]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"{source}: duplicate column names {dupes}")
    if not any(c.kind == "label" for c in cols):
        raise SchemaError(f"{source}: expected at least one column of kind 'label'")
    if sum(c.kind == "group" for c in cols) > 1:
        raise SchemaError(f"{source}: expected at most one column of kind 'group', found "
                          f"{[c.name for c in cols if c.kind == 'group']}")
    if not any(c.kind == "categorical" for c in cols):
        raise SchemaError(f"{source}: expected at least one categorical column")
    kinds = {c.name: c.kind for c in cols}
    for c in cols:
        if c.shares_embedding_with and kinds.get(c.shares_embedding_with) != "categorical":
            raise SchemaError(f"{source} ({c.name}): shares_embedding_with {c.shares_embedding_with!r} must name a "
                              f"categorical column of the schema (categorical: "
                              f"{[n for n, k in kinds.items() if k == 'categorical']})"[:300])
    crosses = tuple(_cross(x, f"{source}: cross {i + 1}", cols) for i, x in enumerate(doc.get("crosses", [])))
    return Schema(doc.get("name", Path(source).stem), cols, source, crosses)


def _cross(raw, where, cols):
    categorical = {c.name for c in cols if c.kind == "categorical"}
    if not isinstance(raw, dict) or set(raw) != {"name", "columns", "hash_buckets"}:
        raise SchemaError(f"{where}: expected an object with exactly 'name', 'columns' and 'hash_buckets', "
                          f"got {raw!r}")
    members = raw["columns"]
    if not isinstance(members, list) or len(members) < 2 or \
            not all(isinstance(m, str) and m in categorical for m in members):
        raise SchemaError(f"{where} ({raw['name']!r}): 'columns' must list two or more categorical columns of "
                          f"the schema, got {members!r}"[:300])
    if not isinstance(raw["name"], str):
        raise SchemaError(f"{where}: 'name' must be a string, got {raw['name']!r}"[:300])
    if not _is_int(raw["hash_buckets"]) or raw["hash_buckets"] <= 0:
        raise SchemaError(f"{where} ({raw['name']}): hash_buckets must be a positive integer")
    return Cross(raw["name"], tuple(members), raw["hash_buckets"])


def load_schema(name_or_path):
    """Load `criteo` (a schema shipped in modelzoo/schemas) or a path to a JSON schema file."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCHEMA_DIR / f"{name_or_path}.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SchemaError(f"schema file {path} does not exist") from None
    except OSError as err:  # a folder, no permission
        raise SchemaError(f"{path}: cannot read the schema file ({err.strerror})") from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise SchemaError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start + 1})") from None
    except (json.JSONDecodeError, RecursionError) as err:  # (the decoder's message is one line)
        raise SchemaError(f"{path}: not valid JSON: {err}") from None
    return parse_schema(doc, str(path))


def schema_summary(schema: Schema):
    cats = schema.categorical
    rows = sum(c.num_ids for c in schema.tables)
    ignored = sum(c.kind == "ignore" for c in schema.columns)
    lists = {kind: sum(c.kind == kind for c in schema.columns) for kind in LIST_KINDS}
    return (f"schema {schema.name}: {len(schema.numeric)} numeric, {len(cats)} categorical"
            + "".join(f", {n} {kind}" for kind, n in lists.items() if n)
            + (f", {ignored} ignored" if ignored else "") + f" columns, {rows:,} embedding rows")


# --- python -m modelzoo.schema infer FILE --label COLUMN: a schema from a sample of a file -----------------

INFER_ROWS = 100_000  # rows sampled from the start of the file (--rows)
BUCKET_FACTOR = 2  # hash buckets >= this x the distinct values expected in the file (fewer collisions)
MAX_BUCKETS = 1 << 20  # and at most this many rows per table (--max_buckets)
MIN_BUCKETS = 16
INFER_EMBEDDING_DIM = 16  # a model may impose its own widths (DLRM 16, Wide & Deep 64/128)
ID_MIN_ROWS = 100  # integers or strings all distinct in at least this many rows: a row id


def buckets_for(distinct, factor=BUCKET_FACTOR, cap=MAX_BUCKETS):
    """The smallest power of two >= factor x the distinct values (at least MIN_BUCKETS), capped."""
    need = max(1, math.ceil(distinct * factor))
    return min(cap, max(MIN_BUCKETS, 1 << (need - 1).bit_length()))


def distinct_in_file(distinct, singletons, sample_rows, file_rows):
    """The distinct values expected in a file of `file_rows` rows from its first `sample_rows`, where
    `distinct` values were seen, `singletons` of them once. Heaps' law, D(n) = D(sample) x (n /
    sample)^b, with b = singletons / distinct: by Good-Turing the chance that the next row brings a new
    value is singletons / sample_rows, the slope of D(n) at the sample's end, and a power law with that
    slope there has exactly this exponent. Why this one: ids whose frequencies follow a power law (Zipf,
    as Criteo's do) keep bringing new values, and for them the singleton share tends to the exponent of
    D(n) (Karlin, 1967), so it extrapolates hundreds of times the sample; estimators of a finite total
    (Chao1) level off near a few times the sample's count there. A column whose values all recur
    (no singletons) keeps its count; one with a finite set of values each seen only a few times is
    overestimated, as if new values kept coming."""
    if file_rows <= sample_rows or distinct == 0:
        return distinct
    return min(file_rows, distinct * (file_rows / sample_rows) ** (singletons / distinct))


def _sample(path, rows):
    """The first `rows` + 1 lines of a file (as bytes), the file's lines and whether the sample holds all
    of them (then counted; else estimated from the file's size over the sample's bytes per line, for .gz
    compressed bytes, which the reader reads up to 128 KB ahead of the sample: the rows are then underestimated
    by at most 128 KB over the sample's compressed size), without reading the rest."""
    import os
    from modelzoo.datafiles import DataError, UNREADABLE, open_binary
    lines = []
    try:
        with open_binary(path) as f:
            for raw in f:
                lines.append(raw)
                if len(lines) > rows:
                    break
            else:
                return lines, len(lines), True
            used = f.fileobj.tell() if hasattr(f, "fileobj") else sum(map(len, lines))
    except UNREADABLE as err:
        raise DataError(f"{path}: cannot be read: {err}") from None
    return lines, max(len(lines), round(os.path.getsize(path) * len(lines) / max(used, 1))), False


def _sig(x):
    return float(f"{x:.6g}")


def infer(path, label, rows=INFER_ROWS, header="auto", numeric=(), categorical=(), ignore=(),
          factor=BUCKET_FACTOR, cap=MAX_BUCKETS, name=None, file_rows=None, sequence=()):
    """A schema document for FILE from its first `rows` rows, and notes on what was decided.

    Columns are named by the header line (detected when it holds --label), else c1..cN. The label
    must hold 0/1. Unless named in numeric/categorical/ignore: a column of decimal numbers that are
    not all integers is numeric (`standard` normalization with the sample's mean and std, a missing
    value counted as 0, as the reader reads it); integers or strings whose values are all distinct
    are a row id (ignore); everything else (strings, integer ids and codes) is categorical, hashed into
    buckets_for(distinct_in_file(...)) rows: its distinct values extrapolated to the file's rows
    (`file_rows`, else estimated from the file's size). Integer counts that should be numeric are named
    with `numeric`. A Parquet file (.parquet) is read by column name, its rows counted from its footer, its
    values judged by their text (an integer by its digits, a null as an empty field); its list columns are
    multi_value, or sequence when named in `sequence` (whether a list is an ordered history is not in its
    type), with max_length the longest list sampled and buckets for the distinct ids expected."""
    import re
    from modelzoo.datafiles import FLOAT_PATTERN, INT_PATTERN, DataError
    if str(path).endswith(".parquet"):
        from modelzoo.parquet import sample_text
        names, columns, lists, file_rows, how, described = sample_text(path, label, rows)
    else:
        names, columns, file_rows, how, described = _text_sample(path, label, rows, header, file_rows)
        lists = {}
    for given, what in ((numeric, "--numeric"), (categorical, "--categorical"), (ignore, "--ignore"),
                        (sequence, "--sequence")):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise DataError(f"{what} {','.join(unknown)}: not a column of {path} (its columns: "
                            f"{', '.join(names[:30])})")
    not_lists = [n for n in sequence if n not in lists]
    if not_lists:
        raise DataError(f"--sequence {','.join(not_lists)}: not a list column of {path} (only the list columns "
                        "of a Parquet file are read as lists)")
    sampled = len(columns[0])
    is_int, is_float = re.compile(INT_PATTERN).fullmatch, re.compile(FLOAT_PATTERN).fullmatch
    is_digits = re.compile("[-+]?[0-9]+").fullmatch
    out, notes = [], []
    for col_name, values in zip(names, columns):
        if col_name in lists and col_name not in ignore:
            out.append(_list_column(col_name, values, col_name in sequence, file_rows, factor, cap, notes))
            continue
        present = [v for v in values if v]
        distinct = len(set(values))
        ints = bool(present) and all(is_int(v) for v in present)
        floats = bool(present) and all(is_float(v) for v in present)
        whole = bool(present) and all(is_digits(v) for v in present)  # (ids may have more than 18 digits)
        if col_name == label:
            bad = sorted(set(values) - {"0", "1"})
            if bad:
                raise DataError(f"{path}: label column {label!r} holds {bad[:5]}, expected 0 or 1")
            out.append({"name": col_name, "kind": "label"})
        elif col_name in ignore:
            out.append({"name": col_name, "kind": "ignore"})
        elif not present and col_name not in categorical:
            out.append({"name": col_name, "kind": "ignore"})
            notes.append(f"{col_name}: ignore (empty in the {sampled:,} rows sampled)")
        elif (whole or not floats) and distinct == len(values) >= ID_MIN_ROWS and col_name not in categorical \
                and col_name not in numeric:
            out.append({"name": col_name, "kind": "ignore"})
            notes.append(f"{col_name}: ignore (a row id: all {len(values):,} values distinct; "
                         f"--categorical {col_name} to embed it)")
        elif col_name in numeric or (floats and not whole and col_name not in categorical):
            if not floats:
                example = next(v for v in present if not is_float(v))
                raise DataError(f"--numeric {col_name}: {example!r} is not a decimal number")
            xs = [float(v) if v else 0.0 for v in values]
            mean = sum(xs) / len(xs)
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
            entry = {"name": col_name, "kind": "numeric", "dtype": "int64" if ints else "float32",
                     "normalization": "standard" if std > 0 else "none", "mean": _sig(mean),
                     "std": _sig(std) if std > 0 else 1.0, "min": _sig(min(xs)), "max": _sig(max(xs))}
            out.append(entry)
            notes.append(f"{col_name}: numeric {entry['dtype']}, mean {entry['mean']:g}, std {entry['std']:g}"
                         + ("" if std > 0 else " (constant in the sample: not normalized)"))
        else:
            seen_once = sum(1 for n in Counter(values).values() if n == 1)
            expected = math.ceil(distinct_in_file(distinct, seen_once, sampled, file_rows))
            buckets = buckets_for(expected, factor, cap)
            out.append({"name": col_name, "kind": "categorical", "hash_buckets": buckets,
                        "embedding_dim": INFER_EMBEDDING_DIM, "expected_ids": expected})
            grows = "" if file_rows == sampled else (
                f", {seen_once:,} seen once -> ~{expected:,} in the file's {file_rows:,} rows (Heaps' law, exponent "
                f"{seen_once / distinct:.2f}: the share seen once)")
            notes.append(f"{col_name}: categorical, {distinct:,} distinct values{grows} -> {buckets:,} hash buckets"
                         + (f" (capped: --max_buckets {cap:,})" if buckets == cap and expected * factor > cap else "")
                         + (" (integers: --numeric to read them as numbers)" if ints else ""))
    doc = {"name": name or Path(path).name.split(".")[0],
           "description": f"inferred by python -m modelzoo.schema infer from the first {sampled:,} rows of "
                          f"{Path(path).name} ({described}; {file_rows:,} rows: "
                          f"{how}); hash buckets >= {factor:g} x the distinct values expected in those rows, "
                          f"at most {cap:,}",
           "columns": out}
    notes.insert(0, f"{file_rows:,} rows in {Path(path).name} ({how}); sampled the first {sampled:,}")
    parse_schema(doc, str(path))  # what a model would refuse, refused now
    return doc, notes


def _list_column(name, values, is_sequence, file_rows, factor, cap, notes):
    """The schema entry of a list column from its sampled lists of ids (text): max_length the longest list,
    hash buckets for the distinct ids expected in the file (distinct_in_file over the ids drawn)."""
    tokens = [t for v in values for t in v]
    counts = Counter(tokens)
    once = sum(1 for n in counts.values() if n == 1)
    expected = math.ceil(distinct_in_file(len(counts), once, len(tokens), len(tokens) * file_rows / len(values))) \
        if tokens else 1
    longest = max(1, max(len(v) for v in values))
    kind = "sequence" if is_sequence else "multi_value"
    hint = "" if is_sequence else f"; --sequence {name} if it is an ordered history"
    notes.append(f"{name}: {kind} (a list column{hint}), lists of up to {longest:,} ids (max_length), "
                 f"{len(counts):,} distinct ids -> ~{expected:,} in the file -> "
                 f"{buckets_for(expected, factor, cap):,} hash buckets")
    return {"name": name, "kind": kind, "max_length": longest, "hash_buckets": buckets_for(expected, factor, cap),
            "embedding_dim": INFER_EMBEDDING_DIM, "expected_ids": expected}


def _text_sample(path, label, rows, header, file_rows):
    """A CSV/TSV file's column names, its first `rows` rows' values by column (text), its rows, how they
    were counted, and its format in words."""
    from modelzoo.datafiles import DELIMITERS, DataError
    lines, file_lines, whole_file = _sample(path, rows)
    try:
        text = [raw.decode("utf-8").rstrip("\r\n").replace("\r", "") for raw in lines]
    except UnicodeDecodeError as err:
        line = next(k for k, raw in enumerate(lines) if not _decodes(raw)) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 text ({err.reason})") from None
    if not text or not text[0]:
        raise DataError(f"{path}: file is empty (or its first line is), expected rows of data")
    first = text[0].lstrip("\ufeff")
    delim = max(DELIMITERS, key=lambda d: first.count(d))
    fields = first.split(delim)
    if header == "auto":
        header = "true" if label in fields else "false"
    if header == "true":
        names, body, offset = fields, text[1:], 2
        if label not in names:
            raise DataError(f"{path}:1: the header {first[:200]!r} has no column {label!r} (--label)")
    else:
        names, body, offset = [f"c{i + 1}" for i in range(len(fields))], text, 1
        if label not in names:
            raise DataError(f"{path}: no header line holds {label!r}; without one the columns are named c1..c"
                            f"{len(names)}: give --label c1 (or the label's position)")
    body = body[:rows]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or "" in names:
        raise DataError(f"{path}:1: the header names columns twice or not at all: {dupes or ['']}")
    if not body:
        raise DataError(f"{path}: no data rows after the header line")
    if whole_file and len(body) <= rows:
        file_rows, how = len(body), "all of them"
    elif file_rows:
        file_rows, how = max(file_rows, len(body)), "--file_rows"
    else:
        file_rows, how = max(file_lines - (header == "true"), len(body)), "estimated from the file's size"
    columns = list(zip(*[_split(row, delim, len(names), path, k + offset) for k, row in enumerate(body)]))
    return names, columns, file_rows, how, (f"{DELIMITERS[delim]}-separated, "
                                            f"{'a header line' if header == 'true' else 'no header line'}")


def _decodes(raw):
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _split(row, delim, count, path, line):
    from modelzoo.datafiles import DataError
    fields = row.split(delim)
    if len(fields) != count:
        raise DataError(f"{path}:{line}: expected {count} fields, found {len(fields)}")
    return fields


def _names(text):
    return tuple(n.strip() for n in text.split(",") if n.strip())


def main(argv=None):
    """`python -m modelzoo.schema infer FILE --label COLUMN [...]`: print or --output the schema JSON."""
    import argparse
    import sys
    from modelzoo.datafiles import DataError
    from modelzoo.io_utils import OutputError, atomic_write_text
    parser = argparse.ArgumentParser(prog="python -m modelzoo.schema", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("infer", help="write a schema JSON from a sample of a CSV/TSV or Parquet file",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("file", help="a data file (plain or .gz), tab- or comma-separated (detected), or .parquet")
    p.add_argument("--label", required=True, help="the 0/1 label column: a header name, or cN without a header")
    p.add_argument("--rows", type=int, default=INFER_ROWS, help="rows sampled from the start of the file")
    p.add_argument("--header", choices=("auto", "true", "false"), default="auto",
                   help="whether line 1 names the columns (auto: when it holds --label)")
    p.add_argument("--numeric", type=_names, default=(), help="columns to read as numbers (comma-separated)")
    p.add_argument("--categorical", type=_names, default=(), help="columns to hash as ids (comma-separated)")
    p.add_argument("--ignore", type=_names, default=(), help="columns no model reads (comma-separated)")
    p.add_argument("--sequence", type=_names, default=(),
                   help="list columns of a Parquet file that are ordered histories (kind sequence; the other list "
                        "columns are multi_value), comma-separated")
    p.add_argument("--bucket_factor", type=float, default=BUCKET_FACTOR,
                   help="hash buckets >= this x the distinct values expected in the file (rounded up to a "
                        "power of two)")
    p.add_argument("--max_buckets", type=int, default=MAX_BUCKETS, help="at most this many buckets per column")
    p.add_argument("--file_rows", type=int, default=0,
                   help="the file's rows, if known (0: counted when the sample holds the whole file, else "
                        "estimated from its size over the sample's bytes per row)")
    p.add_argument("--name", default=None, help="the schema's name (default: the file's)")
    p.add_argument("--output", default="-", help="where to write the JSON (- : standard output)")
    args = parser.parse_args(argv)
    if args.rows <= 0 or args.max_buckets < MIN_BUCKETS or not args.bucket_factor >= 1 or args.file_rows < 0:
        parser.error(f"--rows must be positive, --max_buckets >= {MIN_BUCKETS}, --bucket_factor >= 1 and "
                     "--file_rows >= 0")
    try:
        doc, notes = infer(args.file, args.label, args.rows, args.header, args.numeric, args.categorical,
                           args.ignore, args.bucket_factor, args.max_buckets, args.name, args.file_rows,
                           args.sequence)
        text = json.dumps(doc, indent=1) + "\n"
        if args.output == "-":
            sys.stdout.write(text)
        else:
            atomic_write_text(args.output, text)
    except (DataError, SchemaError, OutputError) as err:
        print(f"python -m modelzoo.schema infer: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"python -m modelzoo.schema infer: error: cannot write --output {args.output}: {err.strerror}",
              file=sys.stderr)
        return 1
    for note in notes:
        print(note, file=sys.stderr)
    if args.output != "-":
        print(f"wrote {args.output}: {schema_summary(parse_schema(doc, args.output))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

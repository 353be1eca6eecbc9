"""Declarative feature schemas: a model's feature set is data (a JSON file), not code.

A schema lists the columns of the input file in order. Each column has a kind:
- `label`: the 0/1 target;
- `numeric`: an integer or float feature with a normalization (`log1p`, `standard`, `minmax`, `none`);
- `categorical`: a string or integer id mapped to a row of an embedding table, either by hashing into
  `hash_buckets` rows or through a `vocabulary` list (unknown values share one extra row).
An optional `crosses` list names crossed features for wide (linear) models:
`{"name": "C1_x_C2", "columns": ["C1", "C2"], "hash_buckets": 100000}`.
This module has no TensorFlow import; modelzoo/features.py turns a schema into tensors.
"""
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Tuple

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KINDS = ("label", "numeric", "categorical")
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

    @property
    def num_ids(self):
        """Rows of this column's embedding table."""
        return self.hash_buckets if self.hash_buckets else len(self.vocabulary) + 1


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
        return next(c for c in self.columns if c.kind == "label")

    @property
    def numeric(self):
        return [c for c in self.columns if c.kind == "numeric"]

    @property
    def categorical(self):
        return [c for c in self.columns if c.kind == "categorical"]

    @property
    def field_count(self):
        return len(self.columns)

    def fingerprint(self):
        """Changes whenever a checkpoint made with this schema could no longer be restored."""
        described = [asdict(c) for c in self.columns] + [asdict(x) for x in self.crosses]
        text = json.dumps(described, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_embedding_dim(self, dim):
        """The same schema with every categorical column embedded in `dim` dimensions, or in
        `dim(column)` dimensions when `dim` is a function (a model's own sizing rule)."""
        width = dim if callable(dim) else (lambda col: dim)
        cols = tuple(Column(**{**asdict(c), "embedding_dim": width(c)}) if c.kind == "categorical" else c
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
}


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
    if kind == "categorical":
        if bool(col.hash_buckets) == bool(col.vocabulary):
            raise SchemaError(f"{where} ({col.name}): a categorical column needs exactly one of "
                              "'hash_buckets' (> 0) or 'vocabulary' (a list)")
        if col.hash_buckets < 0:
            raise SchemaError(f"{where} ({col.name}): hash_buckets must be positive")
        if len(col.vocabulary) > MAX_VOCABULARY:
            raise SchemaError(f"{where} ({col.name}): vocabulary of {len(col.vocabulary)} entries is larger "
                              f"than {MAX_VOCABULARY}; use hash_buckets")
        if col.embedding_dim <= 0:
            raise SchemaError(f"{where} ({col.name}): embedding_dim must be a positive integer")
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
    labels = [c for c in cols if c.kind == "label"]
    if len(labels) != 1:
        raise SchemaError(f"{source}: expected exactly one column of kind 'label', found {len(labels)}")
    if not any(c.kind == "categorical" for c in cols):
        raise SchemaError(f"{source}: expected at least one categorical column")
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
    rows = sum(c.num_ids for c in cats)
    return (f"schema {schema.name}: {len(schema.numeric)} numeric, {len(cats)} categorical columns, "
            f"{rows:,} embedding rows")

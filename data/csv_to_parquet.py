#!/usr/bin/env python
"""Convert a CSV/TSV file the models read to Parquet, typed by the schema.

    python data/csv_to_parquet.py --input ~/criteo/train.txt --output ~/criteo/train.parquet          # Criteo
    python data/csv_to_parquet.py --input log.csv --schema my_schema.json --output log.parquet

Any file the models read converts: Criteo's tab-separated train.txt, DeepRec's comma-separated CSV,
with or without a header line (--header, as the models take it), plain or .gz, with any schema. Each
row is checked as the models check it (modelzoo/datafiles.row_problem): a bad row stops the run naming
the file, line and problem. Columns are typed by the schema: the label int8, numeric columns int64 or
float32 (an empty field null, which the Parquet reader reads as 0, as the CSV reader does), ids and
the group column strings (exactly the text the CSV reader hashes), multi_value and sequence columns
list<string> (split at their separator, empty tokens dropped), "ignore" columns strings. The rows are
streamed, --row_group_rows at a time (one row group each): memory stays bounded and time linear in the
file. The output is written under a temporary name and renamed when complete.
"""
import argparse
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from modelzoo.datafiles import (UNREADABLE, DataError, float32_overflows, open_binary, read_layout,  # noqa: E402
                                row_pattern, row_problem)
from modelzoo.io_utils import atomic_writer  # noqa: E402
from modelzoo.schema import LIST_KINDS, SchemaError, load_schema  # noqa: E402

ROW_GROUP_ROWS = 100_000


def arrow_schema(schema):
    """The Parquet columns of `schema`, in its order."""
    import pyarrow as pa
    types = {"label": pa.int8(), "categorical": pa.string(), "group": pa.string(), "ignore": pa.string()}
    fields = []
    for col in schema.columns:
        if col.kind == "numeric":
            kind = pa.int64() if col.dtype == "int64" else pa.float32()
        elif col.kind in LIST_KINDS:
            kind = pa.list_(pa.string())
        else:
            kind = types[col.kind]
        fields.append(pa.field(col.name, kind))
    return pa.schema(fields)


def typed(col, values):
    """One column's text fields as the Python values of its Parquet type."""
    if col.kind == "label":
        return [int(v) for v in values]
    if col.kind == "numeric":
        cast = int if col.dtype == "int64" else float
        return [cast(v) if v else None for v in values]
    if col.kind in LIST_KINDS:
        return [[t for t in v.split(col.separator) if t] for v in values]
    return values


def rows(path, schema, layout):
    """The rows of a file as lists of text fields (in the file's column order), each checked as the models
    check it; a bad one is a DataError naming the file and line."""
    file_schema = schema.reordered(layout.columns)
    pattern = re.compile(row_pattern(file_schema, layout.delimiter, python=True))
    floats = [k for k, c in enumerate(file_schema.columns) if c.kind == "numeric" and c.dtype == "float32"]
    with open_binary(path) as f:
        try:
            for index, raw in enumerate(f):
                if index == 0 and layout.header:
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}:{index + 1}: not valid UTF-8 text ({err.reason})") from None
                line = (line[:-1] if line.endswith("\n") else line).replace("\r", "")
                fields = line.split(layout.delimiter)
                if not pattern.fullmatch(line) or any(fields[k] and float32_overflows(fields[k]) for k in floats):
                    raise DataError(f"{path}:{index + 1}: {row_problem(line, file_schema, layout.delimiter)}")
                yield fields
        except UNREADABLE as err:
            raise DataError(f"{path}: cannot be read: {err}") from None


def convert(path, schema, output, header="auto", row_group_rows=ROW_GROUP_ROWS):
    """Write `path` as the Parquet file `output` (atomically); returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    layout = read_layout(path, schema, header)
    position = {name: k for k, name in enumerate(layout.columns)}
    target = arrow_schema(schema)
    written = 0
    with atomic_writer(output, "wb") as f, pq.ParquetWriter(f, target) as writer:
        def flush(chunk):
            columns = [pa.array(typed(col, [row[position[col.name]] for row in chunk]), target.field(col.name).type)
                       for col in schema.columns]
            writer.write_table(pa.Table.from_arrays(columns, schema=target), row_group_size=len(chunk))
        chunk = []
        for fields in rows(path, schema, layout):
            chunk.append(fields)
            if len(chunk) == row_group_rows:
                flush(chunk)
                written, chunk = written + len(chunk), []
        if chunk:
            flush(chunk)
            written += len(chunk)
        if not written:
            raise DataError(f"{path}: no rows of data")
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", required=True, help="a CSV/TSV file the models read (plain or .gz)")
    parser.add_argument("--output", required=True, help="the Parquet file to write (ends in .parquet)")
    parser.add_argument("--schema", default="criteo", help="a schema shipped in modelzoo/schemas, or a JSON file")
    parser.add_argument("--header", choices=("auto", "true", "false"), default="auto",
                        help="whether line 1 names the columns (as the models' --header)")
    parser.add_argument("--row_group_rows", type=int, default=ROW_GROUP_ROWS, help="rows per Parquet row group")
    args = parser.parse_args(argv)
    if not args.output.endswith(".parquet"):
        parser.error(f"--output {args.output}: must end in .parquet (the models tell Parquet files by that)")
    if args.row_group_rows <= 0:
        parser.error("--row_group_rows must be positive")
    try:
        n = convert(args.input, load_schema(args.schema), args.output, args.header, args.row_group_rows)
    except (DataError, SchemaError) as err:
        print(f"csv_to_parquet.py: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"csv_to_parquet.py: error: cannot write --output {args.output}: {err.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {n:,} rows in row groups of {args.row_group_rows:,}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Score raw Criteo-format rows with an exported SavedModel, in stock TensorFlow (no TFRA, no training code).

    python -m modelzoo.serve EXPORT_DIR ROWS_FILE [--output OUT.csv] [--request OUT.json] [--batch N]

ROWS_FILE holds lines in the model's schema (tab- or comma-separated, detected from the first line),
with or without the leading label; a header line (most of line 1 is the schema's column names) has
the columns matched by name, in any order, as the training reader's --header does. Prints (or writes to
--output, atomically) `probability` per row,
in file order, with the label first when the rows have one. `--request` also writes the rows as a
TF Serving REST `:predict` request body (columnar "inputs" of the serving_default signature), which
`POST http://HOST:8501/v1/models/NAME:predict` answers with {"outputs": {"probabilities": [...]}}.
"""
import argparse
import dataclasses
import json
import sys

from modelzoo.io_utils import atomic_writer


class ServeError(Exception):
    pass


def signature_inputs(fn):
    """{input name: tf.DType} of a loaded serving_default signature."""
    return {name: spec.dtype for name, spec in fn.structured_input_signature[1].items()}


def parse_rows(path, schema):
    """Raw columns {name: [values]} and the labels (None without them: rows [label(s)...] per row) of a
    Criteo-format file; a bad row is a ServeError naming file and line."""
    from modelzoo.datafiles import row_problem
    columns = [c for c in schema.columns if c.kind not in ("label", "group")]  # (serving never asks for a group)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = [line.rstrip("\r\n").replace("\r", "") for line in f]
    except UnicodeDecodeError as err:
        raise ServeError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    lines = [line for line in lines if line] if lines and not lines[-1] else lines
    if not lines:
        raise ServeError(f"{path}: file is empty")
    delimiter = "\t" if "\t" in lines[0] else ","
    first, names = lines[0].lstrip("\ufeff").split(delimiter), {c.name for c in schema.columns}
    header = 2 * sum(f in names for f in first) > len(first)  # line 1 names the columns (as --header auto)
    if header:
        schema = header_order(path, schema, first)
        lines = lines[1:]
    with_label = len(lines[0].split(delimiter)) == len(schema.columns) if lines else False
    if not with_label:  # the rows lack the label column(s)
        schema = dataclasses.replace(schema, columns=tuple(c for c in schema.columns if c.kind != "label"))
    raw, labels = {c.name: [] for c in columns}, [] if with_label else None
    for number, line in enumerate(lines, 1 + header):
        problem = row_problem(line, schema, delimiter)
        if problem:
            raise ServeError(f"{path}:{number}: {problem}")
        fields = line.split(delimiter)
        if with_label:
            labels.append([int(v) for col, v in zip(schema.columns, fields) if col.kind == "label"])
        for col, value in zip(schema.columns, fields):
            if col.kind == "numeric":
                raw[col.name].append((int(value) if col.dtype == "int64" else float(value)) if value else 0)
            elif col.kind in ("categorical", "multi_value", "sequence"):  # (a list column: its joined ids as is)
                raw[col.name].append(value)
    return raw, labels


def header_order(path, schema, fields):
    """The schema in a header's column order (label first when the header has none): columns are
    matched by name, as the training reader matches them; a missing or unknown column is refused."""
    names = {c.name for c in schema.columns}
    missing = [c.name for c in schema.columns if c.kind not in ("label", "ignore", "group") and c.name not in fields]
    unknown = [f for f in fields if f not in names]
    if missing or unknown:
        raise ServeError(f"{path}:1: the header " + (f"lacks the schema's column(s) {missing[:8]}" if missing else
                         f"names column(s) {unknown[:8]} that the schema {schema.name} does not have"))
    absent = [c.name for c in schema.columns if c.name not in fields]  # labels (first), a group column
    return schema.reordered(absent + fields)


def rest_request(raw):
    """The TF Serving REST :predict body for these raw columns (columnar format)."""
    return {"signature_name": "serving_default", "inputs": raw}


def score(fn, raw, batch=4096):
    """{output: probabilities of the rows} through the signature (`probabilities`, and a multi-task model's
    `probabilities_<task>`), `batch` rows at a time."""
    import numpy as np
    import tensorflow as tf
    dtypes = signature_inputs(fn)
    missing = sorted(set(dtypes) - set(raw))
    if missing:
        raise ServeError(f"the SavedModel's signature needs the columns {missing}, which the rows lack")
    rows = len(next(iter(raw.values())))
    names = sorted(fn.structured_outputs, key=lambda name: (name != "probabilities", name))
    out = {name: [np.zeros([0], np.float32)] for name in names}
    for start in range(0, rows, batch):
        feed = {k: tf.constant(raw[k][start:start + batch], dtypes[k]) for k in dtypes}
        got = fn(**feed)
        for name in names:
            out[name].append(got[name].numpy().reshape(-1))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m modelzoo.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", help="a SavedModel folder (CHECKPOINT/export/TIMESTAMP)")
    p.add_argument("rows", help="Criteo-format rows (TSV or CSV), with or without the label")
    p.add_argument("--schema", default="criteo", help="the model's feature schema (name or JSON file)")
    p.add_argument("--output", help="write the scores there (CSV) instead of printing them")
    p.add_argument("--request", help="also write the rows as a TF Serving REST :predict request body (JSON)")
    p.add_argument("--batch", type=int, default=4096, help="rows per call of the signature")
    args = p.parse_args(argv)
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        if args.batch < 1:  # range(0, rows, -1) would score nothing and exit 0; range(..., 0) is a ValueError
            raise ServeError(f"--batch {args.batch}: give a positive number of rows per call")
        from modelzoo.schema import SchemaError, load_schema
        try:
            schema = load_schema(args.schema)
        except SchemaError as err:
            raise ServeError(f"--schema {args.schema}: {err}") from None
        if not os.path.isfile(os.path.join(args.export_dir, "saved_model.pb")):
            raise ServeError(f"{args.export_dir}: not a SavedModel folder (no saved_model.pb)")
        if not os.path.isfile(args.rows):
            raise ServeError(f"{args.rows}: no such file")
        raw, labels = parse_rows(args.rows, schema)
        import tensorflow as tf
        fn = tf.saved_model.load(args.export_dir).signatures["serving_default"]
        probs = score(fn, raw, args.batch)
        if args.request:
            with atomic_writer(args.request) as f:
                json.dump(rest_request(raw), f)
        label_names = [c.name for c in schema.columns if c.kind == "label"]
        header = ((["label"] if len(label_names) == 1 else label_names) if labels is not None else []) + \
            [name.replace("probabilities", "probability") for name in probs]
        columns = [[row[k] for row in labels] for k in range(len(label_names))] if labels is not None else []
        columns += [[f"{p:.6f}" for p in values] for values in probs.values()]
        text = ",".join(header) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in zip(*columns))
        if args.output:
            with atomic_writer(args.output) as f:
                f.write(text)
            print(f"scored {len(probs['probabilities']):,} rows with {args.export_dir} -> {args.output}",
                  file=sys.stderr)
        else:
            sys.stdout.write(text)
    except ServeError as err:
        print(f"modelzoo.serve: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

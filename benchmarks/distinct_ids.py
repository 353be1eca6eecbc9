"""Distinct values per categorical column of a Criteo-format file's first N rows (its training part): the ids a
--ev run without an admission filter stores, to hold the memory plan's estimate (a schema's hash_buckets)
against (issue 27). Values are hashed to 64 bits (pandas.util.hash_array; a collision among 10M values has a
chance of about 3e-6), so it streams in chunks with memory bounded by the distinct values.

    python benchmarks/distinct_ids.py /work/scale-data/45840617/train.txt --rows 41256555
    python benchmarks/distinct_ids.py /work/scale-data/45840617/train.txt --rows 41256555 --reuse \
        --schema_out /work/scale-data/criteo_full_counted.json

Writes benchmarks/results/distinct_ids.{json,md}; --schema_out also writes modelzoo/schemas/criteo_full.json
with each column's count as its `expected_ids` (the ids --ev's memory plan counts), and --reuse takes the
counts from the stored result when it was made from the same path and rows (counting 41M rows takes 16 min).
"""
import json
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import write_report  # noqa: E402
from modelzoo.synthetic import CAT_COLUMNS, COLUMNS, CRITEO_KAGGLE_CARDINALITIES  # noqa: E402


def distinct(path, rows, chunk_rows=2_000_000):
    """{column: distinct non-empty values} over the first `rows` rows of the tab-separated file."""
    seen = {c: np.empty(0, np.uint64) for c in CAT_COLUMNS}
    read = 0
    for chunk in pd.read_csv(path, sep="\t", header=None, names=COLUMNS, usecols=CAT_COLUMNS, dtype=str,
                             nrows=rows, chunksize=chunk_rows, na_filter=True):
        for c in CAT_COLUMNS:
            values = chunk[c].dropna().to_numpy()
            seen[c] = np.union1d(seen[c], np.unique(pd.util.hash_array(values)))
        read += len(chunk)
        print(f"{read:,} rows: {sum(len(v) for v in seen.values()):,} distinct ids", flush=True)
    return {c: int(len(v)) for c, v in seen.items()}, read


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path")
    p.add_argument("--rows", type=int, default=None, help="the first ROWS rows (default: all)")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "distinct_ids"))
    p.add_argument("--reuse", action="store_true", help="the counts of OUTPUT.json when it counted PATH's ROWS")
    p.add_argument("--schema_out", default=None, help="write criteo_full with the counts as expected_ids here")
    a = p.parse_args(argv)
    start = time.perf_counter()
    stored = Path(a.output + ".json")
    previous = json.loads(stored.read_text()) if a.reuse and stored.exists() else {}
    if previous.get("path") == a.path and previous.get("rows") == a.rows:
        print(f"counts of {stored} reused ({a.path}, {a.rows:,} rows)")
        write_schema(previous["distinct"], a.schema_out)
        return
    counts, read = distinct(a.path, a.rows)
    total, kaggle = sum(counts.values()), sum(CRITEO_KAGGLE_CARDINALITIES.values())
    lines = ["# Distinct ids per column (benchmarks/distinct_ids.py)", "",
             f"`python benchmarks/distinct_ids.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
             f"{read:,} rows, {total:,} distinct ids in all against {kaggle:,} in the full Kaggle train.txt "
             f"(modelzoo/schemas/criteo_full.json's hash_buckets); {time.perf_counter() - start:.0f} s.", "",
             "| column | distinct | Kaggle's |", "|---|---:|---:|"]
    lines += [f"| {c} | {counts[c]:,} | {CRITEO_KAGGLE_CARDINALITIES[c]:,} |" for c in CAT_COLUMNS]
    write_report(a.output, {"path": a.path, "rows": read, "distinct": counts, "total": total,
                            "kaggle_total": kaggle}, "\n".join(lines) + "\n")
    print("\n".join(lines))
    write_schema(counts, a.schema_out)


def write_schema(counts, path):
    """criteo_full with each categorical column's counted ids as its expected_ids, at `path` (None: nothing)."""
    if not path:
        return
    from modelzoo.io_utils import atomic_write_json
    from modelzoo.schema import SCHEMA_DIR, parse_schema
    doc = json.loads((Path(SCHEMA_DIR) / "criteo_full.json").read_text())
    for column in doc["columns"]:
        if column["name"] in counts:
            column["expected_ids"] = int(counts[column["name"]])
    doc["description"] = doc.get("description", "") + " expected_ids: counted by benchmarks/distinct_ids.py."
    parse_schema(doc, path)
    atomic_write_json(path, doc)
    print(f"wrote {path}: criteo_full with expected_ids ({sum(counts.values()):,} ids)")


if __name__ == "__main__":
    main()

"""Distinct values per categorical column of a Criteo-format file's first N rows (its training part): the ids a
--ev run without an admission filter stores, to hold the memory plan's estimate (a schema's hash_buckets)
against (issue 27). Values are hashed to 64 bits (pandas.util.hash_array; a collision among 10M values has a
chance of about 3e-6), so it streams in chunks with memory bounded by the distinct values.

    python benchmarks/distinct_ids.py /work/scale-data/45840617/train.txt --rows 41256555

Writes benchmarks/results/distinct_ids.{json,md}.
"""
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
    a = p.parse_args(argv)
    start = time.perf_counter()
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


if __name__ == "__main__":
    main()

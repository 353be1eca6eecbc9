"""Input rows per second of a Parquet copy against its CSV, as a ratio measured interleaved in one process.

The Criteo sample (or --input) is converted by data/csv_to_parquet.py into a temporary folder; each round
reads every row of both once, in the training pipeline's shape (shuffled, batched, smart-staged: hashing
and normalization included), alternating which goes first, so a loaded machine slows both alike. The
ratio is the number to read; the rows/s depend on the machine and its load.

    python benchmarks/parquet_read.py [--input ../shared/data/criteo-kaggle-head10k/train.txt] [--rounds 3]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "data"))

from csv_to_parquet import convert  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=str(REPO.parent / "shared" / "data" / "criteo-kaggle-head10k" / "train.txt"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=512)
    args = parser.parse_args(argv)
    from modelzoo import features
    from modelzoo.datafiles import Slice, count_lines
    from modelzoo.schema import load_schema
    from modelzoo.system import cpu_info
    schema = load_schema("criteo")
    rows = count_lines(args.input)
    with tempfile.TemporaryDirectory() as folder:
        par = os.path.join(folder, "sample.parquet")
        convert(args.input, schema, par)
        common = dict(batch_size=args.batch_size, training=True, smartstaged=True, seed=1, repeat=False)
        readers = {"csv": lambda: features.make_dataset([Slice(args.input, 0, rows)], schema, "\t", **common),
                   "parquet": lambda: features.make_parquet_dataset([Slice(par, 0, rows)], schema, **common)}
        speeds = {name: [] for name in readers}
        for r in range(args.rounds):
            for name in (list(readers) if r % 2 == 0 else list(readers)[::-1]):
                start = time.perf_counter()
                n = sum(int(y.shape[0]) for _, y in readers[name]())
                speeds[name].append(n / (time.perf_counter() - start))
    ratios = [p / c for p, c in zip(speeds["parquet"], speeds["csv"])]
    print(f"{rows:,} rows of {args.input}, {args.rounds} rounds on {cpu_info()}")
    for name, values in speeds.items():
        print(f"{name}: {', '.join(f'{v:,.0f}' for v in values)} rows/s")
    print(f"parquet / csv rows per second: median {statistics.median(ratios):.2f} "
          f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()

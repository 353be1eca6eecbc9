#!/usr/bin/env python
"""Write generated MovieLens-100k-like data whose labels come from a known mixed model.

Why: tests, examples and benchmarks of mixed models (gdmix_lr) need data without the real files,
and a known truth to check against: a fitted per-user or per-movie model should recover the
coefficients the labels were drawn from. The generator lives in modelzoo/datasets/movielens.py (numpy +
pandas); this is its command line.

    python data/generate_movielens.py --output_dir /tmp/movielens_gen
    python data/generate_movielens.py --output_dir /tmp/ml_small --users 100 --movies 300 --rows 5000 --seed 3

OUTPUT_DIR gets the same files as data/prepare_movielens.py (train.csv, validation.csv,
wide_and_deep/{train,eval}.csv, features.json with "synthetic": true) plus truth.json: the global,
per-user and per-movie coefficients the labels were drawn from.
"""
import argparse
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modelzoo.flags import non_negative_int, positive_int, probability  # noqa: E402
from modelzoo.datasets.movielens import (  # noqa: E402
    ML100K_MOVIES, ML100K_ROWS, ML100K_USERS, DataError, generate, is_prepared, summary_text)


def _terminate(signum, frame):
    # Turn SIGTERM into an exception so that temporary files are removed.
    raise SystemExit(128 + signum)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True, help="folder to write the generated files into")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of everything drawn, and of the split")
    p.add_argument("--users", type=positive_int, default=ML100K_USERS, help="users (ids 1..USERS)")
    p.add_argument("--movies", type=positive_int, default=ML100K_MOVIES, help="movies (ids 1..MOVIES)")
    p.add_argument("--rows", type=positive_int, default=ML100K_ROWS, help="rows (distinct user-movie pairs)")
    p.add_argument("--train_fraction", type=probability, default=0.8, help="share of the rows that train")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if is_prepared(args.output_dir) and not args.overwrite:
        print(f"error: {args.output_dir} already holds a prepared data set (features.json); "
              "pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        summary = generate(args.output_dir, args.seed, users=args.users, movies=args.movies, rows=args.rows,
                           train_fraction=args.train_fraction)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_text(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Prepare the official MovieLens 100k files for mixed models (gdmix_lr) and Wide & Deep.

Why: GDMix's movieLens example trains a global logistic regression plus one per user and one per
movie on the ratings of ml-100k; this writes those rows (label = rating > 3, user and movie
features, a seeded random 80/20 split) once, checked, in the formats the zoo reads.
The work is done by modelzoo/datasets/movielens.py (numpy + pandas); this is its command line.

    python data/prepare_movielens.py --source ~/Downloads/ml-100k --output_dir /tmp/movielens
    python data/prepare_movielens.py --source ../shared/data/ml-100k --output_dir /tmp/ml --seed 1
    python data/prepare_movielens.py --download --source ~/datasets --output_dir /tmp/ml   # fetch ml-100k.zip first

OUTPUT_DIR gets train.csv, validation.csv, wide_and_deep/{train,eval}.csv and, last,
features.json (see data/README.md). The dataset's terms forbid redistribution: the output may
not be inside this repository unless git ignores it.
"""
import argparse
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modelzoo.datasets.movielens import ML100K_URL, DataError, download_ml100k, is_prepared, prepare, summary_text  # noqa: E402
from modelzoo.flags import non_negative_int, probability  # noqa: E402


def _terminate(signum, frame):
    # Turn SIGTERM into an exception so that temporary files are removed.
    raise SystemExit(128 + signum)


def committable(out_dir):
    """True when OUT_DIR is inside this git checkout and not ignored (real data could be committed)."""
    out = Path(out_dir).resolve()
    if not out.is_relative_to(REPO):
        return False
    try:
        return subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(out / "train.csv")],
                              capture_output=True).returncode == 1
    except OSError:  # no git: be careful
        return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True,
                   help="folder with the official ml-100k files u.data, u.user, u.item (or its parent)")
    p.add_argument("--output_dir", required=True, help="folder to write the prepared files into")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random train/validation split")
    p.add_argument("--train_fraction", type=probability, default=0.8, help="share of the rows that train")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder")
    p.add_argument("--download", action="store_true",
                   help="first download GroupLens' ml-100k.zip into --source and unzip it there (checked by "
                        "SHA-256; kept when already there); accept the data set's terms at grouplens.org")
    p.add_argument("--url", default=ML100K_URL, help="where --download fetches ml-100k.zip from")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if committable(args.output_dir):
        print(f"error: --output_dir {args.output_dir} is inside the repository and not ignored by git; "
              "MovieLens may not be redistributed: write it outside the checkout (or to an ignored folder)",
              file=sys.stderr)
        return 2
    if is_prepared(args.output_dir) and not args.overwrite:
        print(f"error: {args.output_dir} already holds a prepared data set (features.json); "
              "pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        source = download_ml100k(args.source, args.url) if args.download else args.source
        summary = prepare(source, args.output_dir, args.seed, args.train_fraction)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_text(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

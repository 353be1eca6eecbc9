#!/usr/bin/env python
"""Write a synthetic Taobao-shaped click log whose labels depend on the user's RECENT behaviour.

Why: DIN and other sequence models exist for user-behaviour histories, and the real Taobao logs may not
be redistributed; this data has the shape (user, profile, candidate item and category, item and category
histories, oldest first) and a hidden model in which the candidate's similarity to the recent history
matters (modelzoo/synthetic_sequences.py: interests drift, so the whole history's mean blurs them).
A SYNTHETIC marker is left beside the file, as the runner does when it generates data itself.

    python data/generate_taobao.py --rows 200000 --output data/taobao/train.txt
    python din/train.py --data_location data/taobao     # (din generates it there when the folder is empty)
"""
import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modelzoo.datafiles import write_marker  # noqa: E402
from modelzoo.flags import non_negative_int, positive_int  # noqa: E402
from modelzoo.synthetic_sequences import generate_taobao  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=positive_int, default=200_000, help="rows to write")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the catalogue, users and rows")
    p.add_argument("--output", required=True, help="the file to write (tab-separated, no header)")
    args = p.parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(folder, exist_ok=True)
    generator = {"rows": args.rows, "seed": args.seed, "name": "taobao"}
    write_marker(folder, generator)
    stats = generate_taobao(args.output, args.rows, args.seed)
    write_marker(folder, generator, args.output)
    print(f"{stats['path']}: {stats['rows']:,} rows (SYNTHETIC), click rate {stats['ctr']:.3f}, "
          f"the hidden model's own AUC {stats['hidden_auc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

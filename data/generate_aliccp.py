#!/usr/bin/env python
"""Write an Ali-CCP-shaped impression log (click, then buy observed only after a click) from a hidden model.

Why: multi-task models (esmm/, mmoe/) need data with their structure, and Ali-CCP may not be
redistributed. The generator lives in modelzoo/datasets/aliccp.py (numpy); this is its command line.

    python data/generate_aliccp.py --output_dir /tmp/aliccp --train_rows 200000 --eval_rows 50000
    python esmm/train.py --train_files /tmp/aliccp/train.txt --eval_files /tmp/aliccp/eval.txt

OUTPUT_DIR gets train.txt and eval.txt (schema modelzoo/schemas/aliccp.json), eval_truth.csv (each eval
row's would-be purchase had it been clicked, and the hidden probabilities: what scores a CVR model over
all impressions) and a SYNTHETIC marker.
"""
import argparse
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modelzoo.datafiles import write_marker  # noqa: E402
from modelzoo.datasets.aliccp import generate  # noqa: E402
from modelzoo.flags import non_negative_int, positive_int  # noqa: E402

NOTE = "train.txt and eval.txt in this folder are synthetic (modelzoo/datasets/aliccp.py), not real Ali-CCP data."


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # so that the temporary files are removed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True, help="folder to write train.txt, eval.txt, eval_truth.csv into")
    p.add_argument("--train_rows", type=positive_int, default=200_000)
    p.add_argument("--eval_rows", type=positive_int, default=50_000)
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the hidden model and the rows")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    generator = {"name": "aliccp", "train_rows": args.train_rows, "eval_rows": args.eval_rows, "seed": args.seed}
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    write_marker(args.output_dir, generator, note=NOTE)  # before the files exist, completed after
    summary = generate(args.output_dir, args.train_rows, args.eval_rows, args.seed)
    write_marker(args.output_dir, generator, str(Path(args.output_dir) / "train.txt"), note=NOTE)
    print(f"wrote {args.output_dir}/train.txt ({summary['train_rows']:,} rows), eval.txt ({summary['eval_rows']:,}), "
          f"eval_truth.csv: CTR {summary['ctr']:.4f}, CVR of clicks {summary['cvr_on_clicks']:.4f}, CTCVR "
          f"{summary['ctcvr']:.4f}, {summary['users']:,} users (SYNTHETIC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

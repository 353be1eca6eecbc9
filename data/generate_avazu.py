"""Avazu-shaped synthetic CTR data: a header line, a row id, the click label, then 22 categorical
columns as Avazu's train.gz lays them out (id, click, hour, C1, banner_pos, site_id, ..., C21).

NOT real data: ids are drawn from Zipf-like distributions of plausible sizes and clicks come from a
hidden logistic model of a few columns (so a model has something to learn). It exists to try the
readers (header, columns by name, an id to ignore) and `python -m modelzoo.schema infer` on a layout
that is not Criteo's; nothing of the real Avazu set is used or shipped.

    python data/generate_avazu.py --rows 9000 --output /tmp/avazu/train.csv
"""
import argparse
import gzip
import math
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.io_utils import atomic_writer  # noqa: E402
from modelzoo.line_index import IndexingWriter  # noqa: E402

# column -> (distinct values, how they are written); Avazu's hashed ids are 8 hex digits
COLUMNS = {
    "C1": (7, "int"), "banner_pos": (7, "small"), "site_id": (2000, "hex"), "site_domain": (2500, "hex"),
    "site_category": (20, "hex"), "app_id": (3000, "hex"), "app_domain": (200, "hex"),
    "app_category": (25, "hex"), "device_id": (50000, "hex"), "device_ip": (80000, "hex"),
    "device_model": (4000, "hex"), "device_type": (5, "small"), "device_conn_type": (4, "small"),
    "C14": (2000, "int"), "C15": (8, "size"), "C16": (9, "size"), "C17": (400, "int"), "C18": (4, "small"),
    "C19": (60, "int"), "C20": (160, "int"), "C21": (60, "int"),
}
HEADER = ["id", "click", "hour"] + list(COLUMNS)
SIZES = [320, 300, 216, 728, 120, 480, 1024, 768, 50, 250, 36, 90, 20]


def _value(rng, name, distinct, how):
    # Zipf-like: a few values take most rows (the large id columns have a longer tail)
    k = min(int(rng.paretovariate(0.6 if distinct > 10_000 else 1.1)) - 1, distinct - 1)
    if how == "hex":
        return f"{(k * 2654435761 + hash(name) % 997) % 16 ** 8:08x}"
    if how == "size":
        return str(SIZES[k % len(SIZES)])
    if how == "small":
        return str(k)
    return str(1000 + 7 * k + (1005 if name == "C1" else 0))


def generate(path, rows, seed=0):
    """Write `rows` rows (and the header line) to `path` (.gz: compressed); returns the click rate."""
    rng = random.Random(seed)
    weights = {name: {} for name in ("site_id", "banner_pos", "device_type", "C15", "app_category")}
    clicks = 0
    with atomic_writer(path, "wb") as raw:
        packed = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if str(path).endswith(".gz") else raw
        out = IndexingWriter(packed)  # its line index, counted as it is written (modelzoo/line_index.py)
        out.write((",".join(HEADER) + "\n").encode())
        for i in range(rows):
            values = {name: _value(rng, name, *spec) for name, spec in COLUMNS.items()}
            logit = -1.6 + sum(w.setdefault(values[name], rng.gauss(0, 0.8)) for name, w in weights.items())
            click = int(rng.random() < 1 / (1 + math.exp(-logit)))
            clicks += click
            hour = f"1410{21 + i * 10 // max(rows, 1):02d}{(i * 24 * 10 // max(rows, 1)) % 24:02d}"
            row = [str(10 ** 18 + rng.getrandbits(59)), str(click), hour] + [values[n] for n in COLUMNS]
            out.write((",".join(row) + "\n").encode())
        if packed is not raw:
            packed.close()
    out.save(os.fspath(path))
    return clicks / max(rows, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=9000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="the CSV to write (.gz: compressed)")
    args = parser.parse_args(argv)
    ctr = generate(args.output, args.rows, args.seed)
    print(f"wrote {args.rows:,} rows + a header line to {args.output} (SYNTHETIC, Avazu layout; click rate {ctr:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

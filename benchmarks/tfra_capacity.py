"""What one TFRA dynamic table (--ev) holds in memory as its ids grow: the constants of modelzoo/memory.py's
plan for --ev (issue 27). A child process inserts `--ids` distinct keys of width `--dim` into one
`dynamic_embedding.Variable` (TFRA's CPU CuckooHashTable) in chunks, and after each chunk records the
process's RSS above its start and the peak RSS during the insert (sampled every 5 ms), then exports the table
as a checkpoint does (its keys and values) and records what that adds.

It prints and stores, per chunk: the ids, the resident bytes, the bytes a slot if the table holds the power
of two of slots at or above its ids (memory.tfra_table_bytes's model), and the peak during the insert.

    python benchmarks/tfra_capacity.py --dim 16 --ids 6000000 --chunk 250000
    python benchmarks/tfra_capacity.py --dim 1 --value_dtype int32 --output benchmarks/results/tfra_capacity_int32

--value_dtype int32 / int64 at --dim 1 are --ev's count and last-updated-step tables.

Writes benchmarks/results/tfra_capacity.{json,md}.
"""
import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import write_report  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402

CHILD = r'''
import json, sys, threading, time
import numpy as np
import tensorflow as tf
from tensorflow_recommenders_addons import dynamic_embedding as de
tf1 = tf.compat.v1
tf1.disable_eager_execution()
dim, total, chunk, dtype = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), tf.as_dtype(sys.argv[4])
peak = [0]

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024

def sample():
    while True:
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)

threading.Thread(target=sample, daemon=True).start()
table = de.Variable(name="table", key_dtype=tf.int64, value_dtype=dtype, dim=dim)
keys = tf1.placeholder(tf.int64, [None])
insert = table.upsert(keys, tf.zeros([tf.size(keys), dim], dtype))
export = table.export()
with tf1.Session() as session:
    base = rss()
    done = 0
    while done < total:
        batch = (np.arange(done, done + chunk, dtype=np.int64) * 7919 + 13)
        peak[0] = 0
        session.run(insert, {keys: batch})
        done += chunk
        print(json.dumps({"ids": done, "resident": rss() - base, "peak": peak[0] - base}), flush=True)
    before, peak[0] = rss() - base, 0
    exported = session.run(export)
    print(json.dumps({"export_peak": peak[0] - base, "before_export": before,
                      "payload": int(sum(a.nbytes for a in exported))}), flush=True)
'''


VALUE_BYTES = {"float32": 4, "int32": 4, "int64": 8}


def slots_for(ids):
    return 1 << max(0, math.ceil(math.log2(ids)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--ids", type=int, default=6_000_000)
    p.add_argument("--chunk", type=int, default=250_000)
    p.add_argument("--value_dtype", choices=VALUE_BYTES, default="float32",
                   help="the values' type (float32: embedding rows; int32: --ev's counts; int64: its last steps)")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "tfra_capacity"))
    args = p.parse_args(argv)
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(args.dim), str(args.ids), str(args.chunk),
                           args.value_dtype],
                          capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    steps, export = lines[:-1], lines[-1]
    for s in steps:
        s["bytes_per_slot"] = round(s["resident"] / slots_for(s["ids"]), 1)
    # the slot's size at the largest table (the process's own allocations are noise there), and the doubling:
    # the peak of the insert that crossed the last power of two against what the table then settles to
    per_slot = steps[-1]["bytes_per_slot"]
    last = slots_for(steps[-1]["ids"])
    doubling = max(s["peak"] for s in steps if slots_for(s["ids"]) == last) / steps[-1]["resident"]
    # where the table doubled: an insert after which it held more than 1.8x what it held before, between the
    # ids before it and after it, against the slots it had (the largest load it reached)
    doublings = [{"after_ids": a["ids"], "before_ids": b["ids"], "slots": slots_for(a["ids"]),
                  "load_reached": round(a["ids"] / slots_for(a["ids"]), 3)}
                 for a, b in zip(steps, steps[1:]) if b["resident"] > 1.8 * a["resident"] and a["ids"] >= 1 << 20]
    cpu = cpu_info()
    entry = 8 + VALUE_BYTES[args.value_dtype] * args.dim  # a key and its values
    doc = {"dim": args.dim, "value_dtype": args.value_dtype, "ids": args.ids, "chunk": args.chunk, "steps": steps,
           "export": export, "bytes_per_slot": per_slot, "doubling_peak_ratio": round(doubling, 2),
           "payload_bytes_per_id": entry, "doublings": doublings,
           "export_added_bytes": export["export_peak"] - export["before_export"],
           "cpu": cpu, "seconds": round(time.time() - started, 1)}
    rows = "\n".join(f"| {s['ids']:,} | {slots_for(s['ids']):,} | {s['resident'] / 1e9:.3f} | {s['bytes_per_slot']} | "
                     f"{s['peak'] / 1e9:.3f} |" for s in steps)
    md = (f"# One TFRA table's memory as its ids grow (benchmarks/tfra_capacity.py)\n\n"
          f"`python benchmarks/tfra_capacity.py --dim {args.dim} --value_dtype {args.value_dtype} --ids {args.ids} "
          f"--chunk {args.chunk}` on "
          f"{cpu['model']} ({cpu.get('family_model', '')}, {cpu.get('cores', '?')} cores), "
          f"{time.strftime('%Y-%m-%d')}: one width-{args.dim} {args.value_dtype} table, keys inserted "
          f"{args.chunk:,} at a time; resident = the process's RSS above its start after the insert, peak = "
          f"during it (5 ms samples); slots = the power of two at or above the ids.\n\n"
          f"| ids | slots (model) | resident (GB) | bytes a slot | peak during the insert (GB) |\n"
          f"|---:|---:|---:|---:|---:|\n{rows}\n\n"
          f"Bytes a slot at {last:,} slots: {per_slot} (key and values: {entry}); the insert that "
          f"doubled the slots to {last:,} peaked at {doubling:.2f}x what the table then held. The export of its "
          f"{steps[-1]['ids']:,} keys and values "
          f"({export['payload'] / 1e9:.3f} GB) added {doc['export_added_bytes'] / 1e9:.3f} GB at its peak.\n"
          + "".join(f"\nThe table of {d['slots']:,} slots held {d['after_ids']:,} ids (load {d['load_reached']}) and "
                    f"doubled before {d['before_ids']:,}." for d in doublings) + "\n")
    write_report(args.output, doc, md)


if __name__ == "__main__":
    main()

"""Size and load time of the stock SavedModel of a full-cardinality Wide & Deep.

Trains Wide & Deep with the Kaggle cardinalities of modelzoo/schemas/criteo.json (its default schema:
0.9 GB of tables) for --steps steps on generated Criteo rows, which exports the SavedModel, then in a
fresh process of stock TensorFlow (neither modelzoo nor TFRA imported) times tf.saved_model.load and
the first call of the serving signature on 1,000 rows, and records the export's size on disk and the
loading process's peak RSS. `--extra=--ev` measures the --ev export (its frozen tables) instead.
Memory-heavy (about 7 GB while training): run it alone.

    python benchmarks/export_serving.py                       # -> results/export_serving_wide_and_deep.json
    python benchmarks/export_serving.py --extra=--ev --tag ev # -> results/export_serving_wide_and_deep_ev.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import atomic_write_json  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402

LOAD = r"""
import json, resource, sys, time
started = time.time()
import tensorflow as tf
imported = time.time()
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
loaded = time.time()
rows = json.load(open(sys.argv[2]))
inputs = fn.structured_input_signature[1]
probs = fn(**{k: tf.constant(v, inputs[k].dtype) for k, v in rows.items()})["probabilities"].numpy()
scored = time.time()
mods = [m for m in sys.modules if m.split(".")[0] in ("modelzoo", "tensorflow_recommenders_addons")]
print(json.dumps({"import_tf_s": round(imported - started, 2), "load_s": round(loaded - imported, 2),
                  "first_call_s": round(scored - loaded, 3), "rows_scored": len(probs),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "imported_modelzoo_or_tfra": mods}))
"""


def folder_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20_000, help="generated training rows")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--extra", default="", help="comma-separated extra train.py flags, e.g. --ev")
    p.add_argument("--schema", default=None, help="another schema (the tests' small one); default: the model's")
    p.add_argument("--tag", default="", help="suffix of the result file")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    out = args.out or str(REPO / "benchmarks" / "results" /
                          f"export_serving_wide_and_deep{'_' + args.tag if args.tag else ''}.json")
    from modelzoo.synthetic import generate_criteo
    from modelzoo.schema import load_schema
    from modelzoo.serve import parse_rows
    with tempfile.TemporaryDirectory(prefix="export-serving-") as tmp:
        data = Path(tmp) / "train.txt"
        generate_criteo(str(data), args.rows, seed=11)
        ckpt = Path(tmp) / "ckpt"
        extra = [f for f in args.extra.split(",") if f]
        cmd = [sys.executable, str(REPO / "wide_and_deep" / "train.py"), "--train_files", str(data),
               "--checkpoint", str(ckpt), "--steps", str(args.steps), "--batch_size", str(args.batch_size),
               "--no_eval", *(["--schema", args.schema] if args.schema else []), *extra]
        started = time.time()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        result = json.loads((ckpt / "result.json").read_text())
        export = result["export_dir"]
        rows = Path(tmp) / "rows.tsv"  # the last 1,000 generated rows, as modelzoo.serve reads them
        rows.write_text("\n".join(data.read_text().splitlines()[-1000:]) + "\n")
        raw, _ = parse_rows(rows, load_schema("criteo"))
        (Path(tmp) / "rows.json").write_text(json.dumps(raw))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("PYTHONPATH", None)
        load = subprocess.run([sys.executable, "-c", LOAD, export, str(Path(tmp) / "rows.json")], cwd=tmp,
                              env=env, capture_output=True, text=True)
        if load.returncode:
            sys.exit(f"loading failed:\n{load.stderr[-3000:]}")
        loaded = json.loads(load.stdout.strip().splitlines()[-1])
        doc = {"model": "wide_and_deep", "schema": args.schema or "criteo (Kaggle cardinalities)", "flags": extra,
               "train_steps": args.steps, "batch_size": args.batch_size, "generated_rows": args.rows,
               "train_and_export_wall_s": round(time.time() - started, 1),
               "train_peak_rss_mb": result["peak_rss_mb"],
               "export_bytes": folder_bytes(export), "export_mb": round(folder_bytes(export) / 2 ** 20, 1),
               "checkpoint_mb": round(sum(f.stat().st_size for f in ckpt.glob("model.ckpt-*")) / 2 ** 20, 1),
               **loaded, "cpu": cpu_info(), "machine_note": "shared 2-vCPU VM: times are indicative"}
    atomic_write_json(out, doc)
    print(json.dumps(doc, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()

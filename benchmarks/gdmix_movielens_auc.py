"""gdmix_lr on the real MovieLens ml-100k: the AUC table of GDMix's example over several seeds of the split.

For each seed, `gdmix_lr/train.py --data_location ML100K --seed S` runs as a user runs it (a subprocess:
preparation, the three coordinates, scoring, metrics; its wall clock includes Python and TensorFlow
start-up), once with one sweep (GDMix's table: global, + per-user, + per-movie) and once with --sweeps N
(Photon-ML's repeated coordinate descent, the best sweep kept). With --wide_and_deep, Wide & Deep is
trained on the same split (--wd_epochs epochs) and its --predict files feed the per-user and per-movie
models as the global coordinate (GDMix's third mode): two rows, one with the MovieLens schema (user and
movie id embeddings included) and one with the ids in a single shared bucket (the global features only,
like GDMix's deep global model).

Reports mean, standard deviation and range over the seeds of each cumulative AUC, and wall seconds.

    python benchmarks/gdmix_movielens_auc.py                       # seeds 1-5, --sweeps 3
    python benchmarks/gdmix_movielens_auc.py --wide_and_deep        # + the Wide & Deep global model
"""
import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.datasets import movielens  # noqa: E402
from modelzoo.io_utils import write_report  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402

GDMIX_PUBLISHED = {"global": 0.6237, "per_user": 0.7058, "per_movie": 0.7599}  # GDMix README, MovieLens
TARGETS = {"global": 0.62, "per_user": 0.70, "per_movie": 0.75}
PIPELINE_SECONDS_TARGET = 60.0
CONFIG = REPO / "gdmix_lr" / "configs" / "movielens.yaml"


def run(args, what):
    start = time.time()
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{what} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.time() - start


def gdmix(data, out, seed, extra=()):
    """gdmix_lr on `data`: the ml-100k files split by --seed, or a folder already split (which refuses --seed)."""
    split = [] if movielens.is_prepared(data) else ["--seed", seed]
    seconds = run(["gdmix_lr/train.py", "--data_location", data, "--output_dir", out, *split, *extra],
                  f"gdmix_lr seed {seed}")
    result = json.loads((Path(out) / "result.json").read_text())
    return {"seconds": round(seconds, 2), "wall_seconds_in_run": result["wall_seconds"], "auc": result["auc"],
            "best_sweep": result["best_sweep"],
            "coordinates": {c["name"]: c["validation_auc"] for c in result["coordinates"]}}


def global_features_schema(work):
    """modelzoo/schemas/movielens.json with user_id and movie_id each in one shared bucket: Wide & Deep then
    sees the global features only (demographics, genres, year), as GDMix's deep global model does."""
    schema = json.loads((REPO / "modelzoo" / "schemas" / "movielens.json").read_text())
    for column in schema["columns"]:
        if column["name"] in ("user_id", "movie_id"):
            column.pop("vocabulary")
            column["hash_buckets"] = 1
    path = Path(work) / "movielens_global_features.json"
    path.write_text(json.dumps(schema))
    return path


def wide_and_deep_row(prepared, work, seed, epochs, schema):
    """Wide & Deep on the MovieLens schema; its predictions become the global coordinate."""
    Path(work).mkdir(parents=True, exist_ok=True)
    wd_data, checkpoint = Path(prepared) / "wide_and_deep", Path(work) / "wd"
    common = ["wide_and_deep/train.py", "--schema", schema, "--checkpoint", checkpoint]
    train_rows = sum(1 for _ in open(wd_data / "train.csv", encoding="utf-8"))
    steps = max(1, epochs * train_rows // 2048)
    seconds = run(common + ["--data_location", wd_data, "--steps", steps, "--no_eval", "--seed", seed],
                  "Wide & Deep training")
    seconds += run(common + ["--predict", "--train_files", wd_data / "train.csv",
                             "--eval_files", wd_data / "train.csv"],
                   "Wide & Deep scoring of the training rows")
    train_scores = Path(work) / "wd_train_predictions.csv"
    (checkpoint / "predictions.csv").rename(train_scores)
    seconds += run(common + ["--data_location", wd_data, "--predict"], "Wide & Deep scoring of the validation rows")
    config = Path(work) / "wide_and_deep.yaml"
    config.write_text(CONFIG.read_text().replace(
        "  - name: global\n    type: fixed_effect\n    feature_bag: global\n    l2: 1.0\n"
        "    regularize_intercept: false\n",
        f"  - name: wide_and_deep\n    type: scores\n    training_scores: {train_scores}\n"
        f"    validation_scores: {checkpoint / 'predictions.csv'}\n"))
    row = gdmix(prepared, Path(work) / "gdmix_wd", seed, ["--config", config])
    row["coordinates"]["global"] = row["coordinates"].pop("wide_and_deep")
    row["wide_and_deep_seconds"], row["wide_and_deep_steps"] = round(seconds, 1), steps
    return row


def stats(values):
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "runs": values}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_location", default=str(REPO.parent / "shared" / "data" / "ml-100k"),
                   help="the official ml-100k files")
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--sweeps", type=int, default=3, help="sweeps of the multi-sweep row")
    p.add_argument("--wide_and_deep", action="store_true", help="add the Wide & Deep global model row")
    p.add_argument("--wd_epochs", type=int, default=3, help="Wide & Deep epochs over the training rows")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "gdmix_movielens_auc"))
    args = p.parse_args()
    if not (Path(args.data_location) / "u.data").is_file():
        sys.exit(f"{args.data_location}: the official ml-100k files are needed (u.data, u.user, u.item)")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {"gdmix": [], "sweeps": [], "wide_and_deep": [], "wide_and_deep_global": []}
    with tempfile.TemporaryDirectory(prefix="gdmix_auc_") as work:
        for seed in seeds:
            out = Path(work) / f"seed{seed}"
            rows["gdmix"].append(gdmix(args.data_location, out / "one", seed))
            rows["sweeps"].append(gdmix(out / "one" / "data", out / "sweeps", seed, ["--sweeps", args.sweeps]))
            if args.wide_and_deep:
                prepared = out / "one" / "data"
                rows["wide_and_deep"].append(wide_and_deep_row(
                    prepared, out / "wd_ids", seed, args.wd_epochs, REPO / "modelzoo" / "schemas" / "movielens.json"))
                rows["wide_and_deep_global"].append(wide_and_deep_row(
                    prepared, out / "wd_global", seed, args.wd_epochs, global_features_schema(out)))
            print(f"seed {seed}: " + " | ".join(f"{k} {v[-1]['coordinates']}" for k, v in rows.items() if v),
                  flush=True)
    summary = {}
    for kind, runs in rows.items():
        if runs:
            summary[kind] = {name: stats([r["coordinates"][name] for r in runs]) for name in TARGETS}
            summary[kind]["seconds"] = stats([r["seconds"] for r in runs])
    passed = {name: summary["gdmix"][name]["mean"] >= target for name, target in TARGETS.items()}
    passed["pipeline_under_60s"] = summary["gdmix"]["seconds"]["max"] < PIPELINE_SECONDS_TARGET
    doc = {"command": " ".join(map(shlex.quote, sys.argv)), "machine": cpu_info(), "seeds": seeds,
           "sweeps": args.sweeps, "gdmix_published": GDMIX_PUBLISHED, "targets": TARGETS, "passed": passed,
           "summary": summary, "runs": rows}

    def cell(kind, name):
        s = summary[kind][name]
        return f"{s['mean']:.4f} ± {s['std']:.4f} ({s['min']:.4f}-{s['max']:.4f})"

    lines = [f"ml-100k, seeded random 80/20 splits (seeds {args.seeds}); mean ± std (min-max) of the cumulative "
             f"validation AUC; {cpu_info()['model']}, {cpu_info()['cores']} vCPUs.", "",
             "| model | global | + per-user | + per-movie | wall seconds per run |", "|---|---|---|---|---|",
             "| GDMix (published, one split) | " + " | ".join(f"{v:.4f}" for v in GDMIX_PUBLISHED.values()) + " | |"]
    labels = {"gdmix": "gdmix_lr, one sweep (GDMix's)", "sweeps": f"gdmix_lr, --sweeps {args.sweeps} (best sweep)",
              "wide_and_deep": "Wide & Deep (with user and movie id embeddings) as the global model",
              "wide_and_deep_global": "Wide & Deep on the global features only (ids in one bucket) as the global model"}
    for kind in summary:
        sec = summary[kind]["seconds"]
        lines.append(f"| {labels[kind]} | " + " | ".join(cell(kind, n) for n in TARGETS)
                     + f" | {sec['mean']:.1f} (max {sec['max']:.1f}) |")
    lines += ["", "Targets (mean over seeds): " + ", ".join(
        f"{n} >= {t} {'pass' if passed[n] else 'FAIL'}" for n, t in TARGETS.items())
        + f"; whole pipeline (one sweep, process wall clock) < {PIPELINE_SECONDS_TARGET:.0f} s "
          f"{'pass' if passed['pipeline_under_60s'] else 'FAIL'}."]
    write_report(args.output, doc, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

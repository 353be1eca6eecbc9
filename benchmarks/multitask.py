"""The multi-task models against single-task ones on the Ali-CCP-shaped generator (data/generate_aliccp.py).

1. ESMM's CVR over the entire impression space: its pCVR scored against each eval impression's would-be
   purchase (the generator draws it for every impression; the log shows it only where clicked), against a
   CVR model trained on the clicked rows only (the usual practice whose selection bias ESMM removes).
2. MMoE's two tasks (ctr: click, ctcvr: buy over every impression) against two single-task models, one per
   label, on the same rows.
3. PLE's two tasks (the same tasks as MMoE's) against the same single-task models.

The single-task model (TOWER below, this script's own ModelSpec, not a registered model) is one tower of
theirs: the same embeddings (width 16, every categorical column) and numeric values into an MLP 256-128-64
and a logit, trained with the same optimizer, batch and epochs; it reads the same schema with the other
label column ignored. Every figure is the eval AUC of one run per seed; the table gives each seed and the
mean.

    python benchmarks/multitask.py [--seeds 1,2,3] [--train_rows 100000] [--eval_rows 30000] [--epochs 2]
    python benchmarks/multitask.py tower TRAIN.PY-FLAGS...     # (how the script runs its single-task model)

Writes benchmarks/results/multitask.json and .md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.runner import ModelSpec  # noqa: E402

TOWER_UNITS = (256, 128, 64)


def build_logits(inputs, args, training):
    from modelzoo.layers import embedded_inputs, logit, mlp
    return logit(mlp(embedded_inputs(inputs), TOWER_UNITS, "tower"), "logit")


TOWER = ModelSpec(name="tower", schema="aliccp", build_logits=build_logits, embedding_dim=16,
                  defaults={"batch_size": 1024, "optimizer": "adam", "learning_rate": 0.001},
                  speed_defaults={"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False})


def one_label_schema(work, label):
    """The aliccp schema with every other label column ignored: a single-task model of `label`."""
    doc = json.loads((REPO / "modelzoo" / "schemas" / "aliccp.json").read_text())
    doc["columns"] = [{"name": c["name"], "kind": "ignore"} if c["kind"] == "label" and c["name"] != label else c
                      for c in doc["columns"]]
    path = work / f"aliccp_{label}_only.json"
    path.write_text(json.dumps(doc))
    return path


def train(command, flags, work, tag, predict=False):
    """One run (`command`: a model folder, or TOWER); returns its result.json (and predictions when asked)."""
    ckpt = work / tag
    argv = [str(REPO / command / "train.py")] if command != "tower" else [__file__, "tower"]
    cmd = [sys.executable, *argv, "--checkpoint", str(ckpt), "--log_steps", "1000000", *map(str, flags)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads((ckpt / "result.json").read_text())
    if predict:  # (--epochs and --seed are training flags: --predict refuses them)
        scoring = [str(f) for f in flags]
        for flag in ("--epochs", "--seed"):
            del scoring[scoring.index(flag):scoring.index(flag) + 2]
        proc = subprocess.run([sys.executable, *argv, "--checkpoint", str(ckpt), *scoring, "--predict"],
                              capture_output=True, text=True, cwd=REPO)
        if proc.returncode:
            raise SystemExit(f"--predict failed:\n{proc.stderr[-2000:]}")
        lines = (ckpt / "predictions.csv").read_text().splitlines()
        header = lines[0].split(",")
        result["predictions"] = {name: [float(line.split(",")[k]) for line in lines[1:]]
                                 for k, name in enumerate(header)}
    return result


def measure_seed(seed, args, work):
    from modelzoo.datasets.aliccp import generate, read_truth
    from modelzoo.metrics import roc_auc
    data = work / f"data{seed}"
    summary = generate(str(data), args.train_rows, args.eval_rows, seed=seed)
    would_buy, _, _ = read_truth(str(data / "eval_truth.csv"))
    clicked = data / "train_clicked.txt"  # the rows a CVR model usually trains on
    clicked.write_text("".join(line for line in (data / "train.txt").open() if line.startswith("1\t")))
    common = ["--seed", seed, "--epochs", args.epochs, "--eval_files", data / "eval.txt"]
    everything = ["--train_files", data / "train.txt", *common]
    out = {"seed": seed, "data": summary}

    esmm = train("esmm", everything, work, f"esmm{seed}", predict=True)
    out["esmm"] = {"cvr_auc_all_impressions": roc_auc(would_buy, esmm["predictions"]["probability_cvr"]),
                   "cvr_auc_clicked": esmm["auc/cvr"], "ctr_auc": esmm["auc/ctr"], "ctcvr_auc": esmm["auc/ctcvr"]}
    cvr = train("tower", ["--train_files", clicked, *common, "--schema", one_label_schema(work, "buy")], work,
                f"cvr_clicked{seed}", predict=True)
    clicked_eval = [i for i, c in enumerate(esmm["predictions"]["click"]) if c == 1]
    cvr_scores = cvr["predictions"]["probability"]
    out["cvr_trained_on_clicks"] = {
        "cvr_auc_all_impressions": roc_auc(would_buy, cvr_scores),
        "cvr_auc_clicked": roc_auc([esmm["predictions"]["buy"][i] for i in clicked_eval],
                                   [cvr_scores[i] for i in clicked_eval])}
    if "mmoe" not in args.parts:
        print(json.dumps(out), flush=True)
        return out
    mmoe = train("mmoe", everything, work, f"mmoe{seed}")
    out["mmoe"] = {"ctr_auc": mmoe["auc/ctr"], "ctcvr_auc": mmoe["auc/ctcvr"]}
    single = {label: train("tower", [*everything, "--schema", one_label_schema(work, label)], work,
                           f"single_{label}{seed}")["auc"] for label in ("click", "buy")}
    out["single_task"] = {"ctr_auc": single["click"], "ctcvr_auc": single["buy"]}
    if "ple" in args.parts:
        ple = train("ple", everything, work, f"ple{seed}")
        out["ple"] = {"ctr_auc": ple["auc/ctr"], "ctcvr_auc": ple["auc/ctcvr"]}
    print(json.dumps(out), flush=True)
    return out


def table(runs):
    def row(name, get):
        values = [get(r) for r in runs]
        return f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {statistics.mean(values):.4f} |"
    head = "| AUC | " + " | ".join(f"seed {r['seed']}" for r in runs) + " | mean |\n|---|" + "---|" * (len(runs) + 1)
    return "\n".join([
        head,
        row("ESMM pCVR, all impressions (vs would-be purchase)", lambda r: r["esmm"]["cvr_auc_all_impressions"]),
        row("CVR tower trained on clicked rows, all impressions", lambda r: r["cvr_trained_on_clicks"][
            "cvr_auc_all_impressions"]),
        row("ESMM pCVR, clicked eval rows", lambda r: r["esmm"]["cvr_auc_clicked"]),
        row("CVR tower trained on clicked rows, clicked eval rows", lambda r: r["cvr_trained_on_clicks"][
            "cvr_auc_clicked"]),
        row("MMoE ctr (click)", lambda r: r["mmoe"]["ctr_auc"]),
        row("single-task tower on click", lambda r: r["single_task"]["ctr_auc"]),
        row("MMoE ctcvr (buy, all impressions)", lambda r: r["mmoe"]["ctcvr_auc"]),
        row("single-task tower on buy", lambda r: r["single_task"]["ctcvr_auc"]),
    ] + ([
        row("PLE ctr (click)", lambda r: r["ple"]["ctr_auc"]),
        row("PLE ctcvr (buy, all impressions)", lambda r: r["ple"]["ctcvr_auc"]),
    ] if "ple" in runs[0] else []))


def main():
    if sys.argv[1:2] == ["tower"]:
        from modelzoo.runner import main as run
        return run(TOWER, sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--train_rows", type=int, default=100_000)
    p.add_argument("--eval_rows", type=int, default=30_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--parts", default="esmm,mmoe,ple",
                   help="the comparisons to run (esmm: ESMM's CVR; mmoe; ple, with mmoe)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "multitask"))
    args = p.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="multitask-") as tmp:
        runs = [measure_seed(int(s), args, Path(tmp)) for s in args.seeds.split(",")]
    if "mmoe" not in args.parts:
        return 0
    from modelzoo.io_utils import atomic_write_json
    from modelzoo.system import cpu_info
    cpu = cpu_info()
    setup = (f"{args.train_rows:,} generated training rows and {args.eval_rows:,} eval rows per seed "
             f"(data/generate_aliccp.py, SYNTHETIC), {args.epochs} epochs at batch 1,024, Adam 0.001; one run "
             f"per model and seed; {cpu['model']}, {cpu['cores']} cores; {time.time() - started:,.0f} s in all")
    atomic_write_json(args.out + ".json", {"setup": setup, "runs": runs, "cpu": cpu})
    Path(args.out + ".md").write_text(f"# Multi-task models against single-task ones\n\n{setup}.\n"
                                      f"Command: `python benchmarks/multitask.py --seeds {args.seeds}`.\n\n"
                                      f"{table(runs)}\n")
    print(table(runs))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())

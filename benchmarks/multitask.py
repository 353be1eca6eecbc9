"""The multi-task models against single-task ones on the Ali-CCP-shaped generator (data/generate_aliccp.py).

1. ESMM's CVR over the entire impression space against a CVR model trained on the clicked rows only
   (the usual practice whose sample selection bias ESMM addresses), each pCVR scored two ways:
   - against each eval impression's would-be purchase (the generator draws it for every impression; the
     log shows it only where clicked): the CVR label over all impressions that only a hidden model has,
     the target's measure;
   - the paper's CTCVR task (Ma et al. 2018, section 4: pCTCVR = pCTR x pCVR on all impressions, pCVR from
     each model, pCTR from "a same independently trained CTR network"): here the single-task tower on
     click, against click x buy. Beside them the paper's CVR task: pCVR on the clicked eval rows.
   The clicked-rows model is tuned fairly on what its user can see (its AUC on the clicked eval rows)
   between two lengths: the runs' epochs over its rows (~4.4% of them: a few steps) and ESMM's number of
   steps; both candidates are in the JSON and the table.
2. MMoE's two tasks (ctr: click, ctcvr: buy over every impression) against two single-task models, one per
   label, on the same rows (the one on click is the CTR network above).
3. PLE's two tasks (the same tasks as MMoE's) against the same single-task models.

The single-task model (TOWER below, this script's own ModelSpec, not a registered model) is one tower of
theirs: the same embeddings (width 16, every categorical column) and numeric values into an MLP 256-128-64
and a logit, trained with the same optimizer, batch and epochs; it reads the same schema with the other
label column ignored. Every figure is the eval AUC of one run per seed; the table gives each seed and the
mean.

    python benchmarks/multitask.py [--seeds 1,2,3] [--train_rows 100000] [--eval_rows 100000] [--epochs 2]
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
    if predict:  # (--epochs, --steps and --seed are training flags: --predict refuses them)
        scoring = [str(f) for f in flags]
        for flag in ("--epochs", "--steps", "--seed", "--learning_rate"):
            if flag in scoring:
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
    common_but_length = ["--seed", seed, "--eval_files", data / "eval.txt", "--learning_rate", args.learning_rate]
    common = [*common_but_length, "--epochs", args.epochs]
    everything = ["--train_files", data / "train.txt", *common]
    out = {"seed": seed, "data": summary}

    esmm = train("esmm", everything, work, f"esmm{seed}", predict=True)
    clicks, buys = esmm["predictions"]["click"], esmm["predictions"]["buy"]
    clicked_eval = [i for i, c in enumerate(clicks) if c == 1]
    ctr_net = train("tower", [*everything, "--schema", one_label_schema(work, "click")], work, f"single_click{seed}",
                    predict=True)  # the paper's "same independently trained CTR network" for every pCVR

    def cvr_scores(p_cvr):
        """A pCVR's AUCs: over all impressions against the would-be purchase; on the clicked eval rows
        against buy; and the paper's CTCVR task, pCTR (ctr_net) x pCVR against click x buy on all rows."""
        ctcvr = [a * b for a, b in zip(ctr_net["predictions"]["probability"], p_cvr)]
        return {"cvr_auc_all_impressions": roc_auc(would_buy, p_cvr),
                "cvr_auc_clicked": roc_auc([buys[i] for i in clicked_eval], [p_cvr[i] for i in clicked_eval]),
                "ctcvr_auc_shared_ctr": roc_auc(buys, ctcvr)}
    out["esmm"] = {**cvr_scores(esmm["predictions"]["probability_cvr"]), "ctr_auc": esmm["auc/ctr"],
                   "ctcvr_auc": esmm["auc/ctcvr"]}
    # The usual CVR model: the clicked rows only, tuned fairly on what its user sees (the clicked eval rows'
    # AUC) between the runs' epochs (few steps: ~4.5% of the rows) and ESMM's number of steps.
    same_steps = args.epochs * -(-args.train_rows // 1024)
    candidates = {}
    for name, length in (("epochs", ["--epochs", args.epochs]), ("same_steps", ["--steps", same_steps])):
        run = train("tower", ["--train_files", clicked, *common_but_length, *length, "--schema",
                              one_label_schema(work, "buy")], work, f"cvr_clicked_{name}{seed}", predict=True)
        candidates[name] = {"length": length, **cvr_scores(run["predictions"]["probability"])}
    chosen = max(candidates, key=lambda k: candidates[k]["cvr_auc_clicked"] or 0.0)  # (None: no buy clicked)
    out["cvr_trained_on_clicks"] = {**candidates[chosen], "chosen": chosen, "candidates": candidates}
    out["ctr_net_auc"] = ctr_net["auc"]
    if "mmoe" not in args.parts:
        print(json.dumps(out), flush=True)
        return out
    mmoe = train("mmoe", everything, work, f"mmoe{seed}")
    out["mmoe"] = {"ctr_auc": mmoe["auc/ctr"], "ctcvr_auc": mmoe["auc/ctcvr"]}
    single = {"click": ctr_net["auc"], "buy": train("tower", [*everything, "--schema", one_label_schema(work, "buy")],
                                                     work, f"single_buy{seed}")["auc"]}
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
        row("  its candidate at the runs' epochs, all impressions", lambda r: r["cvr_trained_on_clicks"]["candidates"][
            "epochs"]["cvr_auc_all_impressions"]),
        row("  its candidate at ESMM's steps, all impressions", lambda r: r["cvr_trained_on_clicks"]["candidates"][
            "same_steps"]["cvr_auc_all_impressions"]),
        row("ESMM: pCTR of the CTR tower x pCVR, all impressions (vs click x buy)", lambda r: r["esmm"][
            "ctcvr_auc_shared_ctr"]),
        row("clicked-rows CVR tower: the same pCTR x its pCVR (vs click x buy)", lambda r: r["cvr_trained_on_clicks"][
            "ctcvr_auc_shared_ctr"]),
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
    p.add_argument("--eval_rows", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--learning_rate", type=float, default=0.001, help="Adam's, for every model")
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
             f"(data/generate_aliccp.py, SYNTHETIC), {args.epochs} epochs at batch 1,024, Adam 0.001; MMoE and PLE at "
             f"their defaults (each tower reads its mixture and the experts' input; the ctcvr loss weighs 10); one run "
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

"""Hash-bucket embeddings against embedding variables (--ev and its options), on generated data with the
full Criteo Kaggle cardinalities, in one run.

The hash-bucket path is given a schema whose hash_buckets are the full Kaggle cardinalities
(modelzoo.synthetic.CRITEO_KAGGLE_CARDINALITIES: 33.7M rows in all), so it declares, initializes and
checkpoints the tables a full-data run needs; --ev keys its tables by the raw id and stores only the ids
it admits. Every configuration uses that same schema (--ev ignores its hash_buckets), so the numeric
normalizations and the embedding widths are identical. Data: --rows generated Criteo rows for training
and the next --eval_rows of the same stream as the held-out evaluation set (modelzoo/synthetic.py: real
schema, ids up to the real full-data cardinality of each column), generated once and kept in --data_dir.

Runs MODEL/train.py once per configuration and repetition, interleaving the configurations (so the noise
of a shared machine falls on all of them alike), and reports from each run's result.json the median
steady-state samples/s, peak RSS, AUC and logloss on the held-out rows, and the table rows: for the
hash-bucket path the rows it declares, for --ev the rows stored at the end (ev_tables), with the ids the
filters held back and the tables' memory. Ratios are to `hash`, measured in the same run.

    python benchmarks/ev_compare.py                                # DLRM, every configuration, 3 repeats
    python benchmarks/ev_compare.py --configs hash,ev,ev_fusion --repeats 5
    python benchmarks/ev_compare.py --rows 20000 --eval_rows 2000 --steps 20 --repeats 1 \\
        --configs hash,ev,ev_counter --buckets_cap 50000 --output /tmp/ev_smoke   # a smoke test

Needs: the hash-bucket path at full cardinalities holds 33.7M x 16 floats and two Adam slots (about
6.5 GB, plus the process's ~1 GB) and writes checkpoints of that size (two while the final one replaces
the step-0 one) and a SavedModel of the tables; the script estimates both and refuses to start when the
machine has less free memory or disk (--force runs anyway). Checkpoints go under --work_dir and are
deleted after each run.
"""
import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.io_utils import atomic_write_json, write_report  # noqa: E402
from modelzoo.models import load_spec  # noqa: E402
from modelzoo.schema import load_schema  # noqa: E402
from modelzoo.synthetic import CRITEO_KAGGLE_CARDINALITIES, generate_criteo  # noqa: E402

# Every configuration pins --emb_fusion, so `ev` and `ev_fusion` differ in that alone whatever the
# model's default.
CONFIGS = {
    "hash": ["--emb_fusion=false"],
    "ev": ["--ev", "--emb_fusion=false"],
    "ev_counter": ["--ev", "--ev_filter", "counter", "--emb_fusion=false"],
    "ev_fusion": ["--ev", "--emb_fusion=true"],
    "ev_cbf": ["--ev", "--ev_filter", "cbf", "--emb_fusion=false"],
    "ev_adaptive": ["--ev", "--adaptive_emb", "--emb_fusion=false"],
    "ev_dynamic": ["--ev", "--dynamic_ev", "--emb_fusion=false"],
    "hash_fusion": ["--emb_fusion=true"],  # not in the default list: the hash path's own fusion A/B
}
DEFAULT_CONFIGS = [c for c in CONFIGS if c != "hash_fusion"]
OPTIMIZER_COPIES = 3  # a table and its two optimizer slots (LazyAdam m and v; FTRL accumulator and linear)
PROCESS_BASE_MB = 1200  # a DLRM process without its tables (the shipped 1.8M-row schema peaks at ~1.4 GB)
THROUGHPUT_TARGET = 0.70  # the issue: --ev within 30% of the hash-bucket path


def choose_configs(text):
    out = {}
    for name in [n.strip() for n in text.split(",") if n.strip()]:
        if ":" in name:  # an ad-hoc configuration: "NAME:--flag --flag=value"
            label, flags = name.split(":", 1)
            out[label] = flags.split()
        elif name in CONFIGS:
            out[name] = CONFIGS[name]
        else:
            raise ValueError(f"unknown configuration {name!r}; choose from {list(CONFIGS)} or give NAME:FLAGS")
    if not out:
        raise ValueError("--configs names no configuration")
    return out


def uses_ev(flags):
    return any(f == "--ev" or (f.startswith("--ev=") and f.split("=", 1)[1].lower() in ("true", "1", "yes"))
               for f in flags)


# -- data and schema ------------------------------------------------------------------------------
def write_schema(path, cap):
    """criteo.json with hash_buckets = the full Kaggle cardinality of each column (at most `cap`)."""
    doc = json.loads((REPO / "modelzoo" / "schemas" / "criteo.json").read_text())
    for col in doc["columns"]:
        if col["kind"] == "categorical":
            card = CRITEO_KAGGLE_CARDINALITIES[col["name"]]
            col["hash_buckets"] = min(card, cap) if cap else card
    doc["name"] = "criteo_kaggle_full" if not cap else f"criteo_kaggle_cap{cap}"
    doc["description"] = ("Criteo Kaggle schema (modelzoo/schemas/criteo.json) with hash_buckets = the full-data "
                          "cardinality of each column" + (f", capped at {cap:,}" if cap else "")
                          + "; written by benchmarks/ev_compare.py.")
    atomic_write_json(path, doc)
    return path


def prepare_data(data_dir, rows, eval_rows, seed):
    """train.txt (the first `rows` rows of the generated stream) and eval.txt (the next `eval_rows`),
    generated once; a later run with the same rows, eval_rows and seed reuses them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    train, evals, info_path = data_dir / "train.txt", data_dir / "eval.txt", data_dir / "data.json"
    wanted = {"rows": rows, "eval_rows": eval_rows, "seed": seed}
    if info_path.is_file() and train.is_file() and evals.is_file():
        info = json.loads(info_path.read_text())
        if {k: info.get(k) for k in wanted} == wanted:
            print(f"data: reusing {train} ({rows:,} rows) and {evals} ({eval_rows:,} rows)", flush=True)
            return train, evals, info
    print(f"data: generating {rows + eval_rows:,} Criteo rows (seed {seed}) into {data_dir}", flush=True)
    info_path.unlink(missing_ok=True)
    stream = data_dir / "all.txt"
    stats = generate_criteo(stream, rows + eval_rows, seed=seed)
    with open(stream, "rb") as src, open(train, "wb") as tr, open(evals, "wb") as ev:
        for i, line in enumerate(src):
            (tr if i < rows else ev).write(line)
    stream.unlink()
    info = dict(wanted, hidden_auc=stats["hidden_auc"], ctr=stats["ctr"], seconds=round(stats["seconds"], 1),
                generator="modelzoo.synthetic.generate_criteo")
    atomic_write_json(info_path, info)
    print(f"data: {rows + eval_rows:,} rows in {stats['seconds']:.0f}s (CTR {stats['ctr']:.3f}, the generator's "
          f"hidden-logit AUC {stats['hidden_auc']:.4f})", flush=True)
    return train, evals, info


# -- what the hash-bucket path declares -----------------------------------------------------------
def declared_tables(spec, schema_path):
    """(rows, floats) of the hash-bucket tables the model declares with this schema: its embeddings, and
    for Wide & Deep also the wide part's one weight per bucket and per crossed bucket."""
    schema = load_schema(str(schema_path))
    if spec.embedding_dim:
        schema = schema.with_embedding_dim(spec.embedding_dim)
    cats = schema.categorical
    rows = sum(c.num_ids for c in cats)
    floats = sum(c.num_ids * c.embedding_dim for c in cats)
    if spec.name == "wide_and_deep":
        wide = rows + sum(x.hash_buckets for x in schema.crosses)
        rows, floats = rows + wide, floats + wide
    return rows, floats


def mem_available_mb():
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def check_resources(estimate_mb, disk_mb, work_dir, force):
    problems = []
    available = mem_available_mb()
    if available is not None and estimate_mb > available:
        problems.append(f"the hash-bucket run needs about {estimate_mb:,.0f} MB of memory and "
                        f"{available:,.0f} MB is available")
    free = shutil.disk_usage(work_dir).free / 2 ** 20
    if disk_mb > free:
        problems.append(f"its checkpoints and SavedModel need about {disk_mb:,.0f} MB of disk under {work_dir} "
                        f"and {free:,.0f} MB is free")
    if problems and not force:
        raise SystemExit("ev_compare.py: error: " + "; ".join(problems) + ". Free some, choose another "
                         "--work_dir, leave out `hash`, or give --force to run anyway.")
    for p in problems:
        print(f"warning (--force): {p}", flush=True)


# -- one run --------------------------------------------------------------------------------------
def run_once(model, name, flags, common, work_dir):
    checkpoint = tempfile.mkdtemp(prefix=f"ckpt-{name}-", dir=work_dir)
    cmd = [sys.executable, str(REPO / model / "train.py"), *common, "--checkpoint", checkpoint, *flags]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
        result_path = Path(checkpoint) / "result.json"
        if proc.returncode != 0 or not result_path.is_file():
            tail = (proc.stderr.strip() or proc.stdout.strip())[-3000:]
            raise SystemExit(f"ev_compare.py: configuration {name} failed (exit status {proc.returncode}):\n"
                             f"  {shlex.join(cmd)}\n--- its output, last lines ---\n{tail}")
        return json.loads(result_path.read_text())
    finally:
        shutil.rmtree(checkpoint, ignore_errors=True)  # the hash path's checkpoints are GBs


def summarize_run(result, declared_rows, declared_mb):
    """The figures of one run that the comparison reports."""
    out = {k: result.get(k) for k in ("samples_per_sec", "peak_rss_mb", "auc", "logloss", "steps",
                                       "wall_seconds", "train_rows", "eval_rows")}
    tables = result.get("ev_tables")
    if tables:
        filtered = [t.get("filtered") for t in tables.values() if "filtered" in t]
        out.update(table_rows=sum(t["rows"] for t in tables.values()),
                   filtered=None if not filtered or None in filtered else sum(filtered),
                   evicted=sum(t.get("evicted", 0) for t in tables.values()),
                   table_mb=round(sum(t["memory_mb"] for t in tables.values()), 1), rows_kind="stored")
        if any("in_hash_buckets" in t for t in tables.values()):
            out["in_hash_buckets"] = sum(t.get("in_hash_buckets", 0) for t in tables.values())
    else:
        out.update(table_rows=declared_rows, filtered=None, evicted=None, table_mb=round(declared_mb, 1),
                   rows_kind="declared")
    return out


def median_of(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value, spec, none="n/a"):
    return none if value is None else format(value, spec)


def held_back(row):
    """Ids without a row of their own: held back by a filter, or (--adaptive_emb) in the hash buckets."""
    if row.get("in_hash_buckets") is not None:
        return f"{row['in_hash_buckets']:,.0f} (in hash buckets)"
    return fmt(row["filtered"], ",.0f", "-")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dlrm", choices=("dlrm", "wide_and_deep"))
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help=f"comma-separated, from {list(CONFIGS)}, or NAME:FLAGS for an ad-hoc one "
                        "(default: all but hash_fusion)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of each configuration")
    p.add_argument("--rows", type=int, default=2_000_000, help="generated training rows")
    p.add_argument("--eval_rows", type=int, default=200_000, help="generated held-out rows (the stream's tail)")
    p.add_argument("--data_seed", type=int, default=1, help="seed of the generated data")
    p.add_argument("--steps", type=int, default=None, help="training steps of every run (default: one epoch, "
                   "rows // batch_size)")
    p.add_argument("--batch_size", type=int, default=None, help="default: the model's (2048)")
    p.add_argument("--seed", type=int, default=2021, help="train.py --seed of every run")
    p.add_argument("--buckets_cap", type=int, default=0,
                   help="cap every column's hash_buckets at this (smoke tests); 0: the full Kaggle cardinalities")
    p.add_argument("--data_dir", default=str(REPO / "result" / "ev_compare_data"),
                   help="where the generated data and the schema are kept between runs")
    p.add_argument("--work_dir", default=None, help="parent of the runs' checkpoint folders (default: DATA_DIR)")
    p.add_argument("--extra", default="", help="more train.py flags for every run, space-separated")
    p.add_argument("--force", action="store_true", help="run even when the memory or disk estimate does not fit")
    p.add_argument("--output", default=None, help="writes OUTPUT.json and OUTPUT.md (default "
                   "benchmarks/results/ev_compare, or ev_compare_wide_and_deep)")
    args = p.parse_args(argv)
    for name in ("repeats", "rows", "eval_rows"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    for name in ("steps", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.buckets_cap < 0 or args.data_seed < 0:
        p.error("--buckets_cap and --data_seed must be >= 0")
    try:
        chosen = choose_configs(args.configs)
    except ValueError as err:
        p.error(str(err))
    suffix = "" if args.model == "dlrm" else f"_{args.model}"
    args.output = args.output or str(REPO / "benchmarks" / "results" / f"ev_compare{suffix}")

    spec = load_spec(args.model)
    batch = args.batch_size or spec.defaults.get("batch_size", 2048)
    steps = args.steps or max(1, args.rows // batch)
    data_dir = Path(args.data_dir).resolve()
    work_dir = Path(args.work_dir).resolve() if args.work_dir else data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    schema_path = write_schema(data_dir / (f"criteo_kaggle_cap{args.buckets_cap}.json" if args.buckets_cap
                                           else "criteo_kaggle_full.json"), args.buckets_cap)
    declared_rows, declared_floats = declared_tables(spec, schema_path)
    declared_mb = declared_floats * 4 * OPTIMIZER_COPIES / 2 ** 20  # tables and their optimizer slots
    hash_runs = [n for n, f in chosen.items() if not uses_ev(f)]
    estimate_mb = PROCESS_BASE_MB + declared_mb
    # checkpoints: the step-0 one and the final one while it replaces it; then the SavedModel's tables
    disk_mb = 2 * declared_mb + declared_floats * 4 / 2 ** 20
    print(f"schema {schema_path.name}: {declared_rows:,} hash-bucket rows declared; with optimizer slots "
          f"{declared_mb:,.0f} MB (hash-path estimate: ~{estimate_mb:,.0f} MB RSS, ~{disk_mb:,.0f} MB disk a run)",
          flush=True)
    if hash_runs:
        check_resources(estimate_mb, disk_mb, work_dir, args.force)

    train, evals, data_info = prepare_data(data_dir, args.rows, args.eval_rows, args.data_seed)
    common = ["--train_files", str(train), "--eval_files", str(evals), "--schema", str(schema_path),
              "--steps", str(steps), "--batch_size", str(batch), "--seed", str(args.seed),
              "--log_steps", "1000000", "--save_steps", str(10 ** 9), *args.extra.split()]

    runs = {name: [] for name in chosen}
    cpu = tf_version = None  # from the runs' result.json
    for rep in range(args.repeats):
        for name, flags in chosen.items():
            started = time.time()
            result = run_once(args.model, name, flags, common, work_dir)
            cpu, tf_version = cpu or result.get("cpu"), tf_version or result.get("tf_version")
            r = summarize_run(result, declared_rows, declared_mb)
            runs[name].append(r)
            print(f"run {rep + 1}/{args.repeats} {name:>12}: {fmt(r['samples_per_sec'], ',.0f'):>8} samples/s | "
                  f"peak RSS {r['peak_rss_mb']:,.0f} MB | AUC {fmt(r['auc'], '.4f')} | "
                  f"logloss {fmt(r['logloss'], '.4f')} | {r['rows_kind']} rows {r['table_rows']:,} | "
                  f"{time.time() - started:.0f}s", flush=True)

    base_sps = median_of(runs["hash"], "samples_per_sec") if "hash" in runs else None
    base_rss = median_of(runs["hash"], "peak_rss_mb") if "hash" in runs else None
    rows = []
    for name, flags in chosen.items():
        rs = runs[name]
        sps, rss = median_of(rs, "samples_per_sec"), median_of(rs, "peak_rss_mb")
        sps_all = [r["samples_per_sec"] for r in rs if r["samples_per_sec"] is not None]
        rows.append({
            "config": name, "flags": " ".join(flags), "samples_per_sec": sps,
            "min": min(sps_all) if sps_all else None, "max": max(sps_all) if sps_all else None,
            "ratio_to_hash": sps / base_sps if sps and base_sps else None,
            "peak_rss_mb": rss, "rss_ratio_to_hash": rss / base_rss if rss and base_rss else None,
            "auc": median_of(rs, "auc"), "logloss": median_of(rs, "logloss"),
            "table_rows": median_of(rs, "table_rows"), "rows_kind": rs[0]["rows_kind"],
            "filtered": median_of(rs, "filtered"), "evicted": median_of(rs, "evicted"),
            "in_hash_buckets": median_of(rs, "in_hash_buckets"),
            "table_mb": median_of(rs, "table_mb"), "wall_seconds": median_of(rs, "wall_seconds"), "runs": rs})

    cpu = cpu or {"model": platform.processor(), "cores": os.cpu_count(), "flags": []}
    meta = {"model": args.model, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{cpu['model']}, {cpu['cores']} vCPU, {' '.join(cpu['flags'])}",
            "python": platform.python_version(), "tf_version": tf_version,
            "command": "python benchmarks/ev_compare.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            "steps": steps, "batch_size": batch, "repeats": args.repeats, "seed": args.seed,
            "data": f"{args.rows:,} generated Criteo training rows (Kaggle cardinalities) + the next "
                    f"{args.eval_rows:,} held out, seed {args.data_seed}",
            "data_info": data_info, "schema": schema_path.name, "buckets_cap": args.buckets_cap or None,
            "declared_rows": declared_rows, "declared_table_mb": round(declared_mb, 1),
            "hash_estimate_mb": round(estimate_mb), "extra_flags": args.extra or None}

    cap = f" capped at {args.buckets_cap:,}" if args.buckets_cap else ""
    lines = [f"{args.model}, batch {batch}, {steps} steps a run, median of {args.repeats} interleaved run(s); "
             f"{meta['machine']}; TF {meta['tf_version']}; {meta['data']}; hash_buckets = the full Kaggle "
             f"cardinalities{cap} ({declared_rows:,} rows declared); {meta['date']}.", "",
             f"Command: `{meta['command']}`", "",
             "| configuration | flags | samples/s (median) | min - max | vs hash | peak RSS MB | RSS vs hash "
             "| AUC | logloss | table rows | ids held back | table MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio_to_hash']:.2f}x" if r["ratio_to_hash"] else "n/a"
        rss_ratio = f"{r['rss_ratio_to_hash']:.2f}x" if r["rss_ratio_to_hash"] else "n/a"
        table_rows = f"{r['table_rows']:,.0f}" + (" (declared)" if r["rows_kind"] == "declared" else "")
        lines.append(f"| {r['config']} | `{r['flags']}` | {fmt(r['samples_per_sec'], ',.0f')} | "
                     f"{fmt(r['min'], ',.0f')} - {fmt(r['max'], ',.0f')} | {ratio} | {fmt(r['peak_rss_mb'], ',.0f')} "
                     f"| {rss_ratio} | {fmt(r['auc'], '.4f')} | {fmt(r['logloss'], '.4f')} | {table_rows} | "
                     f"{held_back(r)} | {fmt(r['table_mb'], ',.0f')} |")
    lines += ["", "Table rows: for `hash` the rows its schema declares (all initialized and checkpointed), for "
              "--ev the rows stored at the end of training (`ev_tables` in result.json). Ids held back: ids seen "
              "but not admitted by the filter (cbf: estimated), or with --adaptive_emb still in its hash buckets. "
              "Table MB: for `hash` the declared tables with their two optimizer slots (float32), for --ev the "
              "tables' payload with their slots as ev_tables reports it. AUC and logloss on the held-out rows."]
    by_name = {r["config"]: r for r in rows}
    if "hash" in by_name and "ev" in by_name and by_name["ev"]["ratio_to_hash"]:
        ev, hb = by_name["ev"], by_name["hash"]
        met = "met" if ev["ratio_to_hash"] >= THROUGHPUT_TARGET else "NOT met"
        lines += ["", f"- Throughput: --ev at {ev['ratio_to_hash']:.2f}x the hash-bucket path (target: within 30%, "
                  f">= {THROUGHPUT_TARGET:.2f}x): {met}.",
                  f"- Memory: hash-bucket path peak RSS {fmt(hb['peak_rss_mb'], ',.0f')} MB for "
                  f"{hb['table_rows']:,.0f} declared rows; --ev {fmt(ev['peak_rss_mb'], ',.0f')} MB for "
                  f"{ev['table_rows']:,.0f} stored rows ({fmt(ev['rss_ratio_to_hash'], '.2f')}x)."]
    table = "\n".join(lines) + "\n"
    write_report(args.output, {"meta": meta, "results": rows}, table)


if __name__ == "__main__":
    main()

"""What a run tells: the start-up lines (announce), result.json (write_result, write_benchmark) and the
summary it prints at the end."""
import json
import math
import os
import sys
import time

import tensorflow as tf

from modelzoo.embedding_variables import describe as describe_ev
from modelzoo.io_utils import atomic_write_json
from modelzoo.run.checkpoints import global_step_of
from modelzoo.schema import schema_summary
from modelzoo.system import bf16_message, onednn_enabled, peak_rss_mb

TABLE_ROWS_PER_TRAIN_ROW = 10  # more table rows than this per training row: say how to size them


def describe_switches(opts):
    """The speed switches on, from options.Options `opts`."""
    on = [name for name, value in (("smartstaged", opts.data.smartstaged), ("op_fusion", opts.speed.op_fusion),
                                   ("emb_fusion", opts.speed.emb_fusion), ("xla", opts.speed.xla),
                                   ("bf16", opts.speed.bf16)) if value]
    return ("--tf baseline: " if opts.speed.tf else "") + (", ".join(on) if on else "no speed switches")


def describe_variable_bytes(sizes):
    """The start-up line on the memory the variables take (MB = 2**20 bytes, as peak_rss_mb)."""
    def mb(n):
        return f"{n / (1 << 20):,.1f} MB"
    total = sum(v for k, v in sizes.items() if k != "dynamic_tables")
    dynamic = sizes["dynamic_tables"]
    tables = [f"tables {mb(sizes['tables'])} + optimizer slots {mb(sizes['table_slots'])}"] \
        if sizes["tables"] or not dynamic else []
    if dynamic:  # (their rows and slots live in TFRA hash tables, sized by the ids admitted)
        tables.append(f"{dynamic} dynamic embedding table{'s' if dynamic > 1 else ''} (sized by the ids admitted, "
                      "not counted; ev_tables in result.json)")
    return (f"variables: {'; '.join(tables)}; dense layers {mb(sizes['dense'])} + optimizer slots "
            f"{mb(sizes['dense_slots'])}; {mb(total)} in all")


def announce(ctx):
    """The chief's start-up lines: schema, data, processes, training, CPU."""
    opts, schema, data, world, cpu = ctx.opts, ctx.schema, ctx.data, ctx.world, ctx.cpu
    print(f"{ctx.spec.name}: {schema_summary(schema)}", flush=True)
    if opts.ev is not None:
        print(describe_ev(ctx.args, schema), flush=True)
    print(f"data: {data.description}: {data.train_rows:,} train rows, {data.eval_rows:,} eval rows"
          + (f"; {data.indexes}" if data.indexes else ""), flush=True)
    table_rows = sum(c.num_ids for c in schema.tables)
    if opts.ev is None and table_rows > TABLE_ROWS_PER_TRAIN_ROW * data.train_rows:
        print(f"note: the schema's tables have {table_rows:,} rows for {data.train_rows:,} training rows (most are "
              f"never trained, and they take memory): `python -m modelzoo.schema infer FILE --label COLUMN` sizes "
              "the hash buckets from the data", flush=True)
    batch, scaling = opts.data.batch_size, opts.distributed.lr_scaling
    if world.size > 1:
        print(f"horovod: {world.size} processes x batch {batch:,} = global batch "
              f"{ctx.global_batch:,}; learning rates x {world.lr_factor(scaling):g} "
              f"(--lr_scaling {scaling}); each process decodes 1/{world.size} of every global batch",
              flush=True)
    if ctx.schedule is not None:
        print(ctx.schedule.description, flush=True)
    if ctx.small_data_flags:
        print(f"small data: {ctx.spec.name}'s small-data defaults "
              f"{' '.join(f'--{k} {v:g}' for k, v in ctx.small_data_flags.items())} (ModelSpec.small_data_defaults; "
              "a flag given on the command line wins)", flush=True)
    print(f"train: {ctx.steps:,} steps of {ctx.global_batch:,} | optimizer {opts.train.optimizer} lr "
          f"{opts.train.learning_rate} | {describe_switches(opts)} | checkpoint {ctx.checkpoint}",
          flush=True)
    limit = f" by the cgroup CPU limit {cpu['cpu_quota']:g} of the node's {cpu['node_cores']}" \
        if cpu.get("cpu_quota") else ""
    print(f"cpu: {cpu['model']} ({cpu['cores']} cores{limit}; {' '.join(cpu['flags'])}; BF16 hardware: "
          f"{', '.join(cpu['bf16_hardware']) or 'none'})", flush=True)
    if opts.speed.bf16:
        print(bf16_message(cpu, onednn_enabled()), flush=True)


def write_result(ctx, trained, metrics, export_dir=None, only=None, extra=None):
    """The chief's CHECKPOINT/result.json and summary; `only`: an --evaluate or --predict run, which
    trains nothing and keeps the figures (and export) of the run that trained."""
    checkpoint, data, world, meter = ctx.checkpoint, ctx.data, ctx.world, trained.meter
    skipped_train = int(tf.train.load_variable(trained.estimator.latest_checkpoint(), "bad_rows_skipped"))

    def metric(name):
        return float(metrics[name]) if name in metrics else None

    result = {
        "model": ctx.spec.name, "flags": ctx.result_flags(), "schema": ctx.schema.name, "data": data.description,
        "generated_data": data.generated, "train_rows": data.train_rows, "eval_rows": data.eval_rows,
        "steps": global_step_of(checkpoint), "steps_this_run": meter.steps_run,
        "batch_size": ctx.global_batch, "processes": world.size,
        "samples_per_sec": meter.samples_per_sec, "steady_steps": meter.steady_steps,
        "wall_seconds": round(time.time() - ctx.wall_start, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
        "auc": metric("auc"), "logloss": metric("logloss"), "accuracy": metric("accuracy"),
        "eval_loss": metric("loss"), "train_loss": meter.last_loss,
        "bad_rows_skipped": {"train": skipped_train, "eval": int(metrics.get("bad_rows_skipped", 0))},
        "tf_version": tf.__version__, "cpu": ctx.cpu, "checkpoint": checkpoint, "export_dir": export_dir,
    }
    # a multi-task model's auc/TASK, logloss/TASK, ...; the group column's gauc, gauc_groups, gauc_rows (null
    # when no group holds both classes)
    for name in sorted(n for n in metrics if "/" in n or n.startswith("gauc")):
        value = float(metrics[name])
        result[name] = None if math.isnan(value) else value
    if result["auc"] is not None and math.isnan(result["auc"]):  # metrics.exact_auc: one class in the labels
        print(f"warning: AUC undefined: the {data.eval_rows:,} eval rows hold one class only (every label "
              "the same); result.json has \"auc\": null", file=sys.stderr, flush=True)
        result["auc"], result["auc_undefined"] = None, "one class in the eval labels"
    record = trained.record
    if record is not None and record.evaluations:
        result["evaluations"] = record.evaluations
        result["best"] = record.best if ctx.schedule.keeps_best else None
        result["stopped_early_at_step"] = record.stopped_early
        if result["best"]:
            result["best_step"] = result["best"]["step"]
    if getattr(meter, "variable_bytes", None):
        result["variable_bytes"] = meter.variable_bytes
    if trained.ev_report:
        result["ev_tables"] = trained.ev_report
    if getattr(meter, "memory_plan", None):
        result["memory_plan"] = meter.memory_plan
    result.update(extra or {})
    if trained.digests:
        digests = trained.digests
        result["horovod"] = {"processes": world.size, "per_process_batch": ctx.opts.data.batch_size,
                             "lr_factor": world.lr_factor(ctx.opts.distributed.lr_scaling),
                             "variable_digests": digests, "identical_variables": len(set(digests)) == 1}
    result_path = os.path.join(checkpoint, "result.json")
    if meter.steps_run == 0 and os.path.exists(result_path):
        # Nothing trained in this run: keep the figures of the run that trained (and its export).
        with open(result_path, encoding="utf-8") as f:
            before = json.load(f)
        kept = ["samples_per_sec", "steady_steps", "train_loss", "processes", "batch_size", "horovod", "ev_tables",
                "variable_bytes", "memory_plan"]
        for key in kept + (["export_dir", "evaluations", "best", "best_step", "stopped_early_at_step"] if only else []):
            if key in before:
                result[key] = before[key]
    atomic_write_json(result_path, result)
    print_summary(result)
    return 0


def write_benchmark(ctx, meter):
    """--benchmark: OUTPUT_DIR/MODEL_benchmark/result.json and its one line."""
    steps, batch = ctx.opts.train.steps, ctx.opts.data.batch_size
    result = {"model": ctx.spec.name, "benchmark": True, "flags": ctx.result_flags(), "data": ctx.data.description,
              "generated_data": ctx.data.generated, "steps": steps, "batch_size": batch,
              "samples_per_sec": meter.samples_per_sec, "steady_steps": meter.steady_steps,
              "train_loss": meter.last_loss, "wall_seconds": round(time.time() - ctx.wall_start, 2),
              "peak_rss_mb": round(peak_rss_mb(), 1), "tf_version": tf.__version__, "cpu": ctx.cpu,
              "onednn": {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                         "enabled": onednn_enabled()}}
    out = os.path.join(ctx.opts.train.output_dir, f"{ctx.spec.name}_benchmark")
    os.makedirs(out, exist_ok=True)
    atomic_write_json(os.path.join(out, "result.json"), result)
    speed = "n/a (too few steps for a steady state)" if meter.samples_per_sec is None else \
        f"{meter.samples_per_sec:,.0f} samples/s"
    print(f"benchmark: {speed} (steady state over {meter.steady_steps} of {steps} steps x batch "
          f"{batch:,}) | oneDNN {'on' if result['onednn']['enabled'] else 'off'} | "
          f"result: {os.path.join(out, 'result.json')}", flush=True)
    return 0


def print_summary(r):
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)
    print("\n==== summary ====")
    print(f"model {r['model']} | {r['train_rows']:,} train rows, {r['eval_rows']:,} eval rows"
          + (" (synthetic)" if r["generated_data"] else ""))
    print(f"steps {r['steps']:,} (this run {r['steps_this_run']:,}) x batch {r['batch_size']:,} | "
          f"throughput {fmt(r['samples_per_sec'], ',.0f')} samples/s (steady state) | wall {r['wall_seconds']:.1f}s "
          f"| peak RSS {r['peak_rss_mb']:,.0f} MB")
    auc = "n/a: one class" if r.get("auc_undefined") else fmt(r["auc"], ".4f")
    best = r.get("best")
    which = f" (the best of {len(r['evaluations']):,} evaluations: step {best['step']:,})" if best else ""
    gauc = f" | GAUC {fmt(r['gauc'], '.4f')} over {r['gauc_groups']:,.0f} of {r['gauc_groups_all']:,.0f} groups" \
        if "gauc" in r else ""
    print(f"eval{which}: AUC {auc} | logloss {fmt(r['logloss'], '.4f')} | accuracy {fmt(r['accuracy'], '.4f')}{gauc}")
    tasks = [name[len("auc/"):] for name in r if name.startswith("auc/")]
    if tasks:  # a multi-task model: each task over its rows
        print("tasks: " + " | ".join(f"{t} AUC {fmt(r[f'auc/{t}'], '.4f')} logloss {fmt(r[f'logloss/{t}'], '.4f')}"
                                      + (f" GAUC {fmt(r[f'gauc/{t}'], '.4f')}" if f"gauc/{t}" in r else "")
                                      for t in tasks))
    if r.get("stopped_early_at_step"):
        print(f"early stopping at step {r['stopped_early_at_step']:,}: the SavedModel is the best step's model")
    skipped = r["bad_rows_skipped"]
    if skipped["train"] or skipped["eval"]:
        print(f"bad rows skipped: {skipped['train']:,} in training, {skipped['eval']:,} in evaluation")
    print(f"SavedModel: {r['export_dir']}")
    print(f"result: {os.path.join(r['checkpoint'], 'result.json')}", flush=True)

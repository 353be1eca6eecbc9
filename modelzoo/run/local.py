"""The run of one process or of a Horovod job (--hvd): find the data, train (resuming the checkpoint),
evaluate, export and report; --evaluate, --predict, --export_only and --benchmark. A parameter-server
job's tasks (cluster.py) reuse these steps."""
import concurrent.futures
import dataclasses
import os
import shutil
import signal
import tempfile

import tensorflow as tf

from modelzoo import data_parallel
from modelzoo.datafiles import DataError, diagnose, resolve
from modelzoo.embedding_variables import saving_listeners
from modelzoo.export import warm_start_source
from modelzoo.hooks import FiniteCheckpointGuard, FiniteLossHook, StopRequest, ThroughputMeter
from modelzoo.incremental_ckpt import IncrementalCheckpointListener
from modelzoo.io_utils import atomic_writer
from modelzoo.run import report
from modelzoo.run.checkpoints import (CheckpointMismatch, check_checkpoint, checkpoint_identity, claim_checkpoint,
                                      global_step_of, guarded_training, restore_problem, resume_step, rows_consumed,
                                      tf_error_line)
from modelzoo.run.checkpoints import check_data  # (the data a checkpoint was trained on)
from modelzoo.run.context import RunContext, Trained
from modelzoo.run.graph import build_estimator, export_model, input_fn
from modelzoo.run.schedule import EvaluationRecord, best_checkpoint, keep_best, plan
from modelzoo.datasets import aliccp
from modelzoo.synthetic import generate_criteo
from modelzoo.synthetic_sequences import generate_taobao
from modelzoo.system import cpu_info


def generate_criteo_sample(path, rows, seed):
    return generate_criteo(path, rows, seed=seed)


def data_generator(schema):
    """What generates a sample where --data_location holds no data (the Criteo, Taobao and Ali-CCP schemas')."""
    return {"criteo": generate_criteo_sample, "taobao": generate_taobao, "aliccp": aliccp.generate_sample}.get(
        schema.name)


def run_reading(ctx, slices, call):
    """Run estimator.train/evaluate; a malformed row becomes a DataError naming file, line and problem."""
    try:
        return call()
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError, tf.errors.NotFoundError) as err:
        mismatch = restore_problem(err)
        if mismatch is not None:
            raise mismatch from None
        if isinstance(err, tf.errors.NotFoundError):
            raise
        problem = diagnose(slices, ctx.data.layout(ctx.schema), ctx.data.delimiter)
        first = tf_error_line(err.message or str(err))
        raise DataError(problem or f"reading {slices[0].path}: {first}") from None


def prepare(ctx):
    """Check the checkpoint folder and find (or generate) the data: rank 0 first, the others after it."""
    identity = checkpoint_identity(ctx.spec, ctx.args, ctx.schema)
    generate = data_generator(ctx.schema)
    data = None
    if ctx.world.is_chief:
        claim_checkpoint(ctx.checkpoint, identity)
        data = resolve(ctx.args, ctx.schema, generate)
        if not ctx.opts.train.only:  # (--evaluate and --predict read any data)
            check_data(ctx.checkpoint, data)
    ctx.world.barrier("rank 0 stopped while checking the checkpoint and the data (its message says why)")
    if not ctx.world.is_chief:
        check_checkpoint(ctx.checkpoint, identity, record_new=False)
        data = resolve(ctx.args, ctx.schema, generate)
    return data


def checkpoint_listeners(ctx):
    """The chief's saving listeners: --ev's eviction at each checkpoint, --incremental_ckpt's notice of each
    full checkpoint, and the guard that keeps a non-finite model out of the checkpoints."""
    if not ctx.world.is_chief:
        return []
    ev = ctx.opts.ev
    incremental = [IncrementalCheckpointListener()] if ev is not None and ev.incremental_secs else []
    return [*saving_listeners(ctx.args), *incremental, FiniteCheckpointGuard()]


def train(ctx):
    """Train on ctx.schedule (resuming the checkpoint) up to the last step or early stopping, in one
    Estimator.train: the held-out rows are evaluated inside the training session at each evaluation step
    (in_session_decisions). Returns a Trained with the evaluations' record and, with several processes,
    each process's digest of its variables after training (in rank order)."""
    checkpoint, world, opts, schedule = ctx.checkpoint, ctx.world, ctx.opts, ctx.schedule
    full_step = global_step_of(checkpoint)  # rank 0's checkpoint: every process decides alike
    start_step = resume_step(checkpoint, opts.ev)  # (with --incremental_ckpt: the deltas after the full one)
    trained = Trained(None, ThroughputMeter())
    trained.record = record = EvaluationRecord.load(checkpoint, schedule)
    model_dir = checkpoint if world.is_chief else tempfile.mkdtemp(prefix=f"{ctx.spec.name}-rank{world.rank}-")
    try:
        trained.estimator = estimator = build_estimator(
            ctx, model_dir, trained.meter, (start_step, schedule.max_steps), trained.ev_report,
            in_session_decisions(ctx, record) if evaluates(ctx) else None)
        done = record.stopped_early or full_step >= schedule.max_steps
        if done and world.is_chief:
            print(f"checkpoint {checkpoint} is already at step {start_step:,}"
                  + (f", where early stopping ended its training (best: step {record.best['step']:,})"
                     if record.stopped_early and record.best else f" >= {schedule.max_steps:,}")
                  + ": nothing to train", flush=True)
        elif start_step and world.is_chief:
            print(f"resuming from step {start_step:,}", flush=True)
        # Horovod's processes must stop at the same step: a SIGTERM there ends them at once (the
        # last checkpoint is resumed); one process (or a PS job's task) stops after its step
        with StopRequest(signals=() if world.size > 1 else (signal.SIGTERM,)) as stop, \
                guarded_training(checkpoint, stop):
            if not done:
                train_steps(ctx, estimator, schedule.max_steps, stop)
            if world.is_chief and evaluates(ctx) and not stop.received and \
                    global_step_of(checkpoint) >= schedule.max_steps:
                # (a resumed run whose last checkpoint was saved and not evaluated: the session evaluated nothing)
                record_evaluation(ctx, record, global_step_of(checkpoint), lambda: evaluate(ctx, estimator))
        trained.digests = world.gather(world.digest) if world.size > 1 else None
    finally:
        if not world.is_chief:
            shutil.rmtree(model_dir, ignore_errors=True)
    return trained


def train_steps(ctx, estimator, target, stop):
    """Train up to step `target` (the input resumes after the rows trained on before)."""
    checkpoint, opts, world = ctx.checkpoint, ctx.opts, ctx.world
    consumed = rows_consumed(checkpoint, incremental=bool(opts.ev and opts.ev.incremental_secs))
    if consumed and world.is_chief:
        print(f"input: skipping the {consumed:,} rows trained on before", flush=True)
    train_input = input_fn(ctx, ctx.data.train, True, shard=(world.size, world.rank), skip_rows=consumed)
    listeners = [] if opts.train.benchmark else checkpoint_listeners(ctx)
    run_reading(ctx, ctx.data.train, lambda: estimator.train(train_input, max_steps=target,
                                                             hooks=[FiniteLossHook(), stop.hook()],
                                                             saving_listeners=listeners))


def evaluates(ctx):
    """Whether the run evaluates held-out rows while it trains."""
    return not ctx.opts.train.benchmark and not ctx.opts.train.no_eval and bool(ctx.data.eval)


def record_evaluation(ctx, record, step, measure, checkpoint_of=None):
    """Rank 0 at evaluation step `step`: its metrics (`measure()`, unless the record has them: a resumed run)
    recorded, a new best's checkpoint (`checkpoint_of()`: its prefix, saved then; default the saved
    model.ckpt-STEP) copied to CHECKPOINT/best; returns whether training goes on."""
    if not record.evaluated(step):
        improved = record.add(step, measure())
        if improved and ctx.schedule.keeps_best:
            keep_best(ctx.checkpoint, checkpoint_of() if checkpoint_of else
                      os.path.join(ctx.checkpoint, f"model.ckpt-{step}"))
        go_on = not record.should_stop(step)
        record.save()
        print(describe_evaluation(record, step, improved), flush=True)
        return go_on
    return not record.should_stop(step)


def in_session_decisions(ctx, record):
    """The training session's evaluations (hooks.EvaluatingCheckpointSaver on rank 0, hooks.FollowDecisions
    on the other Horovod processes): `decide(step, measure, save)` evaluates on rank 0 (`measure()` runs the
    in-graph evaluation; a bad held-out row is a DataError; `save()` writes a new best's checkpoint), every
    process learns rank 0's decision, and it returns whether training stops."""
    world = ctx.world

    def decide(step, measure, save):
        go_on = record_evaluation(ctx, record, step, lambda: run_reading(ctx, ctx.data.eval, measure), save) \
            if world.is_chief else True
        if world.size > 1:  # (in a thread of its own: the session's graph is finalized, Horovod runs eagerly)
            with concurrent.futures.ThreadPoolExecutor(1) as thread:
                go_on = thread.submit(world.gather, go_on).result()[0]
        return not go_on
    return decide


def describe_evaluation(record, step, improved):
    entry = next(e for e in record.evaluations if e["step"] == step)
    schedule, best = record.schedule, record.best

    def fmt(name):
        return "n/a" if entry.get(name) is None else f"{entry[name]:.4f}"
    line = f"eval at step {step:,} (epoch {entry['epoch']:g}): AUC {fmt('auc')} | logloss {fmt('logloss')}"
    if schedule.patience:
        line += (" | best so far" if improved else
                 f" | best {best[schedule.metric]:.4f} at step {best['step']:,} ({record.since_best()} of "
                 f"{schedule.patience} without improvement)")
        if record.stopped_early:
            line += f": early stopping; the model of step {best['step']:,} is kept"
    return line


def evaluate(ctx, estimator):
    """The eval data's metrics (none with --no_eval or without evaluation data)."""
    if ctx.opts.train.no_eval or not ctx.data.eval:
        return {}
    return run_reading(ctx, ctx.data.eval, lambda: estimator.evaluate(input_fn(ctx, ctx.data.eval, False)))


def finish(ctx, trained, metrics, only=None, extra=None):
    """The chief's last part: export the SavedModel (unless `only` evaluates or predicts; with early
    stopping, the best evaluation's checkpoint), write result.json and print the summary."""
    best = trained.record.best if trained.record is not None and ctx.schedule.keeps_best else None
    export_dir = None if only else export_model(ctx, best_checkpoint(ctx.checkpoint) if best else None)
    return report.write_result(ctx, trained, metrics, export_dir, only, extra)


def final_metrics(ctx, trained):
    """The metrics result.json reports: with early stopping the best evaluation's, else the last step's (from
    the record when this run evaluated it, or evaluated now)."""
    record = trained.record
    step = global_step_of(ctx.checkpoint)
    entry = record.best if ctx.schedule.keeps_best else next(
        (e for e in record.evaluations if e["step"] == step), None)
    if entry is None:
        return evaluate(ctx, trained.estimator)
    metrics = {name: value for name, value in entry.items() if name not in ("step", "epoch") and value is not None}
    metrics.setdefault("auc", float("nan"))  # (null in the record: one class in the held-out labels)
    return {**record.last_metrics, **metrics}


def write_predictions(ctx, estimator):
    """--predict: label(s) and probability per eval row, in file order, to CHECKPOINT/predictions.csv (a
    multi-task model's: a probability_<task> column per task besides the first task's `probability`)."""
    path = os.path.join(ctx.checkpoint, "predictions.csv")

    labels = [c.name for c in ctx.schema.labels]
    keys = ["label"] if len(labels) == 1 else [f"label/{name}" for name in labels]
    keys += ["probabilities"] + [f"probabilities_{t.name}" for t in ctx.spec.tasks]  # (a multi-task model's)
    header = (["label"] if len(labels) == 1 else labels) + ["probability"] + [f"probability_{t.name}"
                                                                               for t in ctx.spec.tasks]

    def write():  # streams batch by batch; the file appears only when every row is written
        rows = 0
        with atomic_writer(path) as out:
            out.write(",".join(header) + "\n")
            for batch in estimator.predict(input_fn(ctx, ctx.data.eval, False, with_label=True),
                                           yield_single_examples=False):
                n = len(batch["probabilities"])
                out.writelines(",".join([f"{int(batch[k][i])}" for k in keys[:len(labels)]]
                                        + [f"{batch[k][i]:.6f}" for k in keys[len(labels):]]) + "\n"
                               for i in range(n))
                rows += n
        return rows

    rows = run_reading(ctx, ctx.data.eval, write)
    print(f"predictions: {rows:,} eval rows scored by {estimator.latest_checkpoint()} -> {path}", flush=True)
    return 0


def export_only(ctx):
    """--export_only: the latest checkpoint (a parameter-server job's too) exported on this machine."""
    latest = tf.train.latest_checkpoint(ctx.checkpoint)
    if not latest:
        raise CheckpointMismatch(f"--export_only needs a trained model in --checkpoint {ctx.checkpoint}, which "
                                 "holds no checkpoint; train first or give the folder of a trained one")
    check_checkpoint(ctx.checkpoint, checkpoint_identity(ctx.spec, ctx.args, ctx.schema), record_new=False)
    export_dir = export_model(ctx)
    print(f"SavedModel: {export_dir} (from {latest})", flush=True)
    return 0


def run(spec, args, wall_start):
    """One process, or one of a Horovod job's."""
    world = data_parallel.init(args)
    ctx = RunContext.create(spec, args, world=world, wall_start=wall_start)
    opts, checkpoint = ctx.opts, ctx.checkpoint
    if opts.train.export_only:
        return export_only(ctx)
    if opts.checkpoint.warm_start_from:
        warm_start_source(opts.checkpoint.warm_start_from)  # a missing or unreadable source is refused before any work
    ctx.data = data = prepare(ctx)
    ctx.schedule = plan(opts.train, data.train_rows, ctx.global_batch, bool(data.eval) and not opts.train.no_eval)
    ctx.small_data_flags = ctx.use_small_data_defaults()
    ctx.steps = ctx.schedule.max_steps
    ctx.cpu = cpu_info()
    if world.is_chief:
        report.announce(ctx)

    only = opts.train.only
    if only:
        if not tf.train.latest_checkpoint(checkpoint):
            raise CheckpointMismatch(f"--{only} needs a trained model in --checkpoint {checkpoint}, which holds "
                                     "no checkpoint; train first or give the folder of a trained one")
        if not data.eval:
            raise DataError(f"--{only} needs evaluation data; {data.description} has none")
        estimator = build_estimator(ctx, checkpoint)
        if opts.train.predict:
            return write_predictions(ctx, estimator)
        trained = Trained(estimator, ThroughputMeter())
    else:
        trained = train(ctx)
    if not world.is_chief:
        return 0  # rank 0 evaluates, exports and reports
    return finish(ctx, trained, evaluate(ctx, trained.estimator) if only else final_metrics(ctx, trained), only)


def benchmark(spec, args, wall_start):
    """--benchmark (NVIDIA's flag): --steps training steps in a temporary folder, timed as the throughput
    hook does (steady state, warm-up excluded); no evaluation, export or checkpoint is written."""
    ctx = RunContext.create(spec, args, wall_start=wall_start)
    workdir = tempfile.mkdtemp(prefix=f"{spec.name}-benchmark-")
    ctx.opts = dataclasses.replace(ctx.opts, checkpoint=dataclasses.replace(ctx.opts.checkpoint, folder=workdir))
    ctx.steps = ctx.opts.train.steps
    ctx.schedule = plan(ctx.opts.train, ctx.steps * ctx.global_batch, ctx.global_batch, False)
    try:
        ctx.data = prepare(ctx)
        ctx.cpu = cpu_info()
        report.announce(ctx)
        meter = train(ctx).meter
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report.write_benchmark(ctx, meter)

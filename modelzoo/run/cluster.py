"""One task of a parameter-server job (TF_CONFIG, modelzoo/distributed.py): ps, chief, worker or evaluator.
The trainers build the graph, the checkpoint listeners and the report of local.py; what differs is the
start (the chief claims the folder and the data, the others wait for it), train_and_evaluate with an
evaluator task, and the job's figures gathered from every trainer."""
import os
import time

import tensorflow as tf

from modelzoo import distributed
from modelzoo.data_parallel import ClusterWorld
from modelzoo.datafiles import DataError, resolve
from modelzoo.embedding_variables import load_kernels
from modelzoo.hooks import FiniteLossHook, StopRequest, ThroughputMeter
from modelzoo.options import Options
from modelzoo.run import report
from modelzoo.run.checkpoints import (check_checkpoint, checkpoint_identity, claim_checkpoint, global_step_of,
                                      guarded_training, resume_step)
from modelzoo.run.checkpoints import check_data, data_recorded  # (the data a checkpoint was trained on)
from modelzoo.run.context import RunContext, Trained
from modelzoo.run.graph import build_estimator, input_fn
from modelzoo.run.local import checkpoint_listeners, data_generator, describe_evaluation, finish, run_reading
from modelzoo.run.schedule import EvaluationRecord, copy_checkpoint, keep_best, plan
from modelzoo.system import cpu_info

TRAINER_REPORT_WAIT_SECS = 30  # the workers end with the chief; their reports may come a little later


def cluster_data(ctx):
    """The chief checks the checkpoint folder and finds (or generates) the data on the shared
    volume; the other tasks wait for its run_config.json and for the data to be there."""
    checkpoint, args, schema = ctx.checkpoint, ctx.args, ctx.schema
    identity = checkpoint_identity(ctx.spec, args, schema)
    if ctx.world.is_chief:
        claim_checkpoint(checkpoint, identity)
        data = resolve(args, schema, data_generator(schema))
        check_data(checkpoint, data)
        return data
    # (no time limit, as tf.estimator's workers: a chief Pending for long must not fail the job). The wait
    # ends when the record names the chief's data (check_data): the chief has then built each file's line
    # index, which every other pod reuses instead of counting the file itself.
    distributed.wait_for(f"the chief to record {checkpoint}/run_config.json with its data",
                         lambda: data_recorded(checkpoint),
                         why=lambda: "the chief has not started (Pending?), not claimed the folder or not indexed "
                                     "the data yet")
    check_checkpoint(checkpoint, identity, record_new=False)
    last = []

    def ready():  # the chief may still be writing a generated sample (it appears atomically)
        try:
            return resolve(args, schema)
        except DataError as err:
            last[:] = [err]
            return None
    return distributed.wait_for("the chief's data", ready, why=lambda: str(last[0]) if last else None)


def evaluator(ctx, estimator):
    """The evaluator task: the newest checkpoint evaluated at most every --eval_throttle_secs (and always the
    last step's), each from a snapshot of its files (the chief may replace them meanwhile, --keep_checkpoint_max)
    and recorded in CHECKPOINT/evaluations.json and evaluator/eval.json (the chief's final metrics). With early
    stopping the best snapshot becomes CHECKPOINT/best, and the record's `stopped_early` stops the trainers
    (EarlyStopWatch); the loop also ends when the chief has written result.json (the job ended)."""
    checkpoint, schedule, throttle = ctx.checkpoint, ctx.schedule, ctx.opts.distributed.eval_throttle_secs
    record = EvaluationRecord.load(checkpoint, schedule)
    eval_input = input_fn(ctx, ctx.data.eval, False)
    result = os.path.join(checkpoint, "result.json")
    result_before, last, step = distributed.mtime(result), None, 0
    with distributed.Heartbeat(checkpoint):
        while not record.should_stop(step):
            latest = tf.train.latest_checkpoint(checkpoint)
            if latest is None or latest == last:
                if distributed.mtime(result) != result_before:
                    print("evaluator: the chief has written result.json (the job ended); exiting", flush=True)
                    return 0
                time.sleep(1)
                continue
            started, last = time.time(), latest
            snapshot = copy_checkpoint(latest, os.path.join(distributed.evaluator_dir(checkpoint), "snapshot"))
            if snapshot is None:  # replaced while it was copied: the next pass takes the newest
                continue
            step = int(snapshot.rsplit("-", 1)[1])  # (model.ckpt-STEP)
            metrics = run_reading(ctx, ctx.data.eval,
                                  lambda path=snapshot: estimator.evaluate(eval_input, checkpoint_path=path))
            improved = record.add(step, metrics)
            if improved and schedule.keeps_best:
                keep_best(checkpoint, snapshot)
            done = record.should_stop(step)
            record.save()
            distributed.record_evaluation(checkpoint, metrics, snapshot, final=step >= schedule.max_steps)
            print(f"evaluator: {describe_evaluation(record, step, improved)}"
                  f"{' (final)' if step >= schedule.max_steps else ''}", flush=True)
            if not done:
                time.sleep(max(0.0, throttle - (time.time() - started)))
    print(f"evaluator: {'early stopping ended the job' if record.stopped_early else 'evaluated the last step'}; "
          "exiting", flush=True)
    return 0


class EarlyStopWatch(tf.compat.v1.train.SessionRunHook):
    """A trainer stops when the evaluator's record (CHECKPOINT/evaluations.json) says early stopping ended the
    job; read every POLL_SECS. The chief then saves its last checkpoint and every task exits 0."""
    POLL_SECS = 2

    def __init__(self, ctx):
        self.ctx, self.next_look = ctx, 0.0

    def after_run(self, run_context, run_values):
        if time.time() < self.next_look:
            return
        self.next_look = time.time() + self.POLL_SECS
        record = EvaluationRecord.load(self.ctx.checkpoint, self.ctx.schedule)
        if record.stopped_early:
            print(f"{self.ctx.world.progress_prefix}the evaluator's early stopping ended the job at its evaluation of "
                  f"step {record.stopped_early:,} (best: step {record.best['step']:,}); stopping", flush=True)
            run_context.request_stop()


def final_metrics(ctx, estimator, started):
    """The final checkpoint's metrics, from the evaluator task (or here when none runs), and who made them."""
    if ctx.opts.train.no_eval or not ctx.data.eval:
        return {}, None
    record = EvaluationRecord.load(ctx.checkpoint, ctx.schedule)
    if record.stopped_early:
        return {**record.best, "global_step": record.best["step"]}, "evaluator"
    # (the last checkpoint's step: the work queue may run out before --steps)
    metrics = distributed.wait_for_final_eval(ctx.checkpoint, global_step_of(ctx.checkpoint), started)
    if metrics is not None:
        return metrics, "evaluator"
    print("chief: no evaluator is running; evaluating the final checkpoint here", flush=True)
    return run_reading(ctx, ctx.data.eval,
                       lambda: estimator.evaluate(input_fn(ctx, ctx.data.eval, False))), "chief"


def job_samples_per_sec(ctx, meter, trainers):
    """The cluster's samples/s: the trainers' own steady rates added up (when every one reported one),
    else the global step's rate from the first trainer's first step to the last one's last."""
    rates = [r["samples_per_sec"] for r in trainers.values() if r.get("samples_per_sec")]
    if len(rates) == ctx.world.cluster.trainers:
        return sum(rates)
    return meter.cluster_samples_per_sec(ctx.opts.data.batch_size, [r.get("span") for r in trainers.values()])


def run_cluster(spec, args, cluster, wall_start):
    """One task of a parameter-server job (modelzoo/distributed.py): ps, chief, worker or evaluator."""
    print(f"{cluster.name}: parameter-server job: {cluster.trainers} trainer(s), {cluster.num_ps} ps task(s) "
          f"(TF_CONFIG)", flush=True)
    if cluster.task_type == "ps":
        if args.ev:  # the tables live on the PS tasks: their server runs TFRA's kernels
            load_kernels()
        return distributed.serve_ps(cluster, args.protocol, Options.from_args(args, spec.name).checkpoint.folder)
    world = ClusterWorld(cluster)
    distributed.speed_up_worker_start()
    ctx = RunContext.create(spec, args, world=world, wall_start=wall_start)
    opts, checkpoint = ctx.opts, ctx.checkpoint
    ctx.data = data = cluster_data(ctx)
    ctx.schedule = plan(opts.train, data.train_rows, opts.data.batch_size, bool(data.eval) and not opts.train.no_eval,
                        evaluator_task=True)
    ctx.small_data_flags = ctx.use_small_data_defaults()
    ctx.steps = steps = ctx.schedule.max_steps
    ctx.cpu = cpu_info()
    if world.is_chief:
        report.announce(ctx)
    trained = Trained(None, ThroughputMeter())
    meter = trained.meter
    trained.estimator = estimator = build_estimator(ctx, checkpoint, meter, (resume_step(checkpoint, opts.ev), steps),
                                                    trained.ev_report)
    stop = StopRequest()  # SIGTERM: the chief saves a final checkpoint; every trainer exits 143
    train_spec = tf.estimator.TrainSpec(input_fn(ctx, data.train, True), max_steps=steps,
                                        hooks=[*world.workqueue_hooks(args, data, steps, checkpoint),
                                               FiniteLossHook(world.progress_prefix), stop.hook(),
                                               *([EarlyStopWatch(ctx)] if ctx.schedule.keeps_best else [])],
                                        saving_listeners=[*checkpoint_listeners(ctx),
                                                          *world.workqueue_listeners(args, data, checkpoint)]
                                        if world.is_chief else ())
    # (the trainers' train_and_evaluate only trains: the evaluator task has its own loop)
    eval_spec = tf.estimator.EvalSpec(input_fn(ctx, data.eval or data.train, False), steps=None)
    if cluster.task_type == "evaluator":
        if opts.train.no_eval or not data.eval:
            print(f"evaluator: nothing to do ({'--no_eval' if opts.train.no_eval else 'no evaluation data'})",
                  flush=True)
            return 0
        return evaluator(ctx, estimator)

    started = time.time()
    with stop, guarded_training(checkpoint, stop, saves=world.is_chief):
        run_reading(ctx, data.train, lambda: tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec))
    distributed.report_trainer(checkpoint, cluster, meter)
    distributed.signal_training_done(cluster)
    final_step = global_step_of(checkpoint) if world.is_chief else (meter.span or [(0, 0)])[-1][0]
    if opts.distributed.workqueue and final_step < steps:
        print(f"{cluster.name}: the work queue ran out at step {final_step:,}, before --steps {steps:,}",
              flush=True)
    if not world.is_chief:
        print(f"{cluster.name}: training ended ({meter.steps_run:,} steps of the job's {final_step:,} were "
              "this task's); exiting", flush=True)
        return 0
    trained.record = EvaluationRecord.load(checkpoint, ctx.schedule)
    metrics, evaluated_by = final_metrics(ctx, estimator, started)
    trainers = distributed.trainer_reports(checkpoint, cluster, started - 60, wait=TRAINER_REPORT_WAIT_SECS)
    meter.samples_per_sec = job_samples_per_sec(ctx, meter, trainers)
    job = {"trainers": cluster.trainers, "trainer_reports": trainers, "ps": cluster.num_ps,
           "evaluated_by": evaluated_by,
           "evaluated_step": int(metrics["global_step"]) if "global_step" in metrics else None,
           "workqueue": opts.distributed.workqueue,
           "input_layer_partitioner_mb": opts.distributed.input_layer_partitioner,
           "dense_layer_partitioner_kb": opts.distributed.dense_layer_partitioner}
    return finish(ctx, trained, metrics, extra={"parameter_server_job": job})

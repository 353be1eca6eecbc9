"""One task of a parameter-server job (TF_CONFIG, modelzoo/distributed.py): ps, chief, worker or evaluator.
The trainers build the graph, the checkpoint listeners and the report of local.py; what differs is the
start (the chief claims the folder and the data, the others wait for it), train_and_evaluate with an
evaluator task, and the job's figures gathered from every trainer."""
import math
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
from modelzoo.run.checkpoints import check_data  # (the data a checkpoint was trained on)
from modelzoo.run.context import RunContext, Trained
from modelzoo.run.graph import build_estimator, input_fn
from modelzoo.run.local import checkpoint_listeners, data_generator, finish, run_reading
from modelzoo.system import cpu_info

TRAINER_REPORT_WAIT_SECS = 30  # the workers end with the chief; their reports may come a little later
EVALUATOR_RETRIES = 20  # an evaluation whose checkpoint the chief deleted is started again on the newest


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
    # (no time limit, as tf.estimator's workers: a chief Pending for long must not fail the job)
    distributed.wait_for(f"the chief to record {checkpoint}/run_config.json",
                         lambda: os.path.exists(os.path.join(checkpoint, "run_config.json")),
                         why=lambda: "the chief has not started (Pending?) or not claimed the folder yet")
    check_checkpoint(checkpoint, identity, record_new=False)
    last = []

    def ready():  # the chief may still be writing a generated sample (it appears atomically)
        try:
            return resolve(args, schema)
        except DataError as err:
            last[:] = [err]
            return None
    return distributed.wait_for("the chief's data", ready, why=lambda: str(last[0]) if last else None)


def evaluator(ctx, estimator, train_spec, eval_spec):
    """The evaluator task: every new checkpoint evaluated (tf.estimator's loop) until the final one."""
    with distributed.Heartbeat(ctx.checkpoint):
        for retry in range(EVALUATOR_RETRIES + 1):
            try:
                run_reading(ctx, ctx.data.eval,
                            lambda: tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec))
                break
            except (ValueError, tf.errors.NotFoundError):
                # the chief replaced the checkpoint (--keep_checkpoint_max) while it was being read
                if retry == EVALUATOR_RETRIES or tf.train.latest_checkpoint(ctx.checkpoint) is None:
                    raise
                print("evaluator: the checkpoint was replaced while it was being read; evaluating the "
                      "newest one", flush=True)
    print("evaluator: evaluated the final checkpoint; exiting", flush=True)
    return 0


def final_metrics(ctx, estimator, started):
    """The final checkpoint's metrics, from the evaluator task (or here when none runs), and who made them."""
    if ctx.opts.train.no_eval or not ctx.data.eval:
        return {}, None
    metrics = distributed.wait_for_final_eval(ctx.checkpoint, ctx.steps, started)
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
    ctx.steps = steps = opts.train.steps or math.ceil(data.train_rows / opts.data.batch_size)
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
                                               FiniteLossHook(world.progress_prefix), stop.hook()],
                                        saving_listeners=[*checkpoint_listeners(ctx),
                                                          *world.workqueue_listeners(args, data, checkpoint)]
                                        if world.is_chief else ())
    eval_spec = tf.estimator.EvalSpec(input_fn(ctx, data.eval or data.train, False), steps=None,
                                      start_delay_secs=0, throttle_secs=opts.distributed.eval_throttle_secs,
                                      exporters=[distributed.eval_recorder(checkpoint)])
    if cluster.task_type == "evaluator":
        if opts.train.no_eval or not data.eval:
            print(f"evaluator: nothing to do ({'--no_eval' if opts.train.no_eval else 'no evaluation data'})",
                  flush=True)
            return 0
        return evaluator(ctx, estimator, train_spec, eval_spec)

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

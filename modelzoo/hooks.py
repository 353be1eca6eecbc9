"""Training hooks: a progress line a person can follow, the steady-state throughput, the guards
that stop training cleanly (NaN or Inf loss, SIGTERM) without losing the last good checkpoint, and the
evaluations of the held-out rows inside the training session (early stopping)."""
import math
import os
import signal
import threading
import time

import tensorflow as tf

tf1 = tf.compat.v1


def warmup_steps_for(steps_this_run):
    """Steps left out of the throughput, like DeepRec's benchmark: graph warm-up, caches, autotune."""
    return min(50, max(1, steps_this_run // 5))


class ThroughputMeter:
    """What the throughput hook measured; read by the runner for the summary and result.json."""

    def __init__(self):
        self.samples_per_sec = None
        self.steady_steps = 0
        self.steps_run = 0
        self.last_loss = None
        self.span = None  # (global step, wall time) at this process's first and last step
        self.own_samples_per_sec = None  # this process's own steps only (a PS job's trainers add up)
        self.variable_bytes = None  # run/graph.variable_bytes of the training graph
        self.memory_plan = None  # memory.record of the start-up plan (the chief's)
        # several Estimator.train calls on one meter: the steady steps and seconds of the segments that ended,
        # and the steps they ran (a run evaluates inside its one training session: one segment)
        self.segments, self.done_steady_steps, self.done_steady_seconds, self.done_steps = 0, 0, 0.0, 0
        self.paused_seconds = 0.0  # spent in evaluations inside the training session: not training time

    def cluster_samples_per_sec(self, batch_size, spans=()):
        """Samples/s of every trainer together: the global step's rate from the first step to the
        last of this process's span and `spans` (the other trainers'). A parameter-server job's
        chief may run few steps itself, or none after a slow start: the global step counts everyone's."""
        spans = [s for s in (self.span, *spans) if s]
        if not spans:
            return None
        step0, t0 = min((s[0] for s in spans), key=lambda first: first[1])
        step1, t1 = max((s[1] for s in spans), key=lambda last: last[1])
        return (step1 - step0) * batch_size / (t1 - t0) if step1 > step0 and t1 > t0 else None


class ThroughputHook(tf1.train.SessionRunHook):
    """Logs step, loss, samples/s and ETA every `log_steps` (0: silent); measures samples/s after warm-up.

    Rates come from the global step, so in a parameter-server job they are the whole cluster's
    (every trainer's steps advance it), and in one process they are this process's own."""

    def __init__(self, meter, loss, batch_size, first_step, last_step, log_steps, prefix="", trainers=1):
        self.meter, self.loss, self.batch_size = meter, loss, batch_size
        self.first_step, self.last_step, self.log_steps = first_step, last_step, log_steps
        # a PS job's trainers share the steps: each warms up over a part of its own share
        self.warmup = warmup_steps_for((last_step - first_step) // max(trainers, 1))
        self.prefix = prefix

    def begin(self):
        self.global_step = tf1.train.get_global_step()
        self.steps = 0
        self.t_start = self.t_window = self.last_seen = None
        self.segment_steady = (0, 0.0)
        # a later segment on the same meter leaves out only its first step (the new session)
        self.segment_warmup = self.warmup if self.meter.segments == 0 else 1
        self.meter.segments += 1

    def end(self, session):
        steps, seconds = self.segment_steady
        self.meter.done_steady_steps += steps
        self.meter.done_steady_seconds += seconds
        self.meter.done_steps += self.steps

    def before_run(self, run_context):
        return tf1.train.SessionRunArgs({"loss": self.loss, "step": self.global_step})

    def after_run(self, run_context, run_values):
        now = time.perf_counter() - self.meter.paused_seconds  # (the training session's clock)
        self.steps += 1
        step = int(run_values.results["step"]) + 1  # a Python int: the span goes into JSON reports
        self.meter.last_loss = float(run_values.results["loss"])
        meter = self.meter
        meter.steps_run = meter.done_steps + self.steps
        wall = time.time()  # comparable across a job's processes, unlike perf_counter
        meter.span = ((meter.span or ((step, wall),))[0], (step, wall))
        if self.steps == self.segment_warmup:
            self.t_start, self.t_window, self.start_step, self.window_step = now, now, step, step
        elif self.t_start is not None and step > self.start_step:
            self.segment_steady = (step - self.start_step, now - self.t_start)
            meter.steady_steps = meter.done_steady_steps + self.segment_steady[0]
            meter.samples_per_sec = meter.steady_steps * self.batch_size / (
                meter.done_steady_seconds + self.segment_steady[1])
            meter.own_samples_per_sec = (self.steps - self.segment_warmup) * self.batch_size / (now - self.t_start)
        previous = step - 1 if self.last_seen is None else self.last_seen
        self.last_seen = step
        # a multiple of log_steps passed (in a PS job the global step jumps by the other trainers' steps)
        if self.log_steps and (step // self.log_steps > previous // self.log_steps or step >= self.last_step):
            rate = ""
            if self.t_window is not None and step > self.window_step:
                window = (step - self.window_step) * self.batch_size / (now - self.t_window)
                eta = max(self.last_step - step, 0) * self.batch_size / window
                rate = f" | {window:,.0f} samples/s | eta {eta:,.0f}s"
                self.t_window, self.window_step = now, step
            pct = 100.0 * step / self.last_step
            print(f"{self.prefix}step {step:,}/{self.last_step:,} ({pct:.0f}%) loss {self.meter.last_loss:.4f}{rate}",
                  flush=True)


class NonFiniteError(Exception):
    """The loss or the variables became NaN or Inf: training stops, the last good checkpoint stays."""


TRAINING_LOSS = "modelzoo_training_loss"  # the graph collection holding the model_fn's training loss


class FiniteLossHook(tf1.train.SessionRunHook):
    """Stops training at the first step whose loss is NaN or Inf, naming the step. It goes in the
    hooks given to Estimator.train, which run before the Estimator's own NanTensorHook (that one
    names neither the step nor what to do); the loss comes from the TRAINING_LOSS collection."""

    def __init__(self, prefix=""):
        self.prefix = prefix

    def begin(self):
        self.fetches = {"loss": tf1.get_collection(TRAINING_LOSS)[0], "step": tf1.train.get_global_step()}

    def before_run(self, run_context):
        return tf1.train.SessionRunArgs(self.fetches)

    def after_run(self, run_context, run_values):
        loss = float(run_values.results["loss"])
        if not math.isfinite(loss):
            raise NonFiniteError(f"{self.prefix}the training loss is {loss} at step "
                                 f"{int(run_values.results['step']) + 1:,}")


class FiniteCheckpointGuard(tf1.train.CheckpointSaverListener):
    """Refuses to save a checkpoint whose variables hold NaN or Inf, so the last good one stays the
    latest (the saver hook runs before the training hooks, so a step that went bad could otherwise be
    saved before its loss is looked at). One boolean per variable, computed where the variable lives.

    Before the check it turns off the copy-on-read mode that a sparse update (a table's gather or
    scatter) leaves on a resource variable: in that mode every read copies the whole variable, so
    both this check and the Saver (whose `read_value_no_copy` adds the DisableCopyOnRead op in graph
    mode without making the read wait for it, so it never runs) would hold a second copy of every
    table and slot: Wide & Deep's peak went from 2.7 GB to 7.4 GB that way. The next sparse update
    turns the mode back on in place (the buffer is no longer shared).

    A variable is finite when its largest and smallest values are (TensorFlow's max and min reductions
    propagate NaN; tests/test_reliability.py holds it): two scalars, where `is_finite(v)` would make a
    boolean of every element, a quarter of each table, two tables at once: 1.07 GB above the variables
    before each save at the real Kaggle cardinalities (issue 27)."""

    def begin(self):
        from tensorflow.python.ops import gen_resource_variable_ops, resource_variable_ops
        checks, no_copy = [], []
        for v in tf1.global_variables():
            if resource_variable_ops.is_resource_variable(v) and hasattr(v, "handle"):
                with tf1.colocate_with(v):
                    no_copy.append(gen_resource_variable_ops.disable_copy_on_read(v.handle))
        self.no_copy = tf.group(*no_copy)
        with tf1.control_dependencies([self.no_copy]):
            for v in tf1.global_variables():
                if v.dtype.base_dtype.is_floating:
                    with tf1.colocate_with(v):
                        extremes = tf.stack([tf.reduce_max(v), tf.reduce_min(v)])
                        checks.append(tf.logical_or(tf.equal(tf.size(v), 0),
                                                    tf.reduce_all(tf.math.is_finite(extremes))))
            self.all_finite = tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)

    def before_save(self, session, global_step_value):
        if not session.run(self.all_finite):
            raise NonFiniteError(f"the variables hold NaN or Inf at step {int(global_step_value):,}; "
                                 "it was not saved as a checkpoint")


class StopRequest:
    """SIGTERM (a preempted pod, `kubectl delete`, a batch system's time limit) while training: the
    step in flight ends, the Estimator's saver writes a final checkpoint and the run exits 143, so
    the same command resumes where it stopped. Used as `with StopRequest() as stop:` around training;
    `stop.hook()` goes into the training hooks."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signals, self.received, self._previous = signals, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # (handlers can only be set there)
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def hook(self):
        return _StopHook(self)


class _StopHook(tf1.train.SessionRunHook):
    def __init__(self, stop):
        self.stop = stop

    def after_run(self, run_context, run_values):
        if self.stop.received:
            run_context.request_stop()


class Evaluation:
    """The held-out rows' metrics built into the training graph (run/graph.in_session_evaluation): `run`
    re-initializes their input and metric variables, reads every batch and returns the metrics."""

    def __init__(self, reset, update, values):
        self.reset, self.update, self.values = reset, update, values

    def run(self, session):
        session.run(self.reset)
        while True:
            try:
                session.run(self.update)
            except tf.errors.OutOfRangeError:
                break
        return session.run(self.values)


class EvaluatingCheckpointSaver(tf1.train.CheckpointSaverHook):
    """The Estimator's checkpoint saver (the Estimator adds none of its own when the model_fn gives one, and
    joins the saving listeners to it) that also evaluates at each evaluation step (`due(step)`) in the same
    session: `decide(step, measure, save)` records `measure()`'s metrics, calls `save()` (this step's checkpoint,
    written with the listeners; returns its prefix) only when it keeps the step as the best, and returns whether
    training stops (early stopping). The session, graph and input stay: a run with evaluations is one
    Estimator.train, and its checkpoints are written on the run's own schedule (and the last step) plus one per
    new best. The evaluations' time is left out of the throughput (meter.paused_seconds)."""

    def __init__(self, checkpoint_dir, save_secs, save_steps, scaffold, evaluation, due, decide, meter):
        super().__init__(checkpoint_dir, save_secs=save_secs, save_steps=save_steps, scaffold=scaffold)
        self.evaluation, self.due, self.decide, self.meter = evaluation, due, decide, meter
        self.eval_writer, self.evaluated = None, None
        self.eval_dir = os.path.join(checkpoint_dir, "eval")  # (where Estimator.evaluate writes its summaries)

    def after_run(self, run_context, run_values):
        if self.due(run_values.results + 1):  # (the global step read before this step's update)
            session = run_context.session
            step = int(session.run(self._global_step_tensor))
            if self.due(step) and step != self.evaluated:
                self.evaluated, started = step, time.perf_counter()
                if self.decide(step, lambda: self.measure(session, step), lambda: self.save(session, step)):
                    run_context.request_stop()
                self.meter.paused_seconds += time.perf_counter() - started
        super().after_run(run_context, run_values)

    def save(self, session, step):
        if step != self._timer.last_triggered_step():
            self._timer.update_last_triggered_step(step)
            self._save(session, step)
        return os.path.join(self._checkpoint_dir, f"model.ckpt-{step}")

    def measure(self, session, step):
        """The evaluation's metrics, also written as TensorBoard scalars in CHECKPOINT/eval."""
        metrics = self.evaluation.run(session)
        if self.eval_writer is None:  # (without the graph: the training events file holds it)
            self.eval_writer = tf1.summary.FileWriter(self.eval_dir)
        self.eval_writer.add_summary(tf1.Summary(value=[
            tf1.Summary.Value(tag=name, simple_value=float(value)) for name, value in metrics.items()]), step)
        self.eval_writer.flush()
        return {**metrics, "global_step": step}

    def end(self, session):
        super().end(session)
        if self.eval_writer is not None:
            self.eval_writer.close()


class FollowDecisions(tf1.train.SessionRunHook):
    """A Horovod process other than rank 0: at each evaluation step (`due`) it learns rank 0's decision
    (`decide(step, None, None)`) and stops with it, so every process stops at the same step."""

    def __init__(self, due, decide):
        self.due, self.decide = due, decide

    def before_run(self, run_context):
        return tf1.train.SessionRunArgs(tf1.train.get_global_step())

    def after_run(self, run_context, run_values):
        step = int(run_values.results) + 1
        if self.due(step) and self.decide(step, None, None):
            run_context.request_stop()

"""Training hooks: a progress line a person can follow and the steady-state throughput."""
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
        self.span = None  # (global step, time) at this process's first and last step
        self.own_samples_per_sec = None  # this process's own steps only (a PS job's trainers add up)

    def cluster_samples_per_sec(self, batch_size):
        """Samples/s of every trainer together while this one trained (a parameter-server job's
        chief may run few steps itself: the global step counts everyone's)."""
        if self.span is None:
            return None
        (step0, t0), (step1, t1) = self.span
        return (step1 - step0) * batch_size / (t1 - t0) if step1 > step0 and t1 > t0 else None


class ThroughputHook(tf1.train.SessionRunHook):
    """Logs step, loss, samples/s and ETA every `log_steps` (0: silent); measures samples/s after warm-up.

    Rates come from the global step, so in a parameter-server job they are the whole cluster's
    (every trainer's steps advance it), and in one process they are this process's own."""

    def __init__(self, meter, loss, batch_size, first_step, last_step, log_steps, prefix=""):
        self.meter, self.loss, self.batch_size = meter, loss, batch_size
        self.first_step, self.last_step, self.log_steps = first_step, last_step, log_steps
        self.warmup = warmup_steps_for(last_step - first_step)
        self.prefix = prefix

    def begin(self):
        self.global_step = tf1.train.get_global_step()
        self.steps = 0
        self.t_start = self.t_window = self.last_seen = None

    def before_run(self, run_context):
        return tf1.train.SessionRunArgs({"loss": self.loss, "step": self.global_step})

    def after_run(self, run_context, run_values):
        now = time.perf_counter()
        self.steps += 1
        step = run_values.results["step"] + 1
        self.meter.last_loss = float(run_values.results["loss"])
        self.meter.steps_run = self.steps
        self.meter.span = ((self.meter.span or ((step, now),))[0], (step, now))
        if self.steps == self.warmup:
            self.t_start, self.t_window, self.start_step, self.window_step = now, now, step, step
        elif self.t_start is not None and step > self.start_step:
            self.meter.steady_steps = step - self.start_step
            self.meter.samples_per_sec = self.meter.steady_steps * self.batch_size / (now - self.t_start)
            self.meter.own_samples_per_sec = (self.steps - self.warmup) * self.batch_size / (now - self.t_start)
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

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


class ThroughputHook(tf1.train.SessionRunHook):
    """Logs step, loss, samples/s and ETA every `log_steps` (0: silent); measures samples/s after warm-up."""

    def __init__(self, meter, loss, batch_size, first_step, last_step, log_steps):
        self.meter, self.loss, self.batch_size = meter, loss, batch_size
        self.first_step, self.last_step, self.log_steps = first_step, last_step, log_steps
        self.warmup = warmup_steps_for(last_step - first_step)

    def begin(self):
        self.global_step = tf1.train.get_global_step()
        self.steps = 0
        self.t_start = self.t_window = None

    def before_run(self, run_context):
        return tf1.train.SessionRunArgs({"loss": self.loss, "step": self.global_step})

    def after_run(self, run_context, run_values):
        now = time.perf_counter()
        self.steps += 1
        step = run_values.results["step"] + 1
        self.meter.last_loss = float(run_values.results["loss"])
        self.meter.steps_run = self.steps
        if self.steps == self.warmup:
            self.t_start, self.t_window, self.window_steps = now, now, self.steps
        elif self.t_start is not None:
            self.meter.steady_steps = self.steps - self.warmup
            self.meter.samples_per_sec = self.meter.steady_steps * self.batch_size / (now - self.t_start)
        if self.log_steps and (step % self.log_steps == 0 or step >= self.last_step):
            rate = ""
            if self.t_window is not None and self.steps > self.window_steps:
                window = (self.steps - self.window_steps) * self.batch_size / (now - self.t_window)
                eta = (self.last_step - step) * self.batch_size / window
                rate = f" | {window:,.0f} samples/s | eta {eta:,.0f}s"
                self.t_window, self.window_steps = now, self.steps
            pct = 100.0 * step / self.last_step
            print(f"step {step:,}/{self.last_step:,} ({pct:.0f}%) loss {self.meter.last_loss:.4f}{rate}",
                  flush=True)

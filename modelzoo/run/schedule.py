"""How long a run trains and when it evaluates: --steps, --epochs, --eval_steps and early stopping, and the
length a run picks from its data when the command line gives none. Also the record of the evaluations
(CHECKPOINT/evaluations.json), which a resumed run continues, and the best checkpoint's copy (CHECKPOINT/best).

The default length (neither --steps nor --epochs): an epoch of ONE_EPOCH_STEPS steps or more at the run's
batch trains one epoch: on larger data a second epoch overfits (measured below; the "one-epoch phenomenon" of
deep CTR models on real click logs, Zhang et al. 2022); a smaller training set trains until
--early_stop_patience evaluations in a row have not improved on the best held-out metric, at most
DEFAULT_MAX_EPOCHS epochs and never less than MIN_STEPS steps, and the best checkpoint is the run's model.
Without held-out rows there is nothing to stop on: such a run trains whole epochs up to MIN_STEPS steps.
"""
import json
import math
import os
import shutil
from dataclasses import dataclass
from typing import Optional

from modelzoo.flags import DEFAULT_MAX_EPOCHS, DEFAULT_PATIENCE
from modelzoo.io_utils import atomic_write_json

# an epoch at least this long: the default is one epoch. Measured (benchmarks/epochs_by_size.py, DLRM on generated
# data): the second epoch adds +0.026 AUC at 44 steps an epoch, +0.002 at 88, and loses 0.011 at 132, 0.019 at 220
# and 0.032 at 879 steps
ONE_EPOCH_STEPS = 100
MIN_STEPS = 100  # the default length never trains fewer steps than this on small data
RECORD = "evaluations.json"
BEST = "best"
HIGHER_IS_BETTER = {"auc": True, "logloss": False}


@dataclass(frozen=True)
class Schedule:
    """The run's length and evaluations, in global steps."""
    steps_per_epoch: int
    max_steps: int  # the step training stops at, unless early stopping stops it before
    eval_every: int  # steps between evaluations (0: one evaluation, at the end)
    patience: int  # evaluations without improvement that stop training (0: no early stopping)
    metric: str  # "auc" or "logloss"
    min_steps: int  # early stopping does not stop before this step
    description: str  # the start-up line
    # the run picked its length on small data (an epoch under ONE_EPOCH_STEPS steps, neither --steps nor
    # --epochs): a ModelSpec's small_data_defaults apply
    small_data: bool = False

    @property
    def keeps_best(self):
        """Early stopping: the best evaluation's checkpoint is the run's model (exported and reported)."""
        return self.patience > 0

    def next_stop(self, step):
        """The step the next training segment ends at: the next evaluation, or the last step."""
        if not self.eval_every:
            return self.max_steps
        return min((step // self.eval_every + 1) * self.eval_every, self.max_steps)

    def evaluates_at(self, step):
        """Whether the held-out rows are evaluated at global step `step` (the evaluation steps and the last)."""
        return 0 < step <= self.max_steps and self.next_stop(step - 1) == step

    def epoch(self, step):
        return round(step / self.steps_per_epoch, 3)


def plan(train_opts, train_rows, batch, evaluates, evaluator_task=False):
    """The Schedule of options.TrainOptions `train_opts` for `train_rows` rows at `batch` samples a step;
    `evaluates`: the run has held-out rows and evaluates them (no --no_eval); `evaluator_task`: a
    parameter-server job, whose evaluator task evaluates on its own clock (--eval_throttle_secs) while the
    trainers train straight on: it stops the job early only when --early_stop_patience asks."""
    t = train_opts
    per_epoch = max(1, math.ceil(train_rows / batch))
    epoch_words = f"{train_rows:,} rows = {per_epoch:,} step{'s' * (per_epoch > 1)} an epoch at batch {batch:,}"
    patience = t.early_stop_patience or 0
    small = not t.steps and not t.epochs and per_epoch < ONE_EPOCH_STEPS
    if t.steps:
        max_steps, length = t.steps, f"--steps {t.steps:,}"
    elif t.epochs:
        max_steps, length = t.epochs * per_epoch, f"--epochs {t.epochs}"
    elif per_epoch >= ONE_EPOCH_STEPS:
        max_steps, length = per_epoch, f"one epoch (an epoch of {ONE_EPOCH_STEPS:,} steps or more: the default)"
    elif not evaluates or evaluator_task:
        epochs = math.ceil(MIN_STEPS / per_epoch)
        max_steps = epochs * per_epoch
        why = "a parameter-server job stops early only with --early_stop_patience" if evaluator_task else \
            "no held-out rows to stop on"
        length = f"{epochs} epoch{'s' * (epochs > 1)} (at least {MIN_STEPS} steps; {why})"
    else:
        max_steps = DEFAULT_MAX_EPOCHS * per_epoch
        patience = DEFAULT_PATIENCE if t.early_stop_patience is None else t.early_stop_patience
        length = f"up to {DEFAULT_MAX_EPOCHS} epochs"
    if not evaluates:
        return Schedule(per_epoch, max_steps, 0, 0, t.early_stop_metric, 0, f"{epoch_words}: training {length}",
                        small)
    default_length = not t.steps and not t.epochs and not evaluator_task
    eval_every = t.eval_steps or (per_epoch if (t.epochs or default_length or patience) else 0)
    eval_every = 0 if evaluator_task or eval_every >= max_steps else eval_every
    min_steps = min(MIN_STEPS, max_steps) if default_length else 0
    when = "by the evaluator task (at most every --eval_throttle_secs, and the last step)" if evaluator_task else \
        f"every {eval_every:,} steps" if t.eval_steps else "at the end of each epoch" if eval_every else "at the end"
    words = f"{epoch_words}: training {length}, evaluating the held-out rows {when}"
    if patience:
        metric = "AUC" if t.early_stop_metric == "auc" else t.early_stop_metric
        words += (f", with early stopping on the held-out {metric} (patience {patience}"
                  f"{f', not before step {min_steps}' if min_steps else ''}; the best checkpoint is exported)")
    return Schedule(per_epoch, max_steps, eval_every, patience, t.early_stop_metric, min_steps, words, small)


def better(metric, new, old):
    if new is None:
        return False
    return old is None or (new > old if HIGHER_IS_BETTER[metric] else new < old)


class EvaluationRecord:
    """CHECKPOINT/evaluations.json: every evaluation of the run (step, epoch, metrics), the best one by the
    schedule's metric, and whether early stopping ended the run; written atomically after each evaluation."""

    def __init__(self, folder, schedule, data=None):
        self.folder, self.schedule = folder, schedule
        data = data or {}
        self.evaluations = data.get("evaluations", [])
        self.stopped_early = data.get("stopped_early")
        self.last_metrics = {}  # this run's last evaluation, as Estimator.evaluate returned it

    @classmethod
    def load(cls, folder, schedule):
        path = os.path.join(folder, RECORD)
        if not os.path.exists(path):
            return cls(folder, schedule)
        with open(path, encoding="utf-8") as f:
            return cls(folder, schedule, json.load(f))

    @property
    def best(self):
        best = None
        for entry in self.evaluations:
            if better(self.schedule.metric, entry.get(self.schedule.metric), best and best[self.schedule.metric]):
                best = entry
        return best

    def evaluated(self, step):
        return any(entry["step"] == step for entry in self.evaluations)

    def add(self, step, metrics):
        """Record the evaluation of `step`; returns whether it is the best so far."""
        self.last_metrics = dict(metrics)
        entry = {"step": step, "epoch": self.schedule.epoch(step)}
        for name in ("auc", "logloss", "accuracy", "loss"):
            if name in metrics:
                value = float(metrics[name])
                entry[name] = None if math.isnan(value) else value
        before = self.best
        self.evaluations = [e for e in self.evaluations if e["step"] != step] + [entry]
        return before is None or better(self.schedule.metric, entry.get(self.schedule.metric),
                                        before[self.schedule.metric])

    def since_best(self):
        """Evaluations after the best one."""
        best = self.best
        if best is None:
            return len(self.evaluations)
        return sum(1 for e in self.evaluations if e["step"] > best["step"])

    def should_stop(self, step):
        s = self.schedule
        if s.patience and step >= s.min_steps and self.since_best() >= s.patience:
            self.stopped_early = step
        return bool(self.stopped_early) or step >= s.max_steps

    def save(self):
        atomic_write_json(os.path.join(self.folder, RECORD), self.as_json())

    def as_json(self):
        return {"metric": self.schedule.metric, "patience": self.schedule.patience,
                "max_steps": self.schedule.max_steps, "evaluations": self.evaluations,
                "best": self.best, "stopped_early": self.stopped_early}


def link_or_copy(source, target):
    """A hard link (a checkpoint's files are never rewritten in place, and the link keeps them when the saver
    deletes the original: no second write of a large checkpoint), or a copy where links are refused."""
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise
    except OSError:
        shutil.copy2(source, target)


def copy_checkpoint(prefix, folder):
    """A copy of checkpoint `prefix`'s files in `folder` (made anew), a checkpoint folder of its own; its prefix
    there, or None when the files went (a chief's --keep_checkpoint_max) before they were all copied."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    source, name = os.path.split(prefix)
    try:
        files = [f for f in os.listdir(source) if f.startswith(name + ".")]
        for f in files:
            link_or_copy(os.path.join(source, f), os.path.join(folder, f))
    except FileNotFoundError:
        return None
    if not any(f.endswith(".index") for f in files):
        return None
    with open(os.path.join(folder, "checkpoint"), "w", encoding="utf-8") as f:
        f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    return os.path.join(folder, name)


def keep_best(folder, prefix):
    """Copy checkpoint `prefix` to FOLDER/best (a checkpoint folder of its own, with the run's identity:
    `--checkpoint FOLDER/best --predict` scores it), replacing the previous best only once the copy is whole."""
    best, staging, old = (os.path.join(folder, name) for name in (BEST, BEST + ".tmp", BEST + ".old"))
    if copy_checkpoint(prefix, staging) is None:
        raise FileNotFoundError(f"no checkpoint files {prefix}.* to keep as the best")
    identity = os.path.join(folder, "run_config.json")
    if os.path.exists(identity):
        shutil.copy2(identity, staging)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(best):
        os.rename(best, old)
    os.rename(staging, best)
    shutil.rmtree(old, ignore_errors=True)


def best_checkpoint(folder) -> Optional[str]:
    """The prefix of FOLDER/best's checkpoint (a run killed between the two renames of keep_best left it in
    best.old), or None."""
    for name in (BEST, BEST + ".old"):
        state = os.path.join(folder, name, "checkpoint")
        if os.path.exists(state):
            with open(state, encoding="utf-8") as f:
                first = f.readline().split('"')
            if len(first) > 1:
                return os.path.join(folder, name, first[1])
    return None

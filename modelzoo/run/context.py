"""The one object a run's steps share, instead of long parameter lists."""
import argparse
import time
from dataclasses import dataclass, field
from typing import Any, FrozenSet, Optional

from modelzoo import flags as flaglib
from modelzoo.data_parallel import World
from modelzoo.options import Options
from modelzoo.run.spec import check_tasks
from modelzoo.schema import load_schema


def embedded_schema(spec, args):
    """The model's schema (or --schema) with the widths the model imposes."""
    schema = load_schema(getattr(args, "schema", None) or spec.schema)
    return schema.with_embedding_dim(spec.embedding_dim) if spec.embedding_dim else schema


def model_schema(spec, args):
    """The model's schema (or --schema) with the widths the model imposes, checked against the flags."""
    schema = embedded_schema(spec, args)
    flaglib.validate_with_schema(args, schema, spec.name, spec.uses_crosses, spec.list_kinds)
    check_tasks(spec.tasks, schema)
    flaglib.task_weights(args, spec.tasks, spec.name)  # (refused here: the parser does not know the tasks)
    return schema


@dataclass
class RunContext:
    """One run: what it is (spec, flags, option groups, schema, processes), then what it finds (the data,
    the steps to train, the CPU). `args` stays for the model's own flags (build_logits, optimizers,
    shape_flags) and for result.json's "flags"; the runner reads the option groups in `opts`."""
    spec: Any  # modelzoo.runner.ModelSpec
    args: Any  # the parsed argparse Namespace (never changed after flags.parse; small-data defaults: a new one)
    opts: Options
    schema: Any  # modelzoo.schema.Schema
    world: Any = field(default_factory=World)  # data_parallel.World (or ClusterWorld)
    data: Any = None  # datafiles.DataSpec, once found
    steps: int = 0  # the global step training stops at
    schedule: Any = None  # run/schedule.Schedule: the run's length and evaluations
    cpu: Optional[dict] = None  # system.cpu_info()
    wall_start: float = field(default_factory=time.time)
    given: FrozenSet[str] = frozenset()  # the flags the command line gave
    small_data_flags: dict = field(default_factory=dict)  # what use_small_data_defaults set

    @classmethod
    def create(cls, spec, args, schema=None, world=None, wall_start=None):
        """The context of `args` (flags.parse) for `world`'s processes; the schema is the model's unless given."""
        world = world or World()
        given = vars(args).pop(flaglib.GIVEN_FLAGS, frozenset())
        opts = Options.from_args(args, spec.name, world.size)
        schema = schema if schema is not None else model_schema(spec, args)
        return cls(spec, args, opts, schema, world, wall_start=wall_start or time.time(), given=given)

    def use_small_data_defaults(self):
        """Once the schedule is planned: on small data (schedule.small_data) the ModelSpec's small_data_defaults
        replace the defaults of the flags the command line did not give (new args and opts); returns the flags
        so set, for the start-up line."""
        defaults = getattr(self.spec, "small_data_defaults", None) or {}
        if self.schedule is None or not self.schedule.small_data:
            return {}
        changed = {name: value for name, value in defaults.items()
                   if name not in self.given and getattr(self.args, name) != value}
        if changed:
            self.args = argparse.Namespace(**{**vars(self.args), **changed})
            self.opts = Options.from_args(self.args, self.spec.name, self.world.size)
        return changed

    @property
    def checkpoint(self):
        return self.opts.checkpoint.folder

    @property
    def global_batch(self):
        """Samples per step over every process of a Horovod job (a PS job's trainers step on their own)."""
        return self.opts.data.batch_size * self.world.size

    def result_flags(self):
        """The flags as result.json records them: the parsed ones, with the per-process batch."""
        return {**vars(self.args), "batch_size": self.opts.data.batch_size}


@dataclass
class Trained:
    """What training leaves for the evaluation and the report."""
    estimator: Any
    meter: Any  # hooks.ThroughputMeter
    digests: Optional[list] = None  # with several Horovod processes: each one's variables' sha256, in rank order
    ev_report: dict = field(default_factory=dict)  # --ev: the tables' figures (result.json's ev_tables)
    record: Any = None  # run/schedule.EvaluationRecord: the evaluations while training

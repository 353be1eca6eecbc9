"""The Estimator runner shared by every model: flags -> data -> train -> evaluate -> export -> result.json.

A model's train.py gives a `ModelSpec` (its name, schema, defaults and a function from inputs to
logits); everything else lives once in modelzoo/run/ (see its __init__ for the modules): the session
settings behind --op_fusion and --tf, the input pipeline behind --smartstaged, BF16, micro-batching,
optimizers, metrics, throughput and timeline hooks, checkpoints that resume, the SavedModel export and
the run's result.json, synchronous data parallelism with Horovod (--hvd, modelzoo/data_parallel.py) and
parameter-server jobs (TF_CONFIG, modelzoo/distributed.py).

This module does not import TensorFlow until `run`: the flags set the environment it reads when it starts.
"""
import os
import sys
import time

from modelzoo import distributed
from modelzoo import flags as flaglib
from modelzoo.data_parallel import DataParallelError
from modelzoo.datafiles import DataError
from modelzoo.distributed import ClusterError
from modelzoo.export import ExportError
from modelzoo.io_utils import OutputError
from modelzoo.memory import MemoryPlanError
from modelzoo.run.context import embedded_schema, model_schema  # noqa: F401 (model_schema: of a spec and its flags)
from modelzoo.run.errors import SIGTERM_EXIT, CheckpointMismatch, TrainingStopped  # noqa: F401
from modelzoo.run.spec import (MODEL_DEFAULT_KEYS, OPTIONAL_SPEED_DEFAULTS, ModelInputs, ModelSpec, Task,  # noqa: F401
                                linear_ftrl_optimizers)
from modelzoo.schema import SchemaError


LARGE_TABLES_BYTES = 1 << 30  # fixed tables from this size on train with the system allocator (set_environment)


def large_tables(spec, args):
    """Whether the run's tables are dynamic (--ev) or their fixed rows hold LARGE_TABLES_BYTES or more (the
    schema's rows x the model's widths x 4 bytes); a schema that cannot be read says so later, in the run."""
    if getattr(args, "ev", False):
        return True
    try:
        schema = embedded_schema(spec, args)
    except (SchemaError, OSError, ValueError):
        return False
    return sum(c.num_ids * c.embedding_dim * 4 for c in schema.tables) >= LARGE_TABLES_BYTES


def set_environment(args, spec=None):
    """Environment that TensorFlow reads when it starts: set before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ start-up noise; errors still raise
    # With oneDNN on, TensorFlow's CPU allocator keeps every buffer of 256 KB or more in a BFC pool that never
    # gives memory back: at the real Kaggle cardinalities the tables' initial values and checkpoint copies stayed
    # resident (8.72 GB for 6.49 GB of variables; 7.10 GB with the system allocator), and --ev's full epoch
    # peaked at 15.08 GB against 12.1 GB (issue 27). With small tables the pool costs little memory and is
    # faster: DCN-v2 1.06x, DLRM and W&D equal (benchmarks/results/matrix_onednn_pool.md). So large or dynamic
    # tables train with the system allocator, the others with the pool; so does --micro_batch, which is asked
    # for to lower the peak: the pool grows in doubling regions and keeps them, and on one CI machine a
    # 65,536-row DLRM batch peaked at 1,698 MB whole and 1,616 MB in 8 micro-batches with it (1,599-1,662 MB
    # and 1,274-1,308 MB without it, Zen 4). A value in the environment wins.
    if spec is not None and (large_tables(spec, args) or getattr(args, "micro_batch", 0) > 1):
        os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
    if args.xla:
        # XLA auto-clustering on CPU is off unless this flag is given; the jit level is set per session.
        flags_now = os.environ.get("TF_XLA_FLAGS", "")
        if "--tf_xla_cpu_global_jit" not in flags_now:
            os.environ["TF_XLA_FLAGS"] = (flags_now + " --tf_xla_cpu_global_jit").strip()


def run(spec, args):
    """A parameter-server job's task (TF_CONFIG), a --benchmark, or the run of one process or a Horovod job."""
    wall_start = time.time()
    # (imported here, not above: TensorFlow starts with them, after set_environment)
    import tensorflow as tf
    from modelzoo.run import cluster, local
    tf.get_logger().setLevel("ERROR")

    found = distributed.from_environment()
    if found is not None:
        return cluster.run_cluster(spec, args, found, wall_start)
    if args.benchmark:
        return local.benchmark(spec, args, wall_start)
    return local.run(spec, args, wall_start)


def main(spec, argv=None):
    """Entry point of every train.py: clear one-line errors for bad flags, data and checkpoints."""
    try:
        args = flaglib.parse(spec.name, argv, spec.defaults, spec.speed_defaults, spec.add_flags, spec.has_mlp,
                              spec.shape_flags)
    except flaglib.FlagError as err:
        return err.code
    set_environment(args, spec)
    try:
        return run(spec, args)
    except flaglib.FlagError as err:  # a refusal that needs the schema
        print(f"{spec.name}/train.py: error: {err}", file=sys.stderr, flush=True)
        return err.code
    except (DataError, SchemaError, CheckpointMismatch, DataParallelError, ClusterError, OutputError,
            ExportError, MemoryPlanError) as err:
        print(f"{spec.name}/train.py: error: {err}", file=sys.stderr, flush=True)
        return 1
    except TrainingStopped as err:
        print(f"{spec.name}/train.py: {'error: ' if err.code == 1 else ''}{err}", file=sys.stderr, flush=True)
        return err.code

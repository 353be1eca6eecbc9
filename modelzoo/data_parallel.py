"""Synchronous data-parallel training with Horovod (--hvd): one `World` per process.

Without --hvd the world is one process and every method is the identity, so the runner has a
single code path. With --hvd (started by `horovodrun -np N`): each process reads its shard of
the training rows, gradients are averaged over the processes after every step (dense ones by
allreduce; sparse embedding gradients by allgather of the rows actually touched, never
densified), rank 0's variables are broadcast at the start, and only rank 0 writes checkpoints,
summaries, the SavedModel and result.json.
"""
import hashlib
import math

from modelzoo import distributed, world
from modelzoo.world import DataParallelError  # noqa: F401 (raised here, imported from here by callers)
from modelzoo.workqueue import WorkQueue

INSTALL_HINT = ("Horovod is an optional extra built from source: run `make horovod` (or, in the venv, "
                "HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 "
                "HOROVOD_WITHOUT_MXNET=1 pip install --no-build-isolation horovod==0.28.1)")


class World(world.World):
    """The processes of one synchronous job (size 1 without --hvd), with Horovod's collectives."""

    cluster = None  # a parameter-server job's modelzoo.distributed.Cluster (ClusterWorld)
    progress_slot = 0  # this process's slot of `input_progress` (Horovod's processes share slot 0)
    progress_prefix = ""  # before each progress line

    def __init__(self, hvd=None):
        super().__init__(hvd.rank() if hvd else 0, hvd.size() if hvd else 1, "horovod" if hvd else "local")
        self.hvd = hvd
        self.digest = None  # sha256 of this process's variables when training ended (with --hvd)

    @property
    def logs_progress(self):
        return self.is_chief

    def input_partitioner(self, args):
        """Partitioners slice variables across PS tasks: there are none outside a PS job. (`args`: the
        flags or options.DistributedOptions: both name --input_layer_partitioner and --dense_layer_partitioner.)"""
        return None

    def dense_partitioner(self, args):
        return None

    def lr_factor(self, scaling):
        """--lr_scaling: how much larger the learning rates get with more processes."""
        return {"none": 1.0, "linear": float(self.size), "sqrt": math.sqrt(self.size)}[scaling]

    def average_gradients(self, grads_and_vars):
        """Average each gradient over the processes (IndexedSlices stay sparse: Horovod allgathers
        their rows and values and divides the values by the number of processes)."""
        if not self.hvd or self.size == 1:
            return grads_and_vars
        return [(self.hvd.allreduce(g, op=self.hvd.Average, name=f"grad_{i}"), v)
                for i, (g, v) in enumerate(grads_and_vars)]

    def sum(self, value, name):
        """A scalar summed over the processes (rows skipped by --bad_rows skip, for example)."""
        if not self.hvd or self.size == 1:
            return value
        return self.hvd.allreduce(value, op=self.hvd.Sum, name=name)

    def training_hooks(self):
        """Rank 0's variables (restored or freshly initialized) copied to every process at the start;
        a digest of every variable taken at the end, to show that the processes stayed identical."""
        if not self.hvd:
            return []
        return [self.hvd.BroadcastGlobalVariablesHook(0), _digest_hook(self)]

    def gather(self, obj):
        """A Python object from every process, in rank order (every process must call this)."""
        if not self.hvd:
            return [obj]
        try:
            return self.hvd.allgather_object(obj)
        except Exception as err:  # a peer stopped: Horovod reports it in many shapes
            raise DataParallelError(f"process {self.rank}: another process stopped ({type(err).__name__}); "
                                    "its own message says why") from None

    def barrier(self, why):
        """Wait here until every process arrives; `why` names what failed if one never does."""
        if self.size > 1:
            try:
                self.gather(None)
            except DataParallelError:
                raise DataParallelError(f"process {self.rank}: {why}") from None


class ClusterWorld(World):
    """The World of a task of a parameter-server job (modelzoo/distributed.py): one process per task
    (no gradient averaging: each trainer applies its own updates on the PS), rank = the trainer index."""

    def __init__(self, cluster):
        super().__init__()
        self.cluster = cluster
        self.rank = cluster.trainer_index if cluster.trainer_index is not None else -1
        self.progress_slot = max(self.rank, 0)
        self.progress_prefix = f"{cluster.task_type} {cluster.task_index}: "

    @property
    def is_chief(self):
        return self.cluster.is_chief

    @property
    def logs_progress(self):
        return True  # each pod's log shows its own steps

    def input_partitioner(self, args):
        return distributed.partitioner(args.input_layer_partitioner, 20, self.cluster.num_ps)  # MB

    def dense_partitioner(self, args):
        return distributed.partitioner(args.dense_layer_partitioner, 10, self.cluster.num_ps)  # KB

    def training_hooks(self):
        return [distributed.resume_report_hook(self.progress_slot, self.progress_prefix, self.cluster)]

    def workqueue_lines(self, data, read=None):
        return WorkQueue.for_trainer(self.cluster, data).lines(read)

    def workqueue_hooks(self, args, data, steps, checkpoint=None):
        """The chief fills the --workqueue in its training session, before any step (again from the
        restored checkpoint's record when PS 0 was restarted)."""
        if not (args.workqueue and self.is_chief):
            return []
        return [WorkQueue.for_trainer(self.cluster, data).fill_hook(steps * args.batch_size, args.batch_size,
                                                                    args.seed, checkpoint)]

    def workqueue_listeners(self, args, data, checkpoint):
        """The chief records after each checkpoint what each trainer had taken from the --workqueue."""
        if not (args.workqueue and self.is_chief):
            return []
        return [WorkQueue.for_trainer(self.cluster, data).record_listener(checkpoint, args.seed)]


def init(args):
    """Start Horovod when --hvd is given. (The per-process batch is fixed by options.Options.from_args,
    which refuses a --global_batch_size that does not split over the processes.)"""
    if not args.hvd:
        return World()
    try:
        import horovod.tensorflow as hvd
    except ImportError as err:
        raise DataParallelError(f"--hvd needs Horovod, which is not installed ({err}). {INSTALL_HINT}") from None
    hvd.init()
    return World(hvd)


def variables_digest(session, variables):
    """sha256 of the variables' values (in name order): equal digests mean identical variables."""
    digest = hashlib.sha256()
    ordered = sorted(variables, key=lambda v: v.op.name)
    for var, value in zip(ordered, session.run(ordered)):
        digest.update(var.op.name.encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _digest_hook(world):
    import tensorflow as tf
    tf1 = tf.compat.v1

    class DigestHook(tf1.train.SessionRunHook):
        def end(self, session):
            world.digest = variables_digest(session, tf1.global_variables())
    return DigestHook()

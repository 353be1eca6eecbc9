"""The processes of one job as ranks: who is chief, how many there are. Pure Python (no TensorFlow, no
Horovod), so that launchers and gdmix_lr's TF_CONFIG workers use the same class as the Estimator models'
Horovod world (modelzoo/data_parallel.World adds the collective operations on top of it)."""


class DataParallelError(Exception):
    """--hvd cannot run: Horovod is missing, or the batch does not split over the processes."""


class World:
    """Rank `rank` of `size` processes; rank 0 is the chief (it alone writes checkpoints and reports)."""

    def __init__(self, rank=0, size=1, task="local"):
        if not 0 <= rank < size:
            raise ValueError(f"World: rank {rank} is not in 0..{size - 1}")
        self.rank, self.size, self.task = rank, size, task

    @property
    def is_chief(self):
        return self.rank == 0

    def __eq__(self, other):
        return isinstance(other, World) and (self.rank, self.size, self.task) == (other.rank, other.size, other.task)

    def __hash__(self):
        return hash((self.rank, self.size, self.task))

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size}, task={self.task!r})"

"""--workqueue: the training input dealt out to the trainers of a parameter-server job at run time.

The training rows are cut into work items (row ranges of the input files, at most ITEM_ROWS each,
at least 4 per trainer). The chief puts every item of every epoch the job needs (each epoch in its
own seeded order) on one FIFO queue on PS 0, once per job. Each trainer's input takes the next item
when it has read the last one, so a faster trainer takes more items, and every item is read once
per epoch. What a trainer took is recorded on PS 0 too (in order), so a restarted worker first reads
its items again and then skips the rows it had trained on (its `input_progress` slot): it resumes
exactly where it stopped, the items it had taken are not lost, and none is read twice.
"""
import math
from dataclasses import dataclass
from typing import List

ITEM_ROWS = 100_000
QUEUE = "modelzoo_workqueue"
TAKEN = "modelzoo_workqueue_taken"  # "trainer/k" -> the k-th item that trainer took
STATE = "modelzoo_workqueue_state"  # "filled" -> 1; "count/trainer" -> items that trainer took


class _Table:
    """A string-keyed hash table on the PS, shared by name across the tasks' graphs (the raw op:
    tf.lookup's MutableHashTable gives each graph its own table)."""

    def __init__(self, shared_name, value_dtype, default):
        import tensorflow as tf
        self.default = tf.constant(default, value_dtype)
        self.handle = tf.raw_ops.MutableHashTableV2(key_dtype=tf.string, value_dtype=value_dtype,
                                                    shared_name=shared_name, use_node_name_sharing=False)

    def lookup(self, keys):
        import tensorflow as tf
        return tf.raw_ops.LookupTableFindV2(table_handle=self.handle, keys=keys, default_value=self.default)

    def insert(self, keys, values):
        import tensorflow as tf
        return tf.raw_ops.LookupTableInsertV2(table_handle=self.handle, keys=keys, values=values)


@dataclass
class WorkQueue:
    cluster: object  # modelzoo.distributed.Cluster
    items: List[str]  # "path\tstart\tstop"

    @classmethod
    def for_trainer(cls, cluster, data):
        total = data.train_rows
        size = max(1, min(ITEM_ROWS, math.ceil(total / (4 * cluster.trainers))))
        items = []
        for piece in data.train:
            for start in range(piece.start, piece.stop, size):
                items.append(f"{piece.path}\t{start}\t{min(start + size, piece.stop)}")
        return cls(cluster, items)

    def _ops(self):
        """The queue and the two record tables on PS 0, shared by name with every task's graph."""
        import tensorflow as tf
        with tf.device("/job:ps/task:0"):
            # an item on the queue is its code, epoch * items + index (a string table has no CPU kernel)
            queue = tf.queue.FIFOQueue(-1, [tf.int64], shapes=[[]], shared_name=QUEUE, name="workqueue")
            taken = _Table(TAKEN, tf.int64, -1)
            state = _Table(STATE, tf.int64, -1)
        return queue, taken, state

    @property
    def item_rows(self):
        return max(int(i.split("\t")[2]) - int(i.split("\t")[1]) for i in self.items)

    def fill_hook(self, rows_needed, batch_size, seed):
        """The chief's hook that puts every epoch's items on the queue when its training session
        starts, unless this job has done it already (a restarted chief leaves the queue as it is)."""
        import numpy as np
        import tensorflow as tf
        queue_ = self
        total = sum(int(i.split("\t")[2]) - int(i.split("\t")[1]) for i in self.items)
        # what the trainers hold beyond their steps: the shuffle buffer, the batches decoded ahead and
        # the item being read, each; one epoch more for what a restarted worker reads again
        from modelzoo.features import WORKQUEUE_READ_AHEAD, WORKQUEUE_SHUFFLE_BUFFER
        ahead = self.cluster.trainers * (WORKQUEUE_SHUFFLE_BUFFER + 2 * WORKQUEUE_READ_AHEAD * batch_size + self.item_rows)
        epochs = math.ceil((rows_needed + ahead) / total) + 1

        class FillHook(tf.compat.v1.train.SessionRunHook):
            def begin(self):
                queue, _, state = queue_._ops()
                self.filled = state.lookup(tf.constant(["filled"]))[0]
                self.plan = tf.compat.v1.placeholder(tf.int64, [None])
                self.put = queue.enqueue_many([self.plan])
                self.close = queue.close()
                self.mark = state.insert(tf.constant(["filled"]), tf.constant([1], tf.int64))

            def after_create_session(self, session, coord):
                if session.run(self.filled) == 1:
                    print("workqueue: already filled for this job (a restarted chief); left as it is", flush=True)
                    return
                for epoch in range(epochs):
                    order = np.random.RandomState(seed + epoch).permutation(len(queue_.items))
                    session.run(self.put, {self.plan: epoch * len(queue_.items) + order})
                session.run([self.close, self.mark])
                print(f"workqueue: {len(queue_.items)} items of at most {ITEM_ROWS:,} rows x {epochs} epochs "
                      f"on PS 0 for {queue_.cluster.trainers} trainers", flush=True)

        return FillHook()

    def _items(self):
        """This trainer's items: those it took before a restart, then new ones until the queue is empty."""
        import time
        import tensorflow as tf
        from modelzoo.distributed import own_session
        trainer = self.cluster.trainer_index
        # (the graph is not kept as the default across the yields: tf.data resumes this generator in
        # other threads, and the default-graph stack is per thread)
        graph = tf.Graph()
        with graph.as_default():
            queue, taken, state = self._ops()
            key = tf.compat.v1.placeholder(tf.string, [])
            count_key = tf.constant([f"count/{trainer}"])
            filled = state.lookup(tf.constant(["filled"]))[0]
            count = state.lookup(count_key)[0]
            old = taken.lookup(tf.reshape(key, [1]))[0]
            take = queue.dequeue()
            n_new = tf.compat.v1.placeholder(tf.int64, [])
            record = tf.group(taken.insert(tf.reshape(key, [1]), tf.reshape(take, [1])),
                              state.insert(count_key, tf.reshape(n_new, [1])))
        with own_session(self.cluster, graph) as session:
            while session.run(filled) != 1:  # the chief fills the queue before it trains
                time.sleep(1)
            n = max(int(session.run(count)), 0)
            if n:
                print(f"workqueue: trainer {trainer} reads its {n} earlier item(s) again, then goes on", flush=True)
            for k in range(n):
                yield self._item(int(session.run(old, {key: f"{trainer}/{k}"})))
            while True:
                try:
                    item, _ = session.run([take, record], {key: f"{trainer}/{n}", n_new: n + 1})
                except tf.errors.OutOfRangeError:
                    print(f"workqueue: trainer {trainer}: the queue is empty", flush=True)
                    return
                n += 1
                epoch, index = divmod(int(item), len(self.items))
                path, start, stop = self.items[index].split("\t")
                print(f"workqueue: trainer {trainer} took item {index} of epoch {epoch} "
                      f"({path} rows {start}-{stop})", flush=True)
                yield self._item(int(item))

    def _item(self, code):
        epoch, index = divmod(code, len(self.items))
        return f"{epoch}\t{index}\t{self.items[index]}"

    def lines(self):
        """The dataset of this trainer's lines, item after item."""
        import tensorflow as tf

        def read(item):
            fields = tf.strings.split(item, "\t")
            start = tf.strings.to_number(fields[3], tf.int64)
            stop = tf.strings.to_number(fields[4], tf.int64)
            gzip = tf.strings.regex_full_match(fields[2], r".*\.gz")
            lines = tf.data.TextLineDataset(fields[2], compression_type=tf.where(gzip, "GZIP", ""))
            return lines.skip(start).take(stop - start)

        items = tf.data.Dataset.from_generator(self._items, output_signature=tf.TensorSpec([], tf.string))
        return items.flat_map(read)

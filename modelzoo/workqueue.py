"""--workqueue: the training input dealt out to the trainers of a parameter-server job at run time.

The training rows are cut into work items (row ranges of the input files, at most ITEM_ROWS each, at
least 4 per trainer; a gzip file, which cannot seek, is one item). The chief puts every item of every
epoch the job needs (each epoch in its own seeded order) on one FIFO queue on PS 0, once per job. Each
trainer's input takes the next item when it has read the last one, so a faster trainer takes more items,
and every item is read once per epoch. What a trainer took is recorded on PS 0 too (in order), so a
restarted worker first reads its items again and then skips the rows it had trained on (its
`input_progress` slot): it resumes exactly where it stopped, the items it had taken are not lost, and
none is read twice.

The queue and the record live in PS 0's memory, not in the checkpoint. So after every checkpoint the
chief also writes what each trainer had taken to CHECKPOINT/workqueue/STEP.json. When the chief
finds the queue on PS 0 unfilled (PS 0 was restarted, or a new job resumes a checkpoint), it
rebuilds it from the record of the checkpoint it restored: each trainer's items as of that
checkpoint go back into the record on PS 0, the queue gets the rest of the deal (in its order), and
each trainer, whose `input_progress` the checkpoint restored too, reads its items again and skips
what it had trained on. The deal thus goes back to the checkpoint with the model: an item taken
after the checkpoint is dealt again (said in the log). Without a usable record (none, or another
cut of the items) the deal starts over, and the chief says what that means.
"""
import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass
from typing import List

from modelzoo.distributed import SharedTable

ITEM_ROWS = 100_000
QUEUE = "modelzoo_workqueue"
TAKEN = "modelzoo_workqueue_taken"  # "trainer/k" -> the k-th item that trainer took
STATE = "modelzoo_workqueue_state"  # "filled" -> 1; "count/trainer" -> items that trainer took
RECORDS = "workqueue"  # CHECKPOINT/workqueue/STEP.json: what each trainer had taken at checkpoint STEP
FILL_WAIT_NOTICE_SECS = 30  # a trainer waiting this long for the queue says so


def record_path(checkpoint, step):
    return os.path.join(checkpoint, RECORDS, f"{int(step)}.json")


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
            # a gzip file cannot seek (an item deep in it would decompress all the lines before it): one item
            step = piece.rows if piece.path.endswith(".gz") else size
            for start in range(piece.start, piece.stop, step):
                items.append(f"{piece.path}\t{start}\t{min(start + step, piece.stop)}")
        return cls(cluster, items)

    def _ops(self):
        """The queue and the two record tables on PS 0, shared by name with every task's graph."""
        import tensorflow as tf
        with tf.device("/job:ps/task:0"):
            # an item on the queue is its code, epoch * items + index (a string table has no CPU kernel)
            queue = tf.queue.FIFOQueue(-1, [tf.int64], shapes=[[]], shared_name=QUEUE, name="workqueue")
            taken = SharedTable(TAKEN, tf.int64, -1)
            state = SharedTable(STATE, tf.int64, -1)
        return queue, taken, state

    @property
    def item_rows(self):
        return max(int(i.split("\t")[2]) - int(i.split("\t")[1]) for i in self.items)

    @property
    def digest(self):
        """Identifies the cut of the items (a record is only valid for the same one)."""
        return hashlib.sha256("\n".join(self.items).encode()).hexdigest()[:16]

    def fill_hook(self, rows_needed, batch_size, seed, checkpoint=None):
        """The chief's hook that puts every epoch's items on the queue when a training session
        starts and PS 0 has none (a new job, or PS 0 restarted: then from the record of the restored
        checkpoint, see the module's docstring); a restarted chief leaves a filled queue as it is."""
        import numpy as np
        import tensorflow as tf
        from modelzoo.distributed import progress_variable, record_restores, restored_checkpoint
        queue_ = self
        total = sum(int(i.split("\t")[2]) - int(i.split("\t")[1]) for i in self.items)
        # what the trainers hold beyond their steps: the shuffle buffer, the batches decoded ahead and
        # the item being read, each; one epoch more for what a restarted worker reads again
        from modelzoo.features import WORKQUEUE_READ_AHEAD, WORKQUEUE_SHUFFLE_BUFFER
        per_trainer = WORKQUEUE_SHUFFLE_BUFFER + 2 * WORKQUEUE_READ_AHEAD * batch_size + self.item_rows
        ahead = self.cluster.trainers * per_trainer
        epochs = math.ceil((rows_needed + ahead) / total) + 1
        trainers = self.cluster.trainers

        class FillHook(tf.compat.v1.train.SessionRunHook):
            def begin(self):
                queue, taken, state = queue_._ops()
                self.filled = state.lookup(tf.constant(["filled"]))[0]
                self.plan = tf.compat.v1.placeholder(tf.int64, [None])
                self.put = queue.enqueue_many([self.plan])
                self.close = queue.close()
                self.mark = state.insert(tf.constant(["filled"]), tf.constant([1], tf.int64))
                self.keys = tf.compat.v1.placeholder(tf.string, [None])
                self.values = tf.compat.v1.placeholder(tf.int64, [None])
                self.put_taken = taken.insert(self.keys, self.values)
                self.put_state = state.insert(self.keys, self.values)
                self.progress = progress_variable()
                record_restores()  # (the checkpoint a training session restores: its record is the one to use)

            def after_create_session(self, session, coord):
                if session.run(self.filled) == 1:
                    print("workqueue: already filled for this job (a restarted chief); left as it is", flush=True)
                    return
                step, _ = restored_checkpoint()  # None: the variables were initialized (a new job)
                progress = session.run(self.progress)  # (nobody trains before the queue is filled)
                plan = np.concatenate([epoch * len(queue_.items) + np.random.RandomState(seed + epoch).permutation(
                    len(queue_.items)) for epoch in range(epochs)])
                record, why = queue_._load_record(checkpoint, step, seed)
                if record is not None:
                    taken = {int(t): codes for t, codes in record["taken"].items()}
                    keys = [f"{t}/{k}" for t, codes in taken.items() for k in range(len(codes))]
                    values = [c for codes in taken.values() for c in codes]
                    if keys:
                        session.run(self.put_taken, {self.keys: keys, self.values: values})
                        session.run(self.put_state, {self.keys: [f"count/{t}" for t in taken],
                                                     self.values: [len(codes) for codes in taken.values()]})
                    dealt = set(values)
                    plan = np.array([c for c in plan if c not in dealt], np.int64)
                    print(f"workqueue: PS 0 had no queue (restarted, or a new job): rebuilt from the record of "
                          f"checkpoint step {step:,}: " + ", ".join(
                              f"trainer {t} had {len(taken.get(t, []))} item(s)" for t in range(trainers))
                          + f"; the {len(plan)} items not dealt by then are queued again (an item taken after that "
                          "checkpoint is dealt again: the model went back to it too)", flush=True)
                elif step is not None and (step or progress[:trainers].any()):
                    rows = "/".join(f"{int(r):,}" for r in progress[:trainers])
                    print(f"workqueue: warning: PS 0 had no queue (restarted, or a new job) and {why}: the deal "
                          f"starts over, and the trainers skip the {rows} rows they had trained on (as of the "
                          f"restored checkpoint step {step:,}) in their new items: this epoch some rows may be "
                          "read twice, others not at all", flush=True)
                session.run(self.put, {self.plan: plan})
                session.run([self.close, self.mark])
                if record is None:
                    print(f"workqueue: {len(queue_.items)} items of at most {queue_.item_rows:,} rows x {epochs} "
                          f"epochs on PS 0 for {trainers} trainers", flush=True)

        return FillHook()

    def _load_record(self, checkpoint, step, seed):
        """(record, None) when CHECKPOINT/workqueue/STEP.json fits this job, else (None, why not)."""
        if step is None:
            return None, "no checkpoint was restored"
        path = record_path(checkpoint, step) if checkpoint else None
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, TypeError, ValueError):
            return None, f"checkpoint step {step:,} has no work-queue record ({path})"
        mine = {"items": self.digest, "trainers": self.cluster.trainers, "seed": seed}
        theirs = {k: record.get(k) for k in mine}
        if theirs != mine:
            return None, f"the record {path} was made for another cut of the items ({theirs}, now {mine})"
        return record, None

    def record_listener(self, checkpoint, seed):
        """The chief's CheckpointSaverListener that writes, after each checkpoint, what each trainer
        had taken (read from PS 0 after the save: the items under every trainer's counted rows are
        in it) to CHECKPOINT/workqueue/STEP.json, and deletes the records of deleted checkpoints.
        (STEP is the step in the checkpoint's file name, which a restore knows.)"""
        import tensorflow as tf
        from modelzoo.distributed import restored_checkpoint
        from modelzoo.io_utils import atomic_write_json
        queue_ = self

        class RecordListener(tf.estimator.CheckpointSaverListener):
            def begin(self):
                _, taken, state = queue_._ops()
                self.filled = state.lookup(tf.constant(["filled"]))[0]
                self.taken = taken.export()

            def after_save(self, session, global_step_value):
                filled, (keys, values) = session.run([self.filled, self.taken])
                if filled != 1:
                    # PS 0 is new (a new job, or restarted): the chief saves as its session starts, before
                    # it refills the queue and before anyone trains, so this checkpoint holds the restored
                    # state and the restored checkpoint's record is this one's too
                    step, _ = restored_checkpoint()
                    if step is not None and step != global_step_value:
                        try:
                            with open(record_path(checkpoint, step), encoding="utf-8") as f:
                                record = json.load(f)
                        except (OSError, ValueError):
                            return
                        atomic_write_json(record_path(checkpoint, global_step_value),
                                          dict(record, step=int(global_step_value)))
                    return
                taken = {}
                for key, code in zip(keys, values):
                    trainer, k = key.decode().split("/")
                    taken.setdefault(trainer, {})[int(k)] = int(code)
                atomic_write_json(record_path(checkpoint, global_step_value), {
                    "step": int(global_step_value), "items": queue_.digest, "trainers": queue_.cluster.trainers,
                    "seed": seed, "taken": {t: [ks[k] for k in sorted(ks)] for t, ks in sorted(taken.items())}})
                state = tf.train.get_checkpoint_state(checkpoint)
                kept = {int(p.rsplit("-", 1)[1]) for p in (state.all_model_checkpoint_paths if state else [])}
                kept.add(int(global_step_value))
                for name in os.listdir(os.path.join(checkpoint, RECORDS)):
                    stem = name[:-len(".json")]
                    if name.endswith(".json") and stem.isdigit() and int(stem) not in kept:
                        try:
                            os.remove(os.path.join(checkpoint, RECORDS, name))
                        except OSError:
                            pass

        return RecordListener()

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
        session = own_session(self.cluster, graph)
        try:
            waited = time.time()
            while session.run(filled) != 1:  # the chief fills the queue before it trains
                if waited and time.time() - waited > FILL_WAIT_NOTICE_SECS:
                    print(f"workqueue: trainer {trainer} has waited {FILL_WAIT_NOTICE_SECS} s for the chief to fill "
                          "the queue on PS 0 (after a restart of PS 0 it does so from its checkpoint's record)",
                          flush=True)
                    waited = None
                time.sleep(1)
            n = max(int(session.run(count)), 0)
            if n:
                print(f"workqueue: trainer {trainer} reads its {n} earlier item(s) again, then goes on", flush=True)
            for k in range(n):
                item = int(session.run(old, {key: f"{trainer}/{k}"}))
                epoch, index = divmod(item, len(self.items))
                # (named: the kill may have landed after the queue dealt it and before its "took" line)
                print(f"workqueue: trainer {trainer} reads item {index} of epoch {epoch} again", flush=True)
                yield self._item(item)
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
        finally:
            # tf.data ends this generator while the training session closes (the end of training, or a
            # lost PS); closing this session right here waits for that close and stalls it 30 s
            threading.Thread(target=session.close, daemon=True).start()

    def _item(self, code):
        epoch, index = divmod(code, len(self.items))
        return f"{epoch}\t{index}\t{self.items[index]}"

    def lines(self, read_rows=None):
        """The dataset of this trainer's lines, item after item (`read_rows(path, start, stop)`: the dataset
        of an item's rows, for files other than text: modelzoo/parquet.range_dataset). A text item is read
        from its first line's bytes (the file's line index: a seek, then fewer than line_index.EVERY lines
        skipped), so an item at the end of a big file costs what one at its start does; gzip cannot seek."""
        import tensorflow as tf
        from modelzoo import line_index

        if read_rows is None:
            def blocks():
                items = self._items()
                try:
                    for item in items:
                        _, _, path, start, stop = item.split("\t")
                        yield from line_index.blocks(path, int(start), int(stop))
                finally:
                    items.close()  # (its session is closed as tf.data ends this generator)

            lines = tf.data.Dataset.from_generator(blocks, output_signature=tf.TensorSpec([None], tf.string))
            return lines.unbatch()

        def read(item):
            fields = tf.strings.split(item, "\t")
            return read_rows(fields[2], tf.strings.to_number(fields[3], tf.int64),
                             tf.strings.to_number(fields[4], tf.int64))

        items = tf.data.Dataset.from_generator(self._items, output_signature=tf.TensorSpec([], tf.string))
        return items.flat_map(read)

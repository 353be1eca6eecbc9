"""Parameter-server training from TF_CONFIG: between-graph, asynchronous, through tf.estimator.

Every task of a Kubeflow TFJob (or of `python -m distribute_k8s.local_run`) runs the same train.py;
TF_CONFIG tells it its role:

- chief and workers train (tf.estimator.train_and_evaluate): variables live on the PS tasks (the
  Estimator's replica_device_setter; --input_layer_partitioner/--dense_layer_partitioner cut them
  into slices across the PS tasks), each trainer reads its own shard of the input (or takes work
  items from the --workqueue on PS 0) and counts the rows it has trained on in `input_progress`, a
  checkpointed variable on the PS, so a restarted worker skips what it already consumed. Device
  filters keep a trainer's session to the PS tasks and itself (a dead worker stalls nobody else).
- the evaluator (outside TF_CONFIG's cluster, as the operator and tf.estimator want it) evaluates
  each new checkpoint until the final one, records each result in CHECKPOINT/evaluator/ and beats a
  heartbeat there; the chief, after training, waits for the evaluator's final result while that
  heartbeat is alive (so the evaluator is never cut off before its final evaluation) or evaluates by
  itself when there is no evaluator, then exports and writes result.json.
- a PS serves variables until every trainer has reported that its training ended (one token each on
  a queue of every PS), then exits 0 by itself: the job reaches Succeeded without anyone killing it.
- a PS that dies and is restarted (restartPolicy OnFailure) comes back empty: the trainers' sessions
  fail (UnavailableError/AbortedError), tf.train.MonitoredSession creates new ones, the chief's
  restores every variable from the latest checkpoint (global step and `input_progress` included, so
  each trainer's input resumes at the checkpoint's count) and the workers wait until it has. The
  chief says so (and tells the PS, which says so too); a PS that finds the chief's result.json
  rewritten exits even when the tokens of trainers that had finished before its restart are missing.
  --workqueue's queue on PS 0 is rebuilt by the chief from the record of that checkpoint (workqueue.py).
"""
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List

from modelzoo import tf_config

TRAINER_TYPES = ("chief", "worker")
DONE_QUEUE = "modelzoo_training_done_ps{}"  # shared_name of each PS's end-of-training queue
RESTORED = -1  # on a DONE_QUEUE: (RESTORED, step): the chief restored checkpoint `step` into this (restarted) PS
PS_MARK = "modelzoo_ps_mark_ps{}"  # a table the chief marks on each PS: a PS without the mark was restarted
PS_POLL_SECS = 0.5  # a PS checks its queue (and the chief's result.json) this often
MAX_TRAINERS = 1024  # slots of `input_progress` (fixed, so that checkpoints resume at any cluster size)
HEARTBEAT_SECS = 5  # the evaluator touches its heartbeat this often
HEARTBEAT_STALE_SECS = 60  # older than this: no evaluator is alive
WORKER_READY_POLL_SECS = 2  # a worker checks this often whether the chief has initialized the variables


class ClusterError(Exception):
    """TF_CONFIG cannot be used for parameter-server training; the message says why."""


@dataclass
class Cluster:
    """This task's place in TF_CONFIG's cluster."""
    spec: Dict[str, List[str]]  # chief/worker/ps addresses (the evaluator is not in the cluster)
    task_type: str
    task_index: int

    @property
    def num_ps(self):
        return len(self.spec.get("ps", []))

    @property
    def trainers(self):
        """chief + workers: the tasks that run training steps."""
        return len(self.spec.get("chief", [])) + len(self.spec.get("worker", []))

    @property
    def trainer_index(self):
        """0 for the chief, 1 + i for worker i (i without a chief); None for ps and evaluator."""
        if self.task_type == "chief":
            return self.task_index
        if self.task_type == "worker":
            return len(self.spec.get("chief", [])) + self.task_index
        return None

    @property
    def is_chief(self):
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                             and not self.spec.get("chief"))

    @property
    def name(self):
        return f"{self.task_type}:{self.task_index}"

    def device_filters(self):
        """What this task's sessions may see: trainers only the PS tasks and themselves (as the
        Estimator's default session config, which the runner's own config replaces)."""
        if self.task_type in TRAINER_TYPES:
            return ["/job:ps", f"/job:{self.task_type}/task:{self.task_index}"]
        if self.task_type == "ps":
            return ["/job:ps", "/job:worker", "/job:chief"]
        return []


def from_environment(environ=os.environ):
    """The Cluster of a parameter-server job from TF_CONFIG (modelzoo/tf_config.py); None when there is
    none (one process).

    A TF_CONFIG without ps tasks is not a parameter-server job: a one-task cluster runs as one
    process (what tf.estimator does too); anything larger is refused with the reason. So is `master`,
    the legacy name of the chief: the Estimator's PS training knows the chief only as `chief`.
    """
    try:
        config = tf_config.from_environment(environ)
    except tf_config.TFConfigError as err:
        raise ClusterError(str(err)) from None
    if config is None:
        return None
    if config.names_master:
        raise ClusterError("TF_CONFIG names a master task (the legacy name of the chief): parameter-server "
                           "training needs it as chief (the TFJob replica type Chief, not Master)")
    spec = {job: list(addresses) for job, addresses in config.cluster.items() if job != "evaluator" and addresses}
    task_type, index = config.task_type, config.task_index
    if not spec.get("ps"):
        if sum(len(v) for v in spec.values()) <= 1 and task_type != "evaluator":
            return None  # one task: a single-process run
        raise ClusterError(f"TF_CONFIG names no ps tasks ({sorted(spec)}): parameter-server training needs at "
                           "least one (synchronous training without PS is --hvd with horovodrun)")
    if not (spec.get("chief") or spec.get("worker")):
        raise ClusterError("TF_CONFIG: the cluster has ps tasks but no chief or worker to train")
    return Cluster(spec, task_type, index)


def partitioner(size_units, shift, num_ps):
    """DeepRec's partitioners: slices of at least `size_units` << shift bytes, at most one per PS."""
    if not size_units:
        return None
    import tensorflow as tf
    return tf.compat.v1.min_max_variable_partitioner(max_partitions=num_ps, min_slice_size=size_units << shift)


def speed_up_worker_start():
    """tf.estimator's non-chief session waits in steps of 30 s for the chief to initialize the
    variables; check every WORKER_READY_POLL_SECS instead (the same wait, less idle time)."""
    import inspect
    from tensorflow.python.training import session_manager
    init = session_manager.SessionManager.__init__
    names = [p.name for p in inspect.signature(init).parameters.values() if p.default is not inspect.Parameter.empty]
    defaults = list(init.__defaults__)
    defaults[names.index("recovery_wait_secs")] = WORKER_READY_POLL_SECS
    init.__defaults__ = tuple(defaults)


def own_session(cluster, graph=None):
    """A session whose master is this trainer's own server (tf.estimator starts it and it lives as
    long as the process), seeing the PS tasks and itself. A session mastered by a PS instead hangs
    at creation once any other task of the cluster has exited (measured with TF 2.15: the PS's
    master waits for the dead task even with device filters that leave it out)."""
    import tensorflow as tf
    config = tf.compat.v1.ConfigProto(device_filters=cluster.device_filters())
    return tf.compat.v1.Session(f"grpc://{cluster.spec[cluster.task_type][cluster.task_index]}", graph=graph,
                                config=config)


def _done_queue(ps_task):
    """PS `ps_task`'s queue of (trainer index, 0) end-of-training tokens and (RESTORED, step) notes."""
    import tensorflow as tf
    with tf.device(f"/job:ps/task:{ps_task}"):
        return tf.queue.FIFOQueue(MAX_TRAINERS, [tf.int32, tf.int64], shapes=[[], []],
                                  shared_name=DONE_QUEUE.format(ps_task), name=f"training_done_ps{ps_task}")


class SharedTable:
    """A string-keyed hash table on a PS, shared by name across the tasks' graphs (the raw op:
    tf.lookup's MutableHashTable gives each graph its own table). It lives as long as the PS process."""

    def __init__(self, shared_name, value_dtype, default):
        import tensorflow as tf
        self.default = tf.constant(default, value_dtype)
        self.value_dtype = value_dtype
        self.handle = tf.raw_ops.MutableHashTableV2(key_dtype=tf.string, value_dtype=value_dtype,
                                                    shared_name=shared_name, use_node_name_sharing=False)

    def lookup(self, keys):
        import tensorflow as tf
        return tf.raw_ops.LookupTableFindV2(table_handle=self.handle, keys=keys, default_value=self.default)

    def insert(self, keys, values):
        import tensorflow as tf
        return tf.raw_ops.LookupTableInsertV2(table_handle=self.handle, keys=keys, values=values)

    def export(self):
        """(keys, values): everything in the table."""
        import tensorflow as tf
        return tf.raw_ops.LookupTableExportV2(table_handle=self.handle, Tkeys=tf.string, Tvalues=self.value_dtype)


def mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def latest_checkpoint_step(checkpoint):
    """(step, path) of the newest checkpoint in the folder, (None, None) without one."""
    import tensorflow as tf
    path = checkpoint and tf.train.latest_checkpoint(checkpoint)
    return (int(path.rsplit("-", 1)[1]), path) if path else (None, None)


def serve_ps(cluster, protocol="grpc", checkpoint=None):
    """Run this PS task until every trainer has said its training ended; returns 0 (exit by itself).

    It also exits when the chief's CHECKPOINT/result.json is (re)written after it started: the job
    has ended, even if the tokens of trainers that finished before this PS was restarted were lost."""
    import tensorflow as tf
    config = tf.compat.v1.ConfigProto(device_filters=cluster.device_filters())
    server = tf.distribute.Server(tf.train.ClusterSpec(cluster.spec), job_name="ps", task_index=cluster.task_index,
                                  protocol=protocol, config=config, start=True)
    me = f"ps {cluster.task_index}"
    print(f"{me}: serving variables at {cluster.spec['ps'][cluster.task_index]} for "
          f"{cluster.trainers} trainer(s); exits when each has finished", flush=True)
    step, _ = latest_checkpoint_step(checkpoint)
    if step is not None:
        print(f"{me}: {checkpoint} has a checkpoint (step {step:,}): the chief restores the variables from its latest "
              "checkpoint into this task (a restarted PS, or a resumed job)", flush=True)
    result = os.path.join(checkpoint, "result.json") if checkpoint else None
    result_before = mtime(result) if result else None
    with tf.Graph().as_default():
        queue = _done_queue(cluster.task_index)
        take, size = queue.dequeue(), queue.size()
        own = tf.compat.v1.ConfigProto(device_filters=[f"/job:ps/task:{cluster.task_index}"])
        with tf.compat.v1.Session(server.target, config=own) as session:
            finished = set()
            while len(finished) < cluster.trainers:
                if not session.run(size):
                    if result and mtime(result) != result_before:
                        missing = sorted(set(range(cluster.trainers)) - finished)
                        print(f"{me}: the chief has written {result} (the job has ended) without word from "
                              f"trainer(s) {missing} (lost if they finished before this PS was restarted); "
                              "exiting", flush=True)
                        return 0
                    time.sleep(PS_POLL_SECS)
                    continue
                trainer, step = (int(v) for v in session.run(take))
                if trainer == RESTORED:
                    print(f"{me}: back after a restart: the chief restored the variables from checkpoint step "
                          f"{step:,} into this task", flush=True)
                    continue
                finished.add(trainer)
                print(f"{me}: trainer {trainer} finished ({len(finished)}/{cluster.trainers})", flush=True)
    print(f"{me}: every trainer has finished; exiting", flush=True)
    return 0


def signal_training_done(cluster):
    """Tell every PS task that this trainer's training has ended (its last use of the PS)."""
    import tensorflow as tf
    with tf.Graph().as_default():
        puts = [_done_queue(i).enqueue((cluster.trainer_index, 0)) for i in range(cluster.num_ps)]
        with own_session(cluster) as session:
            session.run(puts)


def progress_variable():
    """`input_progress`: rows each trainer has trained on (slot = trainer index; one slot for a
    single process, every Horovod process adding the global batch). A global, checkpointed
    variable, placed on a PS by the Estimator's device setter in a cluster."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    with tf1.variable_scope(tf1.get_variable_scope(), reuse=tf1.AUTO_REUSE):
        return tf1.get_variable("input_progress", [MAX_TRAINERS], tf.int64, tf1.zeros_initializer(),
                                trainable=False, partitioner=None, use_resource=True)


# --- the evaluator's results on the shared checkpoint folder -----------------------------------

def evaluator_dir(checkpoint):
    return os.path.join(checkpoint, "evaluator")


class Heartbeat:
    """The evaluator touches CHECKPOINT/evaluator/heartbeat every HEARTBEAT_SECS while it runs."""

    def __init__(self, checkpoint):
        self.path = os.path.join(evaluator_dir(checkpoint), "heartbeat")
        self.stop = threading.Event()

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._beat()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _beat(self):
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {time.time():.0f}\n")

    def _run(self):
        while not self.stop.wait(HEARTBEAT_SECS):
            self._beat()

    def __exit__(self, *exc):
        self.stop.set()


def evaluator_alive(checkpoint):
    path = os.path.join(evaluator_dir(checkpoint), "heartbeat")
    try:
        return time.time() - os.path.getmtime(path) < HEARTBEAT_STALE_SECS
    except OSError:
        return False


def record_evaluation(checkpoint, metrics, checkpoint_path, final):
    """The evaluator's latest evaluation (its metrics, and whether it was of the last step) in
    CHECKPOINT/evaluator/eval.json, for the chief's result.json."""
    from modelzoo.io_utils import atomic_write_json
    record = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
    record.update(checkpoint=checkpoint_path, final=bool(final), time=time.time())
    atomic_write_json(os.path.join(evaluator_dir(checkpoint), "eval.json"), record)


def wait_for_final_eval(checkpoint, final_step, started):
    """The evaluator's metrics of a checkpoint at or past `final_step`, written after `started`;
    None as soon as no evaluator is alive (the chief then evaluates by itself)."""
    path = os.path.join(evaluator_dir(checkpoint), "eval.json")
    announced = False
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            if record.get("global_step", -1) >= final_step and record.get("time", 0) >= started:
                return record
        except (OSError, ValueError):
            pass
        if not evaluator_alive(checkpoint):
            return None
        if not announced:
            print(f"chief: waiting for the evaluator's evaluation of step {final_step:,}", flush=True)
            announced = True
        time.sleep(1)


def report_trainer(checkpoint, cluster, meter):
    """Each trainer's own steps and samples/s, for the chief's result.json."""
    from modelzoo.io_utils import atomic_write_json
    atomic_write_json(os.path.join(checkpoint, "trainers", f"{cluster.task_type}-{cluster.task_index}.json"),
                      {"steps": meter.steps_run, "samples_per_sec": meter.own_samples_per_sec,
                       "span": meter.span, "time": time.time()})


def trainer_reports(checkpoint, cluster, started, wait=0):
    """The reports of this job's trainers (those written since `started`), by task name; waits up
    to `wait` seconds for all of them."""
    deadline = time.time() + wait
    while True:
        reports = _trainer_reports(checkpoint, cluster, started)
        if len(reports) == cluster.trainers or time.time() > deadline:
            return reports
        time.sleep(1)


def _trainer_reports(checkpoint, cluster, started):
    reports = {}
    for job in TRAINER_TYPES:
        for i in range(len(cluster.spec.get(job, []))):
            try:
                with open(os.path.join(checkpoint, "trainers", f"{job}-{i}.json"), encoding="utf-8") as f:
                    report = json.load(f)
            except (OSError, ValueError):
                continue
            if report.get("time", 0) >= started:
                reports[f"{job}-{i}"] = report
    return reports


def wait_for(what, ready, timeout=None, poll=1.0, why=None, log_every=60.0):
    """Poll `ready()` until it returns a true value (returned). With a `timeout`, give up after that many
    seconds (ClusterError); without one wait as long as it takes (as tf.estimator's workers wait for the
    chief: a chief Pending for long must not fail the others), saying so every `log_every` seconds with
    `why()`, the reason it is not ready yet, when given."""
    start = time.time()
    next_log = start
    while True:
        value = ready()
        if value:
            return value
        now = time.time()
        if timeout is not None and now - start > timeout:
            raise ClusterError(f"gave up after {timeout:.0f}s waiting for {what}")
        if now >= next_log:
            reason = why() if why else None
            waited = f" (for {now - start:.0f}s)" if now > start + poll else ""
            print(f"waiting for {what}{waited}{f': {reason}' if reason else ''}", file=sys.stderr, flush=True)
            next_log = now + log_every
        time.sleep(poll)


_restores = []  # (step, path) of each checkpoint the chief's training sessions restored, in order


def restored_checkpoint():
    """(step, path) of the checkpoint the chief's latest training session restored (the step of its
    file name: the global step saved in it may be a little higher, the workers step while it saves);
    (None, None) when it initialized the variables instead, or before record_restores()."""
    return _restores[-1] if _restores else (None, None)


def record_restores():
    """Wrap SessionManager.prepare_session (once per process) to note the checkpoint each training
    session of the chief restores: the latest one of its checkpoint folder, read as it is restored."""
    from tensorflow.python.training import session_manager
    prepare = session_manager.SessionManager.prepare_session
    if getattr(prepare, "_modelzoo_records", False):
        return

    def prepare_session(self, master, init_op=None, saver=None, checkpoint_dir=None,
                        checkpoint_filename_with_path=None, *args, **kwargs):
        if checkpoint_dir and not checkpoint_filename_with_path:  # training (evaluation names its file)
            _restores.append(latest_checkpoint_step(checkpoint_dir))
        return prepare(self, master, init_op, saver, checkpoint_dir, checkpoint_filename_with_path, *args, **kwargs)

    prepare_session._modelzoo_records = True
    session_manager.SessionManager.prepare_session = prepare_session


def resume_report_hook(slot, prefix, cluster=None):
    """Says, when a trainer's session starts, how many rows its input skips (those it trained on
    before it was restarted; silent on a first start), and when a session is created again in the
    same process (a PS was lost) where its input resumes. The chief also says which checkpoint it
    restored and which PS tasks had been restarted (a PS without the chief's mark), and tells those."""
    import tensorflow as tf

    class ResumeReport(tf.compat.v1.train.SessionRunHook):
        def begin(self):
            self.sessions = 0
            self.consumed = progress_variable()[slot]
            self.chief = cluster is not None and cluster.is_chief
            if self.chief:
                record_restores()
                self.marks, self.put_marks, self.notes = [], [], []
                self.step = tf.compat.v1.placeholder(tf.int64, [])
                for i in range(cluster.num_ps):
                    with tf.device(f"/job:ps/task:{i}"):
                        table = SharedTable(PS_MARK.format(i), tf.int64, -1)
                        self.marks.append(table.lookup(tf.constant(["chief"]))[0])
                        self.put_marks.append(table.insert(tf.constant(["chief"]), tf.constant([1], tf.int64)))
                    self.notes.append(_done_queue(i).enqueue((RESTORED, self.step)))

        def after_create_session(self, session, coord):
            self.sessions += 1
            again = self.sessions > 1
            if self.chief:
                marked = session.run(self.marks)
                session.run(self.put_marks)
                step, path = restored_checkpoint()
                if again:
                    restarted = [i for i, m in enumerate(marked) if m != 1]
                    what = (f"restored the variables from checkpoint step {step:,} ({path})" if step is not None
                            else "initialized the variables (no checkpoint yet)")
                    if restarted:
                        print(f"chief: ps {', '.join(map(str, restarted))} came back after a restart (empty): "
                              f"{what} into the new task; training goes on from there", flush=True)
                        if step is not None:
                            session.run([self.notes[i] for i in restarted], {self.step: step})
                    else:
                        print(f"chief: the training session was created again (a task was unreachable); {what}",
                              flush=True)
            rows = int(session.run(self.consumed))
            if again:
                print(f"{prefix}new training session: input resumes after the {rows:,} rows of this trainer's "
                      "input_progress slot (as restored from the checkpoint if a PS was restarted: the rows "
                      "trained since are trained again)", flush=True)
            elif rows:
                print(f"{prefix}input resumes after the {rows:,} rows this trainer has trained on "
                      "(restarted: they are skipped, not read again)", flush=True)

    return ResumeReport()

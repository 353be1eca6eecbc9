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
"""
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List

TRAINER_TYPES = ("chief", "worker")
DONE_QUEUE = "modelzoo_training_done_ps{}"  # shared_name of each PS's end-of-training queue
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
    """The Cluster of a parameter-server job from TF_CONFIG; None when there is none (one process).

    A TF_CONFIG without ps tasks is not a parameter-server job: a one-task cluster runs as one
    process (what tf.estimator does too); anything larger is refused with the reason.
    """
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as err:
        raise ClusterError(f"TF_CONFIG is not JSON ({err}): {text[:200]}") from None
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ClusterError("TF_CONFIG: expected {\"cluster\": {...}, \"task\": {\"type\": ..., \"index\": ...}}")
    unknown = sorted(set(cluster) - {"chief", "worker", "ps", "evaluator"})
    if unknown:
        raise ClusterError(f"TF_CONFIG: cluster job(s) {unknown} are not known; expected chief, worker, ps "
                           "(the evaluator stays outside the cluster)")
    spec = {job: list(addresses) for job, addresses in cluster.items() if job != "evaluator" and addresses}
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in ("chief", "worker", "ps", "evaluator") or not isinstance(index, int) or index < 0:
        raise ClusterError(f"TF_CONFIG: task {task} is not one of chief, worker, ps, evaluator with an index >= 0")
    if task_type != "evaluator" and index >= len(spec.get(task_type, [])):
        raise ClusterError(f"TF_CONFIG: task {task_type}:{index} is not in the cluster {spec}")
    if len(spec.get("chief", [])) > 1:
        raise ClusterError("TF_CONFIG: a cluster has at most one chief")
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
    import tensorflow as tf
    with tf.device(f"/job:ps/task:{ps_task}"):
        return tf.queue.FIFOQueue(MAX_TRAINERS, [tf.int32], shapes=[[]], shared_name=DONE_QUEUE.format(ps_task),
                                  name=f"training_done_ps{ps_task}")


def serve_ps(cluster, protocol="grpc"):
    """Run this PS task until every trainer has said its training ended; returns 0 (exit by itself)."""
    import tensorflow as tf
    config = tf.compat.v1.ConfigProto(device_filters=cluster.device_filters())
    server = tf.distribute.Server(tf.train.ClusterSpec(cluster.spec), job_name="ps", task_index=cluster.task_index,
                                  protocol=protocol, config=config, start=True)
    print(f"ps {cluster.task_index}: serving variables at {cluster.spec['ps'][cluster.task_index]} for "
          f"{cluster.trainers} trainer(s); exits when each has finished", flush=True)
    with tf.Graph().as_default():
        take = _done_queue(cluster.task_index).dequeue()
        own = tf.compat.v1.ConfigProto(device_filters=[f"/job:ps/task:{cluster.task_index}"])
        with tf.compat.v1.Session(server.target, config=own) as session:
            finished = set()
            while len(finished) < cluster.trainers:
                trainer = int(session.run(take))
                finished.add(trainer)
                print(f"ps {cluster.task_index}: trainer {trainer} finished ({len(finished)}/{cluster.trainers})",
                      flush=True)
    print(f"ps {cluster.task_index}: every trainer has finished; exiting", flush=True)
    return 0


def signal_training_done(cluster):
    """Tell every PS task that this trainer's training has ended (its last use of the PS)."""
    import tensorflow as tf
    with tf.Graph().as_default():
        puts = [_done_queue(i).enqueue(cluster.trainer_index) for i in range(cluster.num_ps)]
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


def eval_recorder(checkpoint):
    """An EvalSpec exporter that records every evaluation's metrics (and whether it was the final
    one) in CHECKPOINT/evaluator/eval.json, for the chief's result.json."""
    import tensorflow as tf
    from modelzoo.io_utils import atomic_write_json

    class EvalRecorder(tf.estimator.Exporter):
        @property
        def name(self):
            return "eval_record"

        def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
            record = {k: (v.item() if hasattr(v, "item") else v) for k, v in eval_result.items()}
            record.update(checkpoint=checkpoint_path, final=bool(is_the_final_export), time=time.time())
            atomic_write_json(os.path.join(evaluator_dir(checkpoint), "eval.json"), record)
            print(f"evaluator: step {record.get('global_step')}: AUC {record.get('auc', float('nan')):.4f} "
                  f"logloss {record.get('logloss', float('nan')):.4f}{' (final)' if record['final'] else ''}",
                  flush=True)
            return None

    return EvalRecorder()


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
                      {"steps": meter.steps_run, "samples_per_sec": meter.own_samples_per_sec, "time": time.time()})


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


def wait_for(what, ready, timeout, poll=1.0):
    """Poll `ready()` until it returns a true value (returned) or `timeout` seconds pass (ClusterError)."""
    deadline = time.time() + timeout
    announced = False
    while True:
        value = ready()
        if value:
            return value
        if time.time() > deadline:
            raise ClusterError(f"gave up after {timeout:.0f}s waiting for {what}")
        if not announced:
            print(f"waiting for {what}", file=sys.stderr, flush=True)
            announced = True
        time.sleep(poll)


def resume_report_hook(slot, prefix):
    """Says, when a trainer's session starts, how many rows its input skips (those it trained on
    before it was restarted); silent on a first start."""
    import tensorflow as tf

    class ResumeReport(tf.compat.v1.train.SessionRunHook):
        def begin(self):
            self.consumed = progress_variable()[slot]

        def after_create_session(self, session, coord):
            rows = int(session.run(self.consumed))
            if rows:
                print(f"{prefix}input resumes after the {rows:,} rows this trainer has trained on "
                      "(restarted: they are skipped, not read again)", flush=True)

    return ResumeReport()

"""Run a Kubeflow TFJob manifest's replicas as local processes, as the training operator and the kubelet
would run its pods: to try a distributed job (and its failures) before a cluster.

    python -m distribute_k8s.local_run MANIFEST [options] [-- extra train args]

For each replica of the manifest (counts overridable with --chief/--workers/--ps/--evaluators, 0
removes a type) it starts the container named `tensorflow`:

- TF_CONFIG as the operator injects it: {"cluster": {"chief": [...], "ps": [...], "worker": [...]},
  "task": {"type": "worker", "index": 1}, "environment": "cloud"}, lowercase types, the evaluator
  outside the cluster, one free 127.0.0.1 port per task (kept across restarts). A job of a single
  replica gets none, as from the operator.
- the container's env on top of this process's environment (less TF_CONFIG, TF_JOB_NAME,
  TF_REPLICAS, TF_TASK, POD_NAME, which a pod would not inherit): `value`s, and `valueFrom.fieldRef`
  for metadata.name (the pod name <job>-<type>-<index>), metadata.namespace, metadata.labels['...']
  (the template's labels and the operator's: training.kubeflow.org/job-name, replica-type,
  replica-index, ...), metadata.annotations, spec.nodeName, status.podIP/hostIP; other valueFrom
  kinds are refused. `$(VAR)` in env values (variables defined earlier), command and args is expanded
  with Kubernetes' rules (`$$` is a literal `$`, an unknown reference stays as written).
  HOSTNAME is the pod name, and PYTHONUNBUFFERED=1 unless set, so lines arrive as they are printed.
- command `python` is this interpreter; workingDir /opt/modelzoo (the image's WORKDIR) is the
  repository (--workdir); each volumeMount's mountPath is a local folder (--mount PATH=DIR, default
  ROOT/<volume name>); command, args and env values that start with one of these paths are rewritten.
- arguments after `--` are appended to every replica's args (argparse flags: the later value wins).

Each replica's output is printed line by line as `[worker-1] ...` and appended to
ROOT/logs/<type>-<index>.log (one file per replica across its restarts; ROOT defaults to
./result/local_run/<job>).

Restarts and outcome follow the operator (kubeflow/training-operator, pkg/controller.v1/tensorflow and
pkg/core): a replica that exits non-zero is restarted in place under restartPolicy OnFailure or Always
(Always is treated as OnFailure: on a cluster it would restart a replica that exited 0 too), under
ExitCode only for retryable codes (train_util.IsRetryableExitCode: >= 128, i.e. killed by a signal
such as 130, 137, 143; 1-127 are permanent); Never fails the job. The job fails when its restarts
reach runPolicy.backoffLimit (PastBackoffLimit: sum of restart counts >= backoffLimit, > 0 for a
limit of 0; no limit when unset; restarts under ExitCode count too, as in the operator's pkg/core).
With backoffLimit N >= 1 a job thus survives N-1 restarts: the Nth failure fails it. The job
succeeds when the chief (or master) exits 0, without one when worker 0 exits 0, or with successPolicy
AllWorkers when every worker has. Once the outcome is decided nothing is restarted; the replicas
still running get --grace seconds to exit by themselves (how parameter servers are shown to stop on
their own), then SIGTERM and, 10 s later, SIGKILL; they are reported as terminated, which does not
change the outcome. --timeout (and runPolicy.activeDeadlineSeconds) fail the job and stop everything
at once.

--kill REPLICA:REGEX injects a failure: the first line of that replica's output that matches gets
its process group (each replica runs in its own, like a pod's container: the launcher and its
script die together) a SIGKILL; the restart policy then applies as to any failure.
--kill REPLICA@WATCHED:REGEX does the same at the first matching line of another replica's output
(e.g. 'ps-0@chief-0:chief 0: step [3-9][0-9][0-9]/' kills the PS, which prints nothing while it serves, at
the chief's first progress line past step 300).

The end: `local_run: job NAME Succeeded|Failed: reason`, a table of the replicas and the same as JSON
in --summary (default ROOT/summary.json). Exit status 0 Succeeded, 1 Failed, 2 for a usage or
manifest error (the message names the file and field), 128+N when stopped by signal N (SIGINT,
SIGTERM: the replicas are terminated first).
"""
import argparse
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from modelzoo.io_utils import atomic_write_json, read_yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_WORKDIR = "/opt/modelzoo"  # the Dockerfile's WORKDIR
IMAGE_ENTRYPOINT = ["python"]  # the Dockerfile's ENTRYPOINT: the command of a container without one
CONTAINER = "tensorflow"  # the operator injects TF_CONFIG into this container only
LABEL_PREFIX = "training.kubeflow.org/"
TYPES = ("chief", "master", "worker", "ps", "evaluator")  # start order
MANIFEST_TYPES = {"chief": "Chief", "master": "Master", "worker": "Worker", "ps": "PS", "evaluator": "Evaluator"}
COUNT_FLAGS = {"chief": "--chief", "worker": "--workers", "ps": "--ps", "evaluator": "--evaluators"}
RESTART_POLICIES = ("Always", "OnFailure", "ExitCode", "Never")
DEFAULT_RESTART_POLICY = "Never"  # the operator's default for TFJob replicas
NOT_INHERITED = ("TF_CONFIG", "TF_JOB_NAME", "TF_REPLICAS", "TF_TASK", "POD_NAME")
KILL_AFTER_SECONDS = 10  # SIGTERM, then SIGKILL this much later (a pod's default grace is 30 s)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PYTHON = re.compile(r"(.*/)?python(3(\.\d+)?)?")


class ManifestError(Exception):
    """A manifest or option local_run cannot run (exit status 2); the message names file and field."""


def is_retryable_exit_code(code):
    """The operator's rule for restartPolicy ExitCode (train_util.IsRetryableExitCode): codes >= 128,
    a container killed by a signal (130 SIGINT, 137 SIGKILL, 143 SIGTERM, ...), are retried; 1-127 are
    the program's own failure and permanent."""
    return code >= 128


def expand(text, variables):
    """Kubernetes' $(VAR) expansion (third_party/forked/golang/expansion): `$$` is `$`, `$(NAME)` the
    variable's value when defined, otherwise left as written; any other `$` stays."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text[i] == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
            elif nxt == "(":
                close = text.find(")", i + 2)
                if close < 0:
                    out.append("$(")
                else:
                    name = text[i + 2:close]
                    out.append(variables[name] if name in variables else f"$({name})")
                    i = close + 1
                    continue
            else:
                out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def map_path(text, mapping):
    """A container path rewritten to its local folder: `/mnt/modelzoo/x` -> `DIR/x`, also after `NAME=`
    and in comma-separated lists. mapping: [(container path, local path)], longest first."""
    def one(part):
        for prefix, local in mapping:
            if part == prefix or part.startswith(prefix.rstrip("/") + "/"):
                return local + part[len(prefix.rstrip("/")):]
        return part
    head, sep, tail = text.partition("=")
    if sep and not head.startswith("/") and tail.startswith("/"):
        return head + "=" + map_path(tail, mapping)
    return ",".join(one(part) for part in text.split(","))


@dataclass
class ReplicaSpec:
    kind: str  # lowercase: chief, worker, ps, evaluator, master
    field: str  # where it is in the manifest, for messages
    replicas: int
    restart_policy: str
    labels: dict
    annotations: dict
    container: dict
    volumes: dict  # volume name -> volume


@dataclass
class Job:
    path: str
    name: str
    namespace: str
    specs: dict  # kind -> ReplicaSpec
    backoff_limit: object = None
    active_deadline: object = None
    success_policy: str = ""
    clean_pod_policy: str = ""


@dataclass
class Replica:
    name: str  # worker-1
    kind: str
    index: int
    pod: str  # <job>-worker-1
    argv: list
    cwd: str
    pod_env: dict  # what the pod defines (manifest env, TF_CONFIG, HOSTNAME, ...)
    env: dict  # the whole process environment
    tf_config: object
    restart_policy: str
    mounts: dict  # container path -> local folder
    log: str
    kills: list = field(default_factory=list)  # the --kill rules that watch this replica's output
    proc: object = None
    running: bool = False
    attempt: int = 0
    pids: list = field(default_factory=list)
    exit_codes: list = field(default_factory=list)
    restarts: int = 0
    killed_attempts: set = field(default_factory=set)
    terminating: bool = False
    end: str = ""


def _fail(job_path, where, problem):
    raise ManifestError(f"{job_path}: {where}: {problem}")


def load_tfjob(path):
    """The TFJob document of a manifest file (one of its YAML documents). Whatever keeps it from being read
    is a ManifestError naming the file: not UTF-8 (the line named), not YAML, or a value PyYAML cannot build
    (a date like 2021-13-01 raises ValueError, deep nesting RecursionError)."""
    docs = read_yaml(path, ManifestError, "manifest", all_documents=True)
    kinds = [d.get("kind") if isinstance(d, dict) else type(d).__name__ for d in docs]
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "TFJob"]
    if not jobs:
        if "MPIJob" in kinds:
            _fail(path, "kind", "MPIJob (Horovod) is not run by local_run, which runs TFJobs; run it locally with "
                                "horovodrun instead, e.g. `horovodrun -np 2 python wide_and_deep/train.py --hvd ...`")
        hint = ("; the plain-Kubernetes Jobs (distribute_k8s/without_operator/) run the same processes as the "
                "model's TFJob manifest, which local_run runs") if "Job" in kinds else ""
        _fail(path, "kind", f"expected a TFJob (apiVersion kubeflow.org/v1), found {kinds or 'no YAML document'}{hint}")
    if len(jobs) > 1:
        _fail(path, "kind", f"{len(jobs)} TFJob documents; local_run runs one")
    job = jobs[0]
    if job.get("apiVersion") != "kubeflow.org/v1":
        _fail(path, "apiVersion", f"expected kubeflow.org/v1, got {job.get('apiVersion')!r}")
    return job


def _mapping(value, path, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(path, where, f"expected a mapping, got {type(value).__name__} {value!r}"[:300])
    return value


def _int(value, path, where, default=None):
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        _fail(path, where, f"expected an integer >= 0, got {value!r}")
    return value


def parse_job(path, doc):
    """The fields local_run uses, checked, from a TFJob document."""
    meta = _mapping(doc.get("metadata"), path, "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        _fail(path, "metadata.name", f"expected a lowercase DNS name like dlrm-fp32, got {name!r}")
    spec = _mapping(doc.get("spec"), path, "spec")
    run_policy = _mapping(spec.get("runPolicy"), path, "spec.runPolicy")
    success_policy = spec.get("successPolicy") or ""
    if success_policy not in ("", "AllWorkers"):
        _fail(path, "spec.successPolicy", f"expected \"\" or AllWorkers, got {success_policy!r}")
    replica_specs = _mapping(spec.get("tfReplicaSpecs"), path, "spec.tfReplicaSpecs")
    if not replica_specs:
        _fail(path, "spec.tfReplicaSpecs", "no replicas (expected Chief, Worker, PS, Evaluator)")
    job = Job(path, name, meta.get("namespace") or "default", {},
              backoff_limit=_int(run_policy.get("backoffLimit"), path, "spec.runPolicy.backoffLimit"),
              active_deadline=_int(run_policy.get("activeDeadlineSeconds"), path,
                                   "spec.runPolicy.activeDeadlineSeconds"),
              success_policy=success_policy, clean_pod_policy=run_policy.get("cleanPodPolicy") or "")
    for key, rspec in replica_specs.items():
        where = f"spec.tfReplicaSpecs.{key}"
        kind = str(key).lower()
        if kind not in MANIFEST_TYPES:
            _fail(path, where, f"unknown replica type {key!r}; expected {', '.join(MANIFEST_TYPES.values())}")
        if kind in job.specs:
            _fail(path, where, f"replica type {MANIFEST_TYPES[kind]} given twice")
        rspec = _mapping(rspec, path, where)
        count = _int(rspec.get("replicas"), path, f"{where}.replicas", default=1)
        policy = rspec.get("restartPolicy") or DEFAULT_RESTART_POLICY
        if policy not in RESTART_POLICIES:
            _fail(path, f"{where}.restartPolicy", f"expected one of {', '.join(RESTART_POLICIES)}, got {policy!r}")
        template = _mapping(rspec.get("template"), path, f"{where}.template")
        tmeta = _mapping(template.get("metadata"), path, f"{where}.template.metadata")
        pod = _mapping(template.get("spec"), path, f"{where}.template.spec")
        containers = pod.get("containers")
        if not isinstance(containers, list) or not containers:
            _fail(path, f"{where}.template.spec.containers", "expected a list of containers")
        found = [c for c in containers if isinstance(c, dict) and c.get("name") == CONTAINER]
        if not found:
            _fail(path, f"{where}.template.spec.containers", f"no container named {CONTAINER!r} (the operator "
                  "gives TF_CONFIG to that one only)")
        volumes = {}
        for i, volume in enumerate(pod.get("volumes") or []):
            if not isinstance(volume, dict) or not isinstance(volume.get("name"), str):
                _fail(path, f"{where}.template.spec.volumes[{i}]", "expected a volume with a name")
            volumes[volume["name"]] = volume
        job.specs[kind] = ReplicaSpec(
            kind, where, count, policy,
            {str(k): str(v) for k, v in
             _mapping(tmeta.get("labels"), path, f"{where}.template.metadata.labels").items()},
            {str(k): str(v) for k, v in
             _mapping(tmeta.get("annotations"), path, f"{where}.template.metadata.annotations").items()},
            found[0], volumes)
    return job


def apply_counts(job, counts):
    """--chief/--workers/--ps/--evaluators: new replica counts (0 removes the type); then the job must
    still have something that decides success: a chief (at most one) or a worker."""
    for kind, count in counts.items():
        if count is None:
            continue
        if count < 0:
            raise ManifestError(f"{COUNT_FLAGS[kind]} {count}: expected a count >= 0")
        if kind in job.specs:
            job.specs[kind].replicas = count
        elif count > 0:
            raise ManifestError(f"{COUNT_FLAGS[kind]} {count}: {job.path} has no spec.tfReplicaSpecs."
                                f"{MANIFEST_TYPES[kind]} to start them from")
    job.specs = {k: s for k, s in job.specs.items() if s.replicas > 0}
    for kind in ("chief", "master"):
        if kind in job.specs and job.specs[kind].replicas > 1:
            _fail(job.path, f"{job.specs[kind].field}.replicas", f"a TFJob has at most one {MANIFEST_TYPES[kind]}, "
                  f"got {job.specs[kind].replicas}")
    if not any(k in job.specs for k in ("chief", "master", "worker")):
        _fail(job.path, "spec.tfReplicaSpecs", "no Chief, Master or Worker replica left: nothing would decide the "
                                               "job's success")


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1 (all held open until every one is chosen)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def field_value(job, spec, pod_name, labels, field_path, where):
    """A downward-API fieldRef as the kubelet resolves it for this pod."""
    match = re.fullmatch(r"metadata\.(labels|annotations)\[['\"](.*)['\"]\]", field_path or "")
    if match:
        return (labels if match.group(1) == "labels" else spec.annotations).get(match.group(2), "")
    values = {"metadata.name": pod_name, "metadata.namespace": job.namespace, "spec.nodeName": socket.gethostname(),
              "spec.serviceAccountName": "default", "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
    if field_path not in values:
        _fail(job.path, where, f"fieldRef.fieldPath {field_path!r} is not available locally; expected one of "
              f"{', '.join(values)}, metadata.labels['...'], metadata.annotations['...']")
    return values[field_path]


def _strings(value, job, where):
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(job.path, where, f"expected a list of strings (quote numbers: \"2021\"), got {value!r}"[:300])
    return value


def build_plan(job, workdir, root, mounts, extra_args, parent_env, env_overrides=None):
    """Every replica's process: argv, cwd, environment, TF_CONFIG, paths and log. Nothing is started."""
    names = [(kind, i) for kind in TYPES if kind in job.specs for i in range(job.specs[kind].replicas)]
    in_cluster = [(k, i) for k, i in names if k != "evaluator"]
    ports = dict(zip(in_cluster, free_ports(len(in_cluster))))
    cluster = {}
    for kind, i in sorted(in_cluster):
        cluster.setdefault(kind, []).append(f"127.0.0.1:{ports[(kind, i)]}")
    distributed = len(names) != 1  # the operator gives no TF_CONFIG to a one-replica job
    master_kind = next((k for k in ("chief", "master") if k in job.specs), None)
    base_env = {k: v for k, v in parent_env.items() if k not in NOT_INHERITED}
    replicas = []
    for kind, index in names:
        spec, c = job.specs[kind], job.specs[kind].container
        where = f"{spec.field}.template.spec.containers[{CONTAINER}]"
        pod = f"{job.name}-{kind}-{index}"
        labels = dict(spec.labels)
        labels.update({LABEL_PREFIX + "job-name": job.name, LABEL_PREFIX + "replica-type": kind,
                       LABEL_PREFIX + "replica-index": str(index), LABEL_PREFIX + "operator-name": "tfjob-controller"})
        if kind == master_kind or (master_kind is None and kind == "worker" and index == 0):
            labels[LABEL_PREFIX + "job-role"] = "master"
        if c.get("envFrom"):
            _fail(job.path, f"{where}.envFrom", "ConfigMaps and Secrets are not available locally; use env values")
        # Volume mounts: each mountPath becomes a local folder.
        replica_mounts = {}
        for i, mount in enumerate(c.get("volumeMounts") or []):
            mwhere = f"{where}.volumeMounts[{i}]"
            if not isinstance(mount, dict) or not str(mount.get("mountPath", "")).startswith("/"):
                _fail(job.path, mwhere, "expected name and an absolute mountPath")
            if mount.get("name") not in spec.volumes:
                _fail(job.path, f"{mwhere}.name", f"{mount.get('name')!r} is not among the pod's volumes "
                                                  f"({', '.join(spec.volumes) or 'none'})")
            target = mount["mountPath"].rstrip("/") or "/"
            local = mounts.get(target) or os.path.join(root, mount["name"], mount.get("subPath") or "")
            replica_mounts[target] = os.path.abspath(local)
        mapping = sorted([(IMAGE_WORKDIR, workdir)] + list(replica_mounts.items()), key=lambda m: -len(m[0]))
        # env: values expanded over the earlier ones, fieldRefs resolved, then paths mapped.
        defined = {}
        for i, entry in enumerate(c.get("env") or []):
            ewhere = f"{where}.env[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                _fail(job.path, ewhere, "expected {name: ..., value: ...} or {name: ..., valueFrom: {fieldRef: ...}}")
            if "valueFrom" in entry:
                source = _mapping(entry["valueFrom"], job.path, f"{ewhere}.valueFrom")
                if list(source) != ["fieldRef"]:
                    _fail(job.path, f"{ewhere}.valueFrom", f"{entry['name']}: {', '.join(map(str, source))} is not "
                          "available locally; only fieldRef is")
                ref = _mapping(source["fieldRef"], job.path, f"{ewhere}.valueFrom.fieldRef")
                value = field_value(job, spec, pod, labels, ref.get("fieldPath"), f"{ewhere}.valueFrom.fieldRef")
            else:
                value = entry.get("value", "")
                if not isinstance(value, str):
                    _fail(job.path, f"{ewhere}.value", f"{entry['name']}: expected a string (quote numbers), "
                                                       f"got {value!r}")
                value = expand(value, defined)
            defined[entry["name"]] = value
        defined.update(env_overrides or {})  # --env: this machine's values win over the manifest's
        tf_config = ({"cluster": cluster, "task": {"type": kind, "index": index}, "environment": "cloud"}
                     if distributed else None)
        pod_env = {k: map_path(v, mapping) for k, v in defined.items()}
        variables = dict(defined)
        if tf_config is not None:  # compact, as the operator's Go json.Marshal writes it (cluster keys sorted)
            pod_env["TF_CONFIG"] = variables["TF_CONFIG"] = json.dumps(tf_config, separators=(",", ":"))
        pod_env.setdefault("HOSTNAME", pod)  # a pod's hostname is its name
        if "PYTHONUNBUFFERED" not in pod_env and "PYTHONUNBUFFERED" not in base_env:
            pod_env["PYTHONUNBUFFERED"] = "1"
        command = _strings(c.get("command"), job, f"{where}.command")
        args = _strings(c.get("args"), job, f"{where}.args")
        if not command and not args:
            _fail(job.path, f"{where}.command", "no command and no args: nothing to run")
        argv = [map_path(expand(a, variables), mapping) for a in (command or IMAGE_ENTRYPOINT) + args]
        if PYTHON.fullmatch(argv[0]):
            argv[0] = sys.executable
        argv += list(extra_args)
        working_dir = c.get("workingDir") or IMAGE_WORKDIR
        cwd = map_path(working_dir, mapping)
        if cwd == working_dir and working_dir != workdir:
            _fail(job.path, f"{where}.workingDir", f"{working_dir} is neither the image's {IMAGE_WORKDIR} nor under "
                                                   "a volumeMount: no local folder for it")
        env = dict(base_env)
        env.update(pod_env)
        replicas.append(Replica(f"{kind}-{index}", kind, index, pod, argv, cwd, pod_env, env, tf_config,
                                spec.restart_policy, replica_mounts, os.path.join(root, "logs", f"{kind}-{index}.log")))
    return replicas


def parse_mounts(values):
    mounts = {}
    for value in values:
        target, sep, local = value.partition("=")
        if not sep or not target.startswith("/") or not local:
            raise ManifestError(f"--mount {value!r}: expected CONTAINER_PATH=LOCAL_DIR, e.g. /mnt/modelzoo=./data")
        mounts[target.rstrip("/") or "/"] = os.path.abspath(local)
    return mounts


@dataclass
class Kill:
    """A --kill rule: SIGKILL `target` at the first line of `watched`'s output matching `regex`."""
    target: str
    watched: str
    regex: object
    done: bool = False


def parse_kills(values, replicas):
    """--kill REPLICA[@WATCHED]:REGEX -> {watched replica name: [Kill, ...]} (WATCHED defaults to REPLICA)."""
    names = [r.name for r in replicas]
    kills = {}
    for value in values:
        names_part, sep, pattern = value.partition(":")
        if not sep or not pattern:
            raise ManifestError(f"--kill {value!r}: expected REPLICA:REGEX or REPLICA@WATCHED:REGEX, e.g. "
                                "'worker-1:step \\d+'")
        name, _, watched = names_part.partition("@")
        watched = watched or name
        for n in (name, watched):
            if n not in names:
                raise ManifestError(f"--kill {value!r}: no replica {n!r} in this job ({', '.join(names)})")
        try:
            kills.setdefault(watched, []).append(Kill(name, watched, re.compile(pattern)))
        except re.error as err:
            raise ManifestError(f"--kill {value!r}: bad regular expression ({err})") from None
    return kills


class Runner:
    """Starts the replicas, restarts them by their policy, decides the job's outcome, stops the rest."""

    def __init__(self, job, replicas, grace, timeout, out=sys.stdout):
        self.job, self.replicas, self.grace, self.timeout, self.out = job, replicas, grace, timeout, out
        self.events = queue.Queue()
        self.lock = threading.Lock()
        self.outcome = self.reason = None
        self.failures = 0  # failures that called for a restart (the restart counts the operator sums)
        self.interrupted = None
        self.started = time.time()

    def write(self, text):
        """One line to the console; a closed console (`| head`) must not stop the replicas' logs."""
        with self.lock:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                pass

    def say(self, text):
        self.write(f"local_run: {text}")

    def start(self, rep):
        rep.attempt += 1
        attempt = rep.attempt
        log = open(rep.log, "a", encoding="utf-8")
        log.write(f"--- local_run: {rep.name} attempt {attempt} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{' '.join(rep.argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(rep.argv, cwd=rep.cwd, env=rep.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            self.say(f"{rep.name}: cannot start {rep.argv[0]}: {err.strerror}")
            log.write(f"--- local_run: cannot start: {err}\n")
            log.close()
            rep.running = True
            self.events.put((rep, attempt, 127))
            return
        rep.proc, rep.running = proc, True
        rep.pids.append(proc.pid)
        reader = threading.Thread(target=self._read, args=(rep, proc, log, attempt), daemon=True)
        reader.start()
        threading.Thread(target=self._wait, args=(rep, proc, log, reader, attempt), daemon=True).start()

    def _read(self, rep, proc, log, attempt):
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.write(f"[{rep.name}] {line}")
            log.write(line + "\n")
            log.flush()
            for rule in rep.kills:
                if not rule.done and rule.regex.search(line):
                    rule.done = True
                    self.kill(rule, line)
        proc.stdout.close()

    def kill(self, rule, line):
        """--kill: SIGKILL the target's process group (its current attempt)."""
        target = next(r for r in self.replicas if r.name == rule.target)
        after = f"after line: {line}" if rule.watched == rule.target else f"after {rule.watched}'s line: {line}"
        proc = target.proc
        if not target.running or proc is None:
            self.say(f"--kill: {target.name} is not running; not killed ({after})")
            return
        target.killed_attempts.add(target.attempt)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.say(f"killed {target.name} (pid {proc.pid}) with SIGKILL {after}")

    def _wait(self, rep, proc, log, reader, attempt):
        code = proc.wait()
        try:  # what is left in the replica's process group goes with it, as with a container's end
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        reader.join(timeout=10)
        code = code if code >= 0 else 128 - code
        log.write(f"--- local_run: {rep.name} attempt {attempt} exited with code {code}\n")
        log.close()
        self.events.put((rep, attempt, code))

    def decide(self, outcome, reason):
        if self.outcome is None:
            self.outcome, self.reason = outcome, reason
            self.say(f"outcome decided: {outcome}: {reason}")

    def succeeded(self):
        """The operator's success rule: the chief/master exited 0; else worker 0 (or, with successPolicy
        AllWorkers, every worker)."""
        def done(rep):
            return not rep.running and rep.exit_codes and rep.exit_codes[-1] == 0
        chiefs = [r for r in self.replicas if r.kind in ("chief", "master")]
        if chiefs:
            return all(map(done, chiefs)) and f"{', '.join(r.name for r in chiefs)} exited 0"
        workers = [r for r in self.replicas if r.kind == "worker"]
        if self.job.success_policy == "AllWorkers":
            return all(map(done, workers)) and f"all {len(workers)} workers exited 0 (successPolicy AllWorkers)"
        return done(workers[0]) and "worker-0 exited 0 (no chief)"

    def on_exit(self, rep, attempt, code):
        rep.exit_codes.append(code)
        rep.running = False
        killed = attempt in rep.killed_attempts
        if rep.terminating:
            rep.end = "terminated by local_run"
            return
        rep.end = "killed by --kill" if killed else "exited by itself"
        what = f"{rep.name} exited with code {code}" + (" (killed by --kill)" if killed else "")
        if self.outcome is not None:
            self.say(what)
            return  # the outcome is decided: nothing is restarted
        if code == 0:
            self.say(what)
            reason = self.succeeded()
            if reason:
                self.decide("Succeeded", reason)
            return
        policy = rep.restart_policy
        if policy == "Never":
            return self.decide("Failed", f"{what}; restartPolicy Never")
        if policy == "ExitCode" and not is_retryable_exit_code(code):
            return self.decide("Failed", f"{what}; restartPolicy ExitCode retries only codes >= 128 (killed by a "
                                         f"signal), {code} is permanent")
        self.failures += 1
        limit = self.job.backoff_limit
        if limit is not None and (self.failures >= limit if limit > 0 else True):
            return self.decide("Failed", f"{what}; restarting it would bring the job's restarts to {self.failures}, "
                                         f"reaching runPolicy.backoffLimit {limit}")
        rep.restarts += 1
        self.say(f"{what}; restartPolicy {policy}: restarting it in place (its restart {rep.restarts}, the job's "
                 f"{self.failures}{'' if limit is None else f' of backoffLimit {limit}'})")
        self.start(rep)

    def _drain(self, until, stop=lambda: False):
        """Handle exit events until no replica runs, `until` (monotonic) passes or stop() is true."""
        while any(r.running for r in self.replicas) and time.monotonic() < until and not stop():
            try:
                self.on_exit(*self.events.get(timeout=0.1))
            except queue.Empty:
                pass

    def _terminate(self, why):
        """SIGTERM to each running replica's main process (as the kubelet does; launch.py passes it on),
        SIGKILL to its process group KILL_AFTER_SECONDS later."""
        running = [r for r in self.replicas if r.running and r.proc is not None]
        if not running:
            return
        self.say(f"terminating {', '.join(r.name for r in running)} ({why}): SIGTERM, SIGKILL after "
                 f"{KILL_AFTER_SECONDS} s")
        for rep in running:
            rep.terminating = True
            try:
                os.kill(rep.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self._drain(time.monotonic() + KILL_AFTER_SECONDS)
        for rep in self.replicas:
            if rep.running and rep.proc is not None:
                try:
                    os.killpg(rep.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._drain(time.monotonic() + 30)

    def run(self):
        deadlines = [(self.timeout, f"timed out after {self.timeout:g} s (--timeout)")]
        if self.job.active_deadline is not None:
            deadlines.append((self.job.active_deadline, f"runPolicy.activeDeadlineSeconds "
                                                        f"{self.job.active_deadline} exceeded"))
        limit, limit_reason = min(deadlines, key=lambda d: d[0])
        t0 = time.monotonic()
        for rep in self.replicas:
            self.start(rep)
        abrupt = None  # a timeout or a signal: everything is stopped at once
        while self.outcome is None:
            if self.interrupted:
                abrupt = f"interrupted by {signal.Signals(self.interrupted).name}"
            elif time.monotonic() - t0 > limit:
                abrupt = limit_reason
            elif not any(r.running for r in self.replicas):
                self.decide("Failed", "every replica has exited, and the success condition was not met")
                break
            if abrupt:
                self.decide("Failed", abrupt)
                break
            try:
                self.on_exit(*self.events.get(timeout=0.1))
            except queue.Empty:
                pass
        if not abrupt:
            # The outcome is decided: the others may still exit by themselves (a PS that stops on its own).
            self._drain(time.monotonic() + self.grace, stop=lambda: self.interrupted)
            abrupt = self.interrupted and f"interrupted by {signal.Signals(self.interrupted).name}"
        self._terminate(abrupt or f"did not exit by itself within --grace {self.grace:g} s")
        return self.outcome

    def summary(self):
        replicas = {}
        for rep in self.replicas:
            replicas[rep.name] = {
                "type": rep.kind, "index": rep.index, "pod": rep.pod, "pid": rep.pids[-1] if rep.pids else None,
                "pids": rep.pids, "exit_codes": rep.exit_codes, "restarts": rep.restarts,
                "exited_by_itself": rep.end == "exited by itself", "end": rep.end, "log": rep.log}
        return {"job": self.job.name, "manifest": os.path.abspath(self.job.path), "outcome": self.outcome,
                "reason": self.reason, "wall_seconds": round(time.time() - self.started, 3),
                "restarts": sum(r.restarts for r in self.replicas), "backoff_limit": self.job.backoff_limit,
                "replicas": replicas, "tf_config": {r.name: r.tf_config for r in self.replicas}}

    def print_table(self, summary):
        rows = [("replica", "exit codes", "restarts", "end")]
        for name, r in summary["replicas"].items():
            end = r["end"] + (" (did not exit by itself)" if r["end"] == "terminated by local_run" else "")
            rows.append((name, ",".join(map(str, r["exit_codes"])) or "-", str(r["restarts"]), end))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.write("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def parser():
    p = argparse.ArgumentParser(
        prog="python -m distribute_k8s.local_run",
        usage="python -m distribute_k8s.local_run MANIFEST [options] [-- extra train args]",
        description="Run a Kubeflow TFJob manifest's replicas as local processes, as the training operator and the "
                    "kubelet would: TF_CONFIG per replica (127.0.0.1 ports), the container's env and args, "
                    "restarts by restartPolicy and runPolicy.backoffLimit, success by the chief (or worker 0).",
        epilog="Arguments after `--` are appended to every replica's args, e.g. `-- --steps 60 --generate_rows 20000`. "
               "Exit status: 0 Succeeded, 1 Failed, 2 usage or manifest error, 128+N stopped by signal N.")
    p.add_argument("manifest", help="the TFJob manifest (YAML)")
    for flag, kind in (("--chief", "Chief"), ("--workers", "Worker"), ("--ps", "PS"), ("--evaluators", "Evaluator")):
        p.add_argument(flag, type=int, metavar="N", help=f"{kind} replicas (default: the manifest's; 0 removes them)")
    p.add_argument("--workdir", default=REPO, help=f"local folder for the image's {IMAGE_WORKDIR} (default: the "
                                                   "repository, %(default)s)")
    p.add_argument("--mount", action="append", default=[], metavar="PATH=DIR",
                   help="local folder for a volumeMount's mountPath, e.g. /mnt/modelzoo=./data (repeatable; default "
                        "ROOT/<volume name>)")
    p.add_argument("--root", help="folder for unmapped volumes, logs/ and summary.json (default "
                                  "./result/local_run/<job name>)")
    p.add_argument("--grace", type=float, default=60, metavar="SECONDS",
                   help="after the outcome, how long the replicas still running may take to exit by themselves "
                        "before SIGTERM (default %(default)g)")
    p.add_argument("--timeout", type=float, default=1800, metavar="SECONDS",
                   help="fail the job and stop everything past this (default %(default)g)")
    p.add_argument("--kill", action="append", default=[], metavar="REPLICA[@WATCHED]:REGEX",
                   help="SIGKILL the replica's process group the first time a line of its output (or of WATCHED's) "
                        "matches, e.g. 'worker-1:step \\d+' or 'ps-0@chief-0:step [3-9]\\d\\d' (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a container environment variable in every replica, over the manifest's value, "
                        "e.g. MEM_USAGE_STRATEGY=close on a machine without libjemalloc2 (repeatable)")
    p.add_argument("--summary", metavar="FILE", help="the JSON summary (default ROOT/summary.json)")
    p.add_argument("--dry_run", action="store_true",
                   help="print the plan (per replica: argv, cwd, env, TF_CONFIG, paths) as JSON; start nothing")
    return p


def plan_from_args(opts, extra, parent_env):
    """(job, replicas, root) from parsed options: the manifest read and checked, the processes planned."""
    job = parse_job(opts.manifest, load_tfjob(opts.manifest))
    apply_counts(job, {"chief": opts.chief, "worker": opts.workers, "ps": opts.ps, "evaluator": opts.evaluators})
    root = os.path.abspath(opts.root or os.path.join("result", "local_run", job.name))
    workdir = os.path.abspath(opts.workdir)
    if not os.path.isdir(workdir):
        raise ManifestError(f"--workdir {opts.workdir}: not a folder")
    mounts = parse_mounts(opts.mount)
    overrides = {}
    for item in opts.env:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ManifestError(f"--env {item}: expected NAME=VALUE")
        overrides[name] = value
    replicas = build_plan(job, workdir, root, mounts, extra, parent_env, overrides)
    used = {path for rep in replicas for path in rep.mounts}
    for target in mounts:
        if target not in used:
            raise ManifestError(f"--mount {target}=...: no volumeMount of {opts.manifest} has mountPath {target} "
                                f"(mounted: {', '.join(sorted(used)) or 'none'})")
    return job, replicas, root


def plan_json(job, replicas, root, summary_path, workdir):
    return {"job": job.name, "manifest": os.path.abspath(job.path), "root": root, "summary": summary_path,
            "paths": dict({IMAGE_WORKDIR: workdir}, **{k: v for r in replicas for k, v in r.mounts.items()}),
            "replicas": {r.name: {"pod": r.pod, "argv": r.argv, "cwd": r.cwd, "env": r.pod_env,
                                  "tf_config": r.tf_config, "restart_policy": r.restart_policy, "log": r.log}
                         for r in replicas}}


def make_folders(root, summary_path, replicas):
    """The folders and fresh logs of a run, before any replica starts; a path that cannot be written
    (read-only, under a file, no permission) is a ManifestError naming the option it comes from."""
    def make(path, option, folder=True):
        try:
            if folder:
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "w").close()  # a fresh log per run, appended across restarts
        except OSError as err:
            why = "a file is in the way (not a folder)" if isinstance(err, (FileExistsError, NotADirectoryError)) \
                else err.strerror
            raise ManifestError(f"{option}: cannot write {path}: {why}") from None

    make(os.path.join(root, "logs"), f"--root {root}")
    make(os.path.dirname(summary_path), f"--summary {summary_path}")
    probe = os.path.join(os.path.dirname(summary_path), ".local_run-probe")
    make(probe, f"--summary {summary_path}", folder=False)
    os.unlink(probe)
    for rep in replicas:
        make(rep.cwd, f"the working folder of {rep.name}")
        for target, local in rep.mounts.items():
            make(local, f"the volume {target} ({local})")
        make(rep.log, f"--root {root}", folder=False)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    opts, extra = parser().parse_args(argv[:cut]), argv[cut + 1:]
    try:
        job, replicas, root = plan_from_args(opts, extra, os.environ)
        kills = parse_kills(opts.kill, replicas)
    except ManifestError as err:
        print(f"local_run: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    summary_path = os.path.abspath(opts.summary or os.path.join(root, "summary.json"))
    plan = plan_json(job, replicas, root, summary_path, os.path.abspath(opts.workdir))
    if opts.dry_run:
        print(json.dumps(plan, indent=2))
        return EXIT_OK
    counts = " ".join(f"{k}:{job.specs[k].replicas}" for k in TYPES if k in job.specs)
    policies = {s.restart_policy for s in job.specs.values()}
    policy_text = policies.pop() if len(policies) == 1 else \
        ", ".join(f"{k} {s.restart_policy}" for k, s in job.specs.items())
    print(f"local_run: TFJob {job.name} from {job.path}: {counts}; restartPolicy {policy_text}; backoffLimit "
          f"{job.backoff_limit if job.backoff_limit is not None else 'none'}; success: "
          f"{'chief' if any(k in job.specs for k in ('chief', 'master')) else job.success_policy or 'worker-0'}",
          flush=True)
    print("local_run: paths: " + ", ".join(f"{k} -> {v}" for k, v in plan["paths"].items()), flush=True)
    print(f"local_run: logs in {os.path.join(root, 'logs')}, summary in {summary_path}", flush=True)
    try:
        make_folders(root, summary_path, replicas)
    except ManifestError as err:
        print(f"local_run: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    for rep in replicas:
        rep.kills = kills.get(rep.name, [])
    runner = Runner(job, replicas, opts.grace, opts.timeout)

    def interrupt(signum, _frame):
        runner.interrupted = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    outcome = runner.run()
    summary = runner.summary()
    atomic_write_json(summary_path, summary)
    runner.say(f"job {job.name} {outcome}: {runner.reason}")
    runner.print_table(summary)
    runner.say(f"summary: {summary_path}")
    if runner.interrupted:
        return 128 + runner.interrupted
    return EXIT_OK if outcome == "Succeeded" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

"""Writes every model's FP32/BF16 Kubernetes manifests from one entry per model (MODELS below).

Why: the BF16 manifest of a job must be its FP32 one plus --bf16 and other names, and every model's
parameter-server TFJob is the same job with another script; written by hand, the pairs drift. Here each
job kind is one template and each model one `Model` entry, so a new model is one entry and a change to a
job is made once.

    python distribute_k8s/generate_manifests.py           # (re)write the committed manifests
    python distribute_k8s/generate_manifests.py --check   # exit 1 with a diff when one differs
    python distribute_k8s/generate_manifests.py --list    # the files it owns
    python distribute_k8s/generate_manifests.py --image REGISTRY/modelzoo:0.1.0 \
        --horovod_image REGISTRY/modelzoo-horovod:0.1.0    # your images (the committed files: a placeholder)

tests/test_k8s_manifests.py checks that the committed files are this script's output.
"""
import argparse
import dataclasses
import difflib
import json
import math
import pathlib
import re
import sys
import textwrap

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
GENERATOR = "distribute_k8s/generate_manifests.py"
PRECISIONS = ("FP32", "BF16")
# The committed manifests' images: a registry under .invalid (RFC 2606: it never resolves), so that a node
# pulls nothing by accident (modelzoo/modelzoo on Docker Hub is not this project's). Set yours with --image.
IMAGE = "registry.invalid/modelzoo/modelzoo:0.1.0"
HOROVOD_IMAGE = "registry.invalid/modelzoo/modelzoo-horovod:0.1.0"
# terminationGracePeriodSeconds of the PS TFJobs: the chief saves a final checkpoint on SIGTERM (the PS stay
# up for it). GRACE_FACTOR times the save of the default tables measured on a local disk
# (benchmarks/checkpoint_save_time.py), for a network volume's slower writes, and never under a minute.
GRACE_FACTOR = 4
GRACE_MIN_SECS = 60

# --- the models ---------------------------------------------------------------------------------------

# The shared volume's mount (distribute_k8s/pvc.yaml): the data folders and the outputs.
MOUNT = "/mnt/modelzoo"

# train.py's flags in every parameter-server TFJob (after launch.py's "--" and the model's --data_location).
PS_ARGS = (
    "--output_dir", f"{MOUNT}/result/$(JOB_NAME)",
    "--protocol", "grpc", "--input_layer_partitioner", "8", "--dense_layer_partitioner", "16",
    "--save_steps", "1000", "--seed", "2021", "--inter", "2", "--intra", "8")

# What --bf16 does, in the BF16 parameter-server TFJobs' header.
MLP_BF16_NOTE = """\
--bf16: the MLPs compute in bfloat16 with float32 master weights (the embeddings, the logit
and the loss stay float32), meant for CPUs with AVX512-BF16 or AMX (slower without them:
dlrm/README.md)."""


@dataclasses.dataclass(frozen=True)
class Model:
    """One model folder's manifests. `jobs`: "ps" (a TFJob with Chief, Workers, PS and an Evaluator) and/or
    "horovod" (an MPIJob), each written in FP32 and, if the model's SPEC has an MLP, BF16. `memory_note`: the
    Chief's comment on the memory the tables need (the PS memory is `memory`). `requires`: a file the model
    needs; the entry is skipped while it does not exist (a model being added on another branch)."""
    folder: str
    title: str
    memory: str
    memory_note: str
    jobs: tuple = ("ps",)
    ps_args: tuple = PS_ARGS
    bf16_note: str = MLP_BF16_NOTE
    horovod_bf16_note: str = ""
    horovod_args: tuple = ()
    requires: str = ""

    @property
    def app(self):
        """The Kubernetes name: the folder with dashes (a DNS-1035 label)."""
        return self.folder.replace("_", "-")

    def present(self):
        return not self.requires or (REPO / self.requires).is_file()

    def precisions(self):
        """FP32 and BF16, or FP32 alone for a model whose train.py SPEC has no MLP: --bf16 computes only the
        MLP layers in bfloat16, so that model refuses it and a BF16 job could not start."""
        return PRECISIONS if model_spec(self.folder).has_mlp else ("FP32",)

    def no_bf16_reason(self):
        """Why the model has no BF16 manifest ("" when it has one)."""
        return "" if "BF16" in self.precisions() else (
            f"{self.folder}/train.py has no MLP (its ModelSpec's has_mlp is False), the only part --bf16 "
            "computes in bfloat16, so it refuses --bf16")

    def data_folder(self):
        """The volume's folder of the model's data: its default --data_location's last part under MOUNT/data
        (./data/taobao -> /mnt/modelzoo/data/taobao)."""
        return f"{MOUNT}/data/{pathlib.PurePosixPath(default_flags(self.folder).data_location).name}"

    def dataset(self):
        """The DATASETS entry of the model's schema."""
        schema = model_spec(self.folder).schema
        if schema not in DATASETS:
            raise KeyError(f"{GENERATOR}: {self.folder}'s schema {schema!r} has no entry in DATASETS (how its data "
                           "gets onto the volume)")
        return DATASETS[schema]

    def save_time(self):
        """The measured save of the model's default checkpoint: (median seconds, bytes, date)."""
        path = REPO / "benchmarks" / "results" / f"checkpoint_save_time_{self.folder}.json"
        measured = json.loads(path.read_text())
        return measured["median_seconds"], measured["bytes"], measured["date"]

    def grace_seconds(self):
        """terminationGracePeriodSeconds: GRACE_FACTOR x the measured save, rounded up to 30 s, >= 1 minute."""
        return max(GRACE_MIN_SECS, 30 * math.ceil(GRACE_FACTOR * self.save_time()[0] / 30))


def model_spec(folder):
    """MODEL/train.py's ModelSpec, imported without TensorFlow (modelzoo/models.py)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from modelzoo import models
    return models.load_spec(folder)


def default_flags(folder):
    """MODEL/train.py's flags with their defaults (modelzoo/flags.py, without TensorFlow)."""
    from modelzoo import flags
    spec = model_spec(folder)
    return flags.parse(spec.name, [], spec.defaults, spec.speed_defaults, spec.add_flags, has_mlp=spec.has_mlp,
                       shape_flags=spec.shape_flags)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """How a schema's data gets onto the volume. `title`: its name in the headers. `copy`: the file users
    bring (copied into the model's data folder with kubectl cp), "" for a dataset that exists only as the
    runner's generated rows (the chief writes them when the folder is empty). `generated`: what those rows are."""
    title: str
    generated: str
    copy: str = ""


DATASETS = {
    "criteo": Dataset(title="Criteo", copy="Criteo Kaggle's train.txt",
                      generated="a synthetic Criteo-format sample"),
    "taobao": Dataset(title="a Taobao-shaped click log",
                      generated="Taobao-shaped click-log rows (modelzoo/synthetic_sequences.py: users' item and "
                                "category histories, labels from a hidden model)"),
    "aliccp": Dataset(title="an Ali-CCP-shaped log",
                      generated="Ali-CCP-shaped impressions (modelzoo/datasets/aliccp.py: a click, then a "
                                "conversion only after a click, labels from a hidden model)"),
}


def small_tables_note(title, tables, folder):
    """The Chief's memory note of a model whose default checkpoint (tables and optimizer slots) is small."""
    path = REPO / "benchmarks" / "results" / f"checkpoint_save_time_{folder}.json"
    size = json.loads(path.read_text())["bytes"] / 1e6
    return textwrap.fill(
        f"Memory: {title}'s tables ({tables}) and Adam's two slots are {size:.0f} MB in all (the checkpoint "
        "of benchmarks/checkpoint_save_time.py), split over the PS tasks; 4Gi is DLRM's measured 1.4 GB peak "
        f"(0.35 GB of tables) with room, not a measurement of {title}'s. --ev grows the tables with the ids "
        "admitted: raise the PS memory (or PS.replicas) for it.", 90)


MODELS = (
    Model(
        folder="dlrm", title="DLRM", memory="8Gi",
        memory_note="""\
Memory: DLRM's tables (shipped schema: 1.79M rows x 16) and lazy Adam's two slots are
about 0.35 GB in all, split over the PS tasks; one process that holds them trains with
a peak RSS of 1.4 GB (dlrm/README.md). --ev grows the tables with the ids admitted, a
full-cardinality schema (33.8M rows) to 6.2 GB with the slots: raise the PS memory (or
PS.replicas) for those."""),
    Model(
        folder="wide_and_deep", title="Wide & Deep", memory="16Gi", jobs=("ps", "horovod"),
        memory_note="""\
Memory: Wide & Deep's deep tables (shipped schema: 1.79M rows, 64 or 128
wide) are 0.9 GB, lazy Adam's two slots twice that, the wide weights and FTRL's
slots little: about 2.7 GB in all, split over the PS tasks; one process that holds
all of it peaks at 6.7 GB (wide_and_deep/README.md). --ev grows the tables with
the ids admitted: raise the PS memory (or PS.replicas) for it.""",
        horovod_bf16_note="""\
--bf16: the DNN computes in bfloat16 with float32 master
weights, meant for CPUs with AVX512-BF16 or AMX (slower without them: dlrm/README.md).""",
        horovod_args=("--data_location", "/mnt/modelzoo/data/criteo", "--output_dir",
                      "/mnt/modelzoo/result/$(JOB_NAME)", "--global_batch_size", "4096", "--lr_scaling", "sqrt",
                      "--save_steps", "1000", "--intra", "8", "--inter", "2")),
    # DCN-v2 (a DLRM-like Criteo model, the same flags): written once dcn_v2/train.py exists.
    Model(
        folder="dcn_v2", title="DCN-v2", memory="8Gi", requires="dcn_v2/train.py",
        memory_note="""\
Memory: DCN-v2's tables (the shipped Criteo schema, as DLRM's) and lazy Adam's two slots
are split over the PS tasks, the cross layers add little (sizes in dcn_v2/README.md).
--ev grows the tables with the ids admitted: raise the PS memory (or PS.replicas) for it."""),
    # No MLP in lr and fm (their SPEC's has_mlp): FP32 only (Model.precisions).
    Model(
        folder="lr", title="Logistic regression", memory="4Gi",
        memory_note="""\
Memory: LR's weights (shipped schema: 1.79M rows x 1) and FTRL's two slots are 22 MB
in all (benchmarks/checkpoint_save_time.py), split over the PS tasks; 4Gi is DLRM's
measured 1.4 GB peak (0.35 GB of tables) with room, not a measurement of LR's. --ev grows
the tables with the ids admitted: raise the PS memory (or PS.replicas) for it."""),
    Model(
        folder="fm", title="Factorization machine", memory="4Gi",
        memory_note="""\
Memory: FM's tables (shipped schema: 1.79M rows x 16, plus the first-order weights) and
Adagrad's slot are 0.24 GB in all (benchmarks/checkpoint_save_time.py), split over the PS
tasks; 4Gi is DLRM's measured 1.4 GB peak (0.35 GB of tables) with room, not a measurement
of FM's. --ev grows the tables with the ids admitted: raise the PS memory (or PS.replicas)."""),
    Model(
        folder="deepfm", title="DeepFM", memory="4Gi",
        memory_note="""\
Memory: DeepFM's field vectors (shipped schema: 1.79M rows x 16) with lazy Adam's two
slots, and the first-order weights with FTRL's two, are 0.37 GB in all
(benchmarks/checkpoint_save_time.py), split over the PS tasks; 4Gi is DLRM's measured
1.4 GB peak (0.35 GB of tables) with room, not a measurement of DeepFM's. --ev grows the
tables with the ids admitted: raise the PS memory (or PS.replicas) for it."""),
    # The models of the generated datasets (DATASETS): the chief writes their rows into the empty data folder.
    Model(
        folder="din", title="DIN", memory="4Gi",
        memory_note=small_tables_note("DIN", "the taobao schema's item and category tables, shared by the histories",
                                      "din")),
    Model(
        folder="esmm", title="ESMM", memory="4Gi",
        memory_note=small_tables_note("ESMM", "the aliccp schema's", "esmm")),
    Model(
        folder="mmoe", title="MMoE", memory="4Gi",
        memory_note=small_tables_note("MMoE", "the aliccp schema's", "mmoe")),
    Model(
        folder="ple", title="PLE", memory="4Gi",
        memory_note=small_tables_note("PLE", "the aliccp schema's", "ple")),
)

# Manifests written by hand, with no BF16 twin on purpose: path -> why (tests/test_k8s_manifests.py
# fails for any other *_FP32.yaml without a *_BF16.yaml but the generated ones of without_bf16_twin()).
FP32_ONLY = {
    "gdmix_lr/distribute_k8s/distribute_k8s_FP32.yaml": "its solvers run in float64: there is no BF16 job",
}

# --- rendering ----------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def fill(template, **values):
    """Fills {{key}} placeholders. A placeholder alone on its line is a block: each line of the value gets
    the placeholder's indentation, and an empty value drops the line. Any key left unfilled or unused is an
    error (a typo in a template would otherwise go out in a manifest)."""
    used, out = set(), []
    for line in template.split("\n"):
        alone = re.fullmatch(r"( *)\{\{(\w+)\}\}", line)
        if alone:
            indent, key = alone.groups()
            if key not in values:
                raise KeyError(f"{GENERATOR}: template placeholder {{{{{key}}}}} has no value")
            used.add(key)
            out += [(indent + v) if v else v.rstrip() for v in values[key].split("\n")] if values[key] else []
            continue

        def inline(match):
            if match.group(1) not in values:
                raise KeyError(f"{GENERATOR}: template placeholder {{{{{match.group(1)}}}}} has no value")
            used.add(match.group(1))
            value = values[match.group(1)]
            if "\n" in value:
                raise ValueError(f"{GENERATOR}: {{{{{match.group(1)}}}}} is inline, its value has several lines")
            return value
        out.append(PLACEHOLDER.sub(inline, line))
    unused = set(values) - used
    if unused:
        raise KeyError(f"{GENERATOR}: values not in the template: {sorted(unused)}")
    return "\n".join(out)


def comment(text, prefix="# "):
    """A comment block: each line of `text` behind `prefix` ("" stays "")."""
    return "\n".join((prefix + line).rstrip() for line in text.split("\n")) if text else ""


def scalar(value):
    """A list item as the manifests write it: numbers quoted (args are strings), the rest plain; checked to
    read back as the same string."""
    text = f'"{value}"' if re.fullmatch(r"[0-9]+", value) else value
    if yaml.safe_load(text) != value:
        raise ValueError(f"{GENERATOR}: argument {value!r} does not read back as itself in YAML")
    return text


def items(values):
    return "\n".join(f"- {scalar(v)}" for v in values)


def padded(pairs, gap):
    """Command lines with their comments aligned `gap` spaces after the longest command."""
    width = max(len(cmd) for cmd, _ in pairs) + gap
    return "\n".join(f"{cmd.ljust(width)}# {note}" if note else cmd for cmd, note in pairs)


GENERATED = f"""\
# Generated by {GENERATOR} (its MODELS table): edit the generator, not this file,
# then run `python {GENERATOR}` (tests/test_k8s_manifests.py checks the two agree)."""

# --- the parameter-server TFJob -------------------------------------------------------------------------

PS_HEADER = """\
{{generated}}
# {{title}} on {{dataset}}, {{prec}}: asynchronous parameter-server training (tf.estimator.train_and_evaluate)
# as a Kubeflow Training Operator TFJob (kubeflow.org/v1): 1 Chief, 2 Workers, 2 PS, 1 Evaluator.
{{bf16_note}}
{{twin}}
#
#   kubectl create -f distribute_k8s/pvc.yaml     # once: the volume for data and outputs
{{copy_data}}
#   kubectl create -f {{path}}
{{follow}}
#   kubectl delete -f {{path}}
#
{{data_note}}
# Outputs (checkpoints, SavedModel, result.json) go to the volume's result/{{job}}/{{folder}}/
# and stay there after `kubectl delete`.
#
# The same file runs on one machine without Kubernetes, as local processes with the TF_CONFIG
# the operator would give them and $(JOB_NAME) = the job's name (distribute_k8s/local_run.py):
#
#   python -m distribute_k8s.local_run {{path}} --workers 2 --ps 1
{{without_operator}}
#
# How it runs. Every replica runs the same command and arguments: distribute_k8s/launch.py
# sets up the process (MEM_USAGE_STRATEGY below: the memory allocator) and starts
# {{folder}}/train.py with the flags after "--". The TF_CONFIG that the operator injects into
# the container named "tensorflow" tells the tasks apart (the task type in lower case; the
# Evaluator is not in TF_CONFIG's cluster):
#   chief      trains, writes the checkpoints (every --save_steps 1000 steps) and the outputs
#   worker     trains: each worker applies its own gradients to the PS variables (asynchronous)
#   ps         holds the variables: an embedding table is split over the PS tasks in slices of
#              at least --input_layer_partitioner 8 MB, a dense layer's weights in slices of at
#              least --dense_layer_partitioner 16 KB (DeepRec's units); it exits 0 by itself
#              when training is done
#   evaluator  evaluates the checkpoints on the held-out rows while the others train; the chief
#              waits for its evaluation of the final checkpoint before it exports
# Option: --workqueue (add it to the args of every replica) hands the input files out to the
# workers through a queue on the PS, so that a faster worker reads more of them, instead of a
# fixed share per worker.
#
# Scaling: change Worker.replicas or PS.replicas, nothing else (TF_CONFIG lists the tasks), for a new
# job. A job that resumes its result folder's checkpoint (the same name) takes another PS.replicas
# without --ev (the checkpoint restores into other slices), but with --ev it is refused in one line
# (the tables' shard count is in the checkpoint's identity: give another job name). Another
# Worker.replicas resumes, but each trainer's input position (input_progress) is kept per trainer
# index while the files are dealt over the new count: rows of the interrupted epoch are read
# again or skipped (with --workqueue each item still goes out once). Keep the count to resume exactly.
#
# Stopping: on SIGTERM (kubectl delete) the chief saves a final checkpoint; the pods get
# terminationGracePeriodSeconds {{grace}} s for it: {{grace_factor}}x the {{save_secs}} s save of the default
# tables' {{save_mb}} MB on a local disk of a 2-vCPU AMD EPYC (family 25 model 17: Zen 4) VM ({{save_date}},
# benchmarks/checkpoint_save_time.py), for a network volume's slower writes. Raise it with the
# tables (--ev, a bigger schema).
# Threads: --intra 8 is the CPU limit of every replica (all replicas share the arguments, so
# they share the limit): change both together; --inter 2 stays.
apiVersion: kubeflow.org/v1
kind: TFJob
metadata:
  name: {{job}}
  labels:
    app.kubernetes.io/name: {{app}}
    app.kubernetes.io/part-of: modelzoo
spec:
  runPolicy:
    # When the chief has succeeded (the job's success: successPolicy left at its default), the pods
    # still running are deleted (a PS or the evaluator that has not exited yet); finished pods are
    # kept so that their logs can be read.
    cleanPodPolicy: Running
    # Container restarts of all the pods together. A killed worker restarts and rejoins: 1 restart.
    # A killed PS loses its variables: the chief restores them from the last checkpoint, and the
    # trainers whose sessions fail meanwhile restart too: up to 4 (the PS, the chief, 2 workers).
    # 10 allows two such incidents and a few single restarts, while an error that repeats (a bad
    # flag, unreadable data) fails all 6 pods at once and ends the job in its second round instead
    # of restarting forever.
    backoffLimit: 10
  tfReplicaSpecs:
{{replicas}}
"""

PS_REPLICA = """\
{{rtype}}:
  replicas: {{replicas}}
  {{restart_note}}
  restartPolicy: OnFailure
  {{pod_head}}
      terminationGracePeriodSeconds: {{grace}}
      affinity:
        podAntiAffinity:
          {{affinity_note}}
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    training.kubeflow.org/job-name: {{job}}
                  matchExpressions:
                    - key: training.kubeflow.org/replica-type
                      operator: In
                      values:
                        - chief
                        - worker
                        - ps
      containers:
        {{container_note}}
        - name: tensorflow
          image: {{image}}
          imagePullPolicy: IfNotPresent
          {{workdir_note}}
          workingDir: /opt/modelzoo
          env:
            {{job_name_note}}
            - name: JOB_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.labels['training.kubeflow.org/job-name']
            {{allocator_note}}
            - name: MEM_USAGE_STRATEGY
              value: close
          {{command_note}}
          command:
            - python
            - distribute_k8s/launch.py
          args:
            - --script
            - {{folder}}/train.py
            - --
            {{train_args}}
          ports:
            {{ports_note}}
            - name: tfjob-port
              containerPort: 2222
          {{resources_note}}
          {{container_tail}}
      {{pod_volumes}}"""

PS_NOTES = ("restart_note", "affinity_note", "container_note", "workdir_note", "job_name_note", "allocator_note",
            "command_note", "ports_note", "resources_note")

# The comments of each replica (the Chief explains the pod; the others repeat it without them).
CHIEF_NOTES = {
    "restart_note": """\
A failed task is restarted in place (kubelet) and resumes: the variables live on the PS,
and the chief restores the last checkpoint if a PS lost them.""",
    "affinity_note": """\
One trainer or PS per node where the cluster allows it: they then do not share
cores or the node's network.""",
    "container_note": 'The operator injects TF_CONFIG only into the container named "tensorflow".',
    "workdir_note": "The image's WORKDIR: the repository root (launch.py, the model folders).",
    "job_name_note": """\
The TFJob's name (a label the operator puts on its pods): each job its own output
folder, so that FP32 and BF16 never resume each other's checkpoint.""",
    "allocator_note": """\
The allocator launch.py sets up: glibc malloc (close). jemalloc (Debian's libjemalloc2 in the
image) trained DLRM at 0.90x and W&D at 0.91x of glibc here (benchmarks/results/matrix.md,
medians of 3); set jemalloc or DeepRec's 251, max, ... (STRATEGIES in launch.py) to try it.""",
    "command_note": 'Launcher options before "--", train.py\'s flags after it. The same in every replica.',
    "ports_note": "The operator's port for TF_CONFIG's addresses (gRPC between the tasks).",
}
PS_REPLICAS = (  # (type, replicas, notes)
    ("Chief", 1, CHIEF_NOTES),
    ("Worker", 2, {}),
    ("PS", 2, {"resources_note": "The PS hold the tables and their optimizer slots (see the Chief's note on memory)."}),
    ("Evaluator", 1, {"restart_note": "One at most (TensorFlow's evaluator task); not in TF_CONFIG's cluster."}),
)
# The end of every container (its cores and memory, no privileges, the shared volume mounted) and the pod's
# volume: one text for the TFJob replicas, the MPIJob workers (8 whole cores) and its launcher.
CONTAINER_TAIL = """\
resources:
  requests:
    cpu: {cpu_request}
    memory: {memory}
  limits:
    cpu: {cpu_limit}
    memory: {memory}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop:
      - ALL
volumeMounts:
  - name: modelzoo-data
    mountPath: /mnt/modelzoo
  - name: tmp
    mountPath: /tmp"""

POD_VOLUMES = """\
volumes:
  - name: modelzoo-data
    persistentVolumeClaim:
      claimName: modelzoo-data
  - name: tmp
    emptyDir: {}"""


# The head of every pod template: the model's labels and the pod's security context (not root, the
# runtime's seccomp profile, the volume writable by the image's user), no service-account token (no pod
# talks to the Kubernetes API). The image's files are read-only (readOnlyRootFilesystem in CONTAINER_TAIL):
# the processes write to the shared volume and to an emptyDir on /tmp (TensorFlow's and tempfile's
# scratch, sshd's pid file).
POD_HEAD = """\
template:
  metadata:
    labels:
      app.kubernetes.io/name: {app}
      app.kubernetes.io/part-of: modelzoo
  spec:
    automountServiceAccountToken: false
    securityContext:
      runAsNonRoot: true
      runAsUser: 1000
      runAsGroup: 1000
      fsGroup: 1000
      fsGroupChangePolicy: OnRootMismatch
      seccompProfile:
        type: RuntimeDefault"""


def pod_parts(model):
    """The pod_head, container_tail and pod_volumes blocks of a model's pods."""
    return dict(pod_head=POD_HEAD.format(app=model.app), pod_volumes=POD_VOLUMES,
                container_tail=CONTAINER_TAIL.format(cpu_request='"8"', cpu_limit='"8"', memory=model.memory))


# horovodrun's launcher only starts and watches the ranks: half a core, 2 GiB
LAUNCHER_TAIL = CONTAINER_TAIL.format(cpu_request="500m", cpu_limit='"1"', memory="2Gi")


def twin_line(model, other, bf16):
    """The header comment naming the file's FP32/BF16 twin, or saying why an FP32 file has none."""
    if model.no_bf16_reason():
        return comment(textwrap.fill(f"No BF16 twin: {model.no_bf16_reason()}.", 100))
    return comment(f"{other} is this file without --bf16 and with other names." if bf16
                   else f"{other} is this file with --bf16 and other names.")


CHIEF_RESOURCES_NOTE = "requests = limits: Guaranteed QoS, whole cores for --intra 8 (no CFS throttling)."


def indent(text, spaces):
    return "\n".join((" " * spaces + line) if line else line for line in text.split("\n"))


def copy_data(model):
    """The header's commands that copy the dataset's file into the model's data folder ("": nothing to copy)."""
    data, folder = model.dataset(), model.data_folder()
    if not data.copy:
        return ""
    return comment(f"""\
# once: {data.copy} into the volume's {folder.removeprefix(MOUNT + "/")}/, through a pod that mounts the
# claim (modelzoo-shell: distribute_k8s/README.md):
kubectl exec modelzoo-shell -- mkdir -p {folder}
kubectl cp train.txt modelzoo-shell:{folder}/train.txt""", "#   ")


def data_note(model):
    """The header's paragraph on what the chief reads, or generates, in the model's data folder."""
    data, folder, rows = model.dataset(), model.data_folder(), default_flags(model.folder).generate_rows
    if data.copy:
        text = (f"Without data in {folder}/ (train.txt, or train.csv + eval.csv) the chief generates "
                f"{data.generated} there and says so in its log: the job then runs, but not on {data.title}.")
    else:
        text = (f"No data to copy: while {folder}/ is empty the chief generates {rows:,} {data.generated} "
                f"there (--generate_rows) and says so in its log, and every run after it reads them. Your own rows "
                f"in {model.folder}'s schema (train.txt, train.csv + eval.csv, or Parquet) put there are read "
                "instead.")
    return comment(textwrap.fill(text, 97, break_on_hyphens=False))


def ps_tfjob(model, prec, path, image=IMAGE, horovod_image=None):
    job = f"{model.app}-{prec.lower()}"
    bf16 = prec == "BF16"
    other = path.name.replace(prec, "FP32" if bf16 else "BF16")
    train_args = ["--data_location", model.data_folder()] + list(model.ps_args) + (["--bf16"] if bf16 else [])
    replicas = []
    for rtype, count, notes in PS_REPLICAS:
        notes = dict(notes)
        if rtype == "Chief":
            notes["resources_note"] = CHIEF_RESOURCES_NOTE + "\n" + model.memory_note
        replicas.append(indent(fill(PS_REPLICA, rtype=rtype, replicas=str(count), job=job, image=image,
                                    folder=model.folder, train_args=items(train_args), **pod_parts(model),
                                    grace=str(model.grace_seconds()),
                                    **{k: comment(notes.get(k, "")) for k in PS_NOTES}), 4))
    rel = path.relative_to(REPO).as_posix()
    without_operator = f"distribute_k8s/without_operator/{model.folder}_indexed_jobs.yaml"
    save_secs, save_bytes, save_date = model.save_time()
    return fill(
        PS_HEADER, generated=GENERATED, title=model.title, prec=prec, path=rel, job=job, app=model.app,
        dataset=model.dataset().title, copy_data=copy_data(model), data_note=data_note(model),
        grace=str(model.grace_seconds()), grace_factor=str(GRACE_FACTOR),
        save_secs=f"{save_secs:.0f}" if save_secs >= 1 else f"{save_secs:.1f}" if save_secs >= 0.05
        else f"{save_secs:.2g}",
        save_mb=f"{save_bytes / 1e6:,.0f}", save_date=save_date[:10],
        folder=model.folder, bf16_note=comment(model.bf16_note) if bf16 else "",
        twin=twin_line(model, other, bf16),
        follow=padded([(f"#   kubectl logs -f {job}-chief-0", "progress, evaluation, summary"),
                       (f"#   kubectl get tfjob {job}", "Succeeded when the chief has finished")], 2),
        without_operator=comment(f"\nOn a cluster without the training operator: the same tasks as plain Kubernetes "
                                 f"Jobs in\n{without_operator}.")
        if (REPO / without_operator).is_file() else "",
        replicas="\n".join(replicas))


# --- the Horovod MPIJob ---------------------------------------------------------------------------------

HOROVOD = """\
{{generated}}
# {{title}}, synchronous data-parallel training with Horovod (gloo), {{prec}}, on the Kubeflow MPI
{{operator_line}}
#
{{howto}}
#
# The launcher runs horovodrun against the hostfile the operator mounts at /etc/mpi/hostfile (one
# "HOST slots=N" line per worker); horovodrun starts the ranks over ssh in the workers, which run
# only sshd (non-root, port 2222). -np must be Worker replicas x slotsPerWorker: change them together.
# Rank 0 writes the checkpoint, SavedModel and result.json to /mnt/modelzoo/result/JOB/{{folder}}.
{{twin}}
apiVersion: kubeflow.org/v2beta1
kind: MPIJob
metadata:
  name: {{job}}
  labels:
    app.kubernetes.io/name: {{app}}
    app.kubernetes.io/part-of: modelzoo
spec:
  slotsPerWorker: 1
  runPolicy:
    cleanPodPolicy: Running
    # The launcher is retried (in place) when it fails, e.g. when it starts before the workers'
    # sshd is up ("could not connect to some hosts via ssh"); a retry resumes from the checkpoint.
    backoffLimit: 4
  # The operator mounts the job's ssh key pair here, in every pod: the home of the image's user.
  sshAuthMountPath: /home/modelzoo/.ssh
  mpiReplicaSpecs:
    Launcher:
      replicas: 1
      restartPolicy: OnFailure
      {{pod_head}}
          containers:
            - name: mpi-launcher
              image: {{horovod_image}}
              imagePullPolicy: IfNotPresent
              workingDir: /opt/modelzoo
              env:
                # The MPIJob's name (a label the operator puts on its pods): each job gets its own
                # output folder, so that FP32 and BF16 never resume each other's checkpoint.
                - name: JOB_NAME
                  valueFrom:
                    fieldRef:
                      fieldPath: metadata.labels['training.kubeflow.org/job-name']
              command:
                - horovodrun
              args:
                - --gloo
                - -np
                - "2"
                - --hostfile
                - /etc/mpi/hostfile
                - --ssh-port
                - "2222"
                - python
                - {{folder}}/train.py
                - --hvd
                {{train_args}}
              # horovodrun only starts and watches the ranks (it imports TensorFlow once to check the
              # Horovod build); the training runs in the workers.
              {{launcher_tail}}
          {{pod_volumes}}
    Worker:
      replicas: 2
      {{pod_head}}
          affinity:
            podAntiAffinity:
              # One worker per node where the cluster allows it: the ranks then do not share cores.
              preferredDuringSchedulingIgnoredDuringExecution:
                - weight: 100
                  podAffinityTerm:
                    topologyKey: kubernetes.io/hostname
                    labelSelector:
                      matchLabels:
                        training.kubeflow.org/job-name: {{job}}
                        training.kubeflow.org/job-role: worker
          containers:
            - name: mpi-worker
              image: {{horovod_image}}
              imagePullPolicy: IfNotPresent
              workingDir: /opt/modelzoo
              # sshd as the non-root user, on 2222, with its own config (distribute_k8s/ssh/sshd_config).
              command:
                - /usr/sbin/sshd
              args:
                - -De
                - -f
                - /etc/ssh/sshd_config_modelzoo
              ports:
                - name: ssh
                  containerPort: 2222
              readinessProbe:
                tcpSocket:
                  port: 2222
                initialDelaySeconds: 2
                periodSeconds: 5
              # One rank per worker (slotsPerWorker: 1) with --intra 8: requests = limits, so the
              # rank gets 8 whole cores and no throttling.
              {{container_tail}}
          {{pod_volumes}}
"""


def horovod_mpijob(model, prec, path, image=None, horovod_image=HOROVOD_IMAGE):
    job = f"{model.app}-horovod-{prec.lower()}"
    bf16 = prec == "BF16"
    other = path.name.replace(prec, "FP32" if bf16 else "BF16")
    rel = path.relative_to(REPO).as_posix()
    steps = f"Steps are in {model.folder}/distribute_k8s/README.md; in short:"
    operator_line = (comment(f"operator (v2, kubeflow.org/v2beta1). {model.horovod_bf16_note}\n{steps}") if bf16
                     else comment(f"operator (v2, kubeflow.org/v2beta1). {steps}"))
    howto = padded([("#   kubectl create -f distribute_k8s/pvc.yaml", "once: data and outputs"),
                    (f"#   kubectl create -f {rel}", ""),
                    (f"#   kubectl logs -f job/{job}-launcher", "every rank's output"),
                    (f"#   kubectl delete -f {rel}", "when done")], 4)
    return fill(HOROVOD, generated=GENERATED, title=model.title, prec=prec, operator_line=operator_line,
                howto=howto, folder=model.folder, job=job, app=model.app, twin=twin_line(model, other, bf16),
                launcher_tail=LAUNCHER_TAIL, horovod_image=horovod_image, **pod_parts(model),
                train_args=items(list(model.horovod_args) + (["--bf16"] if bf16 else [])))


# --- the files --------------------------------------------------------------------------------------

JOBS = {"ps": ("distribute_k8s_{prec}.yaml", ps_tfjob), "horovod": ("horovod_{prec}.yaml", horovod_mpijob)}


def manifests(models=MODELS, image=IMAGE, horovod_image=HOROVOD_IMAGE):
    """{path: text} of every manifest the generator owns (the models whose `requires` exists), with these
    images."""
    out = {}
    for model in models:
        if not model.present():
            continue
        for kind in model.jobs:
            name, render = JOBS[kind]
            for prec in model.precisions():
                path = REPO / model.folder / "distribute_k8s" / name.format(prec=prec)
                out[path] = render(model, prec, path, image=image, horovod_image=horovod_image)
    return out


def without_bf16_twin(models=MODELS):
    """{path: why} of every FP32 manifest with no BF16 twin on purpose: the hand-written FP32_ONLY ones and
    the generated ones of the models without an MLP."""
    out = dict(FP32_ONLY)
    for model in models:
        if model.present() and model.no_bf16_reason():
            for kind in model.jobs:
                out[f"{model.folder}/distribute_k8s/{JOBS[kind][0].format(prec='FP32')}"] = model.no_bf16_reason()
    return out


def check(outputs, stream=None):
    """Writes to `stream` (stdout) the unified diff of each file that differs from `outputs` (a missing one
    counts) and returns their paths: [] when they all agree."""
    stream, stale = stream or sys.stdout, []
    for path, text in outputs.items():
        rel = path.relative_to(REPO).as_posix()
        old = path.read_text() if path.is_file() else ""
        if old != text:
            stale.append(rel)
            stream.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                   f"{rel} (committed)", f"{rel} (generated)"))
    return stale


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a diff when a committed manifest differs from the output")
    parser.add_argument("--list", action="store_true", help="print the files the generator writes")
    parser.add_argument("--image", default=IMAGE, help="the image of the TFJobs (`docker build .` pushed where "
                        f"your cluster pulls from; default: the committed placeholder {IMAGE}, which no node pulls)")
    parser.add_argument("--horovod_image", default=HOROVOD_IMAGE,
                        help=f"the image of the MPIJobs (`docker build --target horovod .`; default {HOROVOD_IMAGE})")
    args = parser.parse_args(argv)
    outputs = manifests(image=args.image, horovod_image=args.horovod_image)
    if args.list:
        print("\n".join(p.relative_to(REPO).as_posix() for p in outputs))
        return 0
    if args.check:
        stale = check(outputs)
        if stale:
            print(f"\n{len(stale)} manifest(s) differ from {GENERATOR}'s output: {', '.join(stale)}; "
                  f"run `python {GENERATOR}` (and edit the generator, not the files)", file=sys.stderr)
            return 1
        print(f"{len(outputs)} manifests are {GENERATOR}'s output")
        return 0
    for path, text in outputs.items():
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO).as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

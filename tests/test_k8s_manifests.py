"""Every Kubernetes manifest of the repository, validated offline (no cluster, no Docker):

- core kinds (PersistentVolumeClaim, Service, Job, ...) against the Kubernetes OpenAPI schema of
  KUBERNETES_VERSION (kubernetes-validate, strict: an unknown field fails, as `kubectl create
  --validate=strict` would refuse it);
- the Kubeflow kinds (TFJob kubeflow.org/v1, MPIJob kubeflow.org/v2beta1) against our own JSON schema
  of their structure (the fields of the operators' CRDs and the values their API types and webhooks
  accept), each replica's pod template against the real PodTemplateSpec schema;
- policy on every pod template: pinned image tag, cpu and memory requests and limits, non-root,
  no privilege escalation; the operator's "tensorflow" container in every TFJob replica;
- the parameter-server TFJobs against what the code does with them: the shared launcher, train.py's
  own parser, the operator's TF_CONFIG, BF16 = FP32 + --bf16, the shared volume, the placement;
- the without-operator manifest against the env contract of distribute_k8s/launch.py;
- the committed FP32/BF16 manifests against distribute_k8s/generate_manifests.py's output, and every FP32
  manifest against its BF16 twin.

Every check reports "FILE: KIND NAME: FIELD PATH: problem"; the tests at the end mutate manifests to
show that each kind of check fails when it should.
"""
import argparse
import contextlib
import copy
import functools
import io
import json
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import K8S_JOB_NAME_LABEL as JOB_NAME_LABEL, REPO, dockerfile_stages, load_train_module
from distribute_k8s import generate_manifests

# The Kubernetes version whose OpenAPI schema the core kinds are checked against: the newest that
# kubernetes-validate 1.37.0 (requirements-dev.txt) ships.
KUBERNETES_VERSION = "1.37.0"

REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"  # the operator's value: the type in lower case
LAUNCHER = "distribute_k8s/launch.py"
MEM_USAGE_STRATEGIES = ("jemalloc", "251", "close")  # launch.py's allocators (DeepRec's launcher's values)
TF_PORT = 2222  # the training operator's default port (named tfjob-port)
MOUNT = "/mnt/modelzoo"
PVC = REPO / "distribute_k8s" / "pvc.yaml"
DOCKERFILE = REPO / "Dockerfile"

# The parameter-server TFJobs: (model folder, precision) -> manifest; every model of the generator's table
# with a "ps" job (a model added there is checked here too), at least DLRM and Wide & Deep, in FP32 and, for a
# model with an MLP, BF16 (lr and fm have none: FP32 only).
PS_ENTRIES = {m.folder: m for m in generate_manifests.MODELS if "ps" in m.jobs and m.present()}
PS_MODELS = tuple(PS_ENTRIES)
assert {"dlrm", "wide_and_deep", "lr", "fm", "deepfm", "din", "esmm", "mmoe", "ple"} <= set(PS_MODELS), PS_MODELS
PS_TFJOBS = {(model, prec): REPO / model / "distribute_k8s" / f"distribute_k8s_{prec}.yaml"
             for model, entry in PS_ENTRIES.items() for prec in entry.precisions()}
BF16_PS_MODELS = tuple(model for model in PS_MODELS if (model, "BF16") in PS_TFJOBS)
# the job's name: the folder with dashes, and the precision (dlrm-fp32, wide-and-deep-bf16)
PS_JOB_NAMES = {(model, prec): f"{model.replace('_', '-')}-{prec.lower()}" for model, prec in PS_TFJOBS}
assert PS_JOB_NAMES[("wide_and_deep", "BF16")] == "wide-and-deep-bf16"
PS_REPLICAS = {"Chief": 1, "Worker": 2, "PS": 2, "Evaluator": 1}
WITHOUT_OPERATOR = REPO / "distribute_k8s" / "without_operator" / "dlrm_indexed_jobs.yaml"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def manifest_paths():
    """Every manifest: each model's distribute_k8s/*.yaml and everything under distribute_k8s/."""
    return sorted(set(REPO.glob("*/distribute_k8s/*.yaml")) | set(REPO.glob("distribute_k8s/**/*.yaml")))


def rel(path):
    return str(path.relative_to(REPO))


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def load_one(path):
    docs = load_all(path)
    assert len(docs) == 1, f"{rel(path)}: expected one document, got {len(docs)}"
    return docs[0]


def dotted(parts):
    """A field path as the messages write it: spec.tfReplicaSpecs.Worker.template.spec.containers[0]."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# --- the Kubeflow kinds: our JSON schema of the operators' CRDs ------------------------------------
# Written from the fields of training-operator v1.8's TFJob CRD (manifests/base/crds/kubeflow.org_tfjobs.yaml)
# and mpi-operator's v2beta1 MPIJob, plus what their API types and admission webhooks accept (replica types,
# restart and clean-pod policies, job name). additionalProperties false everywhere: a misspelt field would be
# dropped by the API server (pruning), silently.

INT32 = {"type": "integer", "minimum": -2 ** 31, "maximum": 2 ** 31 - 1}
NON_NEGATIVE_INT32 = {"type": "integer", "minimum": 0, "maximum": 2 ** 31 - 1}
NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "number"},  # Kubernetes' resource.Quantity
                      {"type": "string", "pattern": rf"^(\+|-)?{NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{NUMBER}))?$"}]}
SCHEDULING_POLICY = {
    "type": "object", "additionalProperties": False,
    "properties": {"minAvailable": INT32, "queue": {"type": "string"},
                   "minResources": {"type": "object", "additionalProperties": QUANTITY},
                   "priorityClass": {"type": "string"}, "scheduleTimeoutSeconds": INT32}}


def run_policy(extra=None):
    return {"type": "object", "additionalProperties": False,
            "properties": {"cleanPodPolicy": {"enum": ["None", "Running", "All"]},
                           "ttlSecondsAfterFinished": NON_NEGATIVE_INT32,
                           "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                           "backoffLimit": NON_NEGATIVE_INT32,
                           "schedulingPolicy": SCHEDULING_POLICY,
                           "suspend": {"type": "boolean"},
                           **(extra or {})}}


REPLICA_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["template"],
    "properties": {"replicas": NON_NEGATIVE_INT32,
                   "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
                   # checked against the real core/v1 PodTemplateSpec separately (kubernetes-validate)
                   "template": {"type": "object", "required": ["spec"]}}}
JOB_METADATA = {  # the webhooks' ValidateJobName: a DNS-1035 label
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "maxLength": 63, "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$"}}}

TFJOB_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"}, "kind": {"const": "TFJob"}, "metadata": JOB_METADATA,
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["tfReplicaSpecs"],
            "properties": {
                "runPolicy": run_policy(),
                "successPolicy": {"enum": ["", "AllWorkers"]},
                "tfReplicaSpecs": {
                    "type": "object", "minProperties": 1,
                    "propertyNames": {"enum": ["Chief", "Master", "Worker", "PS", "Evaluator"]},
                    "additionalProperties": REPLICA_SPEC,
                    "not": {"required": ["Chief", "Master"]}},  # the webhook: one Chief or Master at most
                "enableDynamicWorker": {"type": "boolean"}}}}}

MPIJOB_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v2beta1"}, "kind": {"const": "MPIJob"}, "metadata": JOB_METADATA,
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["mpiReplicaSpecs"],
            "properties": {
                "slotsPerWorker": {"type": "integer", "minimum": 1},
                "runPolicy": run_policy({"managedBy": {"type": "string"}}),
                "mpiReplicaSpecs": {
                    "type": "object", "required": ["Launcher"],
                    "propertyNames": {"enum": ["Launcher", "Worker"]},
                    "additionalProperties": REPLICA_SPEC},
                "sshAuthMountPath": {"type": "string"},
                "mpiImplementation": {"enum": ["OpenMPI", "Intel", "MPICH"]},
                "launcherCreationPolicy": {"enum": ["AtStartup", "WaitForWorkersReady"]},
                "runLauncherAsWorker": {"type": "boolean"}}}}}

CRD_SCHEMAS = {("kubeflow.org/v1", "TFJob"): (TFJOB_SCHEMA, "tfReplicaSpecs"),
               ("kubeflow.org/v2beta1", "MPIJob"): (MPIJOB_SCHEMA, "mpiReplicaSpecs")}


def k8s_schema_problems(resource, prefix=()):
    """kubernetes-validate's strict check of one core resource: [] or ["FIELD: message"]. `prefix` maps a
    wrapper's fields back to the manifest's (a PodTemplate wrapper's "template" to the replica's)."""
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = list(err.path)
        if prefix and path[:1] == ["template"]:
            path = list(prefix) + path[1:]
        return [f"{dotted(path)}: {err.message} (Kubernetes {err.version} schema)"]
    except kubernetes_validate.SchemaNotFoundError as err:
        return [f"kind: {err.message}"]
    return []


def crd_problems(doc):
    schema, replicas_key = CRD_SCHEMAS[(doc.get("apiVersion"), doc.get("kind"))]
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{dotted(err.absolute_path)}: {err.message}"
                for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    # the object's metadata and each replica's pod template through the real core/v1 schema
    meta = doc.get("metadata")
    if isinstance(meta, dict):
        problems += k8s_schema_problems({"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta})
    name = meta.get("name", "job") if isinstance(meta, dict) else "job"
    for rtype, spec in ((doc.get("spec") or {}).get(replicas_key) or {}).items():
        if isinstance(spec, dict) and isinstance(spec.get("template"), dict):
            wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"{name}-{rtype.lower()}"},
                       "template": spec["template"]}
            problems += k8s_schema_problems(wrapper, ("spec", replicas_key, rtype, "template"))
    return problems


# --- policy on every pod template -------------------------------------------------------------------

def pod_templates(doc):
    """[(field path, pod template)] of a manifest document of any kind that creates pods."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if (doc.get("apiVersion"), kind) in CRD_SCHEMAS:
        key = CRD_SCHEMAS[(doc["apiVersion"], kind)][1]
        return [(("spec", key, rtype, "template"), rs.get("template") or {})
                for rtype, rs in (spec.get(key) or {}).items()]
    if kind in ("Job", "StatefulSet", "Deployment", "DaemonSet", "ReplicaSet"):
        return [(("spec", "template"), spec.get("template") or {})]
    if kind == "CronJob":
        return [(("spec", "jobTemplate", "spec", "template"), spec["jobTemplate"]["spec"].get("template") or {})]
    if kind == "Pod":
        return [((), {"spec": spec})]
    if kind == "PodTemplate":
        return [(("template",), doc.get("template") or {})]
    return []


def image_problem(image):
    if not image:
        return "no image"
    if "@sha256:" in image:
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return f"image {image!r} has no tag (it would pull 'latest')"
    if tag == "latest":
        return f"image {image!r} uses the tag 'latest': pin a version"
    return None


def pod_policy_problems(path, template):
    problems = []
    spec = template.get("spec") or {}
    pod_ctx = spec.get("securityContext") or {}
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            where = dotted([*path, "spec", group, i])
            name = c.get("name", "?")
            if problem := image_problem(c.get("image")):
                problems.append(f"{where}.image: container {name}: {problem}")
            resources = c.get("resources") or {}
            for part in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(part) or {})
                if missing:
                    problems.append(f"{where}.resources.{part}: container {name}: "
                                    f"no {' and no '.join(sorted(missing))}")
            ctx = c.get("securityContext") or {}
            if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
                problems.append(f"{where}.securityContext.runAsNonRoot: container {name}: not true (pod or container)")
            uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
            if uid is None or uid == 0:
                problems.append(f"{where}.securityContext.runAsUser: container {name}: "
                                f"{'root' if uid == 0 else 'not set'}; set a non-root uid (the image's is 1000)")
            if ctx.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}.securityContext.allowPrivilegeEscalation: container {name}: not false")
            if ctx.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}.securityContext.readOnlyRootFilesystem: container {name}: not true")
            mounts = {m.get("mountPath") for m in c.get("volumeMounts") or []}
            if "/tmp" not in mounts:  # a read-only root leaves TensorFlow, tempfile and sshd no scratch space
                problems.append(f"{where}.volumeMounts: container {name}: nothing writable on /tmp")
    if spec.get("automountServiceAccountToken") is not False:  # no pod talks to the Kubernetes API
        problems.append(f"{dotted([*path, 'spec'])}.automountServiceAccountToken: not false")
    return problems


def tfjob_problems(doc):
    """What the training operator needs: it injects TF_CONFIG only into the container named "tensorflow",
    and takes the TF_CONFIG port from that container's port named tfjob-port."""
    problems = []
    specs = (doc.get("spec") or {}).get("tfReplicaSpecs") or {}
    for rtype, rs in specs.items():
        where = dotted(["spec", "tfReplicaSpecs", rtype, "template", "spec", "containers"])
        containers = ((rs.get("template") or {}).get("spec") or {}).get("containers") or []
        tf = [c for c in containers if c.get("name") == "tensorflow"]
        if not tf:
            problems.append(f"{where}: no container named 'tensorflow' (the operator injects TF_CONFIG only there; "
                            f"found {[c.get('name') for c in containers]})")
        elif "PS" in specs:
            ports = {p.get("name"): p.get("containerPort") for p in tf[0].get("ports") or []}
            if "tfjob-port" not in ports:
                problems.append(f"{where}[tensorflow].ports: no port named 'tfjob-port' (the gRPC port of "
                                "TF_CONFIG's addresses in a parameter-server job)")
    return problems


def document_problems(path_name, doc):
    """Every problem of one manifest document, each prefixed with the file, the kind and the name."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return [f"{path_name}: not a Kubernetes object (apiVersion and kind are required)"]
    name = (doc.get("metadata") or {}).get("name", "?")
    if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
        problems = crd_problems(doc)
    else:
        problems = k8s_schema_problems(doc)
    for path, template in pod_templates(doc):
        problems += pod_policy_problems(path, template)
    if doc["kind"] == "TFJob":
        problems += tfjob_problems(doc)
    return [f"{path_name}: {doc['kind']} {name}: {p}" for p in problems]


def manifest_problems(path, docs=None):
    docs = load_all(path) if docs is None else docs
    if not docs:
        return [f"{rel(path)}: no documents"]
    return [p for doc in docs for p in document_problems(rel(path), doc)]


# --- every manifest ---------------------------------------------------------------------------------

def test_the_glob_finds_every_manifest_of_the_repository():
    found = {rel(p) for p in manifest_paths()}
    expected = {"distribute_k8s/pvc.yaml", "gdmix_lr/distribute_k8s/distribute_k8s_FP32.yaml",
                "wide_and_deep/distribute_k8s/horovod_FP32.yaml", "wide_and_deep/distribute_k8s/horovod_BF16.yaml",
                rel(WITHOUT_OPERATOR), *(rel(p) for p in PS_TFJOBS.values())}
    assert expected <= found, expected - found
    yml = {rel(p) for p in REPO.glob("*/distribute_k8s/*.yml")} | {rel(p) for p in REPO.glob("distribute_k8s/**/*.yml")}
    assert not yml, f"{sorted(yml)}: name manifests *.yaml (the tests glob *.yaml)"


@pytest.mark.parametrize("path", manifest_paths(), ids=rel)
def test_manifest_passes_the_schemas_and_the_pod_policy(path):
    problems = manifest_problems(path)
    assert not problems, "\n".join(problems)


def test_kubernetes_validate_has_the_pinned_schema_version():
    assert kubernetes_validate.__version__ == "1.37.0"  # requirements-dev.txt's pin
    assert KUBERNETES_VERSION in kubernetes_validate.utils.all_versions()


# --- the parameter-server TFJobs --------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def train_spec(model):
    return load_train_module(model).SPEC


def flag_parser(model):
    """MODEL/train.py's own argument parser, as modelzoo.flags.parse builds it (without its validation)."""
    from modelzoo import flags
    spec = train_spec(model)
    parser = flags.build_parser(spec.name, spec.defaults)
    if spec.add_flags:
        spec.add_flags(parser.add_argument_group(spec.name))
    return parser


def parse_train_args(model, argv):
    """(namespace, None) or (None, argparse's error message)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return flag_parser(model).parse_args(argv), None
    except SystemExit:
        return None, err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "argparse exited"


def expand_env(container, text, fields):
    """$(VAR) in TEXT as the kubelet expands it from the container's env: each variable in order, a variable
    referring only to those above it; fieldRef values from FIELDS ({fieldPath: value}). Undefined references
    stay as they are."""
    values = {}
    for var in container.get("env") or []:
        if "value" in var:
            values[var["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                         lambda m: values.get(m.group(1), m.group(0)), str(var["value"]))
        elif "fieldRef" in (var.get("valueFrom") or {}):
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            if path in fields:
                values[var["name"]] = fields[path]
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: values.get(m.group(1), m.group(0)), str(text))


def the_container(template):
    containers = (template.get("spec") or {}).get("containers") or []
    tf = [c for c in containers if c.get("name") == "tensorflow"]
    return tf[0] if tf else (containers[0] if containers else {})


def launcher_split(container):
    """(launcher options, train.py argv) of a container that starts through distribute_k8s/launch.py;
    raises ValueError when it does not."""
    command = [str(a) for a in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if command != ["python", LAUNCHER]:
        raise ValueError(f"command is {command}, not ['python', {LAUNCHER!r}]")
    if "--" not in args:
        raise ValueError("args have no '--' between the launcher's options and train.py's flags")
    sep = args.index("--")
    return args[:sep], args[sep + 1:]


def cpu_cores(quantity):
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def ps_tfjob_problems(path_name, doc, model, bf16):
    """What a parameter-server TFJob of MODEL must be for the launcher, train.py and the operator."""
    problems = []

    def bad(field, message):
        problems.append(f"{path_name}: {dotted(field)}: {message}")

    name = doc["metadata"]["name"]
    specs = doc["spec"]["tfReplicaSpecs"]
    if set(specs) != set(PS_REPLICAS):
        bad(["spec", "tfReplicaSpecs"], f"replica types {sorted(specs)}, expected {sorted(PS_REPLICAS)}")
    run_policy = doc["spec"].get("runPolicy") or {}
    if run_policy.get("cleanPodPolicy") != "Running":
        bad(["spec", "runPolicy", "cleanPodPolicy"], "not Running (the PS and evaluator still running when the chief "
                                                     "has succeeded must be deleted)")
    restarts_of_a_ps_failure = 1 + sum(specs.get(t, {}).get("replicas", 1) for t in ("Chief", "Worker"))
    if run_policy.get("backoffLimit", 0) < restarts_of_a_ps_failure:
        bad(["spec", "runPolicy", "backoffLimit"], f"below {restarts_of_a_ps_failure}, the restarts one PS failure "
                                                   "can cost (the PS, the chief and every worker)")
    if doc["spec"].get("successPolicy", "") != "":
        bad(["spec", "successPolicy"], "not the default (the job succeeds when the chief does)")
    pvc_name = load_one(PVC)["metadata"]["name"]
    reference = None
    for rtype, rs in specs.items():
        base = ["spec", "tfReplicaSpecs", rtype]
        if rs.get("restartPolicy") != "OnFailure":
            bad([*base, "restartPolicy"],
                f"{rs.get('restartPolicy')!r}, not OnFailure (a failed task restarts in place)")
        pod = rs["template"].get("spec") or {}
        c = the_container(rs["template"])
        cbase = [*base, "template", "spec", "containers", "tensorflow"]
        same = {"command": c.get("command"), "args": c.get("args"), "env": c.get("env")}
        if reference is None:
            reference = (rtype, same)
        elif same != reference[1]:
            diff = sorted(k for k in same if same[k] != reference[1][k])
            bad(cbase, f"{', '.join(diff)} differ from {reference[0]}'s: every replica runs the same command "
                       "(TF_CONFIG tells them apart)")
        try:
            launcher_opts, argv = launcher_split(c)
        except ValueError as err:
            bad([*cbase, "command"], str(err))
            continue
        if launcher_opts != ["--script", f"{model}/train.py"]:
            bad([*cbase, "args"], f"launcher options {launcher_opts}, expected ['--script', '{model}/train.py']")
        env = {e["name"]: e for e in c.get("env") or []}
        strategy = env.get("MEM_USAGE_STRATEGY", {}).get("value")
        if strategy not in MEM_USAGE_STRATEGIES:
            bad([*cbase, "env", "MEM_USAGE_STRATEGY"], f"{strategy!r}, not one of {MEM_USAGE_STRATEGIES}")
        job_name_ref = ((env.get("JOB_NAME") or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        if job_name_ref != f"metadata.labels['{JOB_NAME_LABEL}']":
            bad([*cbase, "env", "JOB_NAME"], "not read from the operator's job-name label")
        expanded = [expand_env(c, a, {f"metadata.labels['{JOB_NAME_LABEL}']": name}) for a in argv]
        for text in expanded:
            for var in re.findall(r"\$\(([^)]*)\)", text):
                bad([*cbase, "args"], f"$({var}) is not defined in the container's env")
        args, error = parse_train_args(model, expanded)
        if error:
            bad([*cbase, "args"], f"{model}/train.py's parser refuses them: {error}")
            continue
        if args.bf16 != bf16:
            bad([*cbase, "args"], f"--bf16 is {args.bf16}, expected {bf16}")
        if args.output_dir != f"{MOUNT}/result/{name}":
            bad([*cbase, "args"],
                f"--output_dir {args.output_dir}, expected {MOUNT}/result/{name} (the job's own folder)")
        limits = (c.get("resources") or {}).get("limits") or {}
        if "cpu" in limits and args.intra != cpu_cores(limits["cpu"]):
            bad([*cbase, "resources", "limits", "cpu"], f"{limits['cpu']} CPUs but --intra {args.intra}")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        if ports.get("tfjob-port") != TF_PORT:
            bad([*cbase, "ports"], f"tfjob-port is {ports.get('tfjob-port')}, expected {TF_PORT}")
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes") or []
                  if "persistentVolumeClaim" in v}
        if list(claims.values()) != [pvc_name]:
            bad([*base, "template", "spec", "volumes"], f"claims {sorted(claims.values())}, expected [{pvc_name!r}] "
                                                        "(distribute_k8s/pvc.yaml)")
        mounts = [m["mountPath"] for m in c.get("volumeMounts") or [] if m.get("name") in claims]
        if mounts != [MOUNT]:
            bad([*cbase, "volumeMounts"], f"the claim is mounted at {mounts}, expected [{MOUNT!r}]")
        for flag in ("data_location", "output_dir"):
            if not getattr(args, flag).startswith(MOUNT + "/"):
                bad([*cbase, "args"], f"--{flag} {getattr(args, flag)} is not on the shared volume ({MOUNT})")
        terms = (((pod.get("affinity") or {}).get("podAntiAffinity") or {})
                 .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
        spread = [t["podAffinityTerm"] for t in terms
                  if t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname"
                  and t["podAffinityTerm"]["labelSelector"].get("matchLabels") == {JOB_NAME_LABEL: name}
                  and {(e["key"], e["operator"], tuple(sorted(e.get("values", []))))
                       for e in t["podAffinityTerm"]["labelSelector"].get("matchExpressions", [])}
                  == {(REPLICA_TYPE_LABEL, "In", ("chief", "ps", "worker"))}]
        if not spread:
            bad([*base, "template", "spec", "affinity", "podAntiAffinity"],
                "no preferred term that spreads this job's chief, worker and ps pods over the nodes")
    return problems


def ps_job(model, prec):
    return load_one(PS_TFJOBS[(model, prec)])


@pytest.mark.parametrize("model,prec", sorted(PS_TFJOBS), ids=str)
def test_ps_tfjob_is_what_the_launcher_train_py_and_the_operator_expect(model, prec):
    doc = ps_job(model, prec)
    assert (doc["apiVersion"], doc["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert doc["metadata"]["name"] == PS_JOB_NAMES[(model, prec)]
    assert {t: rs.get("replicas", 1) for t, rs in doc["spec"]["tfReplicaSpecs"].items()} == PS_REPLICAS
    problems = ps_tfjob_problems(rel(PS_TFJOBS[(model, prec)]), doc, model, bf16=prec == "BF16")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("model,prec", sorted(PS_TFJOBS), ids=str)
def test_ps_tfjob_train_flags_have_the_documented_values(model, prec):
    doc = ps_job(model, prec)
    c = the_container(doc["spec"]["tfReplicaSpecs"]["Chief"]["template"])
    _, argv = launcher_split(c)
    args, error = parse_train_args(model, argv)
    assert not error, error
    # the model's own data folder on the volume: its train.py default's last part (./data/taobao -> data/taobao)
    default, _ = parse_train_args(model, [])
    assert args.data_location == f"{MOUNT}/data/{default.data_location.rstrip('/').rsplit('/', 1)[-1]}"
    assert args.protocol == "grpc"
    assert (args.input_layer_partitioner, args.dense_layer_partitioner) == (8, 16)  # MB, KB (DeepRec's units)
    assert (args.save_steps, args.seed, args.inter) == (1000, 2021, 2)
    assert args.workqueue is False  # an option, in the comment only
    assert "--workqueue" in PS_TFJOBS[(model, prec)].read_text()


@pytest.mark.parametrize("model,prec", sorted(PS_TFJOBS), ids=str)
def test_ps_tfjob_containers_use_the_image_placeholder_and_guaranteed_resources(model, prec):
    """The image is the generator's placeholder: the Dockerfile's image under a registry that never resolves
    (.invalid, RFC 2606), so no node pulls a Docker Hub image of that name by accident (--image sets yours)."""
    built = re.search(r"^#\s+docker build -t (\S+) \.$", DOCKERFILE.read_text(), flags=re.M).group(1)
    assert generate_manifests.IMAGE == f"registry.invalid/{built}"
    built = generate_manifests.IMAGE
    workdirs = [line.split()[1] for line in dockerfile_stages()["base"] if line.startswith("WORKDIR")]
    for rtype, rs in ps_job(model, prec)["spec"]["tfReplicaSpecs"].items():
        (c,) = rs["template"]["spec"]["containers"]
        assert c["name"] == "tensorflow", rtype
        assert (c["image"], c["imagePullPolicy"], c["workingDir"]) == (built, "IfNotPresent", workdirs[-1]), rtype
        assert c["resources"]["requests"] == c["resources"]["limits"], rtype  # Guaranteed QoS
        pod = rs["template"]["spec"]
        assert "restartPolicy" not in pod, rtype  # the operator sets it from the replica spec
        ctx = pod["securityContext"]
        assert (ctx["runAsNonRoot"], ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) == (True, 1000, 1000, 1000)
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, rtype
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, rtype


def operator_tf_config(doc, rtype, index, namespace="default"):
    """The TF_CONFIG the training operator injects (training-operator pkg/controller.v1/tensorflow): every
    replica type but the evaluator in the cluster, keyed in lower case, NAME-TYPE-I.NAMESPACE.svc:PORT."""
    name, specs = doc["metadata"]["name"], doc["spec"]["tfReplicaSpecs"]
    cluster = {t.lower(): [f"{name}-{t.lower()}-{i}.{namespace}.svc:{TF_PORT}" for i in range(rs.get("replicas", 1))]
               for t, rs in specs.items() if t != "Evaluator"}
    return json.dumps({"cluster": cluster, "task": {"type": rtype.lower(), "index": index}, "environment": "cloud"})


@pytest.mark.parametrize("model,prec", sorted(PS_TFJOBS), ids=str)
def test_operator_tf_config_is_a_parameter_server_cluster_for_every_task(model, prec):
    from modelzoo import distributed
    doc = ps_job(model, prec)
    roles = []
    for rtype, rs in doc["spec"]["tfReplicaSpecs"].items():
        for i in range(rs.get("replicas", 1)):
            cluster = distributed.from_environment({"TF_CONFIG": operator_tf_config(doc, rtype, i)})
            assert cluster is not None and cluster.num_ps == PS_REPLICAS["PS"], (rtype, i)
            roles.append(cluster.name)
    assert sorted(roles) == sorted(f"{t.lower()}:{i}" for t, n in PS_REPLICAS.items() for i in range(n))


def train_py_refusal(model, doc, rtype, monkeypatch):
    """What train.py itself says of the flags of DOC's RTYPE task: its parser, then modelzoo.flags.validate (the
    refusals, with the model's name and SPEC's has_mlp as runner.main passes them) with the TF_CONFIG of that task
    in the environment (the parameter-server flags depend on it); None when it accepts them."""
    from modelzoo import flags
    _, argv = launcher_split(the_container(doc["spec"]["tfReplicaSpecs"][rtype]["template"]))
    args, error = parse_train_args(model, argv)
    if error:
        return error
    monkeypatch.setenv("TF_CONFIG", operator_tf_config(doc, rtype, 0))
    spec = train_spec(model)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            flags.validate(args, spec.speed_defaults, spec.defaults, spec.name, spec.has_mlp)
    except flags.FlagError as err:
        return err.message
    return None


@pytest.mark.parametrize("rtype", sorted(PS_REPLICAS))
@pytest.mark.parametrize("model,prec", sorted(PS_TFJOBS), ids=str)
def test_ps_tfjob_train_flags_pass_train_py_validation_under_the_operators_tf_config(model, prec, rtype,
                                                                                     monkeypatch):
    refusal = train_py_refusal(model, ps_job(model, prec), rtype, monkeypatch)
    assert refusal is None, f"{rel(PS_TFJOBS[(model, prec)])}: {rtype}: train.py refuses the flags: {refusal}"


def test_a_bf16_tfjob_of_a_model_without_an_mlp_is_refused_by_its_train_py(monkeypatch):
    """Why lr and fm have no BF16 manifest, and that the check above fails on one: rendered anyway, its --bf16
    is refused in every task by lr/train.py's own validation (ModelSpec.has_mlp False)."""
    path = REPO / "lr" / "distribute_k8s" / "distribute_k8s_BF16.yaml"
    doc = yaml.safe_load(generate_manifests.ps_tfjob(PS_ENTRIES["lr"], "BF16", path))
    for rtype in PS_REPLICAS:
        refusal = train_py_refusal("lr", doc, rtype, monkeypatch)
        assert refusal and "--bf16 acts on a model's MLP layers, and lr has none" in refusal, (rtype, refusal)


def without_bf16_and_renamed(bf16_doc, fp32_name):
    same = copy.deepcopy(bf16_doc)
    for rs in same["spec"]["tfReplicaSpecs"].values():
        for c in rs["template"]["spec"]["containers"]:
            c["args"] = [a for a in c.get("args", []) if a != "--bf16"]
    return yaml.safe_load(yaml.safe_dump(same).replace(bf16_doc["metadata"]["name"], fp32_name))


@pytest.mark.parametrize("model", BF16_PS_MODELS)
def test_bf16_manifest_is_the_fp32_one_with_bf16_and_other_names(model):
    fp32, bf16 = ps_job(model, "FP32"), ps_job(model, "BF16")
    for rtype, rs in bf16["spec"]["tfReplicaSpecs"].items():
        assert rs["template"]["spec"]["containers"][0]["args"].count("--bf16") == 1, rtype
    assert without_bf16_and_renamed(bf16, fp32["metadata"]["name"]) == fp32


@pytest.mark.parametrize("model,prec", sorted(PS_TFJOBS), ids=str)
def test_ps_tfjob_says_how_to_create_follow_delete_and_run_it_locally(model, prec):
    path, name = PS_TFJOBS[(model, prec)], PS_JOB_NAMES[(model, prec)]
    text = path.read_text()
    for line in ("kubectl create -f distribute_k8s/pvc.yaml", f"kubectl create -f {rel(path)}",
                 f"kubectl logs -f {name}-chief-0", f"kubectl delete -f {rel(path)}",
                 f"python -m distribute_k8s.local_run {rel(path)} --workers 2 --ps 1"):
        assert line in text, line


@pytest.mark.parametrize("model,prec", sorted(PS_TFJOBS), ids=str)
def test_ps_tfjob_says_how_its_data_gets_into_its_data_folder(model, prec):
    """Criteo's file is copied into the model's data folder (the folder of --data_location); the datasets that
    exist only as generated rows (Taobao-, Ali-CCP-shaped) have nothing to copy: the header says the chief
    generates them there, and names no Criteo step."""
    text, entry = PS_TFJOBS[(model, prec)].read_text(), PS_ENTRIES[model]
    header = text.split("apiVersion:")[0]
    _, argv = launcher_split(the_container(ps_job(model, prec)["spec"]["tfReplicaSpecs"]["Chief"]["template"]))
    folder = parse_train_args(model, argv)[0].data_location
    if entry.dataset().copy:
        # (kubectl cp into a folder that does not exist fails: it is created first)
        assert (f"kubectl exec modelzoo-shell -- mkdir -p {folder}\n"
                f"#   kubectl cp train.txt modelzoo-shell:{folder}/train.txt") in header
        assert f"Without data in {folder}/" in header
    else:
        assert "kubectl cp" not in header and "criteo" not in header.lower(), header
        assert f"No data to copy: while {folder}/ is empty the chief generates" in header, header
        rows = f"{parse_train_args(model, [])[0].generate_rows:,}"
        assert f"generates {rows} " in " ".join(header.replace("# ", "").split()), header


def test_the_generated_datasets_models_read_their_own_folders():
    """din reads the Taobao-shaped folder and esmm/mmoe/ple the Ali-CCP-shaped one (their ModelSpec defaults),
    not Criteo's."""
    folders = {model: PS_ENTRIES[model].data_folder() for model in ("dlrm", "din", "esmm", "mmoe", "ple")}
    assert folders == {"dlrm": f"{MOUNT}/data/criteo", "din": f"{MOUNT}/data/taobao",
                       "esmm": f"{MOUNT}/data/aliccp", "mmoe": f"{MOUNT}/data/aliccp", "ple": f"{MOUNT}/data/aliccp"}


def test_launcher_and_scripts_of_every_manifest_exist():
    scripts = set()
    for path in manifest_paths():
        for doc in load_all(path):
            for _, template in pod_templates(doc):
                for c in (template.get("spec") or {}).get("containers") or []:
                    if c.get("command") == ["python", LAUNCHER]:
                        opts, _ = launcher_split(c)
                        scripts.add(opts[opts.index("--script") + 1])
    assert {"dlrm/train.py", "wide_and_deep/train.py", "gdmix_lr/train.py"} <= scripts
    for script in sorted(scripts) + [LAUNCHER]:  # the scripts, and the manifests' entry point
        assert (REPO / script).is_file(), script


def test_the_launcher_accepts_every_manifests_options_and_allocator():
    from distribute_k8s import launch
    assert set(MEM_USAGE_STRATEGIES) <= set(launch.STRATEGIES)
    for path in manifest_paths():
        for doc in load_all(path):
            for field, template in pod_templates(doc):
                for c in (template.get("spec") or {}).get("containers") or []:
                    if c.get("command") != ["python", LAUNCHER]:
                        continue
                    opts, _ = launcher_split(c)
                    parsed = launch.parser().parse_args(opts)  # argparse exits on an unknown option
                    assert (REPO / parsed.script).is_file(), (rel(path), dotted(field))
                    strategy = env_values(c).get("MEM_USAGE_STRATEGY")  # None: the launcher's default
                    # a strategy the launcher does not know would exit 2 in every pod
                    changes, _ = launch.memory_settings(strategy, None, {},
                                                        find=lambda *a, **k: "/lib/libjemalloc.so.2")
                    if strategy in (None, "jemalloc"):
                        assert "libjemalloc" in changes["LD_PRELOAD"], (rel(path), dotted(field), strategy)


@pytest.mark.parametrize("model,prec", sorted(PS_TFJOBS), ids=str)
def test_local_run_plans_the_manifest_as_its_header_says(model, prec, tmp_path):
    # `python -m distribute_k8s.local_run MANIFEST --workers 2 --ps 1`, planned only (nothing is started).
    from distribute_k8s import local_run
    path = PS_TFJOBS[(model, prec)]
    opts = local_run.parser().parse_args([str(path), "--workers", "2", "--ps", "1", "--root", str(tmp_path)])
    job, replicas, _ = local_run.plan_from_args(opts, [], {})
    names = sorted(r.name for r in replicas)
    assert names == ["chief-0", "evaluator-0", "ps-0", "worker-0", "worker-1"], names
    for r in replicas:
        assert LAUNCHER in " ".join(r.argv) and f"{model}/train.py" in r.argv, r.argv
        assert f"/result/{PS_JOB_NAMES[(model, prec)]}" in " ".join(r.argv), r.argv  # $(JOB_NAME) expanded


# --- the manifest for clusters without the training operator ----------------------------------------

def wo_docs():
    docs = load_all(WITHOUT_OPERATOR)
    services = [d for d in docs if d["kind"] == "Service"]
    jobs = [d for d in docs if d["kind"] == "Job"]
    assert len(services) == 1 and len(services) + len(jobs) == len(docs), [d["kind"] for d in docs]
    return services[0], jobs


def env_values(container):
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def contract_tf_config(env):
    """TF_CONFIG from the env contract of distribute_k8s/launch.py (without the operator): the cluster of
    TF_REPLICAS (evaluator excluded) at <TF_JOB_NAME>-<role>-<i>.<TF_JOB_NAME>:<TF_PORT>, the task of TF_TASK."""
    job, port = env["TF_JOB_NAME"], int(env["TF_PORT"])
    replicas = {role: int(n) for role, n in (part.split(":") for part in env["TF_REPLICAS"].split(","))}
    cluster = {role: [f"{job}-{role}-{i}.{job}:{port}" for i in range(n)]
               for role, n in replicas.items() if role != "evaluator"}
    role, index = env["TF_TASK"].split(":")
    return {"cluster": cluster, "task": {"type": role, "index": int(index)}}


def wo_pods():
    """[(Job, pod index, hostname, env as the kubelet expands it)] of every pod the manifest creates."""
    _, jobs = wo_docs()
    pods = []
    for job in jobs:
        spec = job["spec"]
        c = the_container(spec["template"])
        for i in range(spec.get("completions", 1)):
            fields = {COMPLETION_INDEX: str(i)}
            env = {name: expand_env(c, f"$({name})", fields) for name in env_values(c)}
            hostname = f"{job['metadata']['name']}-{i}"  # an Indexed Job's pod hostname: <job name>-<index>
            pods.append((job, i, hostname, env))
    return pods


def test_without_operator_service_is_headless_and_selects_every_pod():
    service, jobs = wo_docs()
    spec = service["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True
    assert [p["port"] for p in spec["ports"]] == [TF_PORT]
    for job in jobs:
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert spec["selector"].items() <= labels.items(), job["metadata"]["name"]
        assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]


def test_without_operator_jobs_are_indexed_one_per_role_and_run_to_completion():
    service, jobs = wo_docs()
    env = env_values(the_container(jobs[0]["spec"]["template"]))
    replicas = dict(part.split(":") for part in env["TF_REPLICAS"].split(","))
    assert replicas == {"chief": "1", "worker": "2", "ps": "1", "evaluator": "1"}
    assert {j["metadata"]["name"] for j in jobs} == {f"{env['TF_JOB_NAME']}-{role}" for role in replicas}
    for job in jobs:
        spec, name = job["spec"], job["metadata"]["name"]
        role = name[len(env["TF_JOB_NAME"]) + 1:]
        assert spec["completionMode"] == "Indexed", name
        assert spec["completions"] == spec["parallelism"] == int(replicas[role]), name  # all tasks at once
        assert spec["template"]["spec"]["restartPolicy"] == "OnFailure", name
        c = the_container(spec["template"])
        job_env = env_values(c)
        for key in ("TF_JOB_NAME", "TF_REPLICAS", "TF_PORT"):
            assert job_env[key] == env[key], (name, key)
        assert job_env["TF_TASK"] == f"{role}:$(TF_TASK_INDEX)", name
        index_var = next(e for e in c["env"] if e["name"] == "TF_TASK_INDEX")
        assert index_var["valueFrom"]["fieldRef"]["fieldPath"] == COMPLETION_INDEX, name
        assert [p["containerPort"] for p in c["ports"]] == [int(env["TF_PORT"])] == [TF_PORT], name
        assert service["metadata"]["name"] == env["TF_JOB_NAME"]


def test_without_operator_env_contract_gives_every_pod_its_own_task_and_reachable_addresses():
    pods = wo_pods()
    dns = {f"{hostname}.{job['spec']['template']['spec']['subdomain']}" for job, _, hostname, _ in pods}
    tasks = []
    for _job, _i, hostname, env in pods:
        unresolved = [k for k, v in env.items() if "$(" in v]
        assert not unresolved, (hostname, unresolved)  # every reference defined above its use
        assert env["POD_NAME"] == hostname  # the pod's hostname, as the launcher may parse it
        config = contract_tf_config(env)
        tasks.append((config["task"]["type"], config["task"]["index"]))
        assert hostname == f"{env['TF_JOB_NAME']}-{config['task']['type']}-{config['task']['index']}"
        for addresses in config["cluster"].values():
            for address in addresses:
                host, port = address.rsplit(":", 1)
                assert host in dns and int(port) == TF_PORT, address  # a pod of this file answers there
        assert "evaluator" not in config["cluster"]  # as the operator does
    assert sorted(tasks) == sorted({(role, i) for role, n in (("chief", 1), ("worker", 2), ("ps", 1),
                                                              ("evaluator", 1)) for i in range(n)})
    from distribute_k8s import launch
    from modelzoo import distributed
    for _, _, hostname, env in pods:
        built = launch.tf_config_from_job_env(env)  # what launch.py gives train.py in this pod
        assert {k: built[k] for k in ("cluster", "task")} == contract_tf_config(env), hostname
        without_task = {k: v for k, v in env.items() if k != "TF_TASK"}  # its fallback: POD_NAME
        assert launch.tf_config_from_job_env(without_task)["task"] == built["task"], hostname
        cluster = distributed.from_environment({"TF_CONFIG": json.dumps(built)})
        assert cluster is not None and cluster.name == env["TF_TASK"], hostname


def test_without_operator_jobs_run_the_dlrm_tfjobs_training_command():
    _, jobs = wo_docs()
    fp32 = ps_job("dlrm", "FP32")
    tfjob_container = the_container(fp32["spec"]["tfReplicaSpecs"]["Chief"]["template"])
    tf_opts, tf_argv = launcher_split(tfjob_container)
    tf_args, _ = parse_train_args("dlrm", tf_argv)
    for job in jobs:
        c = the_container(job["spec"]["template"])
        assert c["command"] == tfjob_container["command"]
        opts, argv = launcher_split(c)
        assert opts == tf_opts
        expanded = [expand_env(c, a, {}) for a in argv]
        args, error = parse_train_args("dlrm", expanded)
        assert not error, error
        assert args.output_dir == f"{MOUNT}/result/{env_values(c)['TF_JOB_NAME']}"
        assert vars(args) | {"output_dir": None} == vars(tf_args) | {"output_dir": None}  # the same training
        assert env_values(c)["MEM_USAGE_STRATEGY"] == env_values(tfjob_container)["MEM_USAGE_STRATEGY"]
        assert c["resources"] == tfjob_container["resources"], job["metadata"]["name"]


# --- the image: the launcher and its allocator --------------------------------------------------------

def test_every_stage_with_the_models_also_has_the_launcher():
    stages = dockerfile_stages()
    copies = {name: [line.split()[1:] for line in lines if line.startswith("COPY ") and "--from" not in line]
              for name, lines in stages.items()}
    model_stages = [name for name, c in copies.items() if ["dlrm/", "dlrm/"] in c]
    assert list(stages)[-1] in model_stages  # the default image, of the TFJobs
    for name in model_stages:
        assert ["distribute_k8s/", "distribute_k8s/"] in copies[name], name
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not any(line.strip("/").startswith("distribute_k8s") for line in ignored)


def test_base_stage_installs_a_pinned_jemalloc_for_the_launcher():
    base = " ".join(dockerfile_stages()["base"])
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*\blibjemalloc2=\d\S*", base), base
    assert "rm -rf /var/lib/apt/lists/*" in base
    text = (REPO / LAUNCHER).read_text()
    assert "MEM_USAGE_STRATEGY" in text and "libjemalloc.so.2" in text  # the file libjemalloc2 installs


# --- each check can fail ------------------------------------------------------------------------------

DLRM_FP32 = PS_TFJOBS[("dlrm", "FP32")]


def mutated(path, change, index=0):
    docs = copy.deepcopy(load_all(path))
    change(docs[index])
    return docs


def problems_after(path, change, index=0):
    return manifest_problems(path, mutated(path, change, index))


def worker_container(doc):
    return doc["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]


def assert_reported(problems, *words):
    assert problems, "the validator reported nothing"
    hits = [p for p in problems if all(w in p for w in words)]
    assert hits, f"no problem names {words}:\n" + "\n".join(problems)


def test_an_unknown_tfjob_field_is_reported_with_file_and_field():
    problems = problems_after(DLRM_FP32, lambda d: d["spec"].update(cleanPodPolicy="Running"))  # not under runPolicy
    assert_reported(problems, rel(DLRM_FP32), "TFJob dlrm-fp32", "spec:", "'cleanPodPolicy' was unexpected")


def test_an_unknown_replica_type_and_a_bad_enum_are_reported():
    def change(d):
        d["spec"]["tfReplicaSpecs"]["Launcher"] = copy.deepcopy(d["spec"]["tfReplicaSpecs"]["Worker"])
        d["spec"]["runPolicy"]["cleanPodPolicy"] = "Sometimes"
        d["spec"]["tfReplicaSpecs"]["PS"]["restartPolicy"] = "Maybe"
    problems = problems_after(DLRM_FP32, change)
    assert_reported(problems, rel(DLRM_FP32), "spec.tfReplicaSpecs", "'Launcher'")
    assert_reported(problems, rel(DLRM_FP32), "spec.runPolicy.cleanPodPolicy", "'Sometimes'")
    assert_reported(problems, rel(DLRM_FP32), "spec.tfReplicaSpecs.PS.restartPolicy", "'Maybe'")


def test_an_unknown_field_in_a_pod_template_is_reported_through_the_kubernetes_schema():
    problems = problems_after(DLRM_FP32, lambda d: worker_container(d).update(imagePullPolicyy="Always"))
    assert_reported(problems, rel(DLRM_FP32), "spec.tfReplicaSpecs.Worker.template.spec.containers[0]",
                    "'imagePullPolicyy' was unexpected", f"Kubernetes {KUBERNETES_VERSION[:4]}")
    problems = problems_after(DLRM_FP32, lambda d: worker_container(d)["resources"]["limits"].update(cpu=["8"]))
    assert_reported(problems, "spec.tfReplicaSpecs.Worker.template.spec.containers[0].resources.limits.cpu")


def test_latest_or_missing_image_tags_are_reported():
    problems = problems_after(DLRM_FP32, lambda d: worker_container(d).update(image="modelzoo/modelzoo:latest"))
    assert_reported(problems, rel(DLRM_FP32), "spec.tfReplicaSpecs.Worker.template.spec.containers[0].image",
                    "'latest'")
    problems = problems_after(DLRM_FP32, lambda d: worker_container(d).update(image="registry:5000/modelzoo"))
    assert_reported(problems, "containers[0].image", "has no tag")


def test_a_renamed_tensorflow_container_is_reported():
    problems = problems_after(DLRM_FP32, lambda d: worker_container(d).update(name="trainer"))
    assert_reported(problems, rel(DLRM_FP32), "spec.tfReplicaSpecs.Worker.template.spec.containers",
                    "no container named 'tensorflow'")


def test_dropped_limits_root_and_privilege_escalation_are_reported():
    def change(d):
        del worker_container(d)["resources"]["limits"]
        d["spec"]["tfReplicaSpecs"]["PS"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
        del d["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["securityContext"]
    problems = problems_after(DLRM_FP32, change)
    assert_reported(problems, rel(DLRM_FP32), "Worker.template.spec.containers[0].resources.limits",
                    "no cpu and no memory")
    assert_reported(problems, "PS.template.spec.containers[0].securityContext.runAsNonRoot")
    assert_reported(problems, "Chief.template.spec.containers[0].securityContext.allowPrivilegeEscalation")


def test_core_kinds_and_mpijobs_are_checked_strictly_too():
    problems = problems_after(PVC, lambda d: d["spec"].update(storageClass="nfs"))  # storageClassName
    assert_reported(problems, "distribute_k8s/pvc.yaml", "PersistentVolumeClaim modelzoo-data", "spec:",
                    "'storageClass' was unexpected")
    problems = problems_after(WITHOUT_OPERATOR, lambda d: d["spec"].update(completionsMode="Indexed"), index=2)
    assert_reported(problems, rel(WITHOUT_OPERATOR), "Job dlrm-worker", "'completionsMode' was unexpected")
    horovod = REPO / "wide_and_deep" / "distribute_k8s" / "horovod_FP32.yaml"
    problems = problems_after(horovod, lambda d: d["spec"].update(slotPerWorker=1))
    assert_reported(problems, rel(horovod), "MPIJob", "'slotPerWorker' was unexpected")
    problems = problems_after(horovod, lambda d: d["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
                              ["containers"][0].update(image="modelzoo/modelzoo-horovod"))
    assert_reported(problems, rel(horovod), "spec.mpiReplicaSpecs.Worker.template.spec.containers[0].image")


def ps_problems_after(change, prec="FP32"):
    doc = copy.deepcopy(ps_job("dlrm", prec))
    change(doc)
    return ps_tfjob_problems(rel(PS_TFJOBS[("dlrm", prec)]), doc, "dlrm", bf16=prec == "BF16")


def test_ps_checks_report_differing_replicas_wrong_scripts_and_refused_flags():
    def differ(d):
        worker_container(d)["args"] = [a if a != "2021" else "7" for a in worker_container(d)["args"]]
    assert_reported(ps_problems_after(differ), rel(DLRM_FP32), "Worker", "args differ from Chief's")

    def script(d):
        for rs in d["spec"]["tfReplicaSpecs"].values():
            rs["template"]["spec"]["containers"][0]["args"][1] = "wide_and_deep/train.py"
    assert_reported(ps_problems_after(script), "args", "expected ['--script', 'dlrm/train.py']")

    def unknown_flag(d):
        for rs in d["spec"]["tfReplicaSpecs"].values():
            rs["template"]["spec"]["containers"][0]["args"] += ["--wrokqueue"]
    assert_reported(ps_problems_after(unknown_flag), "parser refuses them", "--wrokqueue")

    def direct(d):
        worker_container(d)["command"] = ["python", "dlrm/train.py"]
    assert_reported(ps_problems_after(direct), "Worker.template.spec.containers.tensorflow.command", LAUNCHER)


def test_ps_checks_report_placement_volume_threads_and_replicas():
    def affinity(d):
        term = d["spec"]["tfReplicaSpecs"]["PS"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        term["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["labelSelector"][
            "matchExpressions"][0]["values"] = ["chief", "worker"]
    assert_reported(ps_problems_after(affinity), "PS.template.spec.affinity.podAntiAffinity", "ps pods")

    def claim(d):
        d["spec"]["tfReplicaSpecs"]["Evaluator"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"][
            "claimName"] = "data"
    assert_reported(ps_problems_after(claim), "Evaluator.template.spec.volumes", "'modelzoo-data'")

    def threads(d):
        worker_container(d)["resources"]["limits"]["cpu"] = "4"
    assert_reported(ps_problems_after(threads), "Worker.template.spec.containers.tensorflow.resources.limits.cpu",
                    "--intra 8")

    def no_evaluator(d):
        del d["spec"]["tfReplicaSpecs"]["Evaluator"]
    assert_reported(ps_problems_after(no_evaluator), "spec.tfReplicaSpecs", "'Evaluator'")
    bf16 = ps_tfjob_problems(rel(DLRM_FP32), ps_job("dlrm", "FP32"), "dlrm", bf16=True)
    assert_reported(bf16, "--bf16 is False, expected True")


def test_bf16_comparison_sees_any_other_difference():
    fp32, bf16 = ps_job("dlrm", "FP32"), copy.deepcopy(ps_job("dlrm", "BF16"))
    bf16["spec"]["tfReplicaSpecs"]["PS"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "9Gi"
    assert without_bf16_and_renamed(bf16, fp32["metadata"]["name"]) != fp32


def test_argparse_errors_are_returned_not_raised():
    args, error = parse_train_args("dlrm", ["--intra", "many"])
    assert args is None and "--intra" in error
    assert isinstance(flag_parser("dlrm"), argparse.ArgumentParser)


# --- distribute_k8s/generate_manifests.py: the FP32/BF16 pairs from one entry per model -----------------

GENERATED_HEADER = "# Generated by distribute_k8s/generate_manifests.py"


def test_committed_manifests_are_the_generators_output():
    diff = io.StringIO()
    stale = generate_manifests.check(generate_manifests.manifests(), diff)
    assert not stale, (f"{stale} differ from distribute_k8s/generate_manifests.py's output: edit the generator and "
                       f"run `python distribute_k8s/generate_manifests.py`\n{diff.getvalue()}")


def test_the_generator_owns_every_fp32_and_bf16_manifest_but_the_declared_fp32_only_ones():
    owned = {rel(p) for p in generate_manifests.manifests()}
    pairs = {rel(p) for p in REPO.glob("*/distribute_k8s/*_FP32.yaml")} | {
        rel(p) for p in REPO.glob("*/distribute_k8s/*_BF16.yaml")}
    assert {rel(p) for p in PS_TFJOBS.values()} <= owned
    hand_written = pairs - owned
    assert hand_written == set(generate_manifests.FP32_ONLY), (
        f"{sorted(hand_written - set(generate_manifests.FP32_ONLY))}: not written by distribute_k8s/"
        f"generate_manifests.py: add the model to its MODELS table (or, FP32 only, to FP32_ONLY with the reason)")
    for path in owned:
        assert (REPO / path).read_text().startswith(GENERATED_HEADER), path
    for path in hand_written:
        assert GENERATED_HEADER not in (REPO / path).read_text(), path


def test_every_fp32_manifest_has_its_bf16_twin_and_back():
    fp32 = {rel(p) for p in REPO.glob("*/distribute_k8s/*_FP32.yaml")}
    bf16 = {rel(p) for p in REPO.glob("*/distribute_k8s/*_BF16.yaml")}
    assert fp32, "no *_FP32.yaml manifest found"
    exempt = generate_manifests.without_bf16_twin()  # FP32_ONLY and the generated ones of models without an MLP
    missing = {p.replace("_FP32.yaml", "_BF16.yaml") for p in fp32 - set(exempt)} - bf16
    assert not missing, (f"{sorted(missing)}: missing BF16 twin(s) of the FP32 manifests "
                         f"(distribute_k8s/generate_manifests.py)")
    orphans = {p.replace("_BF16.yaml", "_FP32.yaml") for p in bf16} - fp32
    assert not orphans, f"{sorted(orphans)}: missing FP32 twin(s) of BF16 manifests"
    for path, why in exempt.items():
        assert (REPO / path).is_file() and why, path  # a stale exemption would hide a missing twin
        assert not (REPO / path.replace("_FP32.yaml", "_BF16.yaml")).exists(), path  # nor a twin that is there
    assert {"lr/distribute_k8s/distribute_k8s_FP32.yaml", "fm/distribute_k8s/distribute_k8s_FP32.yaml"} <= set(exempt)


@pytest.mark.parametrize("model", PS_MODELS)
def test_a_model_has_bf16_manifests_exactly_when_its_spec_has_an_mlp(model):
    """--bf16 computes the MLP layers in bfloat16 and train.py refuses it without them (ModelSpec.has_mlp):
    a model has the BF16 TFJob iff its SPEC has an MLP, and the FP32 header of one without says why."""
    has_mlp = train_spec(model).has_mlp
    assert ((model, "BF16") in PS_TFJOBS) == has_mlp
    header = PS_TFJOBS[(model, "FP32")].read_text().split("apiVersion:")[0]
    assert ("No BF16 twin:" in header and "has no MLP" in header) == (not has_mlp), header
    assert ("distribute_k8s_BF16.yaml is this file with --bf16" in header) == has_mlp


def test_the_bf16_decision_reads_the_spec_not_the_model_name(monkeypatch):
    """The generator asks each model's SPEC: with has_mlp flipped for every model (names unchanged) DLRM loses its
    BF16 files and lr gains them."""
    import dataclasses
    real = generate_manifests.model_spec
    monkeypatch.setattr(generate_manifests, "model_spec",
                        lambda folder: dataclasses.replace(real(folder), has_mlp=not real(folder).has_mlp))
    flipped = {rel(p) for p in generate_manifests.manifests()}
    assert "dlrm/distribute_k8s/distribute_k8s_FP32.yaml" in flipped
    assert "dlrm/distribute_k8s/distribute_k8s_BF16.yaml" not in flipped
    assert {"lr/distribute_k8s/distribute_k8s_BF16.yaml", "fm/distribute_k8s/distribute_k8s_BF16.yaml"} <= flipped
    assert "dlrm/distribute_k8s/distribute_k8s_FP32.yaml" in generate_manifests.without_bf16_twin()


def test_generated_bf16_differs_from_fp32_only_by_bf16_names_and_the_bf16_comments():
    for path, text in generate_manifests.manifests().items():
        if "_BF16" not in path.name:
            continue
        fp32_text = generate_manifests.manifests()[path.with_name(path.name.replace("_BF16", "_FP32"))]
        def body(t):
            return [line for line in t.split("\n") if not line.lstrip().startswith("#")]
        flags = [line for line in body(text) if line.strip() == "- --bf16"]
        renamed = [line.replace("-bf16", "-fp32") for line in body(text) if line.strip() != "- --bf16"]
        assert renamed == body(fp32_text), rel(path)  # every other line the same, but the names
        assert flags and not any("--bf16" in line for line in body(fp32_text)), rel(path)


def test_check_mode_exits_1_with_a_diff_when_a_committed_manifest_differs(monkeypatch, capsys):
    assert generate_manifests.main(["--check"]) == 0
    real = generate_manifests.manifests()
    edited = dict(real)
    edited[DLRM_FP32] = real[DLRM_FP32].replace("--save_steps\n                - \"1000\"",
                                                "--save_steps\n                - \"500\"")
    assert edited[DLRM_FP32] != real[DLRM_FP32]
    monkeypatch.setattr(generate_manifests, "manifests", lambda **images: edited)
    assert generate_manifests.main(["--check"]) == 1
    out, err = capsys.readouterr()
    assert f"--- {rel(DLRM_FP32)} (committed)" in out and '+                - "500"' in out, out
    assert rel(DLRM_FP32) in err and "python distribute_k8s/generate_manifests.py" in err, err
    assert DLRM_FP32.read_text() == real[DLRM_FP32]  # --check writes nothing


def test_write_mode_writes_only_what_differs(monkeypatch, tmp_path, capsys):
    target, same = tmp_path / "m" / "distribute_k8s_FP32.yaml", tmp_path / "same.yaml"
    same.write_text("kept\n")
    monkeypatch.setattr(generate_manifests, "REPO", tmp_path)
    monkeypatch.setattr(generate_manifests, "manifests", lambda **images: {target: "new\n", same: "kept\n"})
    assert generate_manifests.main([]) == 0
    assert target.read_text() == "new\n" and capsys.readouterr().out == "wrote m/distribute_k8s_FP32.yaml\n"


def test_a_criteo_model_with_dlrms_flags_is_one_entry_whose_tfjob_is_dlrms_with_its_names():
    # dcn_v2 (MODELS' last entry, written once dcn_v2/train.py exists) rendered now, whether or not it has landed.
    (dcn,) = [m for m in generate_manifests.MODELS if m.folder == "dcn_v2"]
    assert dcn.requires == "dcn_v2/train.py" and dcn.present() == (REPO / "dcn_v2" / "train.py").is_file()
    (dlrm,) = [m for m in generate_manifests.MODELS if m.folder == "dlrm"]
    for prec in ("FP32", "BF16"):
        path = REPO / "dcn_v2" / "distribute_k8s" / f"distribute_k8s_{prec}.yaml"
        doc = yaml.safe_load(generate_manifests.ps_tfjob(dcn, prec, path))
        problems = document_problems(rel(path), doc)
        problems += ps_tfjob_problems(rel(path), yaml.safe_load(yaml.safe_dump(doc).replace("dcn_v2/", "dlrm/")),
                                      "dlrm", bf16=prec == "BF16")  # train.py's checks, with DLRM's parser
        assert not problems, "\n".join(problems)
        assert doc["metadata"]["name"] == f"dcn-v2-{prec.lower()}"
        renamed = yaml.safe_dump(doc).replace("dcn-v2", "dlrm").replace("dcn_v2/", "dlrm/")
        assert yaml.safe_load(renamed) == ps_job("dlrm", prec), prec
    if not dcn.present():
        assert not [p for p in generate_manifests.manifests() if "dcn_v2" in str(p)]


def test_templates_refuse_unknown_unused_and_multiline_inline_values():
    fill = generate_manifests.fill
    assert fill("a: {{x}}\n  {{block}}\nb", x="1", block="c\n\nd") == "a: 1\n  c\n\n  d\nb"
    assert fill("a\n  {{block}}\nb", block="") == "a\nb"  # an empty block drops its line
    with pytest.raises(KeyError, match="placeholder {{y}} has no value"):
        fill("a: {{y}}", x="1")
    with pytest.raises(KeyError, match="not in the template"):
        fill("a: {{x}}", x="1", z="2")
    with pytest.raises(ValueError, match="inline"):
        fill("a: {{x}}", x="1\n2")
    with pytest.raises(ValueError, match="does not read back"):
        generate_manifests.scalar("yes")  # YAML would read a boolean
    assert generate_manifests.scalar("8") == '"8"'
    assert generate_manifests.scalar("/mnt/x/$(JOB_NAME)") == "/mnt/x/$(JOB_NAME)"


def test_the_generator_writes_the_image_it_is_given_everywhere():
    """--image / --horovod_image: every container of the generated manifests runs the given image; the committed
    files hold the placeholder that no node can pull."""
    outputs = generate_manifests.manifests(image="reg.example.com/mz:1.2", horovod_image="reg.example.com/mzh:1.2")
    images = {c["image"] for text in outputs.values() for doc in yaml.safe_load_all(text) if doc
              for _, template in pod_templates(doc) for c in template["spec"]["containers"]}
    assert images == {"reg.example.com/mz:1.2", "reg.example.com/mzh:1.2"}
    committed = {c["image"] for path in manifest_paths() for doc in load_all(path)
                 for _, template in pod_templates(doc) for c in (template.get("spec") or {}).get("containers") or []}
    assert committed == {generate_manifests.IMAGE, generate_manifests.HOROVOD_IMAGE}, committed
    assert all(image.split("/")[0].endswith(".invalid") for image in committed)


@pytest.mark.parametrize("model,prec", sorted(PS_TFJOBS), ids=str)
def test_ps_tfjob_grace_period_covers_the_measured_checkpoint_save(model, prec):
    """The chief saves a final checkpoint on SIGTERM: every pod's grace period is GRACE_FACTOR times the save of
    the default tables measured by benchmarks/checkpoint_save_time.py (the default 30 s did not cover W&D's
    2.7 GB, 28-49 s on a local disk), and the header says so."""
    entry = next(m for m in generate_manifests.MODELS if m.folder == model)
    seconds, size, _ = entry.save_time()
    grace = entry.grace_seconds()
    assert grace >= max(60, generate_manifests.GRACE_FACTOR * seconds)
    for rtype, rs in ps_job(model, prec)["spec"]["tfReplicaSpecs"].items():
        assert rs["template"]["spec"]["terminationGracePeriodSeconds"] == grace, rtype
    assert f"terminationGracePeriodSeconds {grace} s" in PS_TFJOBS[(model, prec)].read_text()

"""The Kubernetes path of gdmix_lr: the TFJob manifest (Kubeflow Training Operator, kubeflow.org/v1), the
shared PVC and the Dockerfile's default image. Nothing here needs a cluster or Docker: the manifest is
parsed and checked against what the operator and gdmix_lr/train.py will do with it."""
import ast
import importlib.metadata
import importlib.util
import json
import re
import sys

import pytest
import yaml

from conftest import K8S_JOB_NAME_LABEL as JOB_NAME_LABEL, REPO, dockerfile_stages, expand_env_refs

sys.path.insert(0, str(REPO))

K8S = REPO / "gdmix_lr" / "distribute_k8s"
MANIFEST = K8S / "distribute_k8s_FP32.yaml"
PVC = REPO / "distribute_k8s" / "pvc.yaml"
DOCKERFILE = REPO / "Dockerfile"
REQUIREMENTS = REPO / "requirements.txt"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"  # value: the replica type in lower case
TF_PORT = 2222  # the operator's default tfjob-port, used in the TF_CONFIG addresses

# Field names of kubeflow.org/v1 TFJob (training-operator pkg/apis/kubeflow.org/v1): a misspelt field is
# dropped by the API server (or refused with strict validation), so it is refused here.
TFJOB_SPEC_FIELDS = {"runPolicy", "successPolicy", "tfReplicaSpecs", "enableDynamicWorker"}
RUN_POLICY_FIELDS = {"cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit",
                     "schedulingPolicy", "suspend", "managedBy"}
REPLICA_SPEC_FIELDS = {"replicas", "template", "restartPolicy"}
POD_SPEC_FIELDS = {"securityContext", "containers", "volumes", "affinity", "automountServiceAccountToken"}
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "workingDir", "env", "command", "args", "ports",
                    "resources", "securityContext", "volumeMounts"}
REPLICA_TYPES = ("Chief", "Worker")


def load(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: expected one document, got {len(docs)}"
    return docs[0]


@pytest.fixture(scope="module")
def job():
    return load(MANIFEST)


def replica(job, kind):
    return job["spec"]["tfReplicaSpecs"][kind]


def pod_specs(job):
    return {kind: replica(job, kind)["template"]["spec"] for kind in REPLICA_TYPES}


def container(job, kind):
    (c,) = pod_specs(job)[kind]["containers"]
    return c


def command(job, kind):
    c = container(job, kind)
    return [str(a) for a in [*c.get("command", []), *c.get("args", [])]]


def train_argv(job, kind):
    """train.py's arguments: what the shared launcher forwards, everything after its `--`."""
    cmd = command(job, kind)
    assert cmd[:2] == ["python", "distribute_k8s/launch.py"], cmd
    sep = cmd.index("--")
    assert cmd[2:sep] == ["--script", "gdmix_lr/train.py"], cmd
    return cmd[sep + 1:]


def parsed_args(job, kind):
    """The container's train.py arguments through train.py's own parser, $(JOB_NAME) expanded."""
    spec = importlib.util.spec_from_file_location("gdmix_lr_train_for_k8s_test", REPO / "gdmix_lr" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser().parse_args([expand_env_refs(job, container(job, kind), a) for a in train_argv(job, kind)])


def operator_tf_configs(job):
    """The TF_CONFIG the training operator injects into each pod: the cluster lists every replica type but
    the evaluator, keyed in lower case, with NAME-TYPE-INDEX.NAMESPACE.svc:PORT addresses; the task is
    {type in lower case, index} (training-operator pkg/controller.v1/tensorflow/tensorflow.go)."""
    name, namespace = job["metadata"]["name"], job["metadata"].get("namespace", "default")
    specs = job["spec"]["tfReplicaSpecs"]
    cluster = {kind.lower(): [f"{name}-{kind.lower()}-{i}.{namespace}.svc:{TF_PORT}"
                              for i in range(specs[kind].get("replicas", 1))]
               for kind in specs if kind != "Evaluator"}
    return [(kind, i, json.dumps({"cluster": cluster, "task": {"type": kind.lower(), "index": i},
                                  "environment": "cloud"}))
            for kind in specs for i in range(specs[kind].get("replicas", 1))]


# --- what the API server and the training operator require ---------------------------------------

def test_manifest_is_a_training_operator_v1_tfjob_with_chief_and_worker_only(job):
    # PS and Evaluator are refused by gdmix_lr's world_from_tf_config: no such replica may be declared.
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert set(job["spec"]["tfReplicaSpecs"]) == set(REPLICA_TYPES)


def test_manifest_uses_only_known_tfjob_and_pod_field_names(job):
    spec = job["spec"]
    assert set(spec) <= TFJOB_SPEC_FIELDS, set(spec) - TFJOB_SPEC_FIELDS
    assert set(spec["runPolicy"]) <= RUN_POLICY_FIELDS, set(spec["runPolicy"]) - RUN_POLICY_FIELDS
    assert not spec.get("enableDynamicWorker", False)  # a sparse TF_CONFIG has no chief list: ranks would break
    for kind in REPLICA_TYPES:
        rs = replica(job, kind)
        assert set(rs) <= REPLICA_SPEC_FIELDS, (kind, set(rs) - REPLICA_SPEC_FIELDS)
        assert set(rs["template"]) <= {"metadata", "spec"}, kind
        pod = rs["template"]["spec"]
        assert set(pod) <= POD_SPEC_FIELDS, (kind, set(pod) - POD_SPEC_FIELDS)
        for c in pod["containers"]:
            assert set(c) <= CONTAINER_FIELDS, (kind, set(c) - CONTAINER_FIELDS)


def test_one_chief_and_one_worker_two_tasks_in_all(job):
    assert replica(job, "Chief")["replicas"] == 1  # rank 0: prepares the data, evaluates, writes result.json
    assert replica(job, "Worker")["replicas"] == 1


def test_containers_are_named_tensorflow_so_the_operator_injects_tf_config(job):
    for kind in REPLICA_TYPES:
        names = [c["name"] for c in pod_specs(job)[kind]["containers"]]
        assert names == ["tensorflow"], (kind, names)


def test_failed_tasks_are_restarted_and_the_restarts_are_bounded(job):
    for kind in REPLICA_TYPES:
        rs = replica(job, kind)
        assert rs["restartPolicy"] == "OnFailure", kind
        assert "restartPolicy" not in rs["template"]["spec"], kind  # the operator overwrites it there
    run_policy = job["spec"]["runPolicy"]
    # A chief failure restarts the chief and makes every worker restart into its new run.
    assert run_policy["backoffLimit"] >= 1 + replica(job, "Worker")["replicas"]
    assert run_policy["cleanPodPolicy"] in ("Running", "All", "None")


# --- the TF_CONFIG the operator injects, and train.py's ranks ------------------------------------

def test_operator_tf_config_maps_the_tasks_to_distinct_ranks_0_to_n_minus_1(job):
    from gdmix_lr.cluster import world_from_tf_config
    configs = operator_tf_configs(job)
    worlds = {(kind, i): world_from_tf_config(text) for kind, i, text in configs}
    n = len(configs)
    assert sorted(w.rank for w in worlds.values()) == list(range(n))  # distinct: no partition solved twice
    assert {w.size for w in worlds.values()} == {n}
    assert worlds[("Chief", 0)].rank == 0 and worlds[("Chief", 0)].is_chief
    assert [worlds[("Worker", i)].rank for i in range(replica(job, "Worker")["replicas"])] == list(range(1, n))


def test_every_task_has_at_least_one_entity_partition(job):
    # Task k of N solves the partitions p with p % N == k: more tasks than partitions leaves tasks idle.
    n = sum(replica(job, kind)["replicas"] for kind in REPLICA_TYPES)
    assert parsed_args(job, "Chief").partitions >= n


# --- train.py's arguments ------------------------------------------------------------------------

def test_train_arguments_are_accepted_by_train_py_parser(job):
    for kind in REPLICA_TYPES:
        args = parsed_args(job, kind)  # argparse exits on an unknown flag or a bad value
        assert args.output_dir == f"/mnt/modelzoo/result/{job['metadata']['name']}/gdmix_lr", kind
        assert args.data_location == "/mnt/modelzoo/data/ml-100k", kind
        assert (args.seed, args.partitions) == (2021, 8), kind


def test_chief_and_worker_run_the_same_command(job):
    # Rank, size and role come from TF_CONFIG alone; different flags would give the tasks different
    # splits (--seed), partitions or outputs.
    assert command(job, "Chief") == command(job, "Worker")
    assert container(job, "Chief")["env"] == container(job, "Worker")["env"]


def test_every_env_reference_in_the_command_is_defined(job):
    # The kubelet leaves an undefined $(VAR) as it is: the job would write to a folder named "$(VAR)".
    for kind in REPLICA_TYPES:
        env = {e["name"] for e in container(job, kind).get("env", [])}
        for text in command(job, kind):
            for var in re.findall(r"\$\(([^)]*)\)", text):
                assert var in env, (kind, var, text)


def test_threads_match_the_cpu_limit(job):
    # TensorFlow and BLAS would otherwise start one thread per core of the node, throttled by the CFS quota.
    for kind in REPLICA_TYPES:
        c = container(job, kind)
        cpus = int(str(c["resources"]["limits"]["cpu"]))
        assert parsed_args(job, kind).intra == cpus, kind
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["OMP_NUM_THREADS"] == str(cpus), kind


def test_working_dir_is_the_image_workdir_where_the_default_config_resolves(job):
    workdirs = [line.split()[1] for line in dockerfile_stages()["base"] if line.startswith("WORKDIR")]
    for kind in REPLICA_TYPES:
        assert container(job, kind)["workingDir"] == workdirs[-1], kind
        config = parsed_args(job, kind).config
        assert not config.startswith("/") and (REPO / config).is_file(), config  # relative to the repo root


# --- pods: resources, image, security, storage, placement ----------------------------------------

def test_requests_equal_limits_for_cpu_and_memory(job):
    for kind in REPLICA_TYPES:
        resources = container(job, kind)["resources"]
        assert {"cpu", "memory"} <= set(resources["limits"]), kind
        assert resources["requests"] == resources["limits"], kind  # Guaranteed QoS


def test_image_tag_is_pinned_and_is_the_dockerfile_default_image(job):
    built = re.search(r"^#\s+docker build -t (\S+) \.$", DOCKERFILE.read_text(), flags=re.M)
    assert built, "the Dockerfile documents how to build its default image"
    for kind in REPLICA_TYPES:
        image = container(job, kind)["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag and tag != "latest", image
        assert image == f"registry.invalid/{built.group(1)}", image  # the placeholder registry: set yours


def test_dockerfile_default_stage_and_every_model_stage_copy_gdmix_lr():
    stages = dockerfile_stages()
    default = list(stages)[-1]  # `docker build .` builds the last stage
    copies = {name: [line.split()[1:] for line in lines if line.startswith("COPY ") and "--from" not in line]
              for name, lines in stages.items()}
    assert ["gdmix_lr/", "gdmix_lr/"] in copies[default]
    for name, lines in copies.items():
        if ["wide_and_deep/", "wide_and_deep/"] in lines:
            assert ["gdmix_lr/", "gdmix_lr/"] in lines, name
    assert "gdmix_lr" not in (REPO / ".dockerignore").read_text()


def test_image_installs_every_third_party_module_gdmix_lr_imports():
    # The image installs requirements.txt only: a module imported by gdmix_lr (or by the modelzoo modules
    # it uses) that no requirement brings would fail the job at start.
    def imports(path):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        return names

    todo, seen, third_party = list((REPO / "gdmix_lr").glob("*.py")), set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports(path):
            top = name.split(".")[0]
            if top in ("gdmix_lr", "modelzoo"):
                target = REPO.joinpath(*name.split("."))
                todo += [p for p in (target.with_suffix(".py"), target / "__init__.py") if p.is_file()]
            elif top not in sys.stdlib_module_names:
                third_party.add(top)

    wanted = [re.match(r"[A-Za-z0-9_.\-]+", line).group(0) for line in REQUIREMENTS.read_text().splitlines()
              if line.strip() and not line.lstrip().startswith(("#", "-"))]
    installed, todo = set(), list(wanted)
    while todo:  # the requirements and what they require
        dist = todo.pop().lower().replace("_", "-")
        if dist in installed:
            continue
        installed.add(dist)
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [re.match(r"[A-Za-z0-9_.\-]+", r).group(0) for r in requires if "extra ==" not in r]
    distributions = importlib.metadata.packages_distributions()
    assert {"numpy", "scipy", "fastavro", "yaml"} <= third_party  # the scan sees the solver's imports
    for module in sorted(third_party):
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        assert dists & installed, f"{module} (distribution {sorted(dists)}) is not installed by requirements.txt"


def test_every_pod_runs_as_non_root_uid_1000_without_capabilities(job):
    for kind, spec in pod_specs(job).items():
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 1000, kind  # the image's user
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", kind
        for c in spec["containers"]:
            cctx = c.get("securityContext", {})
            assert cctx.get("runAsNonRoot", True) is True and cctx.get("runAsUser", 1000) == 1000, kind
            assert cctx.get("privileged", False) is False, kind
            assert cctx["allowPrivilegeEscalation"] is False, kind
            assert cctx["capabilities"]["drop"] == ["ALL"] and not cctx["capabilities"].get("add"), kind


def test_every_pod_mounts_the_claim_of_pvc_yaml_where_the_command_reads_and_writes(job):
    claim = load(PVC)["metadata"]["name"]
    assert load(PVC)["spec"]["accessModes"] == ["ReadWriteMany"]  # the tasks share it from several nodes
    for kind, spec in pod_specs(job).items():
        volumes = {v["name"]: v for v in spec["volumes"] if "persistentVolumeClaim" in v}
        assert [v["persistentVolumeClaim"]["claimName"] for v in volumes.values()] == [claim], kind
        for c in spec["containers"]:
            mounts = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in volumes]
            assert len(mounts) == 1, kind
            args = parsed_args(job, kind)
            for path in (args.data_location, args.output_dir):
                assert path.startswith(mounts[0].rstrip("/") + "/"), (kind, path)  # on the shared volume


def test_tasks_prefer_to_spread_over_nodes(job):
    name = job["metadata"]["name"]
    for kind, spec in pod_specs(job).items():
        (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        term = term["podAffinityTerm"]
        assert term["topologyKey"] == "kubernetes.io/hostname", kind
        selector = term["labelSelector"]
        assert selector["matchLabels"] == {JOB_NAME_LABEL: name}, kind  # this job's pods only
        (expr,) = selector["matchExpressions"]
        assert expr["key"] == REPLICA_TYPE_LABEL and expr["operator"] == "In", kind
        assert sorted(expr["values"]) == sorted(k.lower() for k in REPLICA_TYPES), kind  # the operator's values


# --- the how-to ----------------------------------------------------------------------------------

def test_manifest_and_readme_say_how_to_create_and_follow_the_job(job):
    text = MANIFEST.read_text()
    readme = (K8S / "README.md").read_text()
    for doc in (text, readme):
        assert "kubectl create -f distribute_k8s/pvc.yaml" in doc
        assert f"kubectl create -f gdmix_lr/distribute_k8s/{MANIFEST.name}" in doc
        assert f"kubectl logs -f {job['metadata']['name']}-chief-0" in doc  # the operator's pod name


def test_readme_local_two_process_commands_give_ranks_0_and_1_and_share_the_output_dir():
    from gdmix_lr.cluster import world_from_tf_config
    readme = (K8S / "README.md").read_text()
    runs = re.findall(r"^TF_CONFIG='([^']*)' \S*python gdmix_lr/train.py (.*?)(?: &)?$", readme, flags=re.M)
    assert len(runs) == 2, runs
    worlds = [world_from_tf_config(text) for text, _ in runs]
    assert sorted(w.rank for w in worlds) == [0, 1] and {w.size for w in worlds} == {2}
    args = [a.split() for _, a in runs]
    assert args[0] == args[1]  # the same flags, the same --output_dir
    assert "--output_dir" in args[0]

"""The Kubernetes path of Wide & Deep with Horovod: the MPIJob manifests, the shared PVC and the
Dockerfile's horovod stage. Nothing here needs a cluster or Docker: the manifests are parsed and
checked against what the MPI operator, horovodrun and train.py will do with them."""
import copy
import importlib.util
import re
import shlex
import sys

import pytest
import yaml

from conftest import K8S_JOB_NAME_LABEL as JOB_NAME_LABEL, REPO, dockerfile_stages, expand_env_refs, flag_value

sys.path.insert(0, str(REPO))

K8S = REPO / "wide_and_deep" / "distribute_k8s"
MANIFESTS = {"FP32": K8S / "horovod_FP32.yaml", "BF16": K8S / "horovod_BF16.yaml"}
PVC = REPO / "distribute_k8s" / "pvc.yaml"
SSHD_CONFIG = REPO / "distribute_k8s" / "ssh" / "sshd_config"
SSH_CONFIG = REPO / "distribute_k8s" / "ssh" / "ssh_config"
DOCKERFILE = REPO / "Dockerfile"
HOSTFILE = "/etc/mpi/hostfile"  # where the MPI operator (v2) mounts the hostfile in the launcher
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"

# Field names of kubeflow.org/v2beta1 MPIJob (mpi-operator pkg/apis/kubeflow/v2beta1): a misspelt
# field is dropped by the API server (or refused with strict validation), so it is refused here.
MPIJOB_SPEC_FIELDS = {"slotsPerWorker", "runPolicy", "mpiReplicaSpecs", "sshAuthMountPath",
                      "mpiImplementation", "launcherCreationPolicy", "runLauncherAsWorker"}
RUN_POLICY_FIELDS = {"cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit",
                     "schedulingPolicy", "suspend", "managedBy"}
REPLICA_SPEC_FIELDS = {"replicas", "template", "restartPolicy"}
# The core/v1 fields these manifests use (all valid Kubernetes field names).
POD_SPEC_FIELDS = {"securityContext", "containers", "volumes", "affinity", "automountServiceAccountToken"}
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "workingDir", "env", "command", "args", "ports",
                    "readinessProbe", "resources", "securityContext", "volumeMounts"}


def load(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: expected one document, got {len(docs)}"
    return docs[0]


@pytest.fixture(scope="module", params=sorted(MANIFESTS))
def job(request):
    return load(MANIFESTS[request.param])


def replica(job, kind):
    return job["spec"]["mpiReplicaSpecs"][kind]


def pod_specs(job):
    return [replica(job, kind)["template"]["spec"] for kind in ("Launcher", "Worker")]


def containers(job):
    return [c for spec in pod_specs(job) for c in spec["containers"]]


def launcher_container(job):
    (container,) = replica(job, "Launcher")["template"]["spec"]["containers"]
    return container


def horovodrun_args(job):
    """horovodrun's own arguments, and the command it starts in every rank (after them)."""
    container = launcher_container(job)
    assert container["command"] == ["horovodrun"], container["command"]
    args = [str(a) for a in container["args"]]
    start = args.index("python")
    return args[:start], args[start:]


def train_argv(job):
    _, command = horovodrun_args(job)
    assert command[:2] == ["python", "wide_and_deep/train.py"], command
    return command[2:]


def config_port(path):
    ports = re.findall(r"^\s*Port\s+(\d+)\s*$", path.read_text(), flags=re.M)
    assert len(ports) == 1, ports
    return int(ports[0])


# --- what the API server and the operator require ---------------------------------------------

def test_manifests_are_mpi_operator_v2beta1_mpijobs():
    for path in MANIFESTS.values():
        doc = load(path)
        assert doc["apiVersion"] == "kubeflow.org/v2beta1", path.name
        assert doc["kind"] == "MPIJob", path.name
        assert set(doc["spec"]["mpiReplicaSpecs"]) == {"Launcher", "Worker"}, path.name


def test_pvc_yaml_defines_the_readwritemany_claim_modelzoo_data():
    pvc = load(PVC)
    assert (pvc["apiVersion"], pvc["kind"]) == ("v1", "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "modelzoo-data"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes mount it at once
    assert re.fullmatch(r"\d+[GT]i", pvc["spec"]["resources"]["requests"]["storage"])


def test_manifests_use_only_known_mpijob_and_pod_field_names(job):
    spec = job["spec"]
    assert set(spec) <= MPIJOB_SPEC_FIELDS, set(spec) - MPIJOB_SPEC_FIELDS
    assert set(spec["runPolicy"]) <= RUN_POLICY_FIELDS, set(spec["runPolicy"]) - RUN_POLICY_FIELDS
    assert spec.get("mpiImplementation", "OpenMPI") == "OpenMPI"  # its hostfile format: see below
    for kind in ("Launcher", "Worker"):
        rs = replica(job, kind)
        assert set(rs) <= REPLICA_SPEC_FIELDS, (kind, set(rs) - REPLICA_SPEC_FIELDS)
        assert set(rs["template"]) <= {"metadata", "spec"}, kind
        assert set(rs["template"]["spec"]) <= POD_SPEC_FIELDS, (kind, set(rs["template"]["spec"]) - POD_SPEC_FIELDS)
        for c in rs["template"]["spec"]["containers"]:
            assert set(c) <= CONTAINER_FIELDS, (kind, set(c) - CONTAINER_FIELDS)


def test_launcher_has_exactly_one_replica(job):
    assert replica(job, "Launcher")["replicas"] == 1


def test_two_workers_one_slot_each_and_running_pods_cleaned_up(job):
    assert replica(job, "Worker")["replicas"] == 2
    assert job["spec"]["slotsPerWorker"] == 1
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"


def test_each_replica_type_has_one_consistently_named_container(job):
    for kind, name in (("Launcher", "mpi-launcher"), ("Worker", "mpi-worker")):
        names = [c["name"] for c in replica(job, kind)["template"]["spec"]["containers"]]
        assert names == [name], (kind, names)  # the operator configures the first container


# --- horovodrun in the launcher ------------------------------------------------------------------

def test_horovodrun_np_equals_worker_replicas_times_slots_per_worker(job):
    own, _ = horovodrun_args(job)
    np_ = int(flag_value(own, "-np"))
    assert np_ == replica(job, "Worker")["replicas"] * job["spec"].get("slotsPerWorker", 1)


def test_horovodrun_uses_gloo_the_operator_hostfile_and_the_sshd_port(job):
    own, _ = horovodrun_args(job)
    assert "--gloo" in own and "--mpi" not in own  # Horovod is built without MPI
    assert flag_value(own, "--hostfile") == HOSTFILE
    assert "-H" not in own and "--hosts" not in own
    port = int(flag_value(own, "--ssh-port"))
    assert port == config_port(SSHD_CONFIG) == config_port(SSH_CONFIG)
    assert port > 1024  # sshd runs as uid 1000 without capabilities: no privileged port


def test_horovodrun_parser_reads_the_launcher_arguments_as_intended(job, monkeypatch):
    launch = pytest.importorskip("horovod.runner.launch", reason="Horovod is not installed")
    own, command = horovodrun_args(job)
    monkeypatch.setattr(sys, "argv", ["horovodrun", *own, *command])
    args = launch.parse_args()
    assert args.use_gloo and not args.use_mpi
    assert args.num_proc == int(flag_value(own, "-np"))
    assert args.hostfile == HOSTFILE
    assert args.ssh_port == config_port(SSHD_CONFIG)
    assert args.command == command  # every train.py flag reaches the ranks, none is taken by horovodrun


def test_horovod_reads_the_hostfile_the_operator_writes_with_one_slot_per_rank(job, tmp_path):
    hosts = pytest.importorskip("horovod.runner.common.util.hosts", reason="Horovod is not installed")
    # What mpi-operator v2 writes for mpiImplementation OpenMPI (newConfigMap): one line per worker.
    name, namespace = job["metadata"]["name"], "default"
    slots = job["spec"].get("slotsPerWorker", 1)
    lines = [f"{name}-worker-{i}.{name}.{namespace}.svc slots={slots}\n"
             for i in range(replica(job, "Worker")["replicas"])]
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("".join(lines))
    host_names, host_slots = hosts.parse_hosts_and_slots(hosts.parse_host_files(str(hostfile)))
    assert host_names == [line.split()[0] for line in lines]
    own, _ = horovodrun_args(job)
    assert sum(host_slots.values()) == int(flag_value(own, "-np"))


# --- train.py's arguments ------------------------------------------------------------------------

def test_train_arguments_include_hvd(job):
    assert "--hvd" in train_argv(job)


def test_train_arguments_are_accepted_by_the_real_flag_parser(job):
    path = REPO / "wide_and_deep" / "train.py"
    spec = importlib.util.spec_from_file_location("wide_and_deep_train_for_k8s_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from modelzoo import flags
    argv = [expand_env_refs(job, launcher_container(job), a) for a in train_argv(job)]
    model = module.SPEC
    args = flags.parse(model.name, argv, model.defaults, model.speed_defaults, model.add_flags)
    assert args.hvd
    assert args.global_batch_size % int(flag_value(horovodrun_args(job)[0], "-np")) == 0
    assert args.data_location.startswith("/mnt/modelzoo/")
    assert args.output_dir == f"/mnt/modelzoo/result/{job['metadata']['name']}"


def test_every_env_reference_in_the_launcher_command_is_defined(job):
    # The kubelet leaves an undefined $(VAR) as it is: the job would write to a folder named "$(VAR)".
    env = {e["name"] for e in launcher_container(job).get("env", [])}
    container = launcher_container(job)
    for text in [*container["command"], *map(str, container["args"])]:
        for var in re.findall(r"\$\(([^)]*)\)", text):
            assert var in env, f"$({var}) in {text!r} is not in the launcher's env"


def test_bf16_and_fp32_differ_only_by_bf16_and_names():
    fp32, bf16 = load(MANIFESTS["FP32"]), load(MANIFESTS["BF16"])
    assert fp32["metadata"]["name"].endswith("-fp32") and bf16["metadata"]["name"].endswith("-bf16")
    assert "--bf16" not in train_argv(fp32) and train_argv(bf16).count("--bf16") == 1
    same = copy.deepcopy(bf16)
    launcher = launcher_container(same)
    launcher["args"] = [a for a in launcher["args"] if a != "--bf16"]
    renamed = yaml.safe_dump(same).replace(bf16["metadata"]["name"], fp32["metadata"]["name"])
    assert yaml.safe_load(renamed) == fp32


# --- pods: resources, image, security, storage, placement, sshd -----------------------------------

def test_every_container_requests_and_limits_cpu_and_memory(job):
    for c in containers(job):
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), (c["name"], part)


def test_worker_cpu_limit_matches_the_train_threads(job):
    (worker,) = replica(job, "Worker")["template"]["spec"]["containers"]
    cpus = int(str(worker["resources"]["limits"]["cpu"]))
    assert worker["resources"]["requests"] == worker["resources"]["limits"]  # Guaranteed QoS
    assert int(flag_value(train_argv(job), "--intra")) == cpus // job["spec"].get("slotsPerWorker", 1)


def test_no_image_uses_the_latest_tag_or_no_tag(job):
    for c in containers(job):
        image = c["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag and tag != "latest", image


def test_every_container_runs_the_horovod_image_the_dockerfile_builds(job):
    built = re.search(r"docker build --target horovod -t (\S+) \.", DOCKERFILE.read_text())
    assert built, "the Dockerfile documents how to build the horovod image"
    # under the placeholder registry (.invalid never resolves): generate_manifests.py --horovod_image sets yours
    assert {c["image"] for c in containers(job)} == {f"registry.invalid/{built.group(1)}"}


def test_every_pod_runs_as_non_root_uid_1000(job):
    for spec in pod_specs(job):
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 1000, ctx
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
        for c in spec["containers"]:
            cctx = c.get("securityContext", {})
            assert cctx.get("runAsNonRoot", True) is True and cctx.get("runAsUser", 1000) == 1000, c["name"]
            assert cctx["allowPrivilegeEscalation"] is False, c["name"]
            assert cctx["capabilities"]["drop"] == ["ALL"], c["name"]


def test_every_pod_mounts_the_claim_defined_in_pvc_yaml_at_the_same_path(job):
    claim = load(PVC)["metadata"]["name"]
    paths = set()
    for spec in pod_specs(job):
        volumes = {v["name"]: v for v in spec["volumes"] if "persistentVolumeClaim" in v}
        assert [v["persistentVolumeClaim"]["claimName"] for v in volumes.values()] == [claim]
        for c in spec["containers"]:
            mounts = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in volumes]
            assert len(mounts) == 1, c["name"]
            paths.add(mounts[0])
    assert len(paths) == 1, paths
    (path,) = paths
    args = [expand_env_refs(job, launcher_container(job), a) for a in train_argv(job)]
    for flag in ("--data_location", "--output_dir"):
        assert flag_value(args, flag).startswith(path + "/"), flag  # on the shared volume


def test_workers_prefer_to_spread_over_nodes(job):
    spec = replica(job, "Worker")["template"]["spec"]
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        JOB_NAME_LABEL: job["metadata"]["name"], JOB_ROLE_LABEL: "worker"}


def test_workers_run_the_images_non_root_sshd_with_the_operators_keys(job):
    (worker,) = replica(job, "Worker")["template"]["spec"]["containers"]
    command = [*worker["command"], *worker["args"]]
    assert command[0] == "/usr/sbin/sshd" and "-D" in command[1] and "e" in command[1]
    config = command[command.index("-f") + 1]
    # the Dockerfile's horovod stage installs distribute_k8s/ssh/sshd_config at that path
    copies = [line.split()[1:] for line in dockerfile_stages()["horovod"] if line.startswith("COPY ")]
    assert ["distribute_k8s/ssh/sshd_config", config] in copies
    sshd = SSHD_CONFIG.read_text()
    ssh_dir = job["spec"]["sshAuthMountPath"]
    assert re.search(rf"^HostKey {re.escape(ssh_dir)}/id_rsa$", sshd, flags=re.M)  # the operator's key
    assert re.search(r"^StrictModes no$", sshd, flags=re.M)  # the mounted Secret is root-owned
    assert re.search(r"^PasswordAuthentication no$", sshd, flags=re.M)
    assert ssh_dir == "/home/modelzoo/.ssh"  # the home of the image's uid 1000 user
    assert worker["ports"] == [{"name": "ssh", "containerPort": config_port(SSHD_CONFIG)}]


def test_launcher_is_retried_when_it_fails(job):
    assert replica(job, "Launcher")["restartPolicy"] == "OnFailure"
    assert job["spec"]["runPolicy"]["backoffLimit"] >= 1


def test_manifests_say_how_to_create_them_and_follow_the_launcher():
    for path in MANIFESTS.values():
        doc = load(path)
        text = path.read_text()
        assert f"kubectl create -f wide_and_deep/distribute_k8s/{path.name}" in text
        assert f"kubectl logs -f job/{doc['metadata']['name']}-launcher" in text  # the launcher's Job
        assert "kubectl create -f distribute_k8s/pvc.yaml" in text


# --- the Dockerfile's horovod stage --------------------------------------------------------------

def test_dockerfile_default_stage_is_the_single_process_runtime():
    stages = dockerfile_stages()
    last = list(stages)[-1]
    assert last != "horovod" and "horovod" in stages
    text = " ".join(stages[last])
    assert 'CMD ["dlrm/train.py", "--bf16"]' in text and "horovod" not in text.lower()
    assert "COPY wide_and_deep/ wide_and_deep/" in text
    assert "USER 1000" in text


def test_dockerfile_horovod_stage_builds_horovod_0_28_1_with_gloo_without_mpi():
    stages = dockerfile_stages()
    build = next(name for name, lines in stages.items() if any("pip wheel" in line for line in lines))
    text = " ".join(stages[build])
    assert "horovod==0.28.1" in text and "--no-build-isolation" in text
    for setting in ("HOROVOD_WITH_TENSORFLOW=1", "HOROVOD_WITH_GLOO=1", "HOROVOD_WITHOUT_MPI=1",
                    "HOROVOD_WITHOUT_PYTORCH=1", "HOROVOD_WITHOUT_MXNET=1"):
        assert setting in text, setting
    assert build != "horovod"
    horovod = " ".join(stages["horovod"])
    assert f"--from={build}" in horovod and "horovod-0.28.1-" in horovod
    assert not re.search(r"\b(cmake|g\+\+|make)=", horovod)  # compilers stay in the build stage
    assert re.search(r"openssh-server=\S+", horovod) and re.search(r"openssh-client=\S+", horovod)


def test_dockerfile_horovod_stage_runs_as_the_uid_1000_user_the_manifests_expect():
    lines = dockerfile_stages()["horovod"]
    text = " ".join(lines)
    assert re.search(r"useradd --create-home --uid 1000 [^&]*\bmodelzoo\b", text)  # home /home/modelzoo
    assert [line for line in lines if line.startswith("USER")] == ["USER 1000"]
    copies = [shlex.split(line)[1:] for line in lines if line.startswith("COPY ") and "--from" not in line]
    assert ["distribute_k8s/ssh/ssh_config", "/etc/ssh/ssh_config.d/modelzoo.conf"] in copies
    assert ["wide_and_deep/", "wide_and_deep/"] in copies


# --- the how-to ----------------------------------------------------------------------------------

def test_readme_helper_pod_mounts_the_shared_claim_where_the_jobs_do():
    readme = (K8S / "README.md").read_text()
    (pod_yaml,) = re.findall(r"<<'EOF'\n(.*?)\nEOF\n", readme, flags=re.S)
    pod = yaml.safe_load(pod_yaml)
    assert pod["kind"] == "Pod" and pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (volume,) = pod["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == load(PVC)["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": "/mnt/modelzoo"}]
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_readme_says_the_manifests_were_not_run_on_a_cluster():
    readme = " ".join((K8S / "README.md").read_text().split())
    assert "have not been run on a cluster" in readme

"""distribute_k8s/local_run.py: a TFJob manifest's replicas as local processes. Tiny TFJobs in tmp_path
whose replicas run a fake script (through launch.py or directly) that reports what it was given."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from distribute_k8s import local_run

GDMIX = REPO / "gdmix_lr" / "distribute_k8s" / "distribute_k8s_FP32.yaml"

# The fake replica: prints a REPORT line, then does what FAKE_MODE says for its task index
# ("a,b": index 0 does a, index 1 and up do b): exit:N, hang, sleep:S, steps:N (prints "step i"),
# wait:NAME (until replica NAME has written OUT/NAME.done). It writes OUT/<type>-<index>.done at the end.
FAKE = r"""
import json, os, pathlib, sys, time
config = json.loads(os.environ.get("TF_CONFIG") or "{}")
task = config.get("task", {"type": "single", "index": 0})
me = f"{task['type']}-{task['index']}"
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
modes = os.environ.get("FAKE_MODE", "exit:0").split(",")
mode, _, arg = modes[min(task["index"], len(modes) - 1)].partition(":")
keys = ("JOB_NAME", "POD", "NS", "RTYPE", "RINDEX", "APP", "DATA", "OUT", "LATER", "ESC", "HOSTNAME",
        "MEM_USAGE_STRATEGY", "TF_CONFIG")
print("REPORT " + json.dumps({"me": me, "pid": os.getpid(), "tf_config": config, "argv": args, "cwd": os.getcwd(),
                              "env": {k: os.environ.get(k) for k in keys}}), flush=True)
code = 0
if mode == "exit":
    code = int(arg)
elif mode == "hang":
    time.sleep(600)
elif mode == "sleep":
    time.sleep(float(arg))
elif mode == "steps":
    for i in range(1, int(arg) + 1):
        print(f"step {i}", flush=True)
        time.sleep(0.05)
elif mode == "wait":
    for _ in range(600):
        if (out / f"{arg}.done").exists():
            break
        time.sleep(0.05)
(out / f"{me}.done").touch()
sys.exit(code)
"""


def container(mode, via_launch, env=()):
    args = ["--out", "/mnt/modelzoo/out/$(JOB_NAME)"]
    if via_launch:
        command, args = ["python", "distribute_k8s/launch.py"], ["--script", "/mnt/modelzoo/code/fake.py", "--", *args]
    else:
        command = ["python", "/mnt/modelzoo/code/fake.py"]
    return {"name": "tensorflow", "image": "modelzoo/modelzoo:0.1.0", "workingDir": "/opt/modelzoo",
            "env": [{"name": "JOB_NAME", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.labels['training.kubeflow.org/job-name']"}}},
                    {"name": "MEM_USAGE_STRATEGY", "value": "close"}, {"name": "FAKE_MODE", "value": mode}, *env],
            "command": command, "args": args, "volumeMounts": [{"name": "data", "mountPath": "/mnt/modelzoo"}]}


def write_tfjob(path, replicas, name="fake", backoff_limit=None, success_policy=None, via_launch=False, env=()):
    """replicas: {"Chief": (count, FAKE_MODE, restartPolicy), ...}."""
    specs = {}
    for kind, (count, mode, policy) in replicas.items():
        specs[kind] = {"replicas": count, "restartPolicy": policy, "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "fake"}},
            "spec": {"containers": [container(mode, via_launch, env)],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "modelzoo-data"}}]}}}
    spec = {"runPolicy": {"cleanPodPolicy": "Running"}, "tfReplicaSpecs": specs}
    if backoff_limit is not None:
        spec["runPolicy"]["backoffLimit"] = backoff_limit
    if success_policy is not None:
        spec["successPolicy"] = success_policy
    path.write_text(yaml.safe_dump({"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": name},
                                    "spec": spec}, sort_keys=False))
    return path


@pytest.fixture
def volume(tmp_path):
    """The folder /mnt/modelzoo maps to, holding the fake script at code/fake.py."""
    vol = tmp_path / "vol"
    (vol / "code").mkdir(parents=True)
    (vol / "code" / "fake.py").write_text(FAKE)
    return vol


def local(manifest, tmp_path, volume, *options, extra=(), timeout=60):
    """local_run in a subprocess; returns (process, summary or None, {replica: [its REPORTs]})."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "MALLOC_CONF", "LD_PRELOAD")}
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "distribute_k8s.local_run", str(manifest), "--root", str(root),
           "--mount", f"/mnt/modelzoo={volume}", *options]
    if extra:
        cmd += ["--", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    summary_file = root / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    reports = {}
    for match in re.finditer(r"^\[([a-z]+-\d+)\] REPORT (.*)$", proc.stdout, flags=re.M):
        reports.setdefault(match.group(1), []).append(json.loads(match.group(2)))
    return proc, summary, reports


def test_replicas_get_the_operators_tf_config_env_and_paths(tmp_path, volume):
    env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
           {"name": "RTYPE", "valueFrom": {"fieldRef": {
               "fieldPath": "metadata.labels['training.kubeflow.org/replica-type']"}}},
           {"name": "RINDEX", "valueFrom": {"fieldRef": {
               "fieldPath": "metadata.labels['training.kubeflow.org/replica-index']"}}},
           {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}}},
           {"name": "DATA", "value": "/mnt/modelzoo/data/$(JOB_NAME)"},
           {"name": "OUT", "value": "$(DATA)/out-$(LATER)"},  # LATER is defined after OUT: kept as written
           {"name": "LATER", "value": "x"},
           {"name": "ESC", "value": "$$(JOB_NAME) $$HOME $(NOPE)"}]
    manifest = write_tfjob(tmp_path / "job.yaml", {"Chief": (1, "exit:0", "OnFailure"),
                                                   "Worker": (2, "exit:0", "OnFailure"),
                                                   "PS": (1, "exit:0", "OnFailure"),
                                                   "Evaluator": (1, "exit:0", "OnFailure")},
                           name="fake-job", via_launch=True, env=env)
    proc, summary, reports = local(manifest, tmp_path, volume, "--grace", "20", extra=["--steps", "60"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = ["chief-0", "worker-0", "worker-1", "ps-0", "evaluator-0"]
    assert sorted(reports) == sorted(names) and summary["outcome"] == "Succeeded"
    # TF_CONFIG as the operator writes it: lowercase types, the evaluator outside the cluster, one port each.
    cluster = reports["chief-0"][0]["tf_config"]["cluster"]
    assert sorted(cluster) == ["chief", "ps", "worker"] and len(cluster["worker"]) == 2
    addresses = [a for v in cluster.values() for a in v]
    assert len(set(addresses)) == 4 and all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in addresses)
    vol_out = str(volume / "out" / "fake-job")
    for name in names:
        kind, index = name.split("-")
        report = reports[name][0]
        assert report["tf_config"] == {"cluster": cluster, "task": {"type": kind, "index": int(index)},
                                       "environment": "cloud"}
        assert summary["tf_config"][name] == report["tf_config"]
        assert report["cwd"] == str(REPO)  # workingDir /opt/modelzoo: the repository
        assert report["argv"] == ["--out", vol_out, "--steps", "60"]  # $(JOB_NAME) expanded, path mapped, extra
        # TF_CONFIG's text as the operator's Go code writes it: compact JSON, cluster keys sorted.
        assert report["env"].pop("TF_CONFIG") == json.dumps(report["tf_config"], separators=(",", ":"))
        assert report["env"] == {
            "JOB_NAME": "fake-job", "POD": f"fake-job-{name}", "NS": "default", "RTYPE": kind, "RINDEX": index,
            "APP": "fake", "DATA": str(volume / "data" / "fake-job"), "OUT": f"{volume}/data/fake-job/out-$(LATER)",
            "LATER": "x", "ESC": "$(JOB_NAME) $HOME $(NOPE)", "HOSTNAME": f"fake-job-{name}",
            "MEM_USAGE_STRATEGY": "close"}
        assert re.search(rf"^\[{name}\] launch\.py: task {kind}:{index} ", proc.stdout, flags=re.M)
        log = (tmp_path / "root" / "logs" / f"{name}.log").read_text()
        assert "REPORT " in log and "launch.py: task" in log
        assert summary["replicas"][name]["exit_codes"] == [0] and summary["replicas"][name]["exited_by_itself"]
    assert f"local_run: paths: /opt/modelzoo -> {REPO}, /mnt/modelzoo -> {volume}" in proc.stdout
    assert "local_run: job fake-job Succeeded: chief-0 exited 0" in proc.stdout


def test_a_ps_that_never_exits_is_terminated_after_grace(tmp_path, volume):
    manifest = write_tfjob(tmp_path / "job.yaml", {"Chief": (1, "exit:0", "OnFailure"),
                                                   "PS": (2, "sleep:0.5,hang", "OnFailure")})
    proc, summary, _ = local(manifest, tmp_path, volume, "--grace", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary["outcome"] == "Succeeded" and summary["reason"] == "chief-0 exited 0"
    ps0, ps1 = summary["replicas"]["ps-0"], summary["replicas"]["ps-1"]
    assert ps0["exited_by_itself"] and ps0["exit_codes"] == [0] and ps0["end"] == "exited by itself"
    assert not ps1["exited_by_itself"] and ps1["exit_codes"] == [143] and ps1["end"] == "terminated by local_run"
    assert "terminating ps-1 (did not exit by itself within --grace 2 s)" in proc.stdout
    assert re.search(r"ps-1\s+143\s+0\s+terminated by local_run \(did not exit by itself\)", proc.stdout)


def test_a_killed_worker_is_restarted_in_place_and_the_job_succeeds(tmp_path, volume):
    manifest = write_tfjob(tmp_path / "job.yaml", {"Chief": (1, "wait:worker-1", "OnFailure"),
                                                   "Worker": (2, "exit:0,steps:5", "OnFailure"),
                                                   "PS": (1, "wait:chief-0", "OnFailure")},
                           backoff_limit=2, via_launch=True)
    proc, summary, reports = local(manifest, tmp_path, volume, "--grace", "10", "--kill", r"worker-1:step [3]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    worker = summary["replicas"]["worker-1"]
    assert summary["outcome"] == "Succeeded" and worker["restarts"] == 1 and worker["exit_codes"] == [137, 0]
    assert len(worker["pids"]) == 2 and summary["restarts"] == 1
    assert re.search(r"^local_run: killed worker-1 \(pid \d+\) with SIGKILL after line: step 3$", proc.stdout, re.M)
    # The restart runs with the same TF_CONFIG (the same ports) as the first attempt.
    assert len(reports["worker-1"]) == 2 and reports["worker-1"][0]["tf_config"] == reports["worker-1"][1]["tf_config"]
    log = (tmp_path / "root" / "logs" / "worker-1.log").read_text()
    assert log.count("step 1") == 2 and "step 5" in log and "attempt 1 exited with code 137" in log
    assert summary["replicas"]["ps-0"]["exited_by_itself"]  # it waited for the chief's end, then exited 0


def test_kill_a_replica_at_another_replicas_line(tmp_path, volume):
    """--kill REPLICA@WATCHED:REGEX: a PS (which says nothing while it serves) killed at worker 0's line."""
    manifest = write_tfjob(tmp_path / "job.yaml", {"Chief": (1, "wait:worker-0", "OnFailure"),
                                                   "Worker": (1, "steps:20", "OnFailure"),
                                                   "PS": (1, "wait:chief-0", "OnFailure")})
    proc, summary, _ = local(manifest, tmp_path, volume, "--grace", "10", "--kill", "ps-0@worker-0:step 3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ps = summary["replicas"]["ps-0"]
    assert ps["exit_codes"] == [137, 0] and ps["restarts"] == 1 and ps["exited_by_itself"], ps
    assert summary["replicas"]["worker-0"]["exit_codes"] == [0]
    assert re.search(r"^local_run: killed ps-0 \(pid \d+\) with SIGKILL after worker-0's line: step 3$", proc.stdout,
                     re.M)


def test_never_fails_the_job_at_the_first_failure(tmp_path, volume):
    manifest = write_tfjob(tmp_path / "job.yaml", {"Chief": (1, "hang", "Never"),
                                                   "Worker": (2, "exit:0,exit:3", "Never")}, backoff_limit=5)
    proc, summary, _ = local(manifest, tmp_path, volume, "--grace", "0.5")
    assert proc.returncode == 1
    assert summary["outcome"] == "Failed" and summary["reason"] == "worker-1 exited with code 3; restartPolicy Never"
    assert summary["replicas"]["worker-1"]["restarts"] == 0
    assert summary["replicas"]["chief-0"]["end"] == "terminated by local_run"
    assert "local_run: job fake Failed: worker-1 exited with code 3; restartPolicy Never" in proc.stdout


def test_backoff_limit_reached_fails_the_job(tmp_path, volume):
    manifest = write_tfjob(tmp_path / "job.yaml", {"Worker": (2, "hang,exit:1", "OnFailure")}, backoff_limit=3)
    proc, summary, _ = local(manifest, tmp_path, volume, "--grace", "0.5")
    assert proc.returncode == 1
    # The operator fails the job once the pods' restart counts reach backoffLimit: the third failure.
    worker = summary["replicas"]["worker-1"]
    assert worker["exit_codes"] == [1, 1, 1] and worker["restarts"] == 2
    assert summary["outcome"] == "Failed" and summary["reason"] == (
        "worker-1 exited with code 1; restarting it would bring the job's restarts to 3, reaching "
        "runPolicy.backoffLimit 3")
    assert summary["replicas"]["worker-0"]["end"] == "terminated by local_run"


def test_exit_code_policy_retries_only_signals(tmp_path, volume):
    manifest = write_tfjob(tmp_path / "job.yaml", {"Chief": (1, "wait:worker-0", "ExitCode"),
                                                   "Worker": (1, "steps:3", "ExitCode")})
    proc, summary, _ = local(manifest, tmp_path, volume, "--kill", "worker-0:step 2", "--grace", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary["replicas"]["worker-0"]["exit_codes"] == [137, 0]
    manifest = write_tfjob(tmp_path / "job.yaml", {"Chief": (1, "hang", "ExitCode"),
                                                   "Worker": (1, "exit:3", "ExitCode")})
    proc, summary, _ = local(manifest, tmp_path, volume, "--grace", "0.5")
    assert proc.returncode == 1 and "restartPolicy ExitCode retries only codes >= 128" in summary["reason"]


def test_without_a_chief_worker_0_or_all_workers_decide(tmp_path, volume):
    manifest = write_tfjob(tmp_path / "job.yaml", {"Worker": (2, "exit:0,hang", "OnFailure")})
    proc, summary, _ = local(manifest, tmp_path, volume, "--grace", "0.5")
    assert proc.returncode == 0 and summary["reason"] == "worker-0 exited 0 (no chief)"
    assert summary["replicas"]["worker-1"]["end"] == "terminated by local_run"
    manifest = write_tfjob(tmp_path / "job.yaml", {"Worker": (2, "exit:0,sleep:0.3", "OnFailure")},
                           success_policy="AllWorkers")
    proc, summary, _ = local(manifest, tmp_path, volume, "--grace", "0.5")
    assert proc.returncode == 0 and summary["reason"] == "all 2 workers exited 0 (successPolicy AllWorkers)"


def test_timeout_fails_and_stops_everything(tmp_path, volume):
    manifest = write_tfjob(tmp_path / "job.yaml", {"Chief": (1, "hang", "OnFailure")})
    proc, summary, _ = local(manifest, tmp_path, volume, "--timeout", "1")
    assert proc.returncode == 1 and summary["reason"] == "timed out after 1 s (--timeout)"
    assert summary["replicas"]["chief-0"]["exit_codes"] == [143]
    assert summary["tf_config"]["chief-0"] is None  # one replica: no TF_CONFIG, as from the operator


@pytest.mark.parametrize("doc, options, expected", [
    ("kind: MPIJob\napiVersion: kubeflow.org/v2beta1\nmetadata: {name: w}\n", (),
     "kind: MPIJob (Horovod) is not run by local_run, which runs TFJobs; run it locally with horovodrun"),
    ("kind: Service\napiVersion: v1\n", (), "kind: expected a TFJob (apiVersion kubeflow.org/v1), found ['Service']"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: {replicas: "
     "two}}}\n", (), "spec.tfReplicaSpecs.Worker.replicas: expected an integer >= 0, got 'two'"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: {template: "
     "{spec: {containers: [{name: main}]}}}}}\n", (),
     "spec.tfReplicaSpecs.Worker.template.spec.containers: no container named 'tensorflow'"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: "
     "{restartPolicy: Sometimes}}}\n", (), "spec.tfReplicaSpecs.Worker.restartPolicy: expected one of Always"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: {template: "
     "{spec: {containers: [{name: tensorflow, command: [python, a.py], env: [{name: S, valueFrom: {secretKeyRef: "
     "{name: s, key: k}}}]}]}}}}}\n", (),
     "spec.tfReplicaSpecs.Worker.template.spec.containers[tensorflow].env[0].valueFrom: S: secretKeyRef is not "
     "available locally; only fieldRef is"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: {template: "
     "{spec: {containers: [{name: tensorflow, command: [python, a.py], args: [--seed, 2021]}]}}}}}\n", (),
     "containers[tensorflow].args: expected a list of strings (quote numbers"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: {template: "
     "{spec: {containers: [{name: tensorflow, command: [python, a.py]}]}}}}}\n", ("--ps", "2"),
     "--ps 2: {manifest} has no spec.tfReplicaSpecs.PS to start them from"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: {template: "
     "{spec: {containers: [{name: tensorflow, command: [python, a.py]}]}}}}}\n", ("--kill", "worker-3:x"),
     "--kill 'worker-3:x': no replica 'worker-3' in this job (worker-0)"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: {template: "
     "{spec: {containers: [{name: tensorflow, command: [python, a.py]}]}}}}}\n", ("--kill", "worker-0@worker-3:x"),
     "--kill 'worker-0@worker-3:x': no replica 'worker-3' in this job (worker-0)"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: {template: "
     "{spec: {containers: [{name: tensorflow, command: [python, a.py]}]}}}}}\n", ("--mount", "/data=/tmp"),
     "--mount /data=...: no volumeMount of {manifest} has mountPath /data"),
    ("kind: TFJob\napiVersion: kubeflow.org/v1\nmetadata: {name: j}\nspec: {tfReplicaSpecs: {Worker: {template: "
     "{spec: {containers: [{name: tensorflow, command: [python, a.py]}]}}}}}\n", ("--workers", "0"),
     "spec.tfReplicaSpecs: no Chief, Master or Worker replica left"),
    ("kind: TFJob\n  bad: [\n", (), "not valid YAML"),
])
def test_bad_manifests_exit_2_naming_the_file_and_field(tmp_path, doc, options, expected):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(doc)
    proc = subprocess.run([sys.executable, "-m", "distribute_k8s.local_run", str(manifest), "--root",
                           str(tmp_path / "root"), *options], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("local_run: error: "), proc.stderr
    assert expected.format(manifest=manifest) in proc.stderr, proc.stderr
    assert str(manifest) in proc.stderr or options and options[0] in proc.stderr, proc.stderr  # the file, or the flag
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_the_gdmix_manifest_plan(tmp_path):
    """The repository's gdmix_lr TFJob, planned (--dry_run): what each replica would run, nothing started."""
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "distribute_k8s.local_run", str(GDMIX), "--root", str(tmp_path / "r"),
                           "--mount", f"/mnt/modelzoo={data}", "--workers", "2", "--dry_run", "--", "--sweeps", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert not (tmp_path / "r").exists() and not data.exists()  # nothing created
    assert plan["job"] == "gdmix-lr-fp32" and list(plan["replicas"]) == ["chief-0", "worker-0", "worker-1"]
    assert plan["paths"] == {"/opt/modelzoo": str(REPO), "/mnt/modelzoo": str(data),
                             "/tmp": str(tmp_path / "r" / "tmp")}  # the pods' /tmp emptyDir: a folder of --root
    ports = set()
    for name, replica in plan["replicas"].items():
        kind, index = name.split("-")
        args = replica["argv"]
        assert args[0] == sys.executable and replica["cwd"] == str(REPO)
        train = args[args.index("--") + 1:] if "--" in args else args[2:]
        assert os.path.exists(REPO / args[1])  # launch.py or the script, relative to the repository
        assert train[train.index("--data_location") + 1] == f"{data}/data/ml-100k"
        assert train[train.index("--output_dir") + 1] == f"{data}/result/gdmix-lr-fp32/gdmix_lr"
        assert train[-2:] == ["--sweeps", "1"]
        assert replica["env"]["JOB_NAME"] == "gdmix-lr-fp32" and replica["env"]["OMP_NUM_THREADS"] == "2"
        config = json.loads(replica["env"]["TF_CONFIG"])
        assert config == replica["tf_config"] and config["task"] == {"type": kind, "index": int(index)}
        assert sorted(config["cluster"]) == ["chief", "worker"] and len(config["cluster"]["worker"]) == 2
        ports |= {a for v in config["cluster"].values() for a in v}
        assert replica["restart_policy"] == "OnFailure" and replica["log"] == f"{tmp_path}/r/logs/{name}.log"
    assert len(ports) == 3


def test_kubernetes_expansion_rules():
    variables = {"A": "1", "B": "$(A)"}
    assert local_run.expand("$(A)-$(B)-$(C)", variables) == "1-$(A)-$(C)"  # values are not expanded again
    assert local_run.expand("$$(A) $$ $x $(A $", variables) == "$(A) $ $x $(A $"
    assert local_run.expand("$()", variables) == "$()"
    mapping = [("/mnt/modelzoo", "/local/vol"), ("/opt/modelzoo", "/repo")]
    assert local_run.map_path("/mnt/modelzoo/data", mapping) == "/local/vol/data"
    assert local_run.map_path("--output_dir=/mnt/modelzoo/r", mapping) == "--output_dir=/local/vol/r"
    assert local_run.map_path("/mnt/modelzoo/a.csv,/mnt/modelzoo/b.csv", mapping) == "/local/vol/a.csv,/local/vol/b.csv"
    assert local_run.map_path("/mnt/modelzoo2/x", mapping) == "/mnt/modelzoo2/x"
    assert [local_run.is_retryable_exit_code(c) for c in (1, 2, 127, 128, 130, 137, 139, 143)] == \
        [False, False, False, True, True, True, True, True]


def test_sigint_stops_every_replica_first(tmp_path, volume):
    manifest = write_tfjob(tmp_path / "job.yaml", {"Chief": (1, "hang", "OnFailure"),
                                                   "Worker": (1, "hang", "OnFailure")}, via_launch=True)
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, "-m", "distribute_k8s.local_run", str(manifest), "--root", str(root),
                             "--mount", f"/mnt/modelzoo={volume}", "--timeout", "30"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    scripts = []
    try:
        for line in proc.stdout:
            if " REPORT " in line:
                scripts.append(json.loads(line.split(" REPORT ", 1)[1])["pid"])
                if len(scripts) == 2:
                    break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    summary = json.loads((root / "summary.json").read_text())
    assert summary["outcome"] == "Failed" and summary["reason"] == "interrupted by SIGINT"
    for name in ("chief-0", "worker-0"):
        replica = summary["replicas"][name]
        assert replica["exit_codes"] == [143] and replica["end"] == "terminated by local_run"
        assert not os.path.exists(f"/proc/{replica['pid']}")  # the launcher
    assert scripts and not any(os.path.exists(f"/proc/{pid}") for pid in scripts)  # and the script it started


def test_env_option_overrides_the_manifests_value_and_bad_ones_are_refused(tmp_path):
    """--env NAME=VALUE sets a container variable over the manifest's (e.g. no jemalloc on this machine)."""
    manifest = REPO / "dlrm" / "distribute_k8s" / "distribute_k8s_FP32.yaml"
    base = [sys.executable, "-m", "distribute_k8s.local_run", str(manifest), "--root", str(tmp_path / "r"),
            "--dry_run"]
    proc = subprocess.run(base + ["--env", "MEM_USAGE_STRATEGY=close", "--env", "EXTRA=a=b"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    for replica in json.loads(proc.stdout)["replicas"].values():
        assert replica["env"]["MEM_USAGE_STRATEGY"] == "close" and replica["env"]["EXTRA"] == "a=b"
    bad = subprocess.run(base + ["--env", "NO_VALUE"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--env NO_VALUE: expected NAME=VALUE" in bad.stderr


@pytest.mark.parametrize("where", ["root", "summary"])
def test_an_unwritable_root_or_summary_exits_2_with_one_line_before_any_replica_starts(tmp_path, volume, where):
    """Running as root, a path under a regular file is unwritable for everyone (ENOTDIR)."""
    manifest = write_tfjob(tmp_path / "job.yaml", {"Worker": (1, "exit:0", "Never")})
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    root = blocker / "root" if where == "root" else tmp_path / "root"
    options = ["--summary", str(blocker / "summary.json")] if where == "summary" else []
    proc = subprocess.run([sys.executable, "-m", "distribute_k8s.local_run", str(manifest), "--root", str(root),
                           "--mount", f"/mnt/modelzoo={volume}", *options], cwd=REPO, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    flag = "--root" if where == "root" else "--summary"
    assert proc.stderr.startswith(f"local_run: error: {flag} "), proc.stderr
    assert "cannot write" in proc.stderr and "a file is in the way (not a folder)" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "REPORT" not in proc.stdout and not (volume / "out").exists()  # no replica ran

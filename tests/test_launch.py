"""distribute_k8s/launch.py, the pods' entry point: arguments, TF_CONFIG, the allocator the child really
runs with, exit statuses and signals. Tiny fake scripts in tmp_path, no TensorFlow."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

from distribute_k8s import launch  # the module under test, for its pure functions

LAUNCH = REPO / "distribute_k8s" / "launch.py"
JEMALLOC = launch.find_jemalloc()
needs_jemalloc = pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc.so.2 not installed (apt-get install "
                                                             "libjemalloc2): the allocator checks need it")
CLEAN = ("TF_CONFIG", "TF_JOB_NAME", "TF_REPLICAS", "TF_TASK", "TF_PORT", "POD_NAME", "TF_SCRIPT", "TF_WORKSPACE",
         "MEM_USAGE_STRATEGY", "JEMALLOC_PATH", "MALLOC_CONF", "LD_PRELOAD", "OMP_NUM_THREADS")

REPORT = r"""
import json, os, sys
print("REPORT " + json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "tf_config": os.environ.get("TF_CONFIG"),
      "ld_preload": os.environ.get("LD_PRELOAD"), "malloc_conf": os.environ.get("MALLOC_CONF"),
      "executable": sys.executable,
      "jemalloc_mapped": "libjemalloc" in open("/proc/self/maps").read()}))
"""


def run(args, tmp_path, env=None, script=REPORT, name="report.py", timeout=30):
    """launch.py in a subprocess with a clean launcher environment (plus `env`); returns the process and
    the child's report (None when the child did not print one)."""
    (tmp_path / name).write_text(script)
    full = {k: v for k, v in os.environ.items() if k not in CLEAN}
    full.update(env or {})
    proc = subprocess.run([sys.executable, str(LAUNCH), *args], cwd=tmp_path, env=full, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    return proc, (json.loads(lines[0][len("REPORT "):]) if lines else None)


def test_arguments_after_the_separator_reach_the_script_unchanged(tmp_path):
    proc, report = run(["--script", "report.py", "--workspace", str(tmp_path), "--mem_usage_strategy", "close",
                        "--", "--steps", "60", "--", "--script", "x"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert report["argv"] == ["--steps", "60", "--", "--script", "x"]
    assert report["cwd"] == str(tmp_path)
    assert report["executable"] == sys.executable
    assert proc.stdout.startswith("launch.py: no TF_CONFIG (one process); script report.py")


def test_without_separator_everything_goes_to_the_script_and_env_names_it(tmp_path):
    work = tmp_path / "ws"
    work.mkdir()
    (work / "report.py").write_text(REPORT)
    proc, report = run(["--script", "other.py", "--steps", "3"], tmp_path,
                       env={"TF_SCRIPT": "report.py", "TF_WORKSPACE": str(work), "MEM_USAGE_STRATEGY": "close"})
    assert proc.returncode == 0, proc.stderr
    assert report["argv"] == ["--script", "other.py", "--steps", "3"]
    assert report["cwd"] == str(work)


def test_the_default_workspace_is_the_repository(tmp_path):
    proc, _ = run(["--script", "distribute_k8s/launch.py", "--mem_usage_strategy", "close", "--", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"in {REPO}" in proc.stdout.splitlines()[0]
    assert "usage: python distribute_k8s/launch.py" in proc.stdout  # the script ran: launch.py's own help


@pytest.mark.parametrize("args, env, expected", [
    ([], {}, "no script to run: give --script PATH before `--`, or set TF_SCRIPT"),
    (["--script", "missing.py", "--"], {}, "script missing.py (--script) not found in the workspace"),
    ([], {"TF_SCRIPT": "nope.py"}, "script nope.py (TF_SCRIPT) not found in the workspace"),
    (["--workspace", "/nonexistent", "--script", "a.py", "--"], {}, "workspace /nonexistent (--workspace) is not a "
                                                                    "folder"),
    (["--mem_usage_strategy", "fast", "--script", "report.py", "--"], {},
     "MEM_USAGE_STRATEGY/--mem_usage_strategy 'fast' is not known: expected one of jemalloc, 251"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, env, expected):
    proc, report = run(args, tmp_path, env=dict(env, TF_WORKSPACE=str(tmp_path)))
    assert proc.returncode == 2 and report is None
    assert proc.stderr.startswith("launch.py: error: ") and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("tf_config, expected", [
    ("{not json", "TF_CONFIG is not JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG: expected "cluster"'),
    ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG: expected "task"'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "Worker", "index": 0}}',
     'TF_CONFIG: task.type "Worker" is not one of chief, worker, ps, evaluator, master'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}',
     'TF_CONFIG: task.index "0" is not an integer >= 0'),
    ('{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 1}}',
     "TF_CONFIG: task worker:1 is not in the cluster (chief:1, worker:1)"),
    ('{"cluster": {"Worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG: cluster type 'Worker' is not one of"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
     'TF_CONFIG: cluster.worker: expected a list of "host:port" strings'),
])
def test_bad_tf_config_is_refused_naming_the_problem(tmp_path, tf_config, expected):
    proc, report = run(["--script", "report.py", "--workspace", str(tmp_path), "--"], tmp_path,
                       env={"TF_CONFIG": tf_config, "MEM_USAGE_STRATEGY": "close"})
    assert proc.returncode == 2 and report is None
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_operators_tf_config_is_passed_through_and_the_evaluator_is_outside_the_cluster(tmp_path):
    config = {"cluster": {"chief": ["j-chief-0.default.svc:2222"], "ps": ["j-ps-0.default.svc:2222"]},
              "task": {"type": "evaluator", "index": 0}, "environment": "cloud"}
    proc, report = run(["--script", "report.py", "--workspace", str(tmp_path), "--"], tmp_path,
                       env={"TF_CONFIG": json.dumps(config), "MEM_USAGE_STRATEGY": "close"})
    assert proc.returncode == 0, proc.stderr
    assert report["tf_config"] == json.dumps(config)  # the operator's text, unchanged
    assert "task evaluator:0 (TF_CONFIG from the environment; cluster chief:1 ps:1)" in proc.stdout


DLRM_CLUSTER = {"chief": ["dlrm-chief-0.dlrm:2222"], "ps": ["dlrm-ps-0.dlrm:2222"],
                "worker": ["dlrm-worker-0.dlrm:2222", "dlrm-worker-1.dlrm:2222"]}


@pytest.mark.parametrize("task_env, task", [
    ({"TF_TASK": "worker:1"}, {"type": "worker", "index": 1}),
    ({"POD_NAME": "dlrm-ps-0"}, {"type": "ps", "index": 0}),
    ({"HOSTNAME": "dlrm-chief-0"}, {"type": "chief", "index": 0}),
    ({"TF_TASK": "evaluator:0", "HOSTNAME": "ignored"}, {"type": "evaluator", "index": 0}),
])
def test_tf_config_is_built_for_a_job_without_the_operator(tmp_path, task_env, task):
    env = dict(task_env, TF_JOB_NAME="dlrm", TF_REPLICAS="chief:1,worker:2,ps:1,evaluator:1",
               MEM_USAGE_STRATEGY="close")
    proc, report = run(["--script", "report.py", "--workspace", str(tmp_path), "--"], tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report["tf_config"]) == {"cluster": DLRM_CLUSTER, "task": task, "environment": "cloud"}


def test_tf_port_and_uppercase_types(tmp_path):
    assert launch.tf_config_from_job_env({"TF_JOB_NAME": "w", "TF_REPLICAS": "Chief:1,PS:2", "TF_PORT": "3000",
                                          "TF_TASK": "ps:1"}) == {
        "cluster": {"chief": ["w-chief-0.w:3000"], "ps": ["w-ps-0.w:3000", "w-ps-1.w:3000"]},
        "task": {"type": "ps", "index": 1}, "environment": "cloud"}
    assert launch.tf_config_from_job_env({"HOSTNAME": "some-pod"}) is None  # none of the variables: one process


@pytest.mark.parametrize("env, expected", [
    ({"TF_JOB_NAME": "dlrm"}, "TF_JOB_NAME (e.g. dlrm) and TF_REPLICAS (e.g. chief:1,worker:2,ps:1) are both needed"),
    ({"TF_JOB_NAME": "dlrm", "TF_REPLICAS": "chief:1,workers:2", "TF_TASK": "chief:0"},
     "TF_REPLICAS 'chief:1,workers:2': expected TYPE:COUNT pairs"),
    ({"TF_JOB_NAME": "dlrm", "TF_REPLICAS": "chief:1,worker:2", "TF_TASK": "worker:2"},
     "TF_TASK 'worker:2': task worker:2 is not among TF_REPLICAS"),
    ({"TF_JOB_NAME": "dlrm", "TF_REPLICAS": "chief:1", "POD_NAME": "dlrm-7f9c-x"},
     "POD_NAME 'dlrm-7f9c-x': expected dlrm-TYPE-INDEX like dlrm-worker-1 (or set TF_TASK)"),
    ({"TF_JOB_NAME": "dlrm", "TF_REPLICAS": "chief:1", "TF_TASK": "chief:0", "TF_PORT": "http"},
     "TF_PORT 'http': expected a port number"),
])
def test_bad_job_environment_is_refused(tmp_path, env, expected):
    proc, _ = run(["--script", "report.py", "--workspace", str(tmp_path), "--"], tmp_path,
                  env=dict(env, MEM_USAGE_STRATEGY="close"))
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr


@needs_jemalloc
def test_jemalloc_is_preloaded_into_the_child_with_the_training_conf(tmp_path):
    proc, report = run(["--script", "report.py", "--workspace", str(tmp_path), "--"], tmp_path,
                       env={"LD_PRELOAD": "/nonexistent/libother.so"})
    assert proc.returncode == 0, proc.stderr
    assert report["ld_preload"] == f"{JEMALLOC}:/nonexistent/libother.so"  # prepended to what was there
    assert report["malloc_conf"] == launch.TRAINING_CONF
    assert report["jemalloc_mapped"]
    line = proc.stdout.splitlines()[0]
    assert f"allocator jemalloc (strategy jemalloc): LD_PRELOAD={JEMALLOC} MALLOC_CONF={launch.TRAINING_CONF}" in line


@needs_jemalloc
def test_jemalloc_really_reads_malloc_conf_and_a_user_conf_wins(tmp_path):
    # stats_print:true makes jemalloc print its statistics report at exit: proof that jemalloc itself
    # parsed MALLOC_CONF in the child, not only that the variable was there.
    proc, report = run(["--script", "report.py", "--workspace", str(tmp_path), "--mem_usage_strategy", "251", "--"],
                       tmp_path, env={"MALLOC_CONF": "stats_print:true,narenas:3"})
    assert proc.returncode == 0, proc.stderr
    assert report["malloc_conf"] == "stats_print:true,narenas:3" and report["jemalloc_mapped"]
    assert "Begin jemalloc statistics" in proc.stderr and "End jemalloc statistics" in proc.stderr
    assert "narenas: 3" in proc.stderr  # the option jemalloc reports as in effect
    assert "(from the environment; it wins over the strategy's)" in proc.stdout
    # Without it, the strategy's conf is what jemalloc runs with (its stats show background_thread on).
    proc, report = run(["--script", "report.py", "--workspace", str(tmp_path), "--mem_usage_strategy", "251", "--"],
                       tmp_path)
    assert report["malloc_conf"] == launch.STRATEGIES["251"][1]


@needs_jemalloc
def test_strategy_conf_is_in_effect_in_jemalloc(tmp_path):
    # opt.dirty_decay_ms as jemalloc reports it (stats_print appended to the strategy's conf by the user).
    conf = launch.STRATEGIES["mid"][1] + ",stats_print:true"
    proc, _ = run(["--script", "report.py", "--workspace", str(tmp_path), "--mem_usage_strategy", "mid", "--"],
                  tmp_path, env={"MALLOC_CONF": conf})
    assert "opt.dirty_decay_ms: 10000" in proc.stderr and "opt.background_thread: true" in proc.stderr


@pytest.mark.parametrize("strategy", ["close", "closed", "glibc", "CLOSE"])
def test_close_preloads_nothing_and_removes_an_inherited_jemalloc(tmp_path, strategy):
    proc, report = run(["--script", "report.py", "--workspace", str(tmp_path), "--"], tmp_path,
                       env={"MEM_USAGE_STRATEGY": strategy,
                            "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})
    assert proc.returncode == 0, proc.stderr
    assert report["ld_preload"] is None and not report["jemalloc_mapped"]
    assert "allocator glibc malloc" in proc.stdout


def test_a_missing_jemalloc_exits_2_naming_the_package_and_the_option(tmp_path):
    for args, env, origin in ((["--jemalloc", "/nonexistent/libjemalloc.so.2"], {}, "--jemalloc"),
                              ([], {"JEMALLOC_PATH": "/nonexistent"}, "JEMALLOC_PATH")):
        proc, report = run([*args, "--script", "report.py", "--workspace", str(tmp_path), "--"], tmp_path, env=env)
        assert proc.returncode == 2 and report is None
        assert "launch.py: error: jemalloc /nonexistent" in proc.stderr and f"({origin}) not found" in proc.stderr
        assert "apt-get install libjemalloc2" in proc.stderr and "--mem_usage_strategy close" in proc.stderr
    # Nowhere to be found (no Debian path, no ldconfig entry): the same kind of message.
    with pytest.raises(launch.LaunchError, match="install Debian's libjemalloc2 package .* --jemalloc PATH"):
        launch.memory_settings("jemalloc", None, {}, find=lambda *a: launch.find_jemalloc(
            *a, candidates=(), use_ldconfig=False))


@needs_jemalloc
def test_jemalloc_path_may_be_a_folder_as_deeprecs(tmp_path):
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "libjemalloc.so.2").symlink_to(JEMALLOC)
    proc, report = run(["--script", "report.py", "--workspace", str(tmp_path), "--"], tmp_path,
                       env={"JEMALLOC_PATH": str(folder)})
    assert report["ld_preload"] == str(folder / "libjemalloc.so.2") and report["jemalloc_mapped"]


def test_cpu_limit_from_cgroup(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    for text, expected in (("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000", 1), ("max 100000", None)):
        cpu_max.write_text(text)
        assert launch.cpu_limit(str(cpu_max), v1=("/nonexistent",) * 2) == expected
    quota, period = tmp_path / "q", tmp_path / "p"
    quota.write_text("400000\n")
    period.write_text("100000\n")
    assert launch.cpu_limit("/nonexistent", v1=(str(quota), str(period))) == 4
    assert launch.cpu_limit("/nonexistent", v1=("/nonexistent",) * 2) is None


@pytest.mark.parametrize("body, code", [("raise SystemExit(3)", 3), ("import os, signal\nos.kill(os.getpid(), "
                                                                      "signal.SIGKILL)", 137)])
def test_the_childs_exit_status_is_the_launchers(tmp_path, body, code):
    proc, _ = run(["--script", "child.py", "--workspace", str(tmp_path), "--mem_usage_strategy", "close", "--"],
                  tmp_path, script=body, name="child.py")
    assert proc.returncode == code, proc.stderr


HANDLER = r"""
import pathlib, signal, sys, time
marker = pathlib.Path(sys.argv[1])
def handler(signum, frame):
    marker.write_text(signal.Signals(signum).name)
    sys.exit(7)
signal.signal(signal.SIGTERM, handler)
print("ready", flush=True)
time.sleep(30)
"""


@pytest.mark.parametrize("script, expected_code, marker_text", [(HANDLER, 7, "SIGTERM"),
                                                                 ("import time\nprint('ready', flush=True)\n"
                                                                  "time.sleep(30)", 143, None)])
def test_sigterm_to_the_launcher_reaches_the_child(tmp_path, script, expected_code, marker_text):
    (tmp_path / "child.py").write_text(script)
    marker = tmp_path / "marker"
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    proc = subprocess.Popen([sys.executable, str(LAUNCH), "--script", "child.py", "--workspace", str(tmp_path),
                             "--mem_usage_strategy", "close", "--", str(marker)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().startswith("launch.py: ")
        assert proc.stdout.readline().strip() == "ready"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == expected_code
        assert time.monotonic() - start < 5
    finally:
        proc.kill()
        proc.wait()
    if marker_text:
        assert marker.read_text() == marker_text


def test_the_launchers_help_without_a_script(tmp_path):
    proc, _ = run(["--help"], tmp_path)
    assert proc.returncode == 0 and "--mem_usage_strategy STRATEGY" in proc.stdout and "JEMALLOC_PATH" in proc.stdout

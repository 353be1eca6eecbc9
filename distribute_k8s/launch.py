#!/usr/bin/env python3
"""The entry point of every TFJob pod: sets up the allocator and TF_CONFIG, then runs the model's script.

    python distribute_k8s/launch.py [launcher options] -- [script args]

Options before `--` are the launcher's, everything after it goes to the script unchanged. Without
`--` every argument goes to the script and the launcher reads only its environment (DeepRec's
launcher takes no options at all: TF_SCRIPT and TF_WORKSPACE).

Why a launcher: the allocator has to be chosen before the training process starts. jemalloc reads
MALLOC_CONF once, when it initializes, and LD_PRELOAD only works at exec, so setting either inside
a running Python does nothing. The launcher starts the script as a child process (same interpreter,
cwd = the workspace) with LD_PRELOAD and MALLOC_CONF set, forwards SIGTERM/SIGINT/SIGHUP to it
and exits with its exit status (128+N when a signal N killed it, as a shell reports it). The child
stays in the launcher's process group, so the SIGKILL that Kubernetes sends after the grace period
reaches both.

Environment (the options win over it):
  TF_SCRIPT, TF_WORKSPACE     the script (--script) and the folder it is relative to (--workspace;
                              default: the repository root, the image's /opt/modelzoo)
  MEM_USAGE_STRATEGY          the allocator (--mem_usage_strategy), see STRATEGIES; default jemalloc
  JEMALLOC_PATH               libjemalloc.so.2, or a folder holding it (--jemalloc); default: Debian's
                              libjemalloc2 package, else `ldconfig -p`
  MALLOC_CONF                 when set, used as is instead of the strategy's
  TF_CONFIG                   from the Kubeflow training operator: checked, then passed on
  TF_JOB_NAME, TF_REPLICAS, TF_TASK, TF_PORT, POD_NAME
                              without the operator (a plain Job with a headless service named after
                              the job): TF_CONFIG is built from these, see tf_config_from_job_env
  OMP_NUM_THREADS             when unset, set to the container's CPU limit (cgroup cpu.max), if any

Exit status: 2 for a launcher usage error (the message names the option or variable), otherwise the
script's.
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run as a script (python distribute_k8s/launch.py): modelzoo from the repository. tf_config is pure
# Python, so no TensorFlow is imported before the script runs.
sys.path.insert(0, REPO)
from modelzoo.tf_config import TASK_TYPES, TFConfigError, parse as parse_tf_config  # noqa: E402

EXIT_USAGE = 2
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
JEMALLOC_SONAME = "libjemalloc.so.2"
# Debian/Ubuntu's libjemalloc2 (what the image installs), x86-64 and arm64.
JEMALLOC_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2")
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2; v1 below
CGROUP_V1_QUOTA = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")

# MEM_USAGE_STRATEGY: name -> (preload jemalloc?, its MALLOC_CONF or None for jemalloc's defaults).
# DeepRec's launcher (modelzoo/*/distribute_k8s/launch.py, set_jemalloc_version) preloads one of two
# jemalloc builds that it ships in the workspace, libjemalloc.so.2.4.4 (jemalloc 4.4) and
# libjemalloc.so.2.5.1 (jemalloc 5.1), with these MALLOC_CONFs. Here the one jemalloc is Debian's
# libjemalloc2 (5.x); where DeepRec relies on something stock TensorFlow or jemalloc 5 lacks, the
# closest real setting is used, as noted.
TRAINING_CONF = "background_thread:true,metadata_thp:auto,dirty_decay_ms:20000,muzzy_decay_ms:20000"
STRATEGIES = {
    # Ours, the default: DeepRec's documented setting for training (docs "CPU Memory Optimization":
    # background purging threads, transparent huge pages for metadata, freed pages returned after 20 s).
    "jemalloc": (True, TRAINING_CONF),
    # DeepRec's "251": its jemalloc 5.1 with 60 s decay. DeepRec pairs it with its own runtime memory
    # optimization (ENABLE_MEMORY_OPTIMIZATION, a tensor pool allocator), which stock TensorFlow does
    # not have: here "251" is the allocator part only, on Debian's jemalloc 5.x.
    "251": (True, "background_thread:true,metadata_thp:auto,dirty_decay_ms:60000,muzzy_decay_ms:60000"),
    # DeepRec's "max" (also what its launcher falls back to for any other value): 240 s decay.
    "max": (True, "background_thread:true,metadata_thp:auto,dirty_decay_ms:240000,muzzy_decay_ms:240000"),
    "mid": (True, "background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:10000"),
    # "min": freed pages go back to the system at once (least memory, most page faults).
    "min": (True, "dirty_decay_ms:0,muzzy_decay_ms:0"),
    # DeepRec's "244"/"xmid": its jemalloc 4.4 with its defaults. No 4.x here: jemalloc 5.x's defaults.
    "244": (True, None),
    "xmid": (True, None),
    # DeepRec's "xmin": jemalloc 4.4 with decay_time:0, an option jemalloc 5 split into these two.
    "xmin": (True, "dirty_decay_ms:0,muzzy_decay_ms:0"),
    # Plain glibc malloc, nothing preloaded (DeepRec's "close", for stock TensorFlow). "closed" is the
    # spelling DeepRec's manifest generator writes; its launcher did not know it and preloaded jemalloc.
    "close": (False, None),
    "closed": (False, None),
    "glibc": (False, None),
}
DEFAULT_STRATEGY = "jemalloc"


class LaunchError(Exception):
    """A usage problem of the launcher (exit status 2); the message names the option or variable."""


def split_argv(argv):
    """(launcher args, script args, whether `--` was given): only the first `--` splits."""
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:], True
    return [], list(argv), False


def parser():
    p = argparse.ArgumentParser(
        prog="launch.py", usage="python distribute_k8s/launch.py [options] -- [script args]",
        description="Run a model script in a TFJob pod with the chosen allocator and a checked TF_CONFIG. "
                    "Options come before `--`; the arguments after it go to the script unchanged. Each "
                    "option falls back to the environment variable named in its help.",
        epilog="Without `--` every argument goes to the script and the launcher reads only the environment "
               "(TF_SCRIPT, TF_WORKSPACE, MEM_USAGE_STRATEGY, JEMALLOC_PATH, MALLOC_CONF, TF_CONFIG or "
               "TF_JOB_NAME/TF_REPLICAS/TF_TASK/TF_PORT). A MALLOC_CONF in the environment wins over the "
               "strategy's. Exit status: 2 for a launcher usage error, otherwise the script's (128+N when "
               "signal N killed it).")
    p.add_argument("--script", help="the script to run, relative to the workspace (env TF_SCRIPT)")
    p.add_argument("--workspace", help="folder the script is relative to and its working directory "
                                       "(env TF_WORKSPACE; default: the repository root)")
    p.add_argument("--mem_usage_strategy", metavar="STRATEGY",
                   help=f"allocator: {', '.join(STRATEGIES)} (env MEM_USAGE_STRATEGY; default "
                        f"{DEFAULT_STRATEGY}: {TRAINING_CONF})")
    p.add_argument("--jemalloc", metavar="PATH", help="libjemalloc.so.2 or a folder holding it (env JEMALLOC_PATH; "
                                                      "default: Debian's libjemalloc2, else ldconfig)")
    return p


def resolve_script(opts, environ):
    """(workspace, script path): from the options, else TF_WORKSPACE/TF_SCRIPT; checked to exist."""
    if opts.workspace:
        workspace, origin = opts.workspace, "--workspace"
    elif environ.get("TF_WORKSPACE"):
        workspace, origin = environ["TF_WORKSPACE"], "TF_WORKSPACE"
    else:
        workspace, origin = REPO, "the default, the repository root"
    if not os.path.isdir(workspace):
        raise LaunchError(f"workspace {workspace} ({origin}) is not a folder")
    script, origin = (opts.script, "--script") if opts.script else (environ.get("TF_SCRIPT"), "TF_SCRIPT")
    if not script:
        raise LaunchError("no script to run: give --script PATH before `--`, or set TF_SCRIPT "
                          f"(relative to the workspace, here {workspace})")
    path = os.path.join(workspace, script)
    if not os.path.isfile(path):
        raise LaunchError(f"script {script} ({origin}) not found in the workspace {workspace}")
    return os.path.abspath(workspace), os.path.abspath(path)


def check_tf_config(text):
    """TF_CONFIG parsed and checked (modelzoo/tf_config.py): {"cluster": {type: [host:port, ...]}, "task":
    {"type", "index"}}. `master` (the legacy chief) passes here; the trainer decides whether it runs under it."""
    try:
        return dict(parse_tf_config(text).raw)
    except TFConfigError as err:
        raise LaunchError(str(err)) from None


def parse_replicas(text):
    """TF_REPLICAS "chief:1,worker:2,ps:1,evaluator:1" -> {"chief": 1, ...} (types lowercased)."""
    counts = {}
    for part in text.split(","):
        match = re.fullmatch(r"\s*([A-Za-z]+)\s*:\s*(\d+)\s*", part)
        kind = match and match.group(1).lower()
        if not match or kind not in TASK_TYPES or kind in counts:
            raise LaunchError(f"TF_REPLICAS {text!r}: expected TYPE:COUNT pairs, each type once, like "
                              f"chief:1,worker:2,ps:1,evaluator:1 (types: {', '.join(TASK_TYPES)})")
        counts[kind] = int(match.group(2))
    return counts


def tf_config_from_job_env(environ):
    """TF_CONFIG for a plain Kubernetes Job (no training operator) from TF_JOB_NAME, TF_REPLICAS,
    TF_PORT (2222) and TF_TASK ("worker:1"; else parsed from POD_NAME or HOSTNAME, <job>-<type>-<index>).

    Each pod is reachable as <job>-<type>-<index>.<job>:<port>: the pod's hostname and a headless
    service named after the job as its subdomain. The evaluator is left out of the cluster, as the
    operator does. None when none of TF_JOB_NAME, TF_REPLICAS, TF_TASK is set (one process)."""
    if not any(environ.get(k) for k in ("TF_JOB_NAME", "TF_REPLICAS", "TF_TASK")):
        return None
    job, replicas_text = environ.get("TF_JOB_NAME", ""), environ.get("TF_REPLICAS", "")
    if not job or not replicas_text:
        raise LaunchError("without TF_CONFIG, TF_JOB_NAME (e.g. dlrm) and TF_REPLICAS (e.g. chief:1,worker:2,ps:1) "
                          "are both needed to build it")
    replicas = parse_replicas(replicas_text)
    port_text = environ.get("TF_PORT") or "2222"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise LaunchError(f"TF_PORT {port_text!r}: expected a port number (1-65535)")
    if environ.get("TF_TASK"):
        origin, match = "TF_TASK", re.fullmatch(r"([A-Za-z]+):(\d+)", environ["TF_TASK"].strip())
        text = environ["TF_TASK"]
    else:
        origin = "POD_NAME" if environ.get("POD_NAME") else "HOSTNAME"
        text = environ.get(origin, "")
        match = re.fullmatch(re.escape(job) + r"-([A-Za-z]+)-(\d+)", text)
    if not match:
        raise LaunchError(f"{origin} {text!r}: expected " + ("TYPE:INDEX like worker:1" if origin == "TF_TASK" else
                          f"{job}-TYPE-INDEX like {job}-worker-1 (or set TF_TASK)"))
    kind, index = match.group(1).lower(), int(match.group(2))
    if index >= replicas.get(kind, 0):
        raise LaunchError(f"{origin} {text!r}: task {kind}:{index} is not among TF_REPLICAS {replicas_text!r}")
    cluster = {kind_: [f"{job}-{kind_}-{i}.{job}:{port_text}" for i in range(n)]
               for kind_, n in sorted(replicas.items()) if kind_ != "evaluator" and n > 0}
    return {"cluster": cluster, "task": {"type": kind, "index": index}, "environment": "cloud"}


def resolve_tf_config(environ):
    """(TF_CONFIG dict or None, where it came from)."""
    if environ.get("TF_CONFIG", "").strip():
        return check_tf_config(environ["TF_CONFIG"]), "from the environment"
    config = tf_config_from_job_env(environ)
    return config, ("built from TF_JOB_NAME/TF_REPLICAS/TF_TASK" if config else None)


def ldconfig_lookup(soname=JEMALLOC_SONAME):
    """The path `ldconfig -p` knows for a library, or None."""
    ldconfig = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)
    if not ldconfig:
        return None
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        name, _, path = line.strip().partition(" => ")
        if name.split(" ")[0] == soname and os.path.isfile(path):
            return path
    return None


def find_jemalloc(explicit=None, origin="--jemalloc", candidates=JEMALLOC_CANDIDATES, use_ldconfig=True):
    """libjemalloc.so.2: the given file (or the one in the given folder), else Debian's, else ldconfig's."""
    if explicit:
        names = (JEMALLOC_SONAME, "libjemalloc.so.2.5.1")  # the latter: DeepRec's bundled 5.1 build
        path = next((os.path.join(explicit, n) for n in names if os.path.isfile(os.path.join(explicit, n))),
                    None) if os.path.isdir(explicit) else explicit
        if not path or not os.path.isfile(path):
            raise LaunchError(f"jemalloc {explicit} ({origin}) not found: give the path of {JEMALLOC_SONAME} "
                              "(apt-get install libjemalloc2 puts it in /usr/lib/<arch>-linux-gnu/), or run with "
                              "--mem_usage_strategy close (MEM_USAGE_STRATEGY=close) for glibc malloc")
        return os.path.abspath(path)
    for path in candidates:
        if os.path.isfile(path):
            return path
    return ldconfig_lookup() if use_ldconfig else None


def memory_settings(strategy, jemalloc, environ, find=find_jemalloc):
    """Environment changes for the child: {"LD_PRELOAD": ..., "MALLOC_CONF": ...} (None: unset it),
    and a description. A MALLOC_CONF already in the environment wins over the strategy's."""
    name = (strategy or DEFAULT_STRATEGY).strip().lower()
    if name not in STRATEGIES:
        raise LaunchError(f"MEM_USAGE_STRATEGY/--mem_usage_strategy {strategy!r} is not known: expected one of "
                          f"{', '.join(STRATEGIES)}")
    preload, conf = STRATEGIES[name]
    current = [p for p in re.split(r"[:\s]+", environ.get("LD_PRELOAD", "")) if p]
    if not preload:
        # Nothing preloaded, and a jemalloc the image's environment preloads is taken out.
        kept = [p for p in current if "libjemalloc" not in os.path.basename(p)]
        return {"LD_PRELOAD": ":".join(kept) or None}, f"glibc malloc (strategy {name}): no jemalloc preloaded"
    if jemalloc:
        path = find(jemalloc, "--jemalloc")
    elif environ.get("JEMALLOC_PATH"):
        path = find(environ["JEMALLOC_PATH"], "JEMALLOC_PATH")
    else:
        path = find()
    if not path:
        raise LaunchError(f"MEM_USAGE_STRATEGY {name} preloads jemalloc, but {JEMALLOC_SONAME} was not found: install "
                          "Debian's libjemalloc2 package (apt-get install libjemalloc2), give its path with --jemalloc "
                          "PATH (JEMALLOC_PATH), or run with --mem_usage_strategy close for glibc malloc")
    changes = {"LD_PRELOAD": ":".join([path] + [p for p in current if p != path])}
    if "MALLOC_CONF" in environ:
        conf_text = f"MALLOC_CONF={environ['MALLOC_CONF']} (from the environment; it wins over the strategy's)"
    else:
        changes["MALLOC_CONF"] = conf
        conf_text = f"MALLOC_CONF={conf}" if conf else "MALLOC_CONF unset (jemalloc's defaults)"
    return changes, f"jemalloc (strategy {name}): LD_PRELOAD={path} {conf_text}"


def _read(path):
    with open(path) as f:
        return f.read().strip()


def cpu_limit(cpu_max=CGROUP_CPU_MAX, v1=CGROUP_V1_QUOTA):
    """The container's CPU limit in whole cores (rounded up), from cgroup v2 cpu.max or v1's CFS quota;
    None when there is no limit or no cgroup file."""
    try:
        parts = _read(cpu_max).split()
        quota, period = (parts + ["max", "100000"][len(parts):])[:2]  # "QUOTA PERIOD"; the period may be left out
    except OSError:
        try:
            quota, period = (_read(path) for path in v1)
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) <= 0:
        return None
    return max(1, math.ceil(int(quota) / int(period))) if int(quota) > 0 else None


def child_environment(environ, tf_config, memory_changes, cpus):
    """The script's environment: the launcher's (an existing TF_CONFIG unchanged), plus a TF_CONFIG built
    here (compact JSON, as the operator writes it), the allocator's variables, unbuffered
    Python output (as DeepRec's `python -u`: log lines reach `kubectl logs` as they are written) and
    OMP_NUM_THREADS = the CPU limit when unset (OpenMP would otherwise use every core of the node)."""
    env = dict(environ)
    if tf_config is not None and not environ.get("TF_CONFIG", "").strip():
        env["TF_CONFIG"] = json.dumps(tf_config, separators=(",", ":"))
    for key, value in memory_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env.setdefault("PYTHONUNBUFFERED", "1")
    if cpus and not env.get("OMP_NUM_THREADS"):
        env["OMP_NUM_THREADS"] = str(cpus)
    return env


def _terminal_signals_group():
    """True when the launcher is the foreground job of a terminal: a Ctrl-C (or hangup) there already
    reaches the child, which shares the process group, so forwarding it would deliver it twice."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def run_child(cmd, cwd, env):
    """Start the script, forward catchable termination signals to it, return its exit status as a
    shell reports it (128+N for a signal N)."""
    holder, pending = {}, []

    def forward(signum, _frame):
        if signum != signal.SIGTERM and _terminal_signals_group():
            return
        child = holder.get("child")
        if child is None:
            pending.append(signum)
            return
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    try:
        holder["child"] = child = subprocess.Popen(cmd, cwd=cwd, env=env)
    except OSError as err:
        raise LaunchError(f"cannot start {' '.join(cmd[:2])}: {err}") from None
    for sig in pending:
        forward(sig, None)
    code = child.wait()
    return code if code >= 0 else 128 - code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    launcher_args, script_args, separated = split_argv(argv)
    environ = dict(os.environ)
    if not separated and argv in (["-h"], ["--help"]) and not environ.get("TF_SCRIPT"):
        parser().print_help()  # no script to give them to: the launcher's own help
        return 0
    opts = parser().parse_args(launcher_args)  # exits 2 with argparse's one-line message
    try:
        workspace, script = resolve_script(opts, environ)
        tf_config, origin = resolve_tf_config(environ)
        strategy = opts.mem_usage_strategy or environ.get("MEM_USAGE_STRATEGY") or DEFAULT_STRATEGY
        memory_changes, memory_text = memory_settings(strategy, opts.jemalloc, environ)
    except LaunchError as err:
        print(f"launch.py: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    cpus = cpu_limit() if not environ.get("OMP_NUM_THREADS") else None
    env = child_environment(environ, tf_config, memory_changes, cpus)
    if tf_config:
        task = tf_config["task"]
        cluster = " ".join(f"{k}:{len(v)}" for k, v in sorted(tf_config["cluster"].items()))
        task_text = f"task {task['type']}:{task['index']} (TF_CONFIG {origin}; cluster {cluster})"
    else:
        task_text = "no TF_CONFIG (one process)"
    threads = f", OMP_NUM_THREADS={cpus} (the CPU limit)" if cpus else ""
    shown = os.path.relpath(script, workspace) if script.startswith(workspace + os.sep) else script
    print(f"launch.py: {task_text}; script {shown} in {workspace}; "
          f"allocator {memory_text}{threads}", flush=True)
    try:
        return run_child([sys.executable, script, *script_args], workspace, env)
    except LaunchError as err:
        print(f"launch.py: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

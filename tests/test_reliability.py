"""Interruptions and faults never lose work or end in a stack trace (issue 8): SIGKILL and the same
command again, SIGTERM (preemption) through launch.py, a kill in the middle of a checkpoint, a
SavedModel or a result.json write, a NaN or Inf loss, a full or read-only output volume.

Faults are injected by tests/fault_injection.py (a SIGKILL at a chosen point of a write); full and
read-only volumes are real ones (a small tmpfs and a read-only bind mount in a user namespace, made
with `unshare`; skipped where the kernel refuses unprivileged user namespaces)."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, read_result, run_train, small_schema_file

BATCH = 256


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A generated Criteo-format sample and the small-table schema, shared by the module's runs."""
    root = tmp_path_factory.mktemp("reliability")
    schema = small_schema_file(root / "small.json")
    run_train("dlrm", ["--schema", schema, "--data_location", root / "data", "--generate_rows", 20000,
                       "--steps", 1, "--checkpoint", root / "first", "--no_eval"])
    return ["--schema", schema, "--data_location", root / "data", "--batch_size", BATCH]


def flags(data, checkpoint, *more):
    return [*map(str, data), "--checkpoint", str(checkpoint), *map(str, more)]


def state_step(checkpoint):
    """The step of the checkpoint the folder's `checkpoint` state names, after loading every variable."""
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(str(checkpoint))
    reader = tf.train.load_checkpoint(latest)
    values = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    floats = [v for v in values.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    assert floats and all(np.isfinite(v).all() for v in floats), f"{latest} holds NaN or Inf"
    return int(values["global_step"])


def one_error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip() and "tensorflow/" not in line]
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
    return lines[0]


def start(cmd, log):
    return subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_line(proc, log_path, text, timeout=240):
    deadline = time.time() + timeout
    while text not in log_path.read_text():
        assert proc.poll() is None, f"ended ({proc.returncode}) before {text!r}:\n{log_path.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {text!r} within {timeout} s"
        time.sleep(0.05)


def sigkilled_training(args, log_path, wait):
    """DLRM trained with `args`, SIGKILLed once `wait(proc)` returns; the process, ended."""
    with log_path.open("w") as log:
        proc = start([sys.executable, "dlrm/train.py", *args], log)
        try:
            wait(proc)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return proc


def test_sigkill_then_the_same_command_resumes_and_ends_at_the_same_step(data, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = flags(data, ckpt, "--steps", 600, "--save_steps", 100, "--log_steps", 50, "--no_eval")
    log_path = tmp_path / "killed.log"
    sigkilled_training(args, log_path, lambda proc: wait_for_line(proc, log_path, "step 250/600"))
    killed_at = state_step(ckpt)
    assert 100 <= killed_at < 600
    again = run_train("dlrm", args)
    assert f"resuming from step {killed_at:,}" in again.stdout
    result = read_result(ckpt)
    assert (result["steps"], result["steps_this_run"]) == (600, 600 - killed_at)
    assert Path(result["export_dir"], "saved_model.pb").is_file() and state_step(ckpt) == 600


def saved_step(checkpoint):
    """The step of the latest checkpoint the folder's `checkpoint` state names, or None."""
    state = Path(checkpoint, "checkpoint")
    text = state.read_text() if state.is_file() else ""
    steps = [int(line.rsplit("-", 1)[1].rstrip('"')) for line in text.splitlines()
             if line.startswith("model_checkpoint_path:")]
    return steps[0] if steps else None


def test_without_save_steps_checkpoints_are_saved_by_time_and_a_sigkill_resumes_from_one(data, tmp_path):
    """The default periodic save is by time (--save_secs, 600 s as Estimator's; 1 s here): a run with no
    --save_steps that is SIGKILLed mid-training has a checkpoint past step 0 and the same command resumes
    from it."""
    ckpt = tmp_path / "ckpt"
    args = flags(data, ckpt, "--steps", 100000, "--save_secs", 1, "--log_steps", 50, "--no_eval")
    log_path = tmp_path / "killed.log"

    def until_a_periodic_save(proc):  # well past the start's
        deadline = time.time() + 240
        while (saved_step(ckpt) or 0) < 50:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint past step 50 within 240 s:\n" + log_path.read_text()[-3000:]
            time.sleep(0.1)

    sigkilled_training(args, log_path, until_a_periodic_save)
    killed_at = state_step(ckpt)
    assert 50 <= killed_at < 100000
    again = run_train("dlrm", flags(data, ckpt, "--steps", killed_at + 20, "--no_eval"))
    assert f"resuming from step {killed_at:,}" in again.stdout
    assert read_result(ckpt)["steps"] == killed_at + 20


@pytest.mark.parametrize("model", ["dlrm", "wide_and_deep"])
def test_sigterm_through_launch_py_saves_a_final_checkpoint_and_exits_143(data, tmp_path, model):
    """Kubernetes (or any batch system) preempts a pod with SIGTERM to its entry point, launch.py,
    which forwards it: the step in flight ends, a checkpoint of that step is written, exit 143."""
    ckpt = tmp_path / "ckpt"
    args = flags(data, ckpt, "--steps", 5000, "--log_steps", 50, "--no_eval")  # no save within --save_secs' 600 s
    log_path = tmp_path / "preempted.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "distribute_k8s/launch.py", "--script", f"{model}/train.py", "--",
                                 *args],
                                cwd=REPO, env=dict(os.environ, MEM_USAGE_STRATEGY="close", PYTHONUNBUFFERED="1"),
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_line(proc, log_path, "step 100/5,000")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            proc.kill()
    text = log_path.read_text()
    assert proc.returncode == 143, text[-3000:]
    stopped_at = state_step(ckpt)
    assert 100 <= stopped_at < 5000, text[-3000:]
    assert f"{model}/train.py: SIGTERM: training stopped with a checkpoint saved at step {stopped_at:,}; the same command " \
           "resumes" in text
    assert "Traceback" not in text and not (ckpt / "result.json").exists()
    again = run_train(model, flags(data, ckpt, "--steps", stopped_at + 20, "--no_eval"))
    assert f"resuming from step {stopped_at:,}" in again.stdout and read_result(ckpt)["steps"] == stopped_at + 20


def fault(kind, args, check_killed=True):
    proc = subprocess.run([sys.executable, "tests/fault_injection.py", kind, "dlrm/train.py", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if check_killed:
        assert proc.returncode == -signal.SIGKILL and "fault_injection: SIGKILL" in proc.stdout, \
            proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(data, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = flags(data, ckpt, "--steps", 60, "--save_steps", 20, "--no_eval")
    fault("checkpoint:2", args)  # the save at step 20: its shards are written, not yet merged
    assert list(ckpt.glob("model.ckpt-20_temp*")), "the kill did not land inside the save"
    assert state_step(ckpt) == 0  # the step-0 checkpoint is still the latest, and loads
    again = run_train("dlrm", args)
    assert "removed what an interrupted write left: model.ckpt-20_temp" in again.stdout
    assert "resuming" not in again.stdout and read_result(ckpt)["steps"] == 60
    assert not list(ckpt.glob("*_temp*")) and state_step(ckpt) == 60


def test_kill_during_the_export_or_the_result_json_write_leaves_the_previous_ones(data, tmp_path):
    ckpt = tmp_path / "ckpt"
    run_train("dlrm", flags(data, ckpt, "--steps", 20, "--no_eval"))
    before = (ckpt / "result.json").read_text()
    exports = sorted(p.name for p in (ckpt / "export").iterdir())
    fault("export", flags(data, ckpt, "--steps", 40, "--no_eval"))
    assert [p.name for p in (ckpt / "export").iterdir() if p.name not in exports][0].startswith("temp-")
    assert (ckpt / "result.json").read_text() == before and state_step(ckpt) == 40
    fault("result", flags(data, ckpt, "--steps", 40, "--no_eval"))
    assert (ckpt / "result.json").read_text() == before and list(ckpt.glob(".tmp-*"))
    again = run_train("dlrm", flags(data, ckpt, "--steps", 40, "--no_eval"))
    assert "removed what an interrupted write left" in again.stdout
    assert "nothing to train" in again.stdout
    result = json.loads((ckpt / "result.json").read_text())
    assert result["steps"] == 40 and Path(result["export_dir"], "saved_model.pb").is_file()
    assert not list(ckpt.glob(".tmp-*")) and not list((ckpt / "export").glob("temp-*"))
    assert len(list((ckpt / "export").iterdir())) == len(exports) + 2  # the result fault's run exported too


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path):
    ckpt = tmp_path / "ckpt"
    sgd = ["--optimizer", "gradientdescent", "--no_eval"]
    run_train("dlrm", flags(data, ckpt, "--steps", 20, "--learning_rate", 1, *sgd))
    # a learning rate that blows the weights up: the loss of the step after the first is NaN or Inf
    diverged = run_train("dlrm", flags(data, ckpt, "--steps", 100, "--learning_rate", 1e30, *sgd), check=False)
    line = one_error_line(diverged.stderr)
    assert diverged.returncode == 1 and "error: the training loss is " in line and " at step 2" in line, line
    assert "The latest checkpoint, step 20 " in line and "stays the last good one" in line
    assert state_step(ckpt) == 20
    # saving every step: the step whose update went bad is not saved (its loss was still finite)
    diverged = run_train("dlrm", flags(data, ckpt, "--steps", 100, "--save_steps", 1, "--learning_rate", 1e30, *sgd),
                         check=False)
    line = one_error_line(diverged.stderr)
    assert diverged.returncode == 1 and "the variables hold NaN or Inf at step 22; it was not saved" in line, line
    assert state_step(ckpt) == 21 and "step 21 " in line


def unshare_available():
    """Whether this kernel lets us make the mounts the tests need (a tmpfs and a read-only bind mount)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                   f"mount -t tmpfs -o size=1m tmpfs {folder} && mount --bind -o ro {folder} {folder}"],
                                  capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


needs_unshare = pytest.mark.skipif(not unshare_available(), reason="unshare --user --mount is not permitted here "
                                   "(a full tmpfs and a read-only bind mount need a user namespace)")


def run_in_namespace(mount, args, model="dlrm"):
    """MODEL/train.py in a user and mount namespace where `mount` (a shell command) ran first."""
    cmd = " ".join(map(str, [sys.executable, f"{model}/train.py", *args]))
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f"{mount} && {cmd}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


@needs_unshare
def test_full_disk_is_reported_before_training_or_at_the_save_keeping_the_last_checkpoint(data, tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    ckpt = volume / "ckpt"
    args = flags(data, ckpt, "--steps", 60, "--save_steps", 20, "--no_eval")
    # 512 KiB: the probe's 1 MiB does not fit; nothing starts
    proc = run_in_namespace(f"mount -t tmpfs -o size=512k tmpfs {volume}", args)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and f"cannot write to --checkpoint {ckpt}: no space left on the device" in line
    assert "train:" not in proc.stdout
    # 16 MiB: the step-0 checkpoint (Adam's slots, the graph, the events) fits, the step-20 one does not;
    # the state still names step 0, which loads (checked inside the namespace, where the tmpfs is)
    check = (f"{sys.executable} -c \"import sys; sys.path.insert(0, 'tests'); import test_reliability as t; "
             f"print('latest step', t.state_step('{ckpt}'))\"")
    proc = run_in_namespace(f"mount -t tmpfs -o size=16m tmpfs {volume}", [*args, ";", check])
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert f"could not write the checkpoint in {ckpt}: No space left on device" in lines[0]
    assert "The latest checkpoint, step 0 " in lines[0] and "latest step 0" in proc.stdout


@needs_unshare
@pytest.mark.parametrize("model", ["dlrm", "gdmix_lr"])
def test_read_only_output_folder_is_refused_before_any_work(data, tmp_path, model):
    out = tmp_path / "out"
    out.mkdir()
    args, flag = (flags(data, out, "--steps", 20, "--no_eval"), "--checkpoint") if model == "dlrm" else \
        (["--output_dir", out], "--output_dir")
    proc = run_in_namespace(f"mount --bind -o ro {out} {out}", args, model)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and f"cannot write to {flag} {out}: the file system is read-only" in line, line
    assert "train:" not in proc.stdout and "data:" not in proc.stdout and not list(out.iterdir())


@pytest.mark.parametrize("model, extra, words", [
    ("wide_and_deep", ["--schema"], "model: checkpoint has 'dlrm', this run 'wide_and_deep'"),
    ("dlrm", [], "schema_fingerprint: checkpoint has"),  # the full-size tables, not the small ones
])
def test_a_checkpoint_of_another_model_or_schema_is_refused_before_any_work(data, model, extra, words):
    first = Path(data[data.index("--data_location") + 1]).parent / "first"  # the fixture's DLRM run
    schema = [*extra, data[1]] if extra else []
    proc = run_train(model, ["--data_location", data[3], *schema, "--checkpoint", first, "--steps", 5], check=False)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and f"--checkpoint {first} cannot be resumed by this run" in line and words in line
    assert "train:" not in proc.stdout


@pytest.mark.fast
def test_the_checkpoint_guard_finds_nan_and_inf_anywhere_in_a_variable_without_a_copy_of_it():
    """FiniteCheckpointGuard reads each variable's max and min (two scalars, not a boolean per element: 1 GB
    at the real Kaggle cardinalities, issue 27): it must still refuse a NaN, +Inf or -Inf at the first,
    middle or last element of a float32 or bfloat16 variable, and pass finite and empty ones."""
    import tensorflow as tf
    from modelzoo.hooks import FiniteCheckpointGuard, NonFiniteError
    tf1 = tf.compat.v1
    n = 100_003  # (odd, above one reduction block)
    for dtype in (tf.float32, tf.bfloat16):
        for bad in (np.nan, np.inf, -np.inf, None):
            for at in (0, n // 2, n - 1):
                values = np.random.default_rng(at).normal(size=n).astype(np.float32)
                if bad is not None:
                    values[at] = bad
                with tf.Graph().as_default():
                    tf1.get_variable("table", initializer=tf.constant(values.reshape(-1, 1), dtype), use_resource=True)
                    tf1.get_variable("empty", initializer=tf.zeros([0, 4]), use_resource=True)
                    guard = FiniteCheckpointGuard()
                    guard.begin()
                    with tf1.Session() as session:
                        session.run(tf1.global_variables_initializer())
                        if bad is None:
                            guard.before_save(session, 7)
                        else:
                            with pytest.raises(NonFiniteError, match="NaN or Inf at step 7"):
                                guard.before_save(session, 7)

"""What the start-up and the benchmarks say about the CPU's BF16 hardware, on CPUs with and without it."""
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import matrix  # noqa: E402

pytestmark = pytest.mark.fast  # the fast tier (make test-fast)

ZEN3_FLAGS = "fpu sse2 avx avx2 fma bmi2 sha_ni"  # AVX2 only: no avx512_bf16, no amx_bf16
ZEN5_FLAGS = "fpu avx2 fma avx512f avx512_bf16 avx512_vnni"


def write_cpuinfo(path, model, flags):
    path.write_text(f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nmodel name\t: {model}\nflags\t\t: {flags}\n")
    return str(path)


def test_a_cpu_without_bf16_flags_is_told_that_bfloat16_is_emulated(tmp_path):
    from modelzoo.system import bf16_message, cpu_info
    zen3 = cpu_info(write_cpuinfo(tmp_path / "zen3", "AMD EPYC 7B13", ZEN3_FLAGS))
    assert zen3["model"] == "AMD EPYC 7B13" and zen3["bf16_hardware"] == []
    assert zen3["flags"] == ["avx2", "fma"]
    assert "no BF16 hardware" in bf16_message(zen3) and "emulated" in bf16_message(zen3)
    zen5 = cpu_info(write_cpuinfo(tmp_path / "zen5", "AMD EPYC 9B45", ZEN5_FLAGS))
    assert zen5["bf16_hardware"] == ["avx512_bf16"]
    assert bf16_message(zen5) == ("BF16: this CPU has avx512_bf16 and oneDNN is on; bfloat16 matmuls run in "
                                  "hardware.")


def test_bf16_hardware_with_onednn_off_is_told_that_bfloat16_is_emulated(tmp_path, monkeypatch):
    """The CPU flags alone do not make bfloat16 run in hardware: with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)
    TensorFlow's own kernels emulate it; the line used to say "run in hardware" whatever oneDNN's state."""
    from modelzoo.system import bf16_message, cpu_info
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    zen5 = cpu_info(write_cpuinfo(tmp_path / "zen5", "AMD EPYC 9B45", ZEN5_FLAGS))
    message = bf16_message(zen5, onednn=False)
    assert "run in hardware" not in message and "oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0)" in message
    assert "emulate bfloat16" in message and "TF_ENABLE_ONEDNN_OPTS=1" in message


def test_the_start_up_line_asks_tensorflow_whether_onednn_is_on():
    """onednn_enabled() is TensorFlow's own answer (IsMklEnabled), which the --bf16 start-up line passes on."""
    import inspect
    from tensorflow.python.util import _pywrap_util_port
    from modelzoo.run import report
    from modelzoo.system import onednn_enabled
    assert onednn_enabled() is bool(_pywrap_util_port.IsMklEnabled())
    assert "bf16_message(cpu, onednn_enabled())" in inspect.getsource(report.announce)


@pytest.mark.parametrize("files,cores,quota", [
    ({"cpu.max": "200000 100000\n"}, 2, 2.0),          # cgroup v2, limits.cpu: 2
    ({"cpu.max": "150000 100000\n"}, 2, 1.5),          # 1.5 CPUs: 2 threads may run
    ({"cpu.max": "max 100000\n"}, None, None),         # v2 without a limit: the CPUs of the affinity
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1, 1.0),  # cgroup v1
    ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None, None),
    ({}, None, None)])                                  # no cgroup files (not Linux, not mounted)
def test_cores_follow_the_cgroup_cpu_quota_of_a_cpu_limited_pod(tmp_path, monkeypatch, files, cores, quota):
    """Inside a pod with limits.cpu, os.cpu_count() is the node's cores: cpu_info()["cores"] (the start-up
    line, result.json) is the quota's, rounded up, never above the CPUs the process may run on."""
    from modelzoo import system
    monkeypatch.setattr(system.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(system.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    info = system.cpu_info(write_cpuinfo(tmp_path / "cpuinfo", "AMD EPYC", ZEN3_FLAGS), cgroup=str(tmp_path))
    assert (info["cores"], info["cpu_quota"], info["node_cores"]) == (cores or 64, quota, 64)


def test_the_matrix_marks_bf16_runs_on_a_cpu_without_bf16_flags_as_emulated():
    off = {"TF_ENABLE_ONEDNN_OPTS": "unset (TF's default)", "enabled": False, "cpu_bf16": []}
    assert matrix.onednn_words(off) == ("off (TF_ENABLE_ONEDNN_OPTS unset (TF's default); "
                                        "BF16 CPU flags: none, so --bf16 is emulated)")
    on = dict(off, enabled=True, cpu_bf16=["avx512_bf16", "amx_bf16"])
    assert matrix.onednn_words(on).endswith("BF16 CPU flags: avx512_bf16, amx_bf16)")


def test_cpu_info_names_the_family_and_model_numbers(tmp_path):
    """"AMD EPYC" alone does not tell a Zen 3 from a Zen 4: every figure's machine line carries the numbers."""
    from modelzoo.system import cpu_info
    path = tmp_path / "zen4"
    path.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    f"model name\t: AMD EPYC\nflags\t\t: {ZEN5_FLAGS}\n")
    assert cpu_info(path)["family_model"] == "family 25 model 17"
    assert cpu_info(write_cpuinfo(tmp_path / "bare", "AMD EPYC", ZEN5_FLAGS))["family_model"] is None

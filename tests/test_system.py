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
    assert bf16_message(zen5) == "BF16: this CPU has avx512_bf16; bfloat16 matmuls run in hardware."


def test_the_matrix_marks_bf16_runs_on_a_cpu_without_bf16_flags_as_emulated():
    off = {"TF_ENABLE_ONEDNN_OPTS": "unset (TF's default)", "enabled": False, "cpu_bf16": []}
    assert matrix.onednn_words(off) == ("off (TF_ENABLE_ONEDNN_OPTS unset (TF's default); "
                                        "BF16 CPU flags: none, so --bf16 is emulated)")
    on = dict(off, enabled=True, cpu_bf16=["avx512_bf16", "amx_bf16"])
    assert matrix.onednn_words(on).endswith("BF16 CPU flags: avx512_bf16, amx_bf16)")

"""What machine this is (CPU model and BF16 hardware) and how much memory the run used."""
import os
import platform
import resource
import sys

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_info(cpuinfo="/proc/cpuinfo"):
    """CPU model, core count and the instruction-set flags that matter for this zoo."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags],
            "bf16_hardware": [f for f in BF16_CPU_FLAGS if f in flags]}


def bf16_message(cpu):
    if cpu["bf16_hardware"]:
        return f"BF16: this CPU has {', '.join(cpu['bf16_hardware'])}; bfloat16 matmuls run in hardware."
    return ("BF16: this CPU has no BF16 hardware (no avx512_bf16, no amx_bf16): bfloat16 is emulated and "
            "usually slower than float32 here. It pays on CPUs with AVX512-BF16 or AMX (Intel Cooper Lake, "
            "Sapphire Rapids and later, AMD Zen 4 and later) and on GPUs.")


def peak_rss_mb():
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024

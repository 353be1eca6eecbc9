"""What machine this is (CPU model, usable cores, BF16 hardware) and how much memory the run used."""
import math
import os
import platform
import resource
import sys

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cgroup_cpu_limit(root="/sys/fs/cgroup"):
    """The CPUs this container may use by its cgroup's CPU quota (a pod's limits.cpu), None without one:
    cgroup v2's cpu.max ("QUOTA PERIOD", or "max PERIOD"), else v1's cpu.cfs_quota_us / cpu.cfs_period_us
    (quota -1: none)."""
    def read(*parts):
        try:
            with open(os.path.join(root, *parts), encoding="utf-8") as f:
                return f.read().split()
        except OSError:
            return None
    v2 = read("cpu.max")
    if v2 and len(v2) == 2:
        return None if v2[0] == "max" else int(v2[0]) / int(v2[1])
    for folder in ("cpu", "cpu,cpuacct"):
        quota, period = read(folder, "cpu.cfs_quota_us"), read(folder, "cpu.cfs_period_us")
        if quota and period:
            return None if int(quota[0]) <= 0 else int(quota[0]) / int(period[0])
    return None


def cpu_info(cpuinfo="/proc/cpuinfo", cgroup="/sys/fs/cgroup"):
    """CPU model, usable cores and the instruction-set flags that matter for this zoo. `cores` is what this
    process may run on: the CPUs of its affinity, fewer under a cgroup CPU quota (inside a CPU-limited pod
    os.cpu_count() is the node's); `node_cores` the machine's; `family_model` what names the microarchitecture
    ("family 25 model 17" is AMD's Zen 4; the model name alone, "AMD EPYC", may not say)."""
    model, flags, numbers = platform.processor() or platform.machine(), set(), {}
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() in ("cpu family", "model"):
                    numbers.setdefault(key.strip(), value.strip())
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    node = os.cpu_count()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else node
    quota = cgroup_cpu_limit(cgroup)
    if quota is not None:
        cores = max(1, min(cores, math.ceil(quota)))
    family_model = f"family {numbers['cpu family']} model {numbers['model']}" if len(numbers) == 2 else None
    return {"model": model, "family_model": family_model, "cores": cores, "node_cores": node, "cpu_quota": quota,
            "flags": [f for f in wanted if f in flags], "bf16_hardware": [f for f in BF16_CPU_FLAGS if f in flags]}


def onednn_enabled():
    """Whether this TensorFlow runs oneDNN's kernels (TF_ENABLE_ONEDNN_OPTS, and TF's default for the CPU)."""
    from tensorflow.python.util import _pywrap_util_port
    return bool(_pywrap_util_port.IsMklEnabled())


def bf16_message(cpu, onednn=True):
    """The start-up line of --bf16: BF16 runs in hardware only with the CPU flags and oneDNN on (TensorFlow's
    own kernels emulate bfloat16 whatever the CPU)."""
    if cpu["bf16_hardware"] and onednn:
        return (f"BF16: this CPU has {', '.join(cpu['bf16_hardware'])} and oneDNN is on; bfloat16 matmuls run "
                "in hardware.")
    if cpu["bf16_hardware"]:
        return (f"BF16: this CPU has {', '.join(cpu['bf16_hardware'])}, but oneDNN is off (TF_ENABLE_ONEDNN_OPTS="
                f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}): TensorFlow's own kernels emulate bfloat16, "
                "usually slower than float32; set TF_ENABLE_ONEDNN_OPTS=1 for the hardware.")
    return ("BF16: this CPU has no BF16 hardware (no avx512_bf16, no amx_bf16): bfloat16 is emulated and "
            "usually slower than float32 here. It pays on CPUs with AVX512-BF16 or AMX (Intel Cooper Lake, "
            "Sapphire Rapids and later, AMD Zen 4 and later) and on GPUs.")


def peak_rss_mb():
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024

"""Peak resident memory of one training run against the bytes of its variables and optimizer slots.

Runs a model's train.py as a child process, samples its VmRSS (/proc/PID/status) every 0.2 s with the
child's own log lines, and writes a JSON: the peak, the variables + slots (result.json's
variable_bytes), their ratio (issue 15's target for Wide & Deep: at most 1.5), and the timeline, so
a peak can be placed (init, step-0 save, training, final save, eval, export).

    python benchmarks/peak_memory.py --model wide_and_deep --rows 200000 --steps 60 \\
        --output benchmarks/results/peak_memory_wide_and_deep.json
    python benchmarks/peak_memory.py --model dlrm --rows 200000 --steps 60 -- --bf16
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_bytes(pid):
    """The process's resident set now: (VmRSS, RssAnon, RssFile + RssShmem) in bytes, or None once it
    has gone. Anonymous memory is what the process allocated; file pages are mapped files."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    fields[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "VmRSS" not in fields:
        return None
    return fields["VmRSS"], fields.get("RssAnon", 0), fields.get("RssFile", 0) + fields.get("RssShmem", 0)


def folder_bytes(path):
    """Bytes of the files under `path` now (the checkpoint being written shows up here)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def measure(cmd, interval=0.2, env=None, watch=None):
    """Run `cmd`, sampling its RSS every `interval` s; returns (rc, samples, log events, output tail).
    A sample is (seconds since start, RSS, anonymous, file-backed bytes, bytes under `watch`); an event is
    (seconds, the child's log line)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    events, tail = [], []

    def read():
        for line in proc.stdout:
            t = time.perf_counter() - start
            tail.append(line)
            del tail[:-200]
            events.append((round(t, 2), line.rstrip()[:200]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    samples = []
    while proc.poll() is None:
        rss = rss_bytes(proc.pid)
        if rss is not None:
            samples.append((round(time.perf_counter() - start, 2), *rss, folder_bytes(watch) if watch else 0))
        time.sleep(interval)
    reader.join(timeout=5)
    return proc.returncode, samples, events, "".join(tail)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wide_and_deep", choices=["wide_and_deep", "dlrm"])
    p.add_argument("--rows", type=int, default=200000, help="generated Criteo-format rows")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--data_location", default=None, help="reuse a folder of generated data (default: a temp one)")
    p.add_argument("--output", default=None, help="JSON file (default: print only)")
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("extra", nargs="*", help="more train.py flags, after --")
    a = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="peak-memory-")
    data = a.data_location or os.path.join(work, "data")
    cmd = [sys.executable, str(REPO / a.model / "train.py"), "--data_location", data,
           "--generate_rows", str(a.rows), "--steps", str(a.steps), "--output_dir", work,
           "--log_steps", "10", *a.extra]
    if a.data_location and os.path.isdir(a.data_location) and os.listdir(a.data_location):
        cmd.remove("--generate_rows"), cmd.remove(str(a.rows))
    rc, samples, events, tail = measure(cmd, a.interval, watch=os.path.join(work, a.model))
    if rc != 0:
        sys.exit(f"peak_memory: {' '.join(cmd)} exited {rc}:\n{tail}")
    result = json.load(open(os.path.join(work, a.model, "result.json")))
    sizes = result["variable_bytes"]
    var_bytes = sum(v for k, v in sizes.items() if k != "dynamic_tables")
    peak_t, peak, peak_anon, peak_file, _ = max(samples, key=lambda s: s[1])
    report = {
        "model": a.model, "command": " ".join(cmd[1:]), "rows": a.rows, "steps": a.steps,
        "variable_bytes": sizes, "variables_and_slots_gb": round(var_bytes / 1e9, 3),
        "peak_rss_gb": round(peak / 1e9, 3), "peak_at_s": peak_t,
        "peak_anon_gb": round(peak_anon / 1e9, 3), "peak_file_gb": round(peak_file / 1e9, 3),
        "ratio": round(peak / var_bytes, 3),
        "result_peak_rss_mb": result.get("peak_rss_mb"), "wall_s": samples[-1][0] if samples else None,
        "samples_per_sec": result.get("samples_per_sec"), "cpu": result.get("cpu"),
        "onednn": result.get("onednn"),
        "rss_timeline_gb": [(t, *(round(b / 1e9, 3) for b in rest)) for t, *rest in samples],
        "log": events,
    }
    print(f"{a.model}: peak RSS {report['peak_rss_gb']:.2f} GB at {peak_t:.1f} s; variables + slots "
          f"{report['variables_and_slots_gb']:.2f} GB; ratio {report['ratio']:.2f}")
    if a.output:
        os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
        with open(a.output, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()

"""Where the CPU goes while DLRM trains: Linux `perf` samples of the whole process, by symbol family.

The timeline (timeline_breakdown.py) times TensorFlow's ops; this samples the CPU itself, so it
also sees the input pipeline's threads, the allocator, copies and the threads' waiting. It trains on
generated data, waits for the warm-up, records SECONDS of samples with `perf record -p`, and groups
the symbols (matrix-product kernels and their packing, gathers and scatters, CSV decoding and
hashing, memory copies, malloc/free, thread pool and kernel scheduling, the rest).

    python benchmarks/cpu_profile.py [--flags=--tf] [--seconds 8] [--output benchmarks/results/cpu_profile_dlrm]

Needs `perf` (linux-perf / linux-tools) and permission to attach (root, or kernel.perf_event_paranoid <= 1).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelzoo.models import ESTIMATOR_MODELS  # noqa: E402 (the registered models)

# (family, regular expression on the symbol), first match wins
FAMILIES = (
    # code without a symbol in no library: the sgemm kernels oneDNN generates at run time, which
    # TensorFlow's Eigen contraction (MatMul) calls on x86 (perf shows it as [JIT])
    ("matrix products (JIT-generated sgemm kernels, Eigen's contraction and packing)",
     r"^0x[0-9a-f]+$|gebp|gemm|TensorContraction|general_matrix_matrix|FusedMatMul|MatMul"),
    ("embedding gathers and optimizer scatters",
     r"HandleCopies|Gather|Scatter|Unique|SparseApply|ApplyAdam|SegmentSum"),
    ("input: reading, CSV decoding, hashing",
     r"DecodeCSV|ReadLine|BufferedInputStream|Hash|Fingerprint|farmhash|StringToHash"
     r"|tstring|strtol|strtod|safe_strto"),
    ("memory copies and fills", r"memmove|memcpy|memset|TensorBlockIO|Copy"),
    ("allocator (malloc/free)", r"malloc|free|unlink_chunk|je_|arena|tcache|sdallocx"),
    ("thread pools, locks and the kernel scheduler", r"^\[k\]|WorkerLoop|futex|Thread|Mutex|condition_variable|spin"),
    ("element-wise ops and reductions (Eigen)", r"EvalRange|Reduce|TensorExecutor|scalar_"),
)


def bucket(report_lines):
    families = collections.Counter()
    top = []
    for line in report_lines:
        m = re.match(r"\s*([\d.]+)%\s+(\[[.k]\])\s+(.*)", line)
        if not m:
            continue
        share, kind, symbol = float(m.group(1)), m.group(2), m.group(3)
        text = f"{kind} {symbol}" if kind == "[k]" else symbol
        name = next((f for f, pattern in FAMILIES if re.search(pattern, text)), "other")
        families[name] += share
        if len(top) < 15:
            top.append((share, symbol[:140]))
    return families, top


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dlrm", choices=ESTIMATOR_MODELS)
    p.add_argument("--flags", default="", help="train.py flags, space-separated (e.g. --flags=--tf)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of samples")
    p.add_argument("--warmup", type=float, default=25.0, help="seconds after the start before recording")
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--output", default=None, help="write OUTPUT.json")
    args = p.parse_args()
    if not shutil.which("perf"):
        raise SystemExit("perf is not installed (apt-get install linux-perf)")
    from modelzoo.io_utils import atomic_write_json
    from modelzoo.synthetic import generate_criteo
    work = tempfile.mkdtemp(prefix="cpu-profile-")
    data = os.path.join(work, "train.txt")
    generate_criteo(data, args.rows, seed=1)
    train = subprocess.Popen([sys.executable, str(REPO / args.model / "train.py"), "--train_files", data,
                              "--steps", "100000", "--batch_size", "2048", "--no_eval", "--checkpoint",
                              os.path.join(work, "ckpt"), "--log_steps", "1000000", *args.flags.split()],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        time.sleep(args.warmup)
        if train.poll() is not None:
            raise SystemExit(f"{args.model}/train.py ended before the profile (exit {train.returncode})")
        record = os.path.join(work, "perf.data")
        subprocess.run(["perf", "record", "-F", "499", "-p", str(train.pid), "-o", record, "--", "sleep",
                        str(args.seconds)], check=True, capture_output=True)
    finally:
        train.kill()
        train.wait()
    report = subprocess.run(["perf", "report", "-i", record, "--no-children", "--sort", "sym", "-g", "none",
                             "--stdio"], check=True, capture_output=True, text=True).stdout.splitlines()
    shutil.rmtree(work, ignore_errors=True)
    families, top = bucket(report)
    print(f"{args.model} {args.flags}: share of CPU samples over {args.seconds:.0f} s of training")
    for name, share in families.most_common():
        print(f"{share:6.1f}%  {name}")
    print("\ntop symbols:")
    for share, symbol in top:
        print(f"{share:6.2f}%  {symbol}")
    if args.output:
        atomic_write_json(args.output + ".json", {"model": args.model, "flags": args.flags, "seconds": args.seconds,
                                                  "families_percent": dict(families.most_common()),
                                                  "top_symbols": top})


if __name__ == "__main__":
    main()

"""PyTorch's DLRM on this machine: the reference issue 15's DLRM targets are stated against.

The model is facebookresearch/dlrm's `DLRM_Net` as its Criteo Kaggle recipe configures it, written
out here (not imported) in plain PyTorch with the shape of this zoo's DLRM (dlrm/train.py and its
criteo schema): 26 `EmbeddingBag` tables of 16 (sum, sparse gradients) at the schema's sizes, bottom
MLP 13-512-256-64-16, the dot interaction (the 351 pairwise dots of the 27 vectors, below the
diagonal, next to the bottom MLP's output), top MLP 367-512-256-1 with a sigmoid, binary
cross-entropy and SGD. Its input is random tensors already in
memory (no reading, decoding or hashing), as in the issue's figure: 41K fp32 and 83-96K
`torch.autocast` bf16 samples/s on a Zen 5. This zoo's DLRM trains end to end from files.

PyTorch is not one of the project's requirements; run this in a virtual environment of its own:

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 'numpy<2'
    /tmp/torchvenv/bin/python benchmarks/pytorch_dlrm_reference.py [--runs 3] [--steps 60]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# none of these imports TensorFlow (dlrm/train.py imports it only to build its graph)
from modelzoo.io_utils import atomic_write_json  # noqa: E402
from modelzoo.models import load_module  # noqa: E402
from modelzoo.schema import load_schema  # noqa: E402
from modelzoo.system import cpu_info  # noqa: E402

DLRM = load_module("dlrm")
SCHEMA = load_schema(DLRM.SPEC.schema)
BOTTOM = (len(SCHEMA.numeric), *DLRM.BOTTOM_MLP)
TOP, DIM = DLRM.TOP_MLP, DLRM.EMBEDDING_DIM


def table_sizes():
    """The sizes of this zoo's DLRM tables: its schema's 26 categorical columns."""
    return [c.num_ids for c in SCHEMA.categorical]


def build(torch, sizes):
    nn = torch.nn

    def mlp(widths, sigmoid_last):
        layers = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers += [nn.Linear(a, b), nn.Sigmoid() if sigmoid_last and i == len(widths) - 2 else nn.ReLU()]
        return nn.Sequential(*layers)

    class DLRM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tables = nn.ModuleList(nn.EmbeddingBag(n, DIM, mode="sum", sparse=True) for n in sizes)
            self.bottom = mlp(BOTTOM, False)
            vectors = len(sizes) + 1
            self.top = mlp((DIM + vectors * (vectors - 1) // 2, *TOP), True)
            rows, cols = torch.tril_indices(vectors, vectors, offset=-1)
            self.register_buffer("rows", rows)
            self.register_buffer("cols", cols)

        def forward(self, dense, ids, offsets):
            x = self.bottom(dense)
            embedded = [t(ids[:, k], offsets) for k, t in enumerate(self.tables)]
            vectors = torch.stack([x, *embedded], dim=1)
            dots = torch.bmm(vectors, vectors.transpose(1, 2))[:, self.rows, self.cols]
            return self.top(torch.cat([x, dots], dim=1)).squeeze(1)

    return DLRM()


def measure(torch, bf16, sizes, batch, steps, warmup, learning_rate, seed):
    """Steady-state samples/s of `steps` SGD steps after `warmup`, on 8 random batches cycled."""
    torch.manual_seed(seed)
    model = build(torch, sizes)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.BCELoss()
    limits = torch.tensor(sizes)
    batches = [(torch.randn(batch, BOTTOM[0]), (torch.rand(batch, len(sizes)) * limits).long(),
                torch.randint(0, 2, (batch,)).float()) for _ in range(8)]
    offsets = torch.arange(batch)

    def step(i):
        dense, ids, label = batches[i % len(batches)]
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = model(dense, ids, offsets)
        loss = loss_fn(scores.float(), label)
        loss.backward()
        optimizer.step()
        return loss.item()

    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return batch * steps / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="interleaved runs of each precision (median reported)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=2048)
    p.add_argument("--learning_rate", type=float, default=0.1)
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "pytorch_dlrm_reference.json"))
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        raise SystemExit("PyTorch is not installed here; see this script's docstring for its own venv") from None

    sizes = table_sizes()
    runs = {"fp32": [], "bf16": []}
    for run in range(args.runs):
        for name in runs:
            value = measure(torch, name == "bf16", sizes, args.batch_size, args.steps, args.warmup,
                            args.learning_rate, seed=run)
            runs[name].append(value)
            print(f"run {run + 1}/{args.runs} {name}: {value:,.0f} samples/s", flush=True)
    summary = {name: {"median": statistics.median(v), "min": min(v), "max": max(v)} for name, v in runs.items()}
    for name, s in summary.items():
        print(f"{name}: median {s['median']:,.0f} samples/s ({s['min']:,.0f} - {s['max']:,.0f})")
    atomic_write_json(args.output, {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_info(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available(),
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "tables": sizes,
        "learning_rate": args.learning_rate, "runs": runs, "summary": summary})
    print(f"written {args.output}")


if __name__ == "__main__":
    main()

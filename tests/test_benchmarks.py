"""The benchmark helpers report what the traces say; the benchmarks run at a tiny size."""
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from timeline_breakdown import breakdown  # noqa: E402


def test_timeline_breakdown_groups_op_time_by_type_and_scope():
    trace = {"traceEvents": [
        {"ph": "X", "ts": 0, "dur": 4000, "name": "MatMul", "args": {"op": "MatMul", "name": "top_mlp/layer0/MatMul"}},
        {"ph": "X", "ts": 1000, "dur": 6000, "name": "MatMul",
         "args": {"op": "MatMul", "name": "gradients/top_mlp/layer0/MatMul_grad/MatMul"}},
        {"ph": "X", "ts": 7000, "dur": 1000, "name": "Gather", "args": {"op": "GatherV2", "name": "embedding/C1"}},
        {"ph": "M", "name": "process_name"}]}
    wall, by_op, by_scope = breakdown(trace)
    assert wall == 8.0
    assert by_op == {"MatMul": 10000, "GatherV2": 1000}
    assert by_scope == {"top_mlp": 4000, "gradients/top_mlp": 6000, "embedding": 1000}


def test_random_effect_speed_runs_and_agrees_with_scipy(tmp_path):
    """benchmarks/random_effect_speed.py at a tiny size: the report's fields, the batched solution against
    the scipy loop (GDMix's stopping rule) and a tight scipy solve, a positive speedup, the extrapolation note."""
    prefix = tmp_path / "x"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "random_effect_speed.py"), "--entities", "300",
                           "--rows", "20", "--features", "5", "--repeats", "1", "--scipy_entities", "100",
                           "--check_entities", "50", "--output", str(prefix)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(prefix.with_suffix(".json").read_text())
    for key in ("machine", "tf_version", "numpy_version", "scipy_version", "flags", "data", "batched", "scipy_loop",
                "agreement", "speedup", "targets"):
        assert key in doc, key
    batched, loop, agreement = doc["batched"], doc["scipy_loop"], doc["agreement"]
    assert len(batched["runs"]) == 1 and batched["seconds_median"] > 0
    assert batched["converged_fraction"] == 1.0 and 1 <= batched["newton_iterations_max"] <= 50
    assert batched["peak_rss_mb"] > 0
    assert loop["settings"] == "gdmix" and loop["entities_timed"] == 100 and loop["extrapolated"]
    # both are rounded to the millisecond in the report
    assert loop["seconds"] == pytest.approx(loop["seconds_measured"] * 3, abs=3e-3)
    assert "extrapolated from 100 entities" in loop["note"]
    assert "extrapolated from 100 entities" in prefix.with_suffix(".md").read_text()
    assert agreement["entities_compared"] > 90 and agreement["tight_scipy_entities"] == 50
    assert agreement["max_coefficient_difference_vs_tight_scipy"] < 1e-4
    assert agreement["max_coefficient_difference"] < 1e-3  # GDMix's gradient tolerance leaves ~1e-4
    assert math.isfinite(doc["speedup"]) and doc["speedup"] > 0
    assert set(doc["targets"]) >= {"batched_seconds_pass", "speedup_pass"}

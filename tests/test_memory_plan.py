"""The memory plan (modelzoo/memory.py): a run that cannot fit is refused while its graph is built, before
its session allocates the tables, with the figure and the remedies; the plan's constants stay at or above
the peaks measured by benchmarks/peak_memory.py (issue 27)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_train
from modelzoo import memory

RESULTS = REPO / "benchmarks" / "results"


@pytest.mark.fast
@pytest.mark.parametrize("model", ["dlrm", "wide_and_deep"])
def test_the_plan_is_at_or_above_each_measured_peak_and_within_25_percent(model):
    run = json.loads((RESULTS / f"peak_memory_{model}.json").read_text())
    planned, peak = memory.plan_bytes(run["variable_bytes"]), run["peak_rss_gb"] * memory.GB
    assert peak <= planned <= 1.25 * peak, (model, planned / memory.GB, run["peak_rss_gb"])


@pytest.mark.fast
def test_the_plan_covers_the_evaluation_of_many_held_out_rows():
    """DLRM's default on 1M to 45.8M generated rows (benchmarks/scale.py, stored): the peak grew from 1.15 to
    1.40 GB with the held-out rows (0.1M to 4.58M: the exact AUC's counts), above the plan of its variables
    alone (1.22 GB). With memory.evaluation_bytes the plan is at or above each peak and within 25% of it."""
    sizes = json.loads((RESULTS / "peak_memory_dlrm.json").read_text())["variable_bytes"]
    runs = [r for r in json.loads((RESULTS / "scale.json").read_text())["runs"]
            if r["config"] == "default" and "error" not in r]
    assert max(r["eval_rows"] for r in runs) > 4_000_000, "the stored runs must include a Kaggle-size holdout"
    for run in runs:
        planned = memory.plan_bytes(sizes, 0, memory.evaluation_bytes(run["eval_rows"]))
        peak = run["peak_rss_gb"] * memory.GB
        assert peak <= planned <= 1.25 * peak, (run["rows"], planned / memory.GB, run["peak_rss_gb"])


SIZES = {"tables": 40 * memory.GB, "table_slots": 20 * memory.GB, "dense": 10 ** 7, "dense_slots": 10 ** 7,
         "dynamic_tables": 0}


@pytest.mark.fast
def test_a_plan_over_the_limit_is_refused_with_shards_that_would_each_fit():
    limit = 24 * memory.GB
    with pytest.raises(memory.MemoryPlanError) as err:
        memory.check(SIZES, limit=limit, source="test")
    text = str(err.value)
    shards = int(text.split("parameter-server job with ")[1].split()[0])
    assert "peak about 80.58 GB" in text and "--ev" in text and "--max_buckets" in text
    per_shard = {**SIZES, "tables": SIZES["tables"] / shards, "table_slots": SIZES["table_slots"] / shards}
    assert memory.plan_bytes(per_shard) <= memory.WARN_FRACTION * limit  # each PS task's share fits
    assert "close to" not in memory.check(SIZES, limit=100 * memory.GB, source="test")
    assert "close to the limit" in memory.check(SIZES, limit=85 * memory.GB, source="test")
    with pytest.raises(memory.MemoryPlanError, match="even without its tables"):
        memory.check(SIZES, limit=memory.PROCESS_BYTES // 2, source="test")
    # parameter servers hold the tables: the line gives each one's share and refuses nothing here
    assert "about 15.00 GB each" in memory.check(SIZES, parameter_servers=4, limit=limit, source="test")


@pytest.mark.fast
def test_the_limit_comes_from_the_environment_the_cgroup_or_the_machine(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "512")
    assert memory.memory_limit() == (512 << 20, memory.LIMIT_VARIABLE)
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "lots")
    with pytest.raises(memory.MemoryPlanError, match="expected a number of MB"):
        memory.memory_limit()
    monkeypatch.delenv(memory.LIMIT_VARIABLE)
    limit, source = memory.memory_limit()
    assert limit > 0 and source in ("the cgroup limit", "the machine's RAM")


def test_wide_and_deep_at_the_real_kaggle_cardinalities_is_refused_before_allocating(criteo_sample, tmp_path):
    """52 GB of tables and lazy Adam slots (modelzoo/schemas/criteo_full.json): refused with the figure and
    the remedies while the graph is built; nothing but the run's configuration is written."""
    proc = run_train("wide_and_deep", ["--schema", "criteo_full", "--train_files", criteo_sample, "--steps", 2,
                                       "--output_dir", tmp_path], check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "memory plan: peak about" in line and "this run cannot fit" in line and "PS tasks" in line, line
    assert "Traceback" not in proc.stderr
    written = [p.name for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert written == ["run_config.json"], written


def test_the_start_up_line_states_the_plan_and_a_small_limit_refuses(criteo_sample, tmp_path):
    args = ["--train_files", criteo_sample, "--steps", 2, "--no_eval", "--output_dir", tmp_path]
    proc = run_train("dlrm", args)
    assert "memory plan: peak about 1.22 GB" in proc.stdout, proc.stdout[-2000:]
    env = dict(os.environ, **{memory.LIMIT_VARIABLE: "700"})
    proc = subprocess.run([sys.executable, str(REPO / "dlrm" / "train.py"), *map(str, args),
                           "--output_dir", tmp_path / "small"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "of 0.7 GB (MODELZOO_MEMORY_LIMIT_MB): this run cannot fit" in proc.stderr


def test_result_json_keeps_the_plan_beside_the_peak_and_each_ev_tables_planned_bytes(criteo_sample, tmp_path):
    """result.json's memory_plan: the planned peak against the limit it was held to, beside the measured
    peak_rss_mb (so a full run shows how good the plan was), and with --ev each TFRA table's planned bytes
    (DLRM fuses its columns of one width: one table, fused_dim16, for the columns' ids summed, each at most the
    training rows), TFRA's slots and export included (memory.tfra_table_bytes); the counter filter's count table
    and gstep eviction's last-updated-step table (one int32 / int64 value an id seen) are planned beside it."""
    from modelzoo.schema import load_schema
    run_train("dlrm", ["--train_files", criteo_sample, "--steps", 2, "--no_eval", "--ev", "--ev_filter", "counter",
                       "--ev_elimination", "gstep", "--output_dir", tmp_path])
    result = json.loads(next(Path(tmp_path).rglob("result.json")).read_text())
    plan = result["memory_plan"]
    train_rows = result["train_rows"]
    ids = sum(min(c.num_ids, train_rows) for c in load_schema("criteo").tables)
    slots = 2  # dlrm's default optimizer, adamasync: m and v a row
    assert plan["ev_tables_planned_bytes"] == {
        "fused_dim16": memory.tfra_table_bytes(ids, 16, 1 + slots),
        "fused_dim16/count": memory.tfra_table_bytes(ids, 1, 1, value_bytes=4),
        "fused_dim16/last_step": memory.tfra_table_bytes(ids, 1, 1, value_bytes=8)}
    assert plan["planned_peak_bytes"] >= sum(plan["ev_tables_planned_bytes"].values()) + memory.PROCESS_BYTES
    assert plan["limit_bytes"] > 0 and plan["limit_source"] and result["peak_rss_mb"] > 0


def test_a_tfra_table_is_planned_at_its_power_of_two_of_slots_and_the_larger_of_its_doubling_and_its_export():
    """TFRA's table holds the power of two of slots at or above n / 0.95 (it doubles past about 95% full), each
    key + values + TFRA_SLOT_OVERHEAD bytes, peaks at 1.5x that while it doubles, or holds its exported keys and
    values beside it while a checkpoint is written (benchmarks/results/tfra_capacity*.md: 78.4 bytes a slot at
    width 16, doubled after 95.4% full, 1.47x at the doubling)."""
    slot = 8 + 64 + memory.TFRA_SLOT_OVERHEAD
    # 3.59M ids (the 4M-row DLRM --ev epoch): 4,194,304 slots; the export (3.59M x 72 x 3) is the larger term
    assert memory.tfra_table_bytes(3_594_604, 16, 3) == int(3 * 4_194_304 * slot + 3 * 3_594_604 * 72)
    # just past a power of two: half the slots are empty, and the doubling is the larger term
    assert memory.tfra_table_bytes(4_194_305, 16, 1) == int(1.5 * 8_388_608 * slot)
    # 3,985,000 ids fill 95.01% of 4,194,304 slots: the table has doubled to 8,388,608
    assert memory.tfra_table_bytes(3_985_000, 16, 1) == int(1.5 * 8_388_608 * slot)
    assert memory.tfra_table_bytes(3_984_000, 16, 1) == int(4_194_304 * slot + 3_984_000 * 72)
    assert memory.tfra_table_bytes(0, 16, 3) == 0
    # a width-1 int32 count: key and value aligned to 16 bytes in a slot (results tfra_capacity_int32: 20.6 bytes
    # a slot), 12 bytes an id in the export
    count_slot = 16 + memory.TFRA_SLOT_OVERHEAD
    assert memory.tfra_table_bytes(3_000_000, 1, 1, value_bytes=4) == int(1.5 * 4_194_304 * count_slot)
    assert memory.tfra_table_bytes(3_950_000, 1, 1, value_bytes=4) == int(4_194_304 * count_slot + 3_950_000 * 12)


def test_the_ev_plan_counts_the_ids_the_schema_expects_per_table_at_most_the_training_rows():
    """expected_ids (what `schema infer` writes) wins over hash_buckets; a column stores at most one id a training
    row; --emb_fusion sums the columns of a width into one table, otherwise one table a column."""
    from modelzoo.schema import parse_schema
    schema = parse_schema({"columns": [
        {"name": "y", "kind": "label"},
        {"name": "a", "kind": "categorical", "hash_buckets": 1 << 20, "embedding_dim": 16, "expected_ids": 1000},
        {"name": "b", "kind": "categorical", "hash_buckets": 5000, "embedding_dim": 16},
        {"name": "c", "kind": "categorical", "hash_buckets": 1 << 24, "embedding_dim": 8}]})
    per_column = memory.dynamic_tables_plan(schema, 2, fused=False, train_rows=100_000)
    assert per_column == {"a": memory.tfra_table_bytes(1000, 16, 3), "b": memory.tfra_table_bytes(5000, 16, 3),
                          "c": memory.tfra_table_bytes(100_000, 8, 3)}
    fused = memory.dynamic_tables_plan(schema, 2, fused=True, train_rows=100_000)
    assert fused == {"fused_dim16": memory.tfra_table_bytes(6000, 16, 3),
                     "fused_dim8": memory.tfra_table_bytes(100_000, 8, 3)}
    assert memory.dynamic_table_bytes(schema, 2, fused=True) == \
        memory.tfra_table_bytes(6000, 16, 3) + memory.tfra_table_bytes(1 << 24, 8, 3)
    # an exact count an id (--ev_filter counter, --adaptive_emb, --dynamic_ev) and a last-updated step an id
    # (gstep eviction, --incremental_ckpt): a table of each beside each embedding table, for the same ids
    counted = memory.dynamic_tables_plan(schema, 2, fused=True, train_rows=100_000, counts=True, last_steps=True)
    assert counted == {**fused, "fused_dim16/count": memory.tfra_table_bytes(6000, 1, 1, value_bytes=4),
                       "fused_dim16/last_step": memory.tfra_table_bytes(6000, 1, 1, value_bytes=8),
                       "fused_dim8/count": memory.tfra_table_bytes(100_000, 1, 1, value_bytes=4),
                       "fused_dim8/last_step": memory.tfra_table_bytes(100_000, 1, 1, value_bytes=8)}
    assert memory.tfra_table_bytes(100_000, 1, 1, value_bytes=8) > memory.tfra_table_bytes(100_000, 1, 1)


@pytest.mark.fast
def test_large_variables_are_initialized_one_at_a_time_after_the_others_then_the_warm_start(monkeypatch):
    """run/graph.initialization: the init op holds the small variables only; the init_fn runs each large one's
    initializer alone (the initial value of one table at a time beside the variables: 1.08x instead of 1.42x
    at the real Kaggle cardinalities), then the warm start's init_fn; a graph of small variables keeps
    Scaffold's default."""
    import tensorflow as tf
    from modelzoo.run.graph import initialization
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        small = tf1.get_variable("small", [4], initializer=tf1.ones_initializer())
        assert initialization(large=1024) == (None, None)
        big = [tf1.get_variable(f"big{k}", [64, 8], initializer=tf1.ones_initializer()) for k in range(2)]
        order = []
        init_op, init_fn = initialization(after=lambda scaffold, session: order.append("warm start"), large=1024)
        inputs = {op.name for op in init_op.control_inputs}
        assert small.initializer.name in inputs and not any(b.initializer.name in inputs for b in big)
        runs = []

        class Recording(tf1.Session):
            def run(self, fetches, *a, **k):
                runs.append(getattr(fetches, "name", fetches))
                return super().run(fetches, *a, **k)
        with Recording() as session:
            session.run(init_op)
            assert set(session.run(tf1.report_uninitialized_variables())) == {b"big0", b"big1"}
            init_fn(None, session)
            order.append("done")
            assert session.run(tf1.report_uninitialized_variables()).size == 0
        assert runs[-3:-1] == [big[0].initializer.name, big[1].initializer.name]  # (then the check above)
        assert order == ["warm start", "done"]


@pytest.mark.fast
def test_large_or_dynamic_tables_train_with_the_system_allocator_and_small_ones_with_onednns_pool(monkeypatch):
    """runner.set_environment turns oneDNN's BFC pool off where tables are large (it kept freed table-sized
    buffers resident: 8.72 GB for 6.49 GB of variables at the real Kaggle cardinalities, 7.10 GB without it) or
    dynamic (--ev: 15.08 GB against 12.1 GB over a 45.8M-row epoch), and leaves it on for small tables, where it
    is as fast or faster (DCN-v2 1.06x: benchmarks/results/matrix_onednn_pool.md), except with --micro_batch,
    which exists to lower the peak; a value already in the environment wins."""
    from types import SimpleNamespace
    from modelzoo import runner
    from modelzoo.models import load_spec

    def allocator(model, **flags):
        monkeypatch.delenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", raising=False)
        runner.set_environment(SimpleNamespace(**{"xla": False, "ev": False, "schema": None, **flags}),
                               load_spec(model))
        return os.environ.get("TF_ONEDNN_USE_SYSTEM_ALLOCATOR")
    assert allocator("dlrm") is None  # criteo: 1.79M rows x 16 (115 MB)
    assert allocator("dcn_v2") is None
    assert allocator("dlrm", schema="criteo_full") == "1"  # 33.8M rows x 16 (2.16 GB)
    assert allocator("dlrm", ev=True) == "1"
    assert allocator("dlrm", micro_batch=8) == "1"  # (asked for to lower the peak: test_micro_batch)
    assert allocator("dlrm", schema="no_such_schema") is None  # (the run itself refuses it, with its message)
    monkeypatch.setenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "0")
    runner.set_environment(SimpleNamespace(xla=False, ev=True, schema=None), load_spec("dlrm"))
    assert os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] == "0"

"""The benchmark helpers report what the traces say; the benchmarks run at a tiny size."""
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import matrix  # noqa: E402
from cpu_profile import bucket  # noqa: E402
from timeline_breakdown import CATEGORIES, analyze, breakdown, category  # noqa: E402


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


def test_timeline_categories_and_idle_time():
    """Each op lands in the category the profile write-up uses; the time no op ran is the gap between ops."""
    assert category("IteratorGetNext", "IteratorGetNext") == CATEGORIES[0]
    assert category("StringToHashBucketFast", "embedding/input_layer/C1_embedding/hash") == CATEGORIES[1]
    assert category("ResourceGather", "embedding/C1/lookup") == CATEGORIES[2]
    assert category("UnsortedSegmentSum", "gradients/stack_grad/x") == CATEGORIES[2]
    assert category("MatMul", "gradients/top_mlp/layer0/MatMul_grad/MatMul") == CATEGORIES[3]
    assert category("_FusedMatMul", "bottom_mlp/layer1/MatMul") == CATEGORIES[3]
    assert category("ResourceScatterSub", "LazyAdam/update_embedding/C1/x") == CATEGORIES[4]
    assert category("ResourceApplyFtrl", "Ftrl/update/x") == CATEGORIES[4]
    trace = {"traceEvents": [
        {"ph": "X", "ts": 0, "dur": 3000, "name": "a", "args": {"op": "IteratorGetNext", "name": "IteratorGetNext"}},
        {"ph": "X", "ts": 1000, "dur": 3000, "name": "b", "args": {"op": "MatMul", "name": "top_mlp/MatMul"}},
        {"ph": "X", "ts": 6000, "dur": 4000, "name": "c", "args": {"op": "MatMul", "name": "top_mlp/MatMul_1"}}]}
    wall, _, _, by_category, idle = analyze(trace)
    assert wall == 10.0 and idle == 2.0
    assert by_category[CATEGORIES[0]] == 3000 and by_category[CATEGORIES[3]] == 7000


def test_cpu_profile_groups_symbols_into_families():
    lines = ["    40.00%  [.] 0x00007f4a6c5ae162",
             "    10.00%  [.] Eigen::internal::gebp_kernel<float, float, long>::operator()",
             "     5.00%  [.] __memmove_avx_unaligned_erms",
             "     4.00%  [.] tensorflow::DecodeCSVOp::ExtractFields",
             "     3.00%  [k] finish_task_switch.isra.0",
             "     2.00%  [.] _int_malloc",
             "     1.00%  [.] tensorflow::functor::HandleCopies<float, int, int, -1>",
             "     0.50%  [.] something_else"]
    families, top = bucket(lines)
    assert families["matrix products (JIT-generated sgemm kernels, Eigen's contraction and packing)"] == 50.0
    assert families["memory copies and fills"] == 5.0
    assert families["input: reading, CSV decoding, hashing"] == 4.0
    assert families["thread pools, locks and the kernel scheduler"] == 3.0
    assert families["allocator (malloc/free)"] == 2.0
    assert families["embedding gathers and optimizer scatters"] == 1.0
    assert families["other"] == 0.5 and len(top) == 8


def test_matrix_summary_ratios_and_targets():
    """Medians, min-max and the ratios to the --tf run and the default of the same matrix; the targets
    read from the summary (a bf16 AUC target is met on either side of the default)."""
    runs = {("dlrm", "tf"): [{"samples_per_sec": s, "auc": 0.70, "peak_rss_mb": 100} for s in (10, 14, 12)],
            ("dlrm", "default"): [{"samples_per_sec": s, "auc": 0.71, "peak_rss_mb": 90} for s in (70_000, 60_000, 66_000)],
            ("dlrm", "bf16"): [{"samples_per_sec": s, "auc": 0.708, "peak_rss_mb": 95} for s in (20, 21, 22)]}
    flags = {key: key[1] for key in runs}
    summary = matrix.summarize(runs, flags)
    default = summary["dlrm"]["default"]
    assert (default["samples_per_sec"], default["min"], default["max"]) == (66_000, 60_000, 70_000)
    assert default["ratio_to_tf"] == 5500.0 and summary["dlrm"]["tf"]["ratio_to_default"] == 12 / 66_000
    assert summary["dlrm"]["bf16"]["auc_vs_default"] == pytest.approx(-0.002)
    targets = {t["target"]: t for t in matrix.check_targets(summary)}
    assert targets["DLRM default samples/s at batch 2048"]["met"] is True
    assert targets["DLRM default / --tf samples/s"]["met"] is True
    assert targets["DLRM --bf16 AUC - default AUC"]["met"] is True
    assert targets["DLRM --bf16 samples/s at batch 2048"]["met"] is False  # 21 samples/s
    assert targets["W&D default samples/s at batch 2048"]["met"] is None  # not in this matrix
    runs[("dlrm", "bf16")] = [{"samples_per_sec": 20, "auc": 0.714, "peak_rss_mb": 95}]
    targets = {t["target"]: t for t in matrix.check_targets(matrix.summarize(runs, flags))}
    assert targets["DLRM --bf16 AUC - default AUC"]["met"] is False


def test_matrix_configurations_resolve_to_flags_and_launchers():
    assert matrix.resolve_config("dlrm", "tf") == ("tf", ["--tf"], None, 0)
    assert matrix.resolve_config("dlrm", "ev_filter") == ("ev_filter", ["--ev", "--ev_filter", "counter"], None, 0)
    assert matrix.resolve_config("dlrm", "op_fusion_toggled") == ("op_fusion_off", ["--op_fusion=false"], None, 0)
    assert matrix.resolve_config("dlrm", "jemalloc") == ("jemalloc", [], "jemalloc", 0)
    assert matrix.resolve_config("dlrm", "glibc") == ("glibc", [], "close", 0)
    assert matrix.resolve_config("dlrm", "hvd2") == ("hvd2", ["--hvd"], None, 2)
    # the default with oneDNN's BFC pool back on (the runner turns it off): an environment, no flag
    assert matrix.resolve_config("dlrm", "onednn_pool") == ("onednn_pool", [], None, 0)
    assert matrix.ENVIRONMENTS["onednn_pool"] == {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"}
    assert matrix.resolve_config("dlrm", "mine:--emb_fusion,--intra=1") == ("mine", ["--emb_fusion", "--intra=1"],
                                                                          None, 0)
    # --configs is comma-separated too: an ad-hoc configuration keeps all its flags
    assert matrix.split_configs("tf,mine:--bf16,--emb_fusion,default,other:--xla") == \
        ["tf", "mine:--bf16,--emb_fusion", "default", "other:--xla"]
    with pytest.raises(SystemExit, match="unknown configuration 'fast'"):
        matrix.resolve_config("dlrm", "fast")
    runs = matrix.plan(["dlrm", "gdmix_lr"], ["tf", "default", "bf16", "jemalloc"], matrix.MODES["full"])
    labels = [(m, label) for m, label, *_ in runs]
    assert ("gdmix_lr", "tf") not in labels and ("gdmix_lr", "jemalloc") in labels
    assert ("dlrm", "default_batch512") in labels and ("dlrm", "default_batch2048") not in labels
    cmd = matrix.command("dlrm", [], "jemalloc", 0, 2048, 10, {"train": "t", "eval": "e"}, "/c", 0)
    assert cmd[1].endswith("distribute_k8s/launch.py") and cmd[cmd.index("--mem_usage_strategy") + 1] == "jemalloc"
    assert cmd[cmd.index("--") + 1:][:2] == ["--train_files", "t"]


def test_matrix_puts_its_table_in_the_readme_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- matrix:matrix -->\nold\n<!-- /matrix:matrix -->\noutro\n")
    matrix.update_readme(readme, "matrix", "| new |\n")
    assert readme.read_text() == "intro\n<!-- matrix:matrix -->\n| new |\n<!-- /matrix:matrix -->\noutro\n"
    with pytest.raises(SystemExit, match="no <!-- matrix:other -->"):
        matrix.update_readme(readme, "other", "x")


def test_quick_matrix_runs_end_to_end_and_writes_json_table_and_plots(tmp_path):
    """benchmarks/matrix.py at a tiny size: DLRM --tf and default, gdmix_lr, one run each; the JSON
    records the machine, CPU flags and versions with the numbers, the table and the four plots exist."""
    prefix = tmp_path / "m"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "matrix.py"), "--quick", "--runs", "1",
                           "--steps", "4", "--rows", "6000", "--eval_rows", "2000", "--gdmix_rows", "4000",
                           "--output", str(prefix)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(prefix.with_suffix(".json").read_text())
    meta = doc["meta"]
    assert meta["mode"] == "quick" and meta["tf_version"] and "avx2" in " ".join(meta["cpu_flags"]).lower()
    assert set(doc["summary"]) == {"dlrm", "gdmix_lr"} and set(doc["summary"]["dlrm"]) == {"tf", "default"}
    dlrm = doc["summary"]["dlrm"]
    assert dlrm["default"]["ratio_to_tf"] == pytest.approx(dlrm["default"]["samples_per_sec"]
                                                           / dlrm["tf"]["samples_per_sec"])
    assert 0.3 < dlrm["default"]["auc"] < 1 and dlrm["default"]["peak_rss_mb"] > 0
    assert dlrm["tf"]["per_run"][0]["command_flags"] == ["--tf"]
    assert doc["summary"]["gdmix_lr"]["default"]["samples_per_sec"] > 0
    table = prefix.with_suffix(".md").read_text()
    assert "| tf | `--tf` |" in table and "**targets**" in table
    for name in ("throughput", "auc", "rss"):
        assert (tmp_path / f"m_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_serving_reports_the_size_and_load_time_of_a_stock_export(tmp_path, small_schema):
    """benchmarks/export_serving.py at a tiny size (the small schema, --ev): the export loads in a process
    without modelzoo or TFRA and the report has its size, load time and the first call's rows."""
    out = tmp_path / "export.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "export_serving.py"), "--rows", "1500",
                           "--steps", "2", "--batch_size", "64", "--schema", str(small_schema), "--extra=--ev",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["export_bytes"] > 0 and doc["load_s"] > 0 and doc["rows_scored"] == 1000
    assert doc["imported_modelzoo_or_tfra"] == [] and doc["flags"] == ["--ev"]


def test_matrix_reports_each_configurations_spread_and_onednn_state():
    """(max - min) / median per configuration, shown as +-half of it and flagged over +-5%; the oneDNN
    state of the runs in the table."""
    state = {"TF_ENABLE_ONEDNN_OPTS": "unset (TF's default)", "enabled": True, "cpu_bf16": ["avx512_bf16"]}
    runs = {("dlrm", "tf"): [{"samples_per_sec": s, "auc": 0.7, "peak_rss_mb": 1, "onednn": state}
                             for s in (100, 102, 104)],
            ("dlrm", "default"): [{"samples_per_sec": s, "auc": 0.7, "peak_rss_mb": 1, "onednn": state}
                                  for s in (80, 100, 120)]}
    summary = matrix.summarize(runs, {key: key[1] for key in runs})
    assert summary["dlrm"]["tf"]["spread"] == pytest.approx(4 / 102)
    assert summary["dlrm"]["default"]["spread"] == pytest.approx(0.4)
    table = matrix.markdown({"meta": {"mode": "full", "date": "d", "machine": "m", "python": "3", "tf_version": "2",
                                      "runs": 3, "data": "x", "steps": {"dlrm": 1}},
                             "summary": summary, "targets": []})
    assert "±2.0%" in table and "**±20.0%** (over ±5%)" in table
    assert "on (TF_ENABLE_ONEDNN_OPTS unset (TF's default); BF16 CPU flags: avx512_bf16)" in table


def test_matrix_asks_tensorflow_whether_onednn_is_on():
    import os
    state = matrix.onednn_state(dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0"))
    assert state["TF_ENABLE_ONEDNN_OPTS"] == "0" and state["enabled"] is False


def test_the_pytorch_reference_trains_tables_of_the_zoos_criteo_sizes():
    """The reference DLRM (benchmarks/pytorch_dlrm_reference.py) is compared with this zoo's DLRM, so its
    26 tables are the ones the criteo schema gives DLRM."""
    import pytorch_dlrm_reference
    from modelzoo.schema import load_schema
    assert pytorch_dlrm_reference.table_sizes() == [c.num_ids for c in load_schema("criteo").categorical]


def test_the_pytorch_reference_without_pytorch_says_where_to_install_it(tmp_path):
    import importlib.util
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("PyTorch is installed in this environment: the refusal cannot be seen")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "pytorch_dlrm_reference.py"), "--runs", "1",
                           "--output", str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "PyTorch is not installed here; see this script's docstring for its own venv" in proc.stderr
    assert not (tmp_path / "out.json").exists()


def test_eval_auc_benchmark_times_both_implementations_and_they_agree(tmp_path):
    """benchmarks/eval_auc.py at a tiny size: one process per (implementation, rows), both AUCs equal to
    1e-12 (the script exits non-zero otherwise), and the stored fields."""
    out = tmp_path / "eval_auc.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eval_auc.py"), "--rows", "20000,40000",
                           "--concat_rows", "20000", "--batch", "1024", "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    runs = {(r["impl"], r["rows"]): r for r in doc["runs"]}
    assert set(runs) == {("counts", 20480), ("counts", 40960), ("concat", 20480)}
    assert runs["counts", 20480]["auc"] == pytest.approx(runs["concat", 20480]["auc"], abs=1e-12)
    for r in runs.values():
        assert 0.5 < r["auc"] < 1 and r["update_seconds"] > 0 and r["peak_rss_above_start_mb"] >= 0
        assert 0 < r["distinct_scores"] <= r["rows"]
    assert doc["machine"]["cores"] > 0


@pytest.mark.fast
def test_scale_reads_its_timings_from_the_log_and_splits_day_files_in_time_order(tmp_path):
    """benchmarks/scale.py: start to first step, the first evaluation's cost and the export's come from the
    child's timed log lines; its day-file layout keeps every generated row once, in order."""
    import scale
    events = [(1.0, "train: 10 steps"), (30.0, "step 1/10 (10%) loss 0.7"), (31.0, "step 5/10 (50%) loss 0.6"),
              (40.5, "eval at step 5 (epoch 1): AUC 0.7"), (41.0, "step 6/10 (60%) loss 0.6"),
              (50.0, "eval at step 10 (epoch 2): AUC 0.71"), (53.5, "SavedModel: /x/export/1")]
    assert scale.timings(events) == {"first_step_s": 30.0, "first_eval_s": 9.5, "evaluations": 2,
                                     "after_training_s": 3.5, "wall_to_export_s": 53.5,
                                     "after_training_lines": ["41.0 step 6/10 (60%) loss 0.6",
                                                              "50.0 eval at step 10 (epoch 2): AUC 0.71",
                                                              "53.5 SavedModel: /x/export/1"]}
    whole = (tmp_path / "one" / "1000" / "train.txt")
    assert scale.data_files(tmp_path / "one", 1000, 0) == str(whole)
    pattern = scale.data_files(tmp_path / "days", 1000, 3)
    assert pattern.endswith("day_*")
    days = [(tmp_path / "days" / "1000_days3" / f"day_{d}").read_bytes() for d in range(3)]
    assert b"".join(days) == whole.read_bytes() and [d.count(b"\n") for d in days] == [333, 333, 334]


@pytest.mark.fast
def test_scale_end_to_end_counts_the_whole_run_against_the_smallest_sizes_steady_throughput():
    """Issue 27's end-to-end figure: a run's training rows over its seconds from start to the SavedModel line,
    against the median steady samples/s of the smallest size's runs of the same configuration (run before and
    after the others) and against its own steady samples/s; a failed run is left out."""
    import scale
    runs = [{"rows": 1000, "config": "default", "train_rows": 900, "eval_rows": 100, "samples_per_sec": 100,
             "wall_to_export_s": 12.0},
            {"rows": 10000, "config": "default", "train_rows": 9000, "eval_rows": 1000, "samples_per_sec": 98,
             "wall_to_export_s": 100.0},
            {"rows": 1000, "config": "default", "train_rows": 900, "eval_rows": 100, "samples_per_sec": 80,
             "wall_to_export_s": 12.0},
            {"rows": 1000, "config": "ev", "error": "exit 1"},
            {"rows": 10000, "config": "ev", "train_rows": 9000, "eval_rows": 1000, "samples_per_sec": 50,
             "wall_to_export_s": 200.0}]
    big, ev = scale.end_to_end(runs)[1], runs[4]
    assert big["small_steady_samples_per_sec"] == 90  # (the median of the two small runs: 100 and 80)
    assert (big["end_to_end_samples_per_sec"], big["end_to_end_vs_small_steady"], big["end_to_end_vs_own_steady"],
            big["steady_vs_small_steady"], big["file_rows_per_sec"]) == (90, 1.0, 0.918, 1.089, 100)
    assert runs[0]["end_to_end_vs_small_steady"] == 0.833 and "end_to_end_samples_per_sec" not in runs[3]
    assert ev["end_to_end_vs_small_steady"] == 0.9  # (its own size is the smallest that ran)


@pytest.mark.fast
def test_small_data_update_drops_a_remeasured_defaults_old_lines_and_keeps_other_models():
    """small_data_auc.py --update: a model whose default was measured again keeps none of its old grid lines (its
    default flags may have changed what they mean); with --no_default a line measured again replaces its old one
    and the others stay; models not measured stay as stored; "best tuned" is recomputed."""
    from small_data_auc import merge

    def config(flags, auc):
        return {"flags": flags, "median_auc": auc, "runs": []}

    stored = {"models": {"lr": {"default": config("", 0.75), "grid": [config("--a", 0.757)]},
                         "dlrm": {"default": config("", 0.748), "grid": [config("--a", 0.752)]}}}
    merged = merge(stored, {"date": "D", "command": "C", "models": {
        "lr": {"default": config("", 0.758), "grid": [config("--b", 0.756)]},
        "dlrm": {"default": None, "grid": [config("--a", 0.749), config("--c", 0.747)]}}})
    lr, dlrm = merged["models"]["lr"], merged["models"]["dlrm"]
    assert [g["flags"] for g in lr["grid"]] == ["--b"] and lr["tuned"]["median_auc"] == 0.758
    assert dlrm["default"]["median_auc"] == 0.748
    assert [(g["flags"], g["median_auc"]) for g in dlrm["grid"]] == [("--a", 0.749), ("--c", 0.747)]
    assert dlrm["tuned"]["median_auc"] == 0.749 and merged["commands"] == ["D: C"]


def test_tfra_capacity_measures_a_tables_slots_and_its_export(tmp_path):
    """benchmarks/tfra_capacity.py at a tiny size: the resident bytes a slot of a power of two of slots, at
    least the key and values (72 bytes at width 16), and the export adds at least its payload's size."""
    out = tmp_path / "cap"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tfra_capacity.py"), "--ids", "600000",
                           "--chunk", "200000", "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.with_suffix(".json").read_text())
    assert [s["ids"] for s in doc["steps"]] == [200_000, 400_000, 600_000]
    assert doc["export"]["payload"] == 600_000 * 72
    assert doc["bytes_per_slot"] >= 72 and doc["steps"][-1]["resident"] >= 600_000 * 72  # (at least its payload)


def test_distinct_ids_writes_criteo_full_with_the_counted_ids_as_expected_ids(tmp_path):
    """benchmarks/distinct_ids.py --schema_out: criteo_full with each column's count as its expected_ids, which
    --ev's memory plan then counts instead of hash_buckets; --reuse takes the stored counts of the same file."""
    from distinct_ids import main as distinct_main
    from modelzoo.schema import load_schema
    from modelzoo.synthetic import generate_criteo
    data = tmp_path / "train.txt"
    generate_criteo(str(data), 3000, seed=1)
    schema_path, prefix = tmp_path / "counted.json", str(tmp_path / "ids")
    distinct_main([str(data), "--rows", "2000", "--output", prefix, "--schema_out", str(schema_path)])
    counts = json.loads((tmp_path / "ids.json").read_text())["distinct"]
    schema = load_schema(str(schema_path))
    assert {c.name: c.stored_ids for c in schema.tables} == counts
    assert schema.fingerprint() == load_schema("criteo_full").fingerprint()  # the same tables and checkpoints
    schema_path.unlink()
    distinct_main([str(data), "--rows", "2000", "--output", prefix, "--reuse", "--schema_out", str(schema_path)])
    assert {c.name: c.stored_ids for c in load_schema(str(schema_path)).tables} == counts

"""Parameter-server training (modelzoo/distributed.py) through the models' own TFJob manifests, run
by `python -m distribute_k8s.local_run` as local processes with the TF_CONFIG the training operator
would inject: the job succeeds and every process exits by itself (the PS tasks too), the evaluator's
final evaluation is in result.json, a worker killed with SIGKILL and restarted resumes its input,
the --workqueue deals every item once, and the partitioners slice variables across the PS tasks.
Each job trains on generated Criteo-format data (the chief generates it on the shared volume)."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, small_schema_file

sys.path.insert(0, str(REPO))

DLRM = REPO / "dlrm" / "distribute_k8s" / "distribute_k8s_FP32.yaml"
WDL_BF16 = REPO / "wide_and_deep" / "distribute_k8s" / "distribute_k8s_BF16.yaml"
DCN_V2_BF16 = REPO / "dcn_v2" / "distribute_k8s" / "distribute_k8s_BF16.yaml"
LR = REPO / "lr" / "distribute_k8s" / "distribute_k8s_FP32.yaml"
DEEPFM = REPO / "deepfm" / "distribute_k8s" / "distribute_k8s_FP32.yaml"
FM = REPO / "fm" / "distribute_k8s" / "distribute_k8s_FP32.yaml"
BATCH = 256
# small and quick: one thread each (six processes share the machine), the evaluator looks every 2 s
TRAIN = ["--generate_rows", 20000, "--batch_size", BATCH, "--log_steps", 20, "--intra", 1, "--inter", 1,
         "--eval_throttle_secs", 2]
UNEVALUATED = TRAIN[:TRAIN.index("--eval_throttle_secs")]  # for --no_eval, which refuses the throttle
# A job that a killed and restarted worker can still join: the other two trainers must not finish before its
# restart has started TensorFlow and built its graph (10-15 s). On the 2-vCPU Zen 4 host the others run about
# 40 steps/s together, so 600 or 800 steps (the earlier figures, enough on a slower host) ended first.
RESTART_STEPS = 2400


def allocator_options():
    """The manifests ask launch.py for jemalloc; where Debian's libjemalloc2 is not installed the jobs
    run with glibc malloc instead (the launcher's own tests cover jemalloc)."""
    from distribute_k8s.launch import find_jemalloc
    if find_jemalloc():
        return []
    print("libjemalloc.so.2 not found (apt-get install libjemalloc2): the jobs run with MEM_USAGE_STRATEGY=close")
    return ["--env", "MEM_USAGE_STRATEGY=close"]


def local_run(manifest, root, options, train_args, timeout=900):
    cmd = [sys.executable, "-m", "distribute_k8s.local_run", str(manifest), "--root", str(root), "--grace", "60",
           *allocator_options(), *map(str, options), "--", *map(str, train_args)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    summary = json.loads((root / "summary.json").read_text())
    return proc, summary


def log(root, replica):
    return (root / "logs" / f"{replica}.log").read_text()


def checkpoint_dir(root, job, model):
    return root / "modelzoo-data" / "result" / job / model


def assert_clean_success(proc, summary, restarted=()):
    assert proc.returncode == 0 and summary["outcome"] == "Succeeded", proc.stdout[-4000:] + proc.stderr[-2000:]
    for name, replica in summary["replicas"].items():
        assert replica["exited_by_itself"], f"{name} did not exit by itself: {replica}"
        assert replica["exit_codes"][-1] == 0, f"{name}: {replica}"
        if name not in restarted:
            assert replica["exit_codes"] == [0] and replica["restarts"] == 0, f"{name}: {replica}"


def input_progress(checkpoint):
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(str(checkpoint))
    return (int(tf.train.load_variable(latest, "global_step")),
            np.asarray(tf.train.load_variable(latest, "input_progress")))


OVERSHOOT = 2 * 3  # steps past --epochs' last one a PS job of 3 trainers may take (see dlrm_job)


@pytest.fixture(scope="module")
def small_schema(tmp_path_factory):
    return small_schema_file(tmp_path_factory.mktemp("schema") / "criteo_small.json")


@pytest.fixture(scope="module")
def dlrm_job(tmp_path_factory):
    """The DLRM FP32 manifest as CI runs it: chief + 2 workers + 1 PS + evaluator, two epochs of 64,512 training
    rows (71,680 generated, the last 10% held out) at batch 256: 252 steps an epoch, 504 in all, and up to two
    steps past it on each trainer (asynchronous trainers: Estimator's StopAtStepHook judges the end from the
    global step fetched with a trainer's own step, which is read while the others update it, so a trainer may
    start one more step after the step limit is reached; 508 seen once in CI). Long enough (about 12 s on the
    Zen 4 host) for the evaluator to start: with 126 steps the job sometimes ended first and the chief, seeing no
    evaluator alive, evaluated by itself."""
    root = tmp_path_factory.mktemp("dlrm_job")
    proc, summary = local_run(DLRM, root, ["--workers", 2, "--ps", 1],
                              [*TRAIN[2:], "--generate_rows", 71680, "--epochs", 2, "--save_steps", 120])
    return root, proc, summary


def test_dlrm_job_succeeds_and_every_process_exits_by_itself(dlrm_job):
    root, proc, summary = dlrm_job
    assert_clean_success(proc, summary)
    assert sorted(summary["replicas"]) == ["chief-0", "evaluator-0", "ps-0", "worker-0", "worker-1"]
    assert "every trainer has finished; exiting" in log(root, "ps-0")
    for trainer in ("chief-0", "worker-0", "worker-1"):
        assert "parameter-server job: 3 trainer(s), 1 ps task(s)" in log(root, trainer)


def test_dlrm_job_writes_checkpoint_savedmodel_and_the_evaluators_auc(dlrm_job):
    root, _, _ = dlrm_job
    checkpoint = checkpoint_dir(root, "dlrm-fp32", "dlrm")
    result = json.loads((checkpoint / "result.json").read_text())
    step, _ = input_progress(checkpoint)
    job = result["parameter_server_job"]
    evaluator_log = log(root, "evaluator-0")
    why = f"result.json: {json.dumps(job)}\nevaluator log:\n{evaluator_log[-3000:]}\nchief log:\n{log(root, 'chief-0')[-3000:]}"
    assert 504 <= step <= 504 + OVERSHOOT and result["steps"] == step, f"checkpoint step {step}; {why}"
    assert list((checkpoint / "export").glob("*/saved_model.pb"))
    assert job["evaluated_by"] == "evaluator" and job["evaluated_step"] == step, why
    assert 0.5 < result["auc"] < 1.0 and result["samples_per_sec"] > 0, why
    final = re.findall(r"evaluator: eval at step ([\d,]+) \(epoch [\d.]+\): AUC ([\d.]+) .*\(final\)", evaluator_log)
    assert final and abs(float(final[-1][1]) - result["auc"]) < 5e-5, f"auc {result['auc']}; {why}"
    assert set(job["trainer_reports"]) == {"chief-0", "worker-0", "worker-1"}


@pytest.mark.parametrize("manifest,job,model,bf16", [(DCN_V2_BF16, "dcn-v2-bf16", "dcn_v2", True),
                                                     (LR, "lr-fp32", "lr", False),
                                                     (FM, "fm-fp32", "fm", False),
                                                     (DEEPFM, "deepfm-fp32", "deepfm", False)],
                         ids=["dcn_v2-BF16", "lr-FP32", "fm-FP32", "deepfm-FP32"])
def test_generated_manifest_runs_as_a_ps_job_and_exports(manifest, job, model, bf16, tmp_path, small_schema):
    """Generated manifests beyond DLRM's run a PS job end to end with no PS code of the model's own: the fourth
    model's BF16 one, lr's FP32-only one (a model without an MLP: no BF16 twin), fm's and DeepFM's (the numeric
    fields' factor matrix, split by the PS job's dense partitioner, read whole; DeepFM's linear part on FTRL and
    the rest on the job's optimizer: two optimizer groups over the PS)."""
    proc, summary = local_run(manifest, tmp_path, ["--workers", 1, "--ps", 1],
                              [*TRAIN, "--schema", small_schema, "--steps", 40, "--save_steps", 20])
    assert_clean_success(proc, summary)
    checkpoint = checkpoint_dir(tmp_path, job, model)
    result = json.loads((checkpoint / "result.json").read_text())
    assert result["model"] == model and result["steps"] >= 40 and result["flags"]["bf16"] == bf16
    assert result["parameter_server_job"]["evaluated_by"] == "evaluator" and 0.5 < result["auc"] < 1.0
    assert list((checkpoint / "export").glob("*/saved_model.pb"))


def test_trainers_share_the_steps_and_count_their_rows(dlrm_job):
    """Each trainer counts the rows it trained on in its slot of input_progress: the slots add up to
    the global step's batches, two passes over the 64,512 training rows (--epochs 2; plus the steps past the
    limit asynchronous trainers take, OVERSHOOT; give or take a step in flight on each of the two workers when
    the chief saved: a step's variable updates on the PS are not one transaction), and both workers took part."""
    root, _, _ = dlrm_job
    step, progress = input_progress(checkpoint_dir(root, "dlrm-fp32", "dlrm"))
    assert 0 <= step * BATCH - 2 * 64512 <= OVERSHOOT * BATCH
    assert abs(int(progress[:3].sum()) - step * BATCH) <= 2 * BATCH and not progress[3:].any()
    assert progress[1] > 0 and progress[2] > 0


def test_killed_worker_is_restarted_and_resumes_its_input(tmp_path, small_schema):
    """SIGKILL worker 1 at its first progress line; restartPolicy OnFailure restarts it in place; it
    skips the rows it had trained on (read live from its input_progress slot on the PS) and the job
    reaches its step."""
    proc, summary = local_run(DLRM, tmp_path, ["--workers", 2, "--ps", 1, "--kill", r"worker-1:worker 1: step"],
                              [*TRAIN, "--schema", small_schema, "--steps", RESTART_STEPS])
    assert_clean_success(proc, summary, restarted=("worker-1",))
    assert summary["replicas"]["worker-1"]["exit_codes"] == [137, 0]
    assert summary["replicas"]["worker-1"]["restarts"] == 1
    resumed = re.findall(r"worker 1: input resumes after the ([\d,]+) rows", log(tmp_path, "worker-1"))
    assert len(resumed) == 1
    skipped = int(resumed[0].replace(",", ""))
    assert skipped > 0 and skipped % BATCH == 0
    step, progress = input_progress(checkpoint_dir(tmp_path, "dlrm-fp32", "dlrm"))
    # its slot went on from the rows it had skipped, not from zero; whether it trains more steps after
    # the restart is a race with the other trainers reaching the last step (on a fast machine they do first)
    assert step >= RESTART_STEPS and progress[2] >= skipped
    # every step counted once in some trainer's slot, give or take the steps in flight: the killed one
    # may be half-applied, and the final checkpoint can catch each of the other two trainers between
    # its step's global-step increment and its progress update (asynchronous PS: not one transaction)
    assert abs(int(progress[:3].sum()) - step * BATCH) <= 3 * BATCH


def test_workqueue_deals_each_item_once_and_a_restarted_worker_reads_its_items_again(tmp_path, small_schema):
    """Whether the kill lands while worker 1 holds unfinished items is a race (seen once on the Zen 4 host: it
    held none, so it had nothing to read again): a second job is run when the first shows no re-read."""
    for attempt in range(2):
        root = tmp_path / f"attempt{attempt}"
        proc, summary = local_run(DLRM, root, ["--workers", 2, "--ps", 1, "--evaluators", 0,
                                               "--kill", r"worker-1:worker 1: step"],
                                  [*TRAIN, "--schema", small_schema, "--steps", RESTART_STEPS, "--workqueue"])
        if re.search(r"workqueue: trainer 2 reads its \d+ earlier item\(s\) again", log(root, "worker-1")):
            break
    tmp_path = root
    assert_clean_success(proc, summary, restarted=("worker-1",))
    taken = {}
    for trainer in ("chief-0", "worker-0", "worker-1"):
        for index, epoch in re.findall(r"took item (\d+) of epoch (\d+)", log(tmp_path, trainer)):
            key = (int(epoch), int(index))
            assert key not in taken, f"item {key} taken by {taken.get(key)} and {trainer}"
            taken[key] = trainer
    for index, epoch in re.findall(r"reads item (\d+) of epoch (\d+) again", log(tmp_path, "worker-1")):
        taken.setdefault((int(epoch), int(index)), "worker-1")  # (dealt just before the kill, its line lost)
    assert {t for t in taken.values()} == {"chief-0", "worker-0", "worker-1"}
    items = 1 + max(i for _, i in taken)
    epochs = sorted({e for e, _ in taken})
    for epoch in epochs[:-1]:  # every epoch but the last (being dealt when training ended) is complete
        assert {i for e, i in taken if e == epoch} == set(range(items)), f"epoch {epoch}"
    assert re.search(r"workqueue: trainer 2 reads its \d+ earlier item\(s\) again", log(tmp_path, "worker-1"))
    step, _ = input_progress(checkpoint_dir(tmp_path, "dlrm-fp32", "dlrm"))
    assert step >= RESTART_STEPS


def test_killed_ps_is_restarted_and_the_job_completes(tmp_path, small_schema):
    """SIGKILL the PS once the chief has saved a checkpoint past step 300 (local_run's --kill
    ps-0@chief-0: the PS prints nothing then); restartPolicy OnFailure restarts it empty. The trainers'
    sessions fail and are created again, the chief restores the checkpoint into the new PS (and
    says so, as does the PS), and the --workqueue on PS 0 is rebuilt from that checkpoint's record:
    each trainer reads its items again, none of those is dealt again, and the job completes."""
    proc, summary = local_run(DLRM, tmp_path, ["--workers", 1, "--ps", 1,
                                               "--kill", r"ps-0@chief-0:chief 0: step [3-6]\d\d/"],
                              [*TRAIN, "--schema", small_schema, "--steps", 900, "--save_steps", 300, "--workqueue"])
    assert summary["replicas"]["ps-0"]["exit_codes"] == [137, 0], proc.stdout[-4000:]
    assert_clean_success(proc, summary, restarted=("ps-0",))
    chief_log = log(tmp_path, "chief-0")
    restored = re.findall(r"chief: ps 0 came back after a restart \(empty\): restored the variables from checkpoint "
                          r"step ([\d,]+)", chief_log)
    assert len(restored) == 1, chief_log[-3000:]
    step_restored = int(restored[0].replace(",", ""))
    assert step_restored >= 300
    assert f"ps 0: back after a restart: the chief restored the variables from checkpoint step {restored[0]} " \
           "into this task" in log(tmp_path, "ps-0")
    rebuilt = re.search(rf"workqueue: PS 0 had no queue .*: rebuilt from the record of checkpoint step {restored[0]}: "
                        r"trainer 0 had (\d+) item\(s\), trainer 1 had (\d+) item\(s\)", chief_log)
    assert rebuilt, chief_log[-3000:]
    kept_items, dealt_after = set(), []
    for trainer, replica, kept in ((0, "chief-0", int(rebuilt[1])), (1, "worker-0", int(rebuilt[2]))):
        before, _, after = log(tmp_path, replica).partition("new training session: input resumes")
        assert after, f"{replica} did not get a new session"
        if kept:
            assert f"workqueue: trainer {trainer} reads its {kept} earlier item(s) again" in after
        kept_items |= set(re.findall(r"took item (\d+) of epoch (\d+)", before)[:kept])
        dealt_after += re.findall(r"took item (\d+) of epoch (\d+)", after)
    assert len(dealt_after) == len(set(dealt_after)) and not kept_items & set(dealt_after)
    step, _ = input_progress(checkpoint_dir(tmp_path, "dlrm-fp32", "dlrm"))
    result = json.loads((checkpoint_dir(tmp_path, "dlrm-fp32", "dlrm") / "result.json").read_text())
    assert step >= 900 and result["steps"] == step and result["parameter_server_job"]["evaluated_step"] >= 900
    assert list((checkpoint_dir(tmp_path, "dlrm-fp32", "dlrm") / "export").glob("*/saved_model.pb"))


def test_partitioners_slice_tables_and_dense_layers_across_two_ps(tmp_path):
    """Wide & Deep's BF16 manifest with 2 PS: --input_layer_partitioner 1 (MB) cuts each embedding
    table of at least 2 MB in two, --dense_layer_partitioner (16 KB, the manifest's) the DNN's
    kernels; the slices sit on both PS tasks and the chief evaluates the restored model."""
    schema = json.loads((REPO / "modelzoo" / "schemas" / "criteo.json").read_text())
    for col in schema["columns"]:
        if col["kind"] == "categorical":
            col["hash_buckets"] = min(col["hash_buckets"], 8000)
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    proc, summary = local_run(WDL_BF16, tmp_path, ["--workers", 1, "--ps", 2, "--evaluators", 0],
                              [*TRAIN, "--schema", tmp_path / "schema.json", "--steps", 20,
                               "--input_layer_partitioner", 1])
    assert_clean_success(proc, summary)
    checkpoint = checkpoint_dir(tmp_path, "wide-and-deep-bf16", "wide_and_deep")
    graph = (checkpoint / "graph.pbtxt").read_text()
    devices = {}
    for name, device in re.findall(r'name: "([^"]+/part_\d+)"\n\s+op: "VarHandleOp"\n\s+device: "([^"]+)"', graph):
        devices[name] = device
    embedding_parts = {n: d for n, d in devices.items() if n.startswith("embedding/")}
    dense_parts = {n: d for n, d in devices.items() if n.startswith("dnn/")}
    assert any(n.endswith("/part_1") for n in embedding_parts), sorted(devices)[:20]
    assert any(n.endswith("/part_1") for n in dense_parts), sorted(devices)[:20]
    assert {d.split("/task:")[1][0] for d in devices.values()} == {"0", "1"}
    result = json.loads((checkpoint / "result.json").read_text())
    assert result["parameter_server_job"]["evaluated_by"] == "chief" and result["auc"] is not None
    assert result["flags"]["bf16"] is True


def test_make_dataset_skip_rows_continues_the_same_stream(tmp_path):
    """A resumed input (skip_rows) reads exactly the rows that follow those skipped, in the same
    seeded shuffle order."""
    from modelzoo.features import make_dataset
    from modelzoo.datafiles import Slice
    from modelzoo.schema import load_schema
    schema = load_schema("criteo")
    rows = [f"{i % 2}\t" + "\t".join(str(i) for _ in range(13)) + "\t" + "\t".join(["a1"] * 26) for i in range(300)]
    path = tmp_path / "rows.txt"
    path.write_text("\n".join(rows) + "\n")

    def first_values(skip, batches):
        ds = make_dataset([Slice(str(path), 0, 300)], schema, "\t", 10, True, False, seed=7, skip_rows=skip)
        return [int(v) for f, _ in ds.take(batches) for v in f["I1"].numpy()]
    whole = first_values(0, 12)
    assert first_values(40, 8) == whole[40:120]


def test_cluster_from_tf_config():
    from modelzoo.distributed import ClusterError, from_environment
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"], "ps": ["d:1"]}
    env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})}
    c = from_environment(env)
    assert (c.trainers, c.num_ps, c.trainer_index, c.is_chief) == (3, 1, 2, False)
    assert c.device_filters() == ["/job:ps", "/job:worker/task:1"]
    evaluator = from_environment({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "evaluator"}})})
    assert evaluator.trainer_index is None and evaluator.device_filters() == []
    assert from_environment({}) is None
    assert from_environment({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"]},
                                                      "task": {"type": "chief", "index": 0}})}) is None
    for bad, words in [("{nope", "TF_CONFIG is not JSON"),
                       (json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                    "task": {"type": "worker", "index": 0}}), "names no ps tasks"),
                       (json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 5}}), "not in the cluster"),
                       (json.dumps({"cluster": {**cluster, "boss": ["m:1"]}, "task": {"type": "ps"}}),
                        "cluster type 'boss' is not one of"),
                       # master, the legacy chief, is refused with a request for chief (modelzoo/tf_config.py)
                       (json.dumps({"cluster": {"master": ["m:1"], "ps": ["d:1"]}, "task": {"type": "ps"}}),
                        "names a master task .* needs it as chief")]:
        with pytest.raises(ClusterError, match=words):
            from_environment({"TF_CONFIG": bad})


def test_tf_error_line_names_what_failed():
    from modelzoo.run.checkpoints import tf_error_line
    message = ("Graph execution error:\n\nDetected at node 'X' defined at (most recent call last):\n  File ...\n"
               "Node: 'X'\nNo OpKernel was registered to support Op 'X'\n\t [[X]]")
    assert tf_error_line(message) == "No OpKernel was registered to support Op 'X'"
    assert tf_error_line("Field 3 in record 2 is not a valid int32: x") == "Field 3 in record 2 is not a valid int32: x"


def test_job_samples_per_sec_comes_from_the_trainers_spans_when_the_chief_ran_no_steps():
    """A chief slowed at start (its first checkpoint save) may run no step while the workers run
    them all (as on CI): the job's samples/s then spans the other trainers' first and last steps."""
    from modelzoo.hooks import ThroughputMeter
    chief = ThroughputMeter()
    assert chief.cluster_samples_per_sec(256) is None
    workers = [((1, 100.0), (60, 102.0)), ((2, 100.5), (120, 104.0)), None]
    assert chief.cluster_samples_per_sec(256, workers) == pytest.approx((120 - 1) * 256 / 4.0)
    chief.span = ((3, 101.0), (5, 101.5))
    assert chief.cluster_samples_per_sec(256, workers) == pytest.approx((120 - 1) * 256 / 4.0)
    assert chief.cluster_samples_per_sec(256) == pytest.approx(2 * 256 / 0.5)


def test_ev_incremental_ckpt_killed_chief_resumes_from_its_deltas(tmp_path):
    """--ev --incremental_ckpt in a PS job (chief + 2 PS, DLRM's fused table sharded over both): the chief
    writes deltas of the PS-sharded tables; SIGKILLed at its second delta and restarted in place, it restores
    the full checkpoint and then every delta into the PS tasks, its input skips the rows the last delta's step
    had trained on, and the job completes. The state it resumed from (its checkpoint right after the restore)
    is the full checkpoint plus the deltas, merged in numpy, exactly."""
    import shutil
    import threading
    from modelzoo import incremental_ckpt as inc
    from test_incremental_ckpt import checkpoint_tables, merged_checkpoint
    checkpoint = checkpoint_dir(tmp_path, "dlrm-fp32", "dlrm")
    copies = tmp_path / "copies"  # each delta (and the first full checkpoint) as written, before the restart
    (copies / inc.FOLDER).mkdir(parents=True)
    done = threading.Event()

    def keep_copies():
        while not done.wait(0.05):
            for _, path in inc.list_deltas(checkpoint):
                target = copies / inc.FOLDER / path.rsplit("/", 1)[1]
                if not target.exists():
                    try:
                        shutil.copy(path, target)
                        for f in checkpoint.glob("model.ckpt-0.*"):
                            if not (copies / f.name).exists():
                                shutil.copy(f, copies / f.name)
                    except FileNotFoundError:
                        pass
    poller = threading.Thread(target=keep_copies, daemon=True)
    poller.start()
    try:
        proc, summary = local_run(DLRM, tmp_path, ["--workers", 0, "--ps", 2, "--evaluators", 0, "--kill",
                                                   r"chief-0:incremental: step [\d,]+: delta .* since step [1-9]"],
                                  [*UNEVALUATED, "--batch_size", 64, "--steps", 600, "--no_eval", "--ev",
                                   "--input_layer_partitioner", 0, "--incremental_ckpt", 1,
                                   "--dense_layer_partitioner", 0,  # (whole dense variables: merged here by name)
                                   "--keep_checkpoint_max", 5])
    finally:
        done.set()
        poller.join()
    assert_clean_success(proc, summary, restarted=("chief-0",))
    assert summary["replicas"]["chief-0"]["exit_codes"] == [137, 0]
    chief = log(tmp_path, "chief-0")
    before, _, after = chief.partition("parameter-server job")[2].partition("parameter-server job")
    assert len(re.findall(r"incremental: step [\d,]+: delta", before)) >= 2, before[-3000:]
    chain = inc.delta_chain(str(copies), 0)
    assert len(chain) >= 2
    last = chain[-1][0]
    assert f"incremental: restored {len(chain)} deltas after full checkpoint 0: now at step {last}" in after, \
        after[-3000:]
    assert f"chief 0: input resumes after the {last * 64:,} rows" in after
    # the deltas hold the fused table's rows and slots from both PS shards
    shards = {s for _, _, meta in chain for t in meta["tables"] for s in t["shards"]}
    assert any(s.endswith("_mht_1of2") for s in shards) and any(s.endswith("_mht_2of2") for s in shards)
    assert any("fused_dim16_rows" in s for s in shards)
    # the restarted chief's first save (at session creation, before any step) is the restored state
    expected_dense, expected_tables = merged_checkpoint(str(copies / "model.ckpt-0"), [p for _, p, _ in chain])
    restored = str(checkpoint / f"model.ckpt-{last}")
    reader = tf_reader(restored)
    got = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    assert int(got["global_step"]) == last
    for name, rows in expected_tables.items():
        table = checkpoint_tables(restored, rows.pop("__shards__"))
        assert table.keys() == rows.keys(), name
        for k, v in rows.items():
            np.testing.assert_array_equal(table[k], v, err_msg=name)
    for name, value in expected_dense.items():
        if not name.endswith(("-keys", "-values")):
            np.testing.assert_array_equal(got[name], value, err_msg=name)
    result = json.loads((checkpoint / "result.json").read_text())
    assert result["steps"] == 600 and inc.list_deltas(checkpoint) == []


def tf_reader(prefix):
    import tensorflow as tf
    return tf.train.load_checkpoint(prefix)


def test_ps_early_stopping_is_driven_by_the_evaluator_and_every_task_exits_0(tmp_path, small_schema):
    """--early_stop_patience 1 in a PS job: the evaluator records each evaluation, keeps the best snapshot in
    CHECKPOINT/best and, at the first evaluation without improvement, ends the job: the trainers stop (long
    before --steps), every task exits 0 by itself, and the chief exports and reports the best evaluation."""
    proc, summary = local_run(DLRM, tmp_path, ["--workers", 1, "--ps", 1],
                              [*TRAIN, "--schema", small_schema, "--learning_rate", 0.01, "--steps", 3000,
                               "--save_steps", 10, "--early_stop_patience", 1])
    assert_clean_success(proc, summary)
    checkpoint = checkpoint_dir(tmp_path, "dlrm-fp32", "dlrm")
    result = json.loads((checkpoint / "result.json").read_text())
    evaluations = result["evaluations"]
    why = f"{json.dumps(evaluations)}\nevaluator log:\n{log(tmp_path, 'evaluator-0')[-3000:]}"
    assert result["stopped_early_at_step"] == evaluations[-1]["step"] < 3000, why
    assert evaluations[-1]["auc"] <= result["best"]["auc"] == result["auc"], why
    assert result["best_step"] < result["stopped_early_at_step"] <= result["steps"] < 3000, why
    assert (checkpoint / "best" / f"model.ckpt-{result['best_step']}.index").is_file()
    assert "the evaluator's early stopping ended the job" in log(tmp_path, "chief-0")
    assert "early stopping ended the job; exiting" in log(tmp_path, "evaluator-0")
    assert list((checkpoint / "export").glob("*/saved_model.pb"))


def test_non_chief_tasks_wait_for_the_chief_without_a_time_limit_and_say_why(monkeypatch, capsys):
    """A worker used to give up after 900 s waiting for the chief (each restart counting toward the TFJob's
    backoffLimit: a chief Pending for ~45 minutes failed the job). It now waits as long as it takes, as
    tf.estimator's workers do, and logs why every log_every seconds. Time is simulated (2 hours of polls)."""
    from modelzoo import distributed
    from modelzoo.run import cluster
    clock = [0.0]
    monkeypatch.setattr(distributed.time, "time", lambda: clock[0])
    monkeypatch.setattr(distributed.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    polls = []

    def ready():  # the chief's record appears after two hours
        polls.append(clock[0])
        return "ready" if clock[0] >= 7200 else None
    assert distributed.wait_for("the chief", ready, poll=10, why=lambda: "chief Pending") == "ready"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "waiting for the chief: chief Pending"
    assert len(lines) == 7200 // 60 and lines[-1] == "waiting for the chief (for 7140s): chief Pending", lines[-3:]
    with pytest.raises(distributed.ClusterError, match="gave up after 30s waiting for x"):  # a bounded wait
        distributed.wait_for("x", lambda: None, timeout=30, poll=10)
    assert not hasattr(cluster, "CLUSTER_WAIT_SECS")  # cluster_data passes no time limit


def test_non_chief_tasks_resolve_the_data_only_after_the_chief_recorded_it(monkeypatch, tmp_path):
    """Issue 27: every pod of a PS job counted each data file itself when they started together (the line
    index's lock is per machine). The chief builds the index while resolving its data and then records the
    data in run_config.json (check_data); the other tasks now wait for that record before resolving, so
    they read the index the chief wrote instead of counting the file. Time is simulated."""
    from types import SimpleNamespace

    from modelzoo import distributed
    from modelzoo.run import cluster
    record = tmp_path / "run_config.json"
    record.write_text(json.dumps({"model": "dlrm"}))  # claimed, the data not yet resolved
    sleeps = []

    def sleep(seconds):  # the chief records its data after the third poll
        sleeps.append(seconds)
        if len(sleeps) == 3:
            record.write_text(json.dumps({"model": "dlrm", "data": {"files": ["train.txt"]}}))
    monkeypatch.setattr(distributed.time, "sleep", sleep)
    resolved = []
    monkeypatch.setattr(cluster, "checkpoint_identity", lambda *a: {})
    monkeypatch.setattr(cluster, "check_checkpoint", lambda *a, **k: None)
    monkeypatch.setattr(cluster, "resolve", lambda args, schema: resolved.append(
        "data" in json.loads(record.read_text())) or "the data")
    ctx = SimpleNamespace(checkpoint=str(tmp_path), args=None, schema=None, spec=None,
                          world=SimpleNamespace(is_chief=False))
    assert cluster.cluster_data(ctx) == "the data"
    assert len(sleeps) == 3 and resolved == [True], (sleeps, resolved)

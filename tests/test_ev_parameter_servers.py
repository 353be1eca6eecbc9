"""Embedding variables (--ev) sharded over parameter servers, through the real Estimator runner.

DLRM --ev trains a few steps on the real Criteo sample twice: once under TF_CONFIG naming a cluster
of one chief and two PS tasks (the PS servers started in the training process before `runner.main`,
whose tf.estimator.train_and_evaluate starts the chief's), once in a single process without TF_CONFIG.
With the cluster, the Estimator's session runs on the chief's server, dense variables are placed by
its replica_device_setter and every dynamic table (rows and optimizer slots) is sharded over the two
PS tasks by `key % 2`. The sharded checkpoint must hold the same model as the single-process one:
same step, the two shards' keys are the one table's keys, the rows (and slots and dense variables)
equal within 1e-5; evaluation agrees, and both SavedModels load in a fresh process (no cluster) and
score the held-out rows alike.
"""
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import CRITEO_SAMPLE, REPO, for_mode, raw_columns, score_in_fresh_process
from modelzoo.flags import EXPORT

# one table per column; batches in file-shuffle order in both runs (--smartstaged's parallel decoding
# may reorder them, and the two runs are compared row for row)
FLAGS = ["--ev", "--emb_fusion=false", "--smartstaged=false", "--batch_size", 128, "--steps", 6, "--seed", 1]
HELD_OUT = 100  # the last rows of the sample (inside the runner's held-out 10%): scored by both exports

# The training process of the PS run: its own cluster on free ports, servers up, then the runner.
PS_TRAIN = r"""
import json, os, socket, sys
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("localhost", 0))
ports = [s.getsockname()[1] for s in socks]
for s in socks:
    s.close()
cluster = {"chief": [f"localhost:{ports[0]}"], "ps": [f"localhost:{ports[1]}", f"localhost:{ports[2]}"]}
os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
import tensorflow as tf
spec = tf.train.ClusterSpec(cluster)
# the PS tasks' servers (train_and_evaluate starts the chief's own)
servers = [tf.distribute.Server(spec, job_name="ps", task_index=i, protocol="grpc", start=True) for i in (0, 1)]
sys.path.insert(0, "tests")
from conftest import load_train_module
from modelzoo import runner
code = runner.main(load_train_module("dlrm").SPEC, json.loads(sys.argv[1]))
sys.stdout.flush(); sys.stderr.flush()
os._exit(code)  # (the in-process gRPC servers never stop on their own)
"""

def clean_env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    env.pop("TF_CONFIG", None)
    return env


def train(kind, checkpoint):
    argv = [str(a) for a in ["--train_files", CRITEO_SAMPLE, "--checkpoint", checkpoint, *FLAGS]]
    if kind == "ps":
        cmd = [sys.executable, "-c", PS_TRAIN, json.dumps(argv)]
    else:
        cmd = [sys.executable, str(REPO / "dlrm" / "train.py"), *argv]
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=900)
    return proc, round(time.time() - started, 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"one": (checkpoint, proc, result), "ps": ...}: the two trainings, run side by side."""
    if not CRITEO_SAMPLE.is_file():
        pytest.skip(f"real Criteo sample not found at {CRITEO_SAMPLE} (../shared/data beside the checkout)")
    root = tmp_path_factory.mktemp("ev_ps")
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {kind: pool.submit(train, kind, root / kind) for kind in ("one", "ps")}
        done = {kind: job.result() for kind, job in jobs.items()}
    out = {}
    for kind, (proc, seconds) in done.items():
        assert proc.returncode == 0, \
            f"{kind} run failed ({proc.returncode}) after {seconds}s:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        ckpt = root / kind
        out[kind] = (ckpt, proc, json.loads((ckpt / "result.json").read_text()))
    return out


def checkpoint_tables(checkpoint_file):
    """{saveable name: {key: row}} of every hash table in a checkpoint (saved as NAME-keys, NAME-values)."""
    import tensorflow as tf
    names = [n[:-len("-keys")] for n, _ in tf.train.list_variables(checkpoint_file) if n.endswith("-keys")]
    tables = {}
    for name in names:
        keys = tf.train.load_variable(checkpoint_file, name + "-keys")
        values = tf.train.load_variable(checkpoint_file, name + "-values")
        assert len(keys) == len(set(keys.tolist())), f"{name}: duplicate keys"
        tables[name] = dict(zip(keys.tolist(), values))
    return tables


def dense_variables(checkpoint_file, tables):
    import tensorflow as tf
    table_parts = {f"{t}-keys" for t in tables} | {f"{t}-values" for t in tables}
    return {n: tf.train.load_variable(checkpoint_file, n) for n, _ in tf.train.list_variables(checkpoint_file)
            if n not in table_parts}


def latest(ckpt):
    import tensorflow as tf
    return tf.train.latest_checkpoint(str(ckpt))


def test_ps_run_trains_and_reports_under_tf_config(runs):
    _, proc, result = runs["ps"]
    _, _, single = runs["one"]
    assert result["steps"] == single["steps"] == 6 and result["steps_this_run"] == 6
    assert result["export_dir"] and Path(result["export_dir"]).is_dir()
    assert sorted(result["ev_tables"]) == sorted(single["ev_tables"]) == sorted(f"ev/C{i}" for i in range(1, 27))
    for name, entry in result["ev_tables"].items():  # the report sums the shards
        assert entry["rows"] == single["ev_tables"][name]["rows"] > 0, name
    # the same batches through the same model: same loss, and evaluation (in a local session) agrees
    assert result["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)
    for metric in ("auc", "logloss", "accuracy", "eval_loss"):
        assert result[metric] is not None and result[metric] == pytest.approx(single[metric], rel=1e-5, abs=1e-6), metric


def test_checkpoint_holds_every_table_in_two_shards_split_by_key_parity(runs):
    ckpt, _, _ = runs["ps"]
    tables = checkpoint_tables(latest(ckpt))
    shards = {}
    for name in tables:
        match = re.fullmatch(r"(.*)_mht_(\d+)of(\d+)", name)
        assert match and match.group(3) == "2", f"{name}: not one of two shards"
        shards.setdefault(match.group(1), {})[int(match.group(2))] = tables[name]
    rows = [base for base in shards if re.search(r"ev_C\d+_rows$", base)]
    assert len(rows) == 26, rows
    assert any("LazyAdam_m" in base for base in shards) and any("LazyAdam_v" in base for base in shards)
    for base, parts in shards.items():
        assert sorted(parts) == [1, 2], base
        if base in rows:
            assert parts[1] and parts[2], f"{base}: a PS shard holds nothing"
        assert all(k % 2 == 0 for k in parts[1]) and all(k % 2 == 1 for k in parts[2]), base


def test_training_graph_placed_tables_and_variables_on_the_ps_tasks(runs):
    """The checkpoint's training graph: each table shard on its PS task, the model's variables on the PS
    tasks (the Estimator's replica_device_setter), so the run did go through the cluster's servers."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(Path(latest(runs["ps"][0]) + ".meta").read_bytes())
    tables = {n.name: tf.DeviceSpec.from_string(n.device) for n in meta.graph_def.node
              if n.op == "TFRA>CuckooHashTableOfTensors"}
    assert len(tables) == 26 * 3 * 2, sorted(tables)  # rows and two Adam slots per column, two shards each
    for name, device in tables.items():
        shard = int(re.search(r"_mht_(\d)of2$", name).group(1))
        assert (device.job, device.task) == ("ps", shard - 1), (name, device)
    variables = {n.name: tf.DeviceSpec.from_string(n.device) for n in meta.graph_def.node
                 if n.op in ("VariableV2", "VarHandleOp")}
    model = {k: v for k, v in variables.items() if k == "global_step" or k.endswith(("kernel", "bias"))}
    assert len(model) > 10 and all(d.job == "ps" for d in model.values()), model
    assert {d.task for d in model.values()} == {0, 1}


def test_sharded_model_equals_the_single_process_model(runs):
    import tensorflow as tf
    one_file, ps_file = latest(runs["one"][0]), latest(runs["ps"][0])
    assert int(tf.train.load_variable(one_file, "global_step")) == int(tf.train.load_variable(ps_file, "global_step")) == 6
    one, ps = checkpoint_tables(one_file), checkpoint_tables(ps_file)
    bases = sorted(n[:-len("_mht_1of1")] for n in one)
    assert all(n.endswith("_mht_1of1") for n in one)
    assert sorted(ps) == sorted(f"{b}_mht_{k}of2" for b in bases for k in (1, 2))
    compared = 0
    for base in bases:
        whole, first, second = one[f"{base}_mht_1of1"], ps[f"{base}_mht_1of2"], ps[f"{base}_mht_2of2"]
        assert not set(first) & set(second), base
        assert set(first) | set(second) == set(whole), f"{base}: the shards' ids differ from the single table's"
        for part in (first, second):
            for key, row in part.items():
                np.testing.assert_allclose(row, whole[key], rtol=1e-5, atol=1e-7, err_msg=f"{base} id {key}")
                compared += 1
    assert compared > 10_000
    # the dense variables (MLPs, their Adam slots, the initializer banks, the step) too
    one_dense, ps_dense = dense_variables(one_file, one), dense_variables(ps_file, ps)
    assert sorted(one_dense) == sorted(ps_dense)
    for name, value in one_dense.items():
        np.testing.assert_allclose(ps_dense[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_saved_models_load_in_a_fresh_process_and_score_alike(runs, tmp_path):
    from modelzoo.schema import load_schema
    schema = load_schema("criteo")
    lines = Path(CRITEO_SAMPLE).read_text().splitlines()[-HELD_OUT:]
    exports = {kind: runs[kind][2]["export_dir"] for kind in ("one", "ps")}
    scores = score_in_fresh_process(exports, raw_columns(schema, lines), tmp_path)
    assert scores["ps"].shape == (HELD_OUT,) and np.all((scores["ps"] > 0) & (scores["ps"] < 1))
    np.testing.assert_allclose(scores["ps"], scores["one"], rtol=1e-5, atol=1e-6)
    assert np.ptp(scores["ps"]) > 0


def test_ps_checkpoint_exports_on_one_machine_in_stock_ops(runs, tmp_path):
    """The PS job's sharded checkpoint, exported by a single process without TF_CONFIG (--export_only):
    the tables' two shards are joined into one frozen table, no device of the cluster is left in the
    graph, and it scores like the single-process model's export."""
    from tensorflow.core.protobuf import saved_model_pb2
    from modelzoo.schema import load_schema
    ckpt = runs["ps"][0]
    argv = [str(a) for a in ["--checkpoint", ckpt, *for_mode("dlrm", FLAGS, EXPORT), "--export_only"]]
    proc = subprocess.run([sys.executable, str(REPO / "dlrm" / "train.py"), *argv], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = re.search(r"SavedModel: (\S+) \(from ", proc.stdout).group(1)
    assert export != runs["ps"][2]["export_dir"]
    model = saved_model_pb2.SavedModel()
    model.ParseFromString((Path(export) / "saved_model.pb").read_bytes())
    assert not [n.device for n in model.meta_graphs[0].graph_def.node if n.device]
    lines = Path(CRITEO_SAMPLE).read_text().splitlines()[-HELD_OUT:]
    exports = {"one": runs["one"][2]["export_dir"], "ps_here": export}
    scores = score_in_fresh_process(exports, raw_columns(load_schema("criteo"), lines), tmp_path)
    np.testing.assert_allclose(scores["ps_here"], scores["one"], rtol=1e-5, atol=1e-6)

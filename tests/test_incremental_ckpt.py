"""--incremental_ckpt: delta checkpoints between full ones; restore = the last full checkpoint + the deltas after it."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import CRITEO_SAMPLE, REPO, read_result, run_train
from modelzoo import incremental_ckpt as inc
from modelzoo.embedding_variables import TABLES_COLLECTION, DynamicTable, EVOptions

tf1 = tf.compat.v1

OPTION_SETS = {
    # counting admission (counts change for ids not yet trained) and eviction of stale rows
    "counter_gstep": EVOptions(filter="counter", filter_freq=2, elimination="gstep", steps_to_live=2,
                               track_updates=True),
    # two widths: promotions remove rows from the narrow table; small rows evicted by norm
    "dynamic_l2": EVOptions(dynamic=True, dynamic_dims=[2, 4], dynamic_freqs=[3], elimination="l2",
                            l2_threshold=0.06, track_updates=True),
}


class Model:
    """A small training graph: one DynamicTable of width 4 (Adam slots), a dense weight, the global step."""

    def __init__(self, options, checkpoint, **hook_kwargs):
        from tensorflow_recommenders_addons import dynamic_embedding as de
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(1)
            self.step = tf1.train.get_or_create_global_step()
            self.keys = tf1.placeholder(tf.int64, [None])
            self.table = DynamicTable("C1", 4, options, True, tf1.random_uniform_initializer(-0.05, 0.05))
            emb = self.table.lookup(self.keys)
            w = tf1.get_variable("w", [4, 1])
            loss = tf.reduce_mean((tf.matmul(emb, w) - 1.0) ** 2)
            opt = de.DynamicEmbeddingOptimizer(tf1.train.AdamOptimizer(0.05))
            train = opt.minimize(loss, global_step=self.step)
            self.train_op = tf.group(train, *self.table.finish([opt], self.step))
            tf1.add_to_collection(TABLES_COLLECTION, self.table)
            self.evict_op = self.table.evict(self.step) if options.elimination or options.dynamic else None
            self.saver = inc.Saver(sharded=True)  # (its restore applies the deltas, as in the runner)
            self.hook = inc.IncrementalCheckpointHook(str(checkpoint), **{"every_secs": 0, **hook_kwargs})
            self.listener = inc.IncrementalCheckpointListener()
            self.hook.begin()
            self.variables = [t for t in [*self.table.tables, *sum(self.table.slot_tables, []),
                                          self.table.status, self.table.counter] if t is not None]
            self.exports = {v.name: v.export() for v in self.variables}
            self.dense = {v.op.name: v for v in tf1.global_variables()}
            self.init = tf1.global_variables_initializer()
        self.session = tf1.Session(graph=self.graph)
        self.checkpoint = str(checkpoint)

    def start(self, fresh):
        """What the Estimator does: initialize or restore the full checkpoint, save at once, then the hooks."""
        with self.graph.as_default():
            if fresh:
                self.session.run(self.init)
            else:
                self.saver.restore(self.session, tf.train.latest_checkpoint(self.checkpoint))
            self.save_full()
            self.hook.after_create_session(self.session, None)

    def save_full(self):
        step = self.session.run(self.step)
        with self.graph.as_default():
            self.saver.save(self.session, os.path.join(self.checkpoint, "model.ckpt"), global_step=step)
        self.listener.after_save(self.session, step)

    def train(self, batches):
        for batch in batches:
            self.session.run(self.train_op, {self.keys: batch})

    def state(self):
        """Every table as {key: row} (exact bytes) and every dense variable's value."""
        tables = {}
        for name, (keys, values) in self.session.run(self.exports).items():
            tables[name] = {int(k): v.tobytes() for k, v in zip(keys, values)}
        return tables, self.session.run(self.dense)


def batches(rng, n, size=12, ids=40):
    return [rng.integers(0, ids, size).astype(np.int64) * 7919 for _ in range(n)]


def assert_same_state(got, want):
    (got_tables, got_dense), (want_tables, want_dense) = got, want
    assert got_tables.keys() == want_tables.keys()
    for name in want_tables:
        assert got_tables[name].keys() == want_tables[name].keys(), name
        assert got_tables[name] == want_tables[name], name
    assert got_dense.keys() == want_dense.keys()
    for name in want_dense:
        np.testing.assert_array_equal(got_dense[name], want_dense[name], err_msg=name)


@pytest.mark.parametrize("options", list(OPTION_SETS))
def test_full_plus_deltas_restores_every_table_exactly(tmp_path, options, capsys):
    opts = OPTION_SETS[options]
    rng = np.random.default_rng(0)
    a = Model(opts, tmp_path)
    a.start(fresh=True)  # full checkpoint at step 0
    a.train(batches(rng, 4))
    first = a.hook.save(a.session)
    assert first and first.endswith("delta-4.npz")
    present_before = {name: set(rows) for name, rows in a.state()[0].items()}
    a.train(batches(rng, 3, ids=10))  # few ids: the others go stale / stay small
    evicted = int(a.session.run(a.evict_op))
    assert a.hook.save(a.session).endswith("delta-7.npz")
    assert a.hook.save(a.session) is None  # no step since: nothing to write
    a.train(batches(rng, 1))
    a.hook.save(a.session)
    want = a.state()
    gone = {name: present_before[name] - set(rows) for name, rows in want[0].items()}
    if options == "counter_gstep":
        assert evicted > 0 and all(gone[v.name] for v in [a.table.tables[0], a.table.status])
    else:
        assert sum(len(g) for g in gone.values()) > 0  # evicted or promoted out of the narrow table
    assert [s for s, _ in inc.list_deltas(tmp_path)] == [4, 7, 8]
    assert inc.latest_step(str(tmp_path)) == 8 and inc.full_step_of(str(tmp_path)) == 0
    meta = inc.read_meta(inc.delta_path(str(tmp_path), 7))
    assert meta["base_step"] == 4 and meta["full_step"] == 0 and any(t["removed"] for t in meta["tables"])

    b = Model(opts, tmp_path)  # a new process: the full checkpoint at step 0, then the three deltas
    b.start(fresh=False)
    assert "incremental: restored 3 deltas after full checkpoint 0: now at step 8" in capsys.readouterr().out
    assert_same_state(b.state(), want)
    for name, keys in gone.items():
        assert not keys & set(b.state()[0][name])

    # training goes on from there: the next delta continues the same chain; a full save ends it
    b.train(batches(rng, 2))
    assert b.hook.save(b.session).endswith("delta-10.npz")
    assert inc.latest_step(str(tmp_path)) == 10
    b.save_full()
    assert inc.list_deltas(tmp_path) == [] and inc.latest_step(str(tmp_path)) == 10


def test_delta_holds_only_the_changed_rows_and_variables(tmp_path):
    rng = np.random.default_rng(1)
    a = Model(OPTION_SETS["counter_gstep"], tmp_path)
    a.start(fresh=True)
    trained = batches(rng, 20, ids=60)
    a.train(trained)
    a.save_full()
    total = len(a.state()[0][a.table.tables[0].name])
    a.train([np.array([7919, 7919, 15838, 15838], np.int64)])  # one step training two rows (admitted)
    meta, arrays = inc.read_delta(a.hook.save(a.session))
    rows = {t["role"]: t for t in meta["tables"]}
    assert rows.keys() == {"rows", "slot", "status", "counter"} and not any(t["removed"] for t in meta["tables"])
    # the two rows only (the status stamps a step's rows with the global step before its increment, so
    # rows trained before the full save, at step 5, are not taken for changed since step 6)
    assert set(arrays[f"t{rows['rows']['id']}.keys"]) == {7919, 15838} and total > 10
    assert {d["name"] for d in meta["dense"]} >= {"global_step", "w"}
    assert "C1/init_bank" not in {d["name"] for d in meta["dense"]}  # unchanged: not written


def test_every_checkpoint_entry_is_tracked(tmp_path):
    """The deltas cover all the training state: each entry of a full checkpoint is a dense variable or a
    table shard the hook tracks."""
    a = Model(OPTION_SETS["counter_gstep"], tmp_path)
    a.start(fresh=True)
    entries = {name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(tmp_path)))}
    tracked = set(a.hook.dense)
    for t in a.hook.tracked.values():
        tracked |= {f"{s}-{part}" for s in t.shards for part in ("keys", "values")}
    assert entries == tracked


def test_time_trigger_with_an_injected_clock(tmp_path):
    now = [0.0]
    a = Model(OPTION_SETS["counter_gstep"], tmp_path, every_secs=30, clock=lambda: now[0])
    a.start(fresh=True)
    context = tf1.train.SessionRunContext(None, a.session)
    rng = np.random.default_rng(2)
    for seconds in (10, 10, 15, 10):  # a delta once 30 s have passed since the last save
        a.train(batches(rng, 1))
        now[0] += seconds
        a.hook.after_run(context, None)
    assert [s for s, _ in inc.list_deltas(tmp_path)] == [3]


def test_a_failed_delta_write_leaves_the_chain_whole(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    a = Model(OPTION_SETS["counter_gstep"], tmp_path)
    a.start(fresh=True)
    a.train(batches(rng, 2))
    a.hook.save(a.session)
    a.train(batches(rng, 2))
    write = inc._write_npz

    def disk_full(path, arrays):
        raise OSError("No space left on device")
    monkeypatch.setattr(inc, "_write_npz", disk_full)
    with pytest.raises(OSError):
        a.hook.save(a.session)
    monkeypatch.setattr(inc, "_write_npz", write)
    a.train(batches(rng, 1))
    meta = inc.read_meta(a.hook.save(a.session))
    assert (meta["step"], meta["base_step"]) == (5, 2)  # relative to the last delta on disk
    want = a.state()
    b = Model(OPTION_SETS["counter_gstep"], tmp_path)
    b.start(fresh=False)
    assert_same_state(b.state(), want)


def test_a_new_model_ignores_and_removes_old_deltas(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "c").mkdir()
    a = Model(OPTION_SETS["counter_gstep"], tmp_path / "c")
    a.start(fresh=True)
    a.train(batches(rng, 2))
    a.hook.save(a.session)
    for name in os.listdir(tmp_path / "c"):
        if name != inc.FOLDER:
            os.unlink(tmp_path / "c" / name)  # the full checkpoints are gone, the delta stays
    b = Model(OPTION_SETS["counter_gstep"], tmp_path / "c")
    b.start(fresh=True)
    assert inc.list_deltas(tmp_path / "c") == [] and b.session.run(b.step) == 0


# -- through the command line -----------------------------------------------------------------------------
def merged_checkpoint(full_prefix, deltas):
    """Independently of the hook: the full checkpoint's entries with the deltas applied, in numpy."""
    reader = tf.train.load_checkpoint(full_prefix)
    state = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    tables = {}
    for path in deltas:
        meta, arrays = inc.read_delta(path)
        for entry in meta["tables"]:
            name, i = entry["name"], entry["id"]
            if name not in tables:  # from the full checkpoint: the shards' keys and values
                tables[name] = {int(k): v for s in entry["shards"]
                                for k, v in zip(state[f"{s}-keys"], state[f"{s}-values"])}
                tables[name]["__shards__"] = entry["shards"]
            for k in arrays.get(f"t{i}.removed", []):
                del tables[name][int(k)]
            for k, v in zip(arrays.get(f"t{i}.keys", []), arrays.get(f"t{i}.values", [])):
                tables[name][int(k)] = v
        for entry in meta["dense"]:
            j = entry["id"]
            if entry["sparse"]:
                flat = state[entry["name"]].reshape(-1)
                flat[arrays[f"d{j}.index"]] = arrays[f"d{j}.values"]
            else:
                state[entry["name"]] = arrays[f"d{j}.value"]
    return state, tables


def checkpoint_tables(prefix, shards):
    reader = tf.train.load_checkpoint(prefix)
    return {int(k): v for s in shards
            for k, v in zip(reader.get_tensor(f"{s}-keys"), reader.get_tensor(f"{s}-values"))}


@pytest.fixture
def train_file(generated_criteo):
    return CRITEO_SAMPLE if CRITEO_SAMPLE.is_file() else generated_criteo


def test_cli_killed_run_resumes_from_its_last_delta(tmp_path, train_file):
    ckpt = tmp_path / "ckpt"
    flags = ["--train_files", train_file, "--checkpoint", ckpt, "--batch_size", 64, "--ev",
             "--ev_filter", "counter", "--ev_filter_freq", 2, "--ev_elimination", "gstep",
             "--ev_steps_to_live", 3, "--ev_evict_steps", 5, "--incremental_ckpt", 1, "--no_eval"]
    # a long run with no periodic full checkpoint (only the one at step 0), killed once two or more deltas
    # are written and the training is past step 15 (evictions have removed rows)
    proc = subprocess.Popen([sys.executable, str(REPO / "dlrm" / "train.py"), *map(str, flags),
                             "--steps", "1000000"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 240
    try:
        while len(inc.list_deltas(ckpt)) < 2 or inc.list_deltas(ckpt)[-1][0] < 15:
            assert proc.poll() is None and time.time() < deadline, "no deltas past step 15"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0]
    assert "incremental: step" in out, out
    chain = inc.delta_chain(str(ckpt), 0)
    assert len(chain) >= 2 and inc.full_step_of(str(ckpt)) == 0
    last = chain[-1][0]
    assert inc.latest_step(str(ckpt)) == last
    expected_dense, expected_tables = merged_checkpoint(str(ckpt / "model.ckpt-0"), [p for _, p, _ in chain])
    assert any(t["removed"] for _, _, meta in chain for t in meta["tables"])  # evictions went into the deltas
    copy = tmp_path / "copy"
    shutil.copytree(ckpt, copy)

    # rerun up to the delta's step: restores full + deltas, trains nothing, saves that state as a full
    # checkpoint (without --ev_elimination and its sub-flags, whose checkpoint listener would evict first)
    at = flags.index("--ev_elimination")
    assert flags[at:at + 6:2] == ["--ev_elimination", "--ev_steps_to_live", "--ev_evict_steps"]
    proc = run_train("dlrm", flags[:at] + flags[at + 6:] + ["--steps", last])
    assert f"resuming from step {last:,}" in proc.stdout
    assert f"incremental: restored {len(chain)} deltas after full checkpoint 0: now at step {last}" in proc.stdout
    # the input goes on after the rows the delta's step had trained on (its input_progress), not the full one's
    assert f"input: skipping the {last * 64:,} rows trained on before" in proc.stdout
    prefix = tf.train.latest_checkpoint(str(ckpt))
    assert prefix.endswith(f"model.ckpt-{last}") and inc.list_deltas(ckpt) == []
    reader = tf.train.load_checkpoint(prefix)
    got = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    assert got.keys() == expected_dense.keys()
    in_deltas = set()
    for name, rows in expected_tables.items():  # the tables the deltas changed: full + deltas
        shards = rows.pop("__shards__")
        in_deltas |= set(shards)
        restored = checkpoint_tables(prefix, shards)
        assert restored.keys() == rows.keys(), name
        for k, v in rows.items():
            np.testing.assert_array_equal(restored[k], v, err_msg=name)
    shards = {n[:-len("-keys")] for n in got if n.endswith("-keys")} - in_deltas
    for s in shards:  # the other tables: as in the full checkpoint
        rows = checkpoint_tables(str(copy / "model.ckpt-0"), [s])
        restored = checkpoint_tables(prefix, [s])
        assert restored.keys() == rows.keys() and all(np.array_equal(restored[k], rows[k]) for k in rows), s
    for name, value in got.items():  # the dense variables: the full checkpoint's + the deltas'
        if not (name.endswith("-keys") or name.endswith("-values")):
            np.testing.assert_array_equal(value, expected_dense[name], err_msg=name)
    assert int(got["global_step"]) == last

    # the killed run's folder, rerun with more steps: training resumes at the delta's step
    proc = run_train("dlrm", [*flags[:3], copy, *flags[4:], "--steps", last + 3])
    assert f"resuming from step {last:,}" in proc.stdout
    result = read_result(copy)
    assert result["steps"] == last + 3 and result["steps_this_run"] == 3
    assert inc.list_deltas(copy) == []

"""Embedding variables (--ev) end to end, through the command line like a user runs them.

Killed training resumes with the tables of its last checkpoint; the SavedModel scores like the
estimator in a fresh process (never-seen ids read the default vector); the admission filters and the
eviction report what they did; Wide & Deep's wide and deep dynamic tables; --evaluate on an --ev
checkpoint; checkpoints of the other layout and refused flag combinations; AUC on the real Criteo
sample. The training runs are shared (module scope) and run two at a time in the background.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import (CRITEO_SAMPLE, REPO, dense_only_auc, for_mode, load_train_module, raw_columns, read_result,
                      run_train, score_in_fresh_process)
from modelzoo.flags import EVALUATE

SKIP_NO_DATA = f"real Criteo sample not found at {CRITEO_SAMPLE} (../shared/data beside the checkout)"
# one table per column; batches in the same order in every run (--smartstaged's parallel decoding may
# reorder them), so runs can be compared id for id
EV_FLAGS = ["--batch_size", 256, "--seed", 1, "--emb_fusion=false", "--smartstaged=false"]
EVAL_LINES = (9899, 9999)  # the last 100 rows of the sample: held out (evaluation rows)

# (name, model, extra flags) of the training runs the tests share; each in its own checkpoint folder
RUNS = {  # (the longest first)
    "cbf_gstep": ("dlrm", ["--ev", "--ev_filter", "cbf", "--ev_cbf_max_elements", 20000, "--ev_elimination", "gstep",
                           "--ev_steps_to_live", 5, "--ev_evict_steps", 5, "--steps", 20, "--no_eval", *EV_FLAGS]),
    "ev": ("dlrm", ["--ev", "--steps", 35, *EV_FLAGS]),
    "hash": ("dlrm", ["--steps", 35, *EV_FLAGS]),
    "counter": ("dlrm", ["--ev", "--ev_filter", "counter", "--steps", 35, "--no_eval", *EV_FLAGS]),
    "wd": ("wide_and_deep", ["--ev", "--ev_filter", "counter", "--emb_fusion", "--steps", 5, "--batch_size", 128,
                             "--seed", 1, "--no_eval"]),
}


class Runs:
    """The shared training runs, started together (two at a time) and awaited by the tests that need them."""

    def __init__(self, root, sample):
        self.root, self.sample = root, sample
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.jobs = {name: self.pool.submit(self._train, name, model, flags) for name, (model, flags) in RUNS.items()}

    def _train(self, name, model, flags):
        ckpt = self.root / name
        started = time.time()
        proc = run_train(model, ["--train_files", self.sample, "--checkpoint", ckpt, *flags])
        # the result as training wrote it (later --evaluate runs rewrite result.json)
        return ckpt, proc, read_result(ckpt), round(time.time() - started, 1)

    def __getitem__(self, name):
        ckpt, proc, result, _ = self.jobs[name].result()
        return ckpt, proc, result


@pytest.fixture(scope="module")
def sample():
    if not CRITEO_SAMPLE.is_file():
        pytest.skip(SKIP_NO_DATA)
    return CRITEO_SAMPLE


@pytest.fixture(scope="module")
def runs(sample, tmp_path_factory):
    runs = Runs(tmp_path_factory.mktemp("ev_runs"), sample)
    yield runs
    runs.pool.shutdown(wait=True, cancel_futures=True)


def python(script, *args, timeout=300):
    """Run `script` in a fresh Python process (the repository on its path); fail with its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, \
        f"fresh process failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def table_names(checkpoint_file):
    """Saveable names of the hash tables in a checkpoint (each saved as NAME-keys and NAME-values)."""
    import tensorflow as tf
    return sorted(n[:-len("-keys")] for n, _ in tf.train.list_variables(checkpoint_file) if n.endswith("-keys"))


def load_table(checkpoint_file, name):
    """{key: row} of one hash table in a checkpoint."""
    import tensorflow as tf
    keys = tf.train.load_variable(checkpoint_file, name + "-keys")
    values = tf.train.load_variable(checkpoint_file, name + "-values")
    assert len(keys) == len(set(keys.tolist())), f"{name}: duplicate keys"
    return dict(zip(keys.tolist(), values))


def rows_table(checkpoint_file, column):
    """Saveable name of the embedding rows of COLUMN (not its optimizer slots)."""
    found = [n for n in table_names(checkpoint_file)
             if re.fullmatch(rf"ev/rows(_\d+)?/ev_{column}_rows_mht_\d+of\d+", n)]
    assert len(found) == 1, (column, found)
    return found[0]


def latest_step(ckpt):
    """The global step of the checkpoint named in CKPT/checkpoint (no TensorFlow: read while training)."""
    state = Path(ckpt) / "checkpoint"
    if not state.is_file():
        return None
    match = re.search(r'^model_checkpoint_path: "model\.ckpt-(\d+)"', state.read_text(), re.M)
    return int(match.group(1)) if match else None


# -- 1. killed training resumes with the checkpoint's tables ----------------------------------------

RESTORE = r"""
import importlib.util, json, sys
import numpy as np
import tensorflow as tf
from modelzoo import flags
from modelzoo.datafiles import resolve
from modelzoo.hooks import ThroughputMeter
from modelzoo.run.context import RunContext
from modelzoo.run.graph import input_fn, make_model_fn
tf1 = tf.compat.v1
argv, ckpt, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
spec = importlib.util.spec_from_file_location("dlrm_train", "dlrm/train.py")
dlrm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dlrm)
args = flags.parse("dlrm", argv, dlrm.SPEC.defaults, dlrm.SPEC.speed_defaults, dlrm.add_flags)
ctx = RunContext.create(dlrm.SPEC, args)
ctx.data = data = resolve(args, ctx.schema)
with tf.Graph().as_default():
    # the training graph the resumed run builds (the estimator's model_fn), restored by a default Saver
    features, labels = tf1.data.make_one_shot_iterator(
        input_fn(ctx, data.train, True)()).get_next()
    model_fn = make_model_fn(ctx, ThroughputMeter(), (0, args.steps))
    model_fn(features, labels, tf.estimator.ModeKeys.TRAIN, {"model_dir": ckpt})
    tables = {s.name: s.op.export() for s in tf1.get_collection(tf1.GraphKeys.SAVEABLE_OBJECTS)
              if hasattr(s.op, "export")}
    saver = tf1.train.Saver(sharded=True)
    with tf1.Session() as sess:
        saver.restore(sess, tf.train.latest_checkpoint(ckpt))
        got, step = sess.run([tables, tf1.train.get_global_step()])
names = sorted(got)
np.savez(out, step=step, names=np.array(names), **{f"k{i}": got[n][0] for i, n in enumerate(names)},
         **{f"v{i}": got[n][1] for i, n in enumerate(names)})
"""


def test_killed_training_resumes_from_its_last_checkpoint_with_the_same_tables(runs, sample, tmp_path):
    # (`runs` only starts the shared training runs in the background while this test works)
    import tensorflow as tf
    ckpt = tmp_path / "ckpt"
    flags = ["--ev", "--emb_fusion=false", "--train_files", str(sample), "--checkpoint", str(ckpt),
             "--batch_size", "128", "--steps", "40", "--save_steps", "2", "--keep_checkpoint_max", "100",
             "--no_eval", "--seed", "1"]
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen([sys.executable, str(REPO / "dlrm" / "train.py"), *flags], cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not (latest_step(ckpt) or 0) > 0:
            assert proc.poll() is None, f"training ended ({proc.returncode}) before the kill:\n" \
                                        f"{(tmp_path / 'killed.log').read_text()[-3000:]}"
            assert time.time() < deadline, "no checkpoint beyond step 0 within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    latest = tf.train.latest_checkpoint(str(ckpt))
    step = int(tf.train.load_variable(latest, "global_step"))
    assert 0 < step < 40 and latest.endswith(f"model.ckpt-{step}")

    # a fresh process builds the training graph, restores the checkpoint and exports every table
    out = tmp_path / "restored.npz"
    python(RESTORE, json.dumps(flags), ckpt, out)
    restored = np.load(out)
    assert int(restored["step"]) == step
    names = list(restored["names"])
    assert names == table_names(latest), "the training graph's tables and the checkpoint's differ"
    assert sum("_rows_mht_" in n for n in names) == 26 and any("LazyAdam_m" in n for n in names)
    for i, name in enumerate(names):
        saved = load_table(latest, name)
        keys, values = restored[f"k{i}"], restored[f"v{i}"]
        assert sorted(keys.tolist()) == sorted(saved), f"{name}: restored ids differ from the checkpoint's"
        np.testing.assert_array_equal(values, np.stack([saved[k] for k in keys.tolist()]), err_msg=name)
    assert sum(len(restored[f"k{i}"]) for i in range(len(names))) > 0

    # the same command again resumes at that step and finishes
    again = run_train("dlrm", flags)
    assert f"resuming from step {step:,}" in again.stdout
    result = read_result(ckpt)
    assert (result["steps"], result["steps_this_run"]) == (40, 40 - step)
    assert result["ev_tables"]["ev/C3"]["rows"] > 0
    final = tf.train.latest_checkpoint(str(ckpt))
    for column in ("C3", "C12"):  # no eviction: the resumed run keeps every row it restored
        before, after = load_table(latest, rows_table(latest, column)), load_table(final, rows_table(final, column))
        assert set(before) <= set(after), column


# -- 2. SavedModel in a fresh process = estimator.predict; never-seen ids read the default vector ---

def estimator_predict(ckpt, raw):
    import tensorflow as tf
    from tensorflow_recommenders_addons import dynamic_embedding  # noqa: F401
    from modelzoo import flags
    from modelzoo.features import raw_dtypes
    from modelzoo.run.context import RunContext
    from modelzoo.run.graph import build_estimator
    dlrm = load_train_module("dlrm")
    args = flags.parse("dlrm", ["--ev", *map(str, EV_FLAGS)],
                       speed_defaults=dlrm.SPEC.speed_defaults, add_model_flags=dlrm.add_flags)
    ctx = RunContext.create(dlrm.SPEC, args)
    dtypes = raw_dtypes(ctx.schema)
    estimator = build_estimator(ctx, str(ckpt))

    def input_fn():
        return tf.data.Dataset.from_tensor_slices({k: tf.constant(v, dtypes[k]) for k, v in raw.items()}).batch(64)
    return np.array([p["probabilities"] for p in estimator.predict(input_fn)])


def test_saved_model_in_a_fresh_process_scores_like_the_estimator_and_unseen_ids_read_the_default(runs, sample,
                                                                                                 tmp_path):
    import tensorflow as tf
    from modelzoo.embedding_variables import keys_of
    from modelzoo.schema import load_schema
    ckpt, _, result = runs["ev"]
    _, _, wd_result = runs["wd"]
    schema = load_schema("criteo")
    lines = Path(sample).read_text().splitlines()
    raw = raw_columns(schema, lines[EVAL_LINES[0]:EVAL_LINES[1]])
    n = len(raw["C1"])

    # a held-out row, and the same row with never-seen ids in three columns whose ids it has were trained
    latest = tf.train.latest_checkpoint(str(ckpt))
    trained = {c.name: (keys_of(tf.constant(raw[c.name])).numpy().tolist(),
                        set(load_table(latest, rows_table(latest, c.name)))) for c in schema.categorical}
    base = None
    for r in range(n):
        seen = [c for c, (keys, stored) in trained.items() if raw[c][r] and keys[r] in stored]
        if len(seen) >= 3:
            base, columns = r, seen[-3:]
            break
    assert base is not None, "no held-out row with three trained ids"
    for tag in ("a", "b"):
        for _k, values in raw.items():
            values.append(values[base])
        for c in columns:
            raw[c][-1] = f"never-seen-{tag}-{c}"  # not hex: no Criteo id looks like it
    # (the fresh process is stock TensorFlow: the cbf + gstep and counter exports must need no TFRA either)
    exports = {"dlrm": result["export_dir"], "wide_and_deep": wd_result["export_dir"],
               "cbf_gstep": runs["cbf_gstep"][2]["export_dir"]}
    scores = score_in_fresh_process(exports, raw, tmp_path)
    served = np.array(scores["dlrm"])
    assert served.shape == (n + 2,)
    np.testing.assert_allclose(served, estimator_predict(ckpt, raw), rtol=1e-5, atol=1e-5)

    seen_score, unseen_a, unseen_b = served[base], served[n], served[n + 1]
    assert abs(unseen_a - unseen_b) < 1e-7, "two never-seen ids read different vectors"
    assert abs(unseen_a - seen_score) > 1e-5, "never-seen ids scored like the trained ids"
    wd = np.array(scores["wide_and_deep"])
    assert wd.shape == (n + 2,) and np.all((wd > 0) & (wd < 1))
    assert abs(wd[n] - wd[n + 1]) < 1e-7
    assert scores["cbf_gstep"].shape == (n + 2,) and np.ptp(scores["cbf_gstep"]) > 0


# -- 3. admission filters and eviction ------------------------------------------------------------

def test_counter_filter_stores_only_admitted_ids_and_reports_the_filtered(runs):
    plain = runs["ev"][2]["ev_tables"]
    tables = runs["counter"][2]["ev_tables"]
    assert sorted(tables) == sorted(plain) == sorted(f"ev/C{i}" for i in range(1, 27))
    assert sum(t["filtered"] for t in tables.values()) > 0
    assert sum(t["rows"] for t in tables.values()) < sum(t["rows"] for t in plain.values())
    for name, entry in tables.items():
        # same data in the same order: every id the plain run stored is either admitted or filtered
        assert entry["rows"] + entry["filtered"] == plain[name]["rows"], name
        assert entry["memory_mb"] > 0 and entry["evicted"] == 0


def test_gstep_eviction_logs_and_counts_what_it_evicts_and_cbf_reports_an_estimate(runs):
    import tensorflow as tf
    ckpt, proc, result = runs["cbf_gstep"]
    logged = [int(n.replace(",", "")) for n in re.findall(
        r"^ev: step [\d,]+: evicted ([\d,]+) rows \(not updated in the last 5 steps\)", proc.stdout, re.M)]
    assert logged and sum(logged) > 0, proc.stdout[-2000:]
    tables = result["ev_tables"]
    assert sum(t["evicted"] for t in tables.values()) == sum(logged)
    assert any(t["evicted"] > 0 for t in tables.values())
    assert all(t["filtered_is_estimate"] is True for t in tables.values())
    assert any((t["filtered"] or 0) > 0 for t in tables.values())
    # rows go with their optimizer slots and their last-update step
    latest = tf.train.latest_checkpoint(str(ckpt))
    names = table_names(latest)
    for column in ("C3", "C12"):
        rows = set(load_table(latest, rows_table(latest, column)))
        same = [n for n in names if re.search(rf"ev_{column}_(rows_LazyAdam_[mv]|last_step)_mht_", n)]
        assert len(same) == 3, same
        for name in same:
            assert set(load_table(latest, name)) == rows, name
        assert tables[f"ev/{column}"]["rows"] == len(rows)


# -- 4. Wide & Deep: wide (FTRL) and deep dynamic tables -------------------------------------------

def test_wide_and_deep_trains_and_exports_with_wide_and_deep_dynamic_tables(runs):
    import tensorflow as tf
    ckpt, _, result = runs["wd"]
    tables = result["ev_tables"]
    assert sorted(tables) == ["ev/fused_dim128", "ev/fused_dim64", "linear/ev/fused_dim1"]
    assert all(t["filtered"] > 0 and t["rows"] > 0 for t in tables.values())
    # the wide weights admit exactly the ids the deep embeddings admit (same keys, same counts)
    wide = tables["linear/ev/fused_dim1"]
    assert wide["rows"] == tables["ev/fused_dim128"]["rows"] + tables["ev/fused_dim64"]["rows"]
    assert wide["filtered"] == tables["ev/fused_dim128"]["filtered"] + tables["ev/fused_dim64"]["filtered"]
    assert result["steps"] == 5 and (Path(result["export_dir"]) / "saved_model.pb").is_file()
    # FTRL's accumulators for the wide rows, Adam's moments for the deep rows: tables with the same ids
    latest = tf.train.latest_checkpoint(str(ckpt))
    names = table_names(latest)
    for report, table, slots in (("linear/ev/fused_dim1", "linear_ev_fused_dim1", ("Ftrl_accum", "Ftrl_linear")),
                                 ("ev/fused_dim64", "ev_fused_dim64", ("LazyAdam_m", "LazyAdam_v"))):
        rows = set(load_table(latest, next(n for n in names if n.endswith(f"/{table}_rows_mht_1of1"))))
        assert len(rows) == tables[report]["rows"]
        for slot in slots:
            assert set(load_table(latest, next(n for n in names if f"/{table}_rows_{slot}_mht_" in n))) == rows


# -- 5. --evaluate on an --ev checkpoint; checkpoints of the other layout are refused ----------------

def test_evaluate_on_an_ev_checkpoint_keeps_the_tables_report(runs, sample):
    ckpt, _, trained = runs["ev"]
    run_train("dlrm", ["--ev", "--evaluate", "--train_files", sample, "--checkpoint", ckpt,
                       *for_mode("dlrm", EV_FLAGS, EVALUATE)])
    result = read_result(ckpt)
    assert result["steps_this_run"] == 0 and result["steps"] == 35
    assert result["auc"] == pytest.approx(trained["auc"], abs=1e-6)
    assert result["ev_tables"] == trained["ev_tables"]
    assert result["export_dir"] == trained["export_dir"]


@pytest.mark.parametrize("run, flags, why", [
    ("ev", [], "--ev: checkpoint has on, this run off"),  # an --ev checkpoint, a run without --ev
    ("hash", ["--ev"], "--ev: checkpoint has off, this run on"),  # a hash-bucket checkpoint, an --ev run
    ("ev", ["--ev", "--ev_filter", "counter"], "--ev_filter: checkpoint has None, this run 'counter'"),  # another layout
])
def test_checkpoint_of_the_other_embedding_kind_is_refused_in_one_line(runs, sample, run, flags, why):
    ckpt = runs[run][0]
    record = (ckpt / "run_config.json").read_text()
    proc = run_train("dlrm", [*flags, "--train_files", sample, "--checkpoint", ckpt, "--batch_size", 256,
                              "--steps", 40], check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrm/train.py: error: --checkpoint"), proc.stderr
    assert "cannot be resumed" in lines[0] and why in lines[0]
    assert (ckpt / "run_config.json").read_text() == record


# -- 6. refused flag combinations ---------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--ev_filter", "counter"], ["--ev_filter", "add --ev"]),
    (["--ev_elimination", "gstep", "--adaptive_emb", "--dynamic_ev"],
     ["--ev_elimination", "--adaptive_emb", "--dynamic_ev", "add --ev"]),
    (["--ev", "--hvd"], ["--ev with --hvd"]),
    (["--ev", "--micro_batch", "4"], ["--ev with --micro_batch"]),
    (["--ev", "--adaptive_emb", "--ev_filter", "counter"], ["--adaptive_emb", "--ev_filter"]),
    (["--ev", "--dynamic_ev", "--ev_filter", "cbf"], ["--dynamic_ev", "--ev_filter"]),
    (["--ev", "--dynamic_ev", "--adaptive_emb"], ["--dynamic_ev", "--adaptive_emb"]),
])
def test_refused_ev_flag_combination_exits_2_naming_the_flags(tmp_path, flags, named):
    proc = run_train("dlrm", [*flags, "--checkpoint", tmp_path / "c"], check=False)
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and all(name in error[0] for name in named), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "c").exists()


# -- 7. AUC on the real Criteo sample -------------------------------------------------------------------

def test_ev_reaches_auc_070_on_the_real_criteo_sample_in_one_epoch_above_the_dense_only_baseline(runs, sample):
    """Measured (2026-12-02): --ev AUC 0.7316 (hash buckets 0.7305) against the dense-only baseline's 0.7219
    (+0.010); with the embeddings multiplied by 0 both runs reach 0.7148 (-0.007): the margin is 0.005."""
    ev, hashed = runs["ev"][2], runs["hash"][2]
    assert (ev["steps"], ev["train_rows"], ev["eval_rows"]) == (35, 8999, 1000)
    baseline = dense_only_auc(sample, ev["train_rows"], ev["eval_rows"])
    print(f"\nDLRM one epoch (35 steps x 256, --seed 1): AUC --ev {ev['auc']:.4f}, hash buckets {hashed['auc']:.4f}, "
          f"dense-only logistic regression {baseline:.4f}")
    assert ev["auc"] >= 0.70, ev["auc"]
    assert ev["auc"] >= baseline + 0.005 and hashed["auc"] >= baseline + 0.005, (ev["auc"], hashed["auc"], baseline)
    assert "ev_tables" not in hashed
    print("shared runs (seconds): " + ", ".join(f"{name} {job.result()[3]}" for name, job in runs.jobs.items()))

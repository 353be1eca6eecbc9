"""Serving in stock TensorFlow: every SavedModel (DLRM and Wide & Deep, with and without --ev, the --ev
variants) loads in a fresh process that imports neither modelzoo nor TFRA, holds only ops registered
in stock TensorFlow, and scores the held-out rows as `--predict` (Estimator.predict) does; 20 loads in
one process keep RSS bounded; `python -m modelzoo.serve` scores raw rows and writes the TF Serving
REST :predict body, which fed through the signature gives the same scores; --warm_start_from starts a
run from an earlier checkpoint or export (--ev rows included) and refuses one that does not fit.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, for_mode, run_train, score_in_fresh_process, small_schema_file, read_result, raw_columns
from modelzoo.flags import PREDICT

ROWS = 3000  # generated rows; the runner holds out the last 10% (300) for evaluation and --predict
COMMON = ["--batch_size", 128, "--steps", 6, "--seed", 3, "--no_eval", "--smartstaged=false"]
RUNS = {  # name: (model, flags); a small schema for the hash-bucket runs (--ev does not use buckets)
    "dlrm": ("dlrm", ["--schema", "SMALL"]),
    "dlrm_ev": ("dlrm", ["--ev", "--emb_fusion=false"]),
    "dlrm_dynamic": ("dlrm", ["--ev", "--dynamic_ev", "--emb_fusion", "--ev_elimination", "l2",
                              "--ev_l2_threshold", 0.01, "--ev_evict_steps", 3]),
    "wide_and_deep": ("wide_and_deep", ["--schema", "SMALL"]),
    "wide_and_deep_ev": ("wide_and_deep", ["--ev", "--adaptive_emb", "--adaptive_emb_threshold", 2,
                                           "--adaptive_emb_buckets", 50]),
    "dcn_v2_ev": ("dcn_v2", ["--ev"]),  # the fourth model's --ev tables and export through the shared runner
}


def flags_of(name, root):
    model, flags = RUNS[name]
    flags = [str(root / "small.json") if f == "SMALL" else f for f in flags]
    return model, ["--train_files", root / "train.txt", "--checkpoint", root / name, *COMMON, *flags]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (checkpoint, export_dir, predictions)}: each run trained, then `--predict` on its eval rows."""
    from modelzoo.synthetic import generate_criteo
    root = tmp_path_factory.mktemp("serving")
    generate_criteo(str(root / "train.txt"), ROWS, seed=7)
    small_schema_file(root / "small.json")

    def train_and_predict(name):
        model, flags = flags_of(name, root)
        run_train(model, flags)
        export = read_result(root / name)["export_dir"]
        run_train(model, [*for_mode(model, flags, PREDICT), "--predict"])  # (training's flags are refused there)
        lines = (root / name / "predictions.csv").read_text().splitlines()[1:]
        return root / name, export, np.array([float(line.split(",")[1]) for line in lines])

    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {name: pool.submit(train_and_predict, name) for name in RUNS}
        out = {name: job.result() for name, job in jobs.items()}
    out["root"] = root
    return out


def eval_lines(runs):
    lines = (runs["root"] / "train.txt").read_text().splitlines()
    return lines[len(lines) - len(runs["dlrm"][2]):]


def test_every_export_is_stock_tensorflow_and_scores_like_predict(runs, tmp_path):
    from modelzoo.schema import load_schema
    lines = eval_lines(runs)
    assert len(lines) == ROWS // 10
    raw = raw_columns(load_schema("criteo"), lines)
    scores = score_in_fresh_process({name: str(runs[name][1]) for name in RUNS}, raw, tmp_path)
    for name in RUNS:
        predicted = runs[name][2]
        assert scores[name].shape == predicted.shape == (len(lines),), name
        # (predictions.csv has 6 decimals)
        np.testing.assert_allclose(scores[name], predicted, rtol=0, atol=1e-5, err_msg=name)
        assert np.ptp(scores[name]) > 1e-3, f"{name}: every row scored alike"


def test_frozen_tables_hold_the_checkpoint_rows_and_unseen_ids_read_the_training_default(runs, tmp_path):
    """The export's frozen rows are the checkpoint's (PS shards joined); the adaptive model's
    never-seen ids read their hash bucket (a score that depends on the id), the plain one's the zero row."""
    import tensorflow as tf
    from modelzoo.export import table_rows
    from modelzoo.schema import load_schema
    ckpt, export, _ = runs["dlrm_dynamic"]
    source = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt)))
    frozen = tf.train.load_checkpoint(str(Path(export) / "variables" / "variables"))
    for name in ("ev/fused_dim16/rows", "ev/fused_dim16/rows_w4"):
        keys, values = table_rows(source, name)
        fkeys, fvalues = table_rows(frozen, name)
        assert len(keys) > 0 and sorted(keys.tolist()) == sorted(fkeys.tolist()), name
        order, forder = np.argsort(keys), np.argsort(fkeys)
        np.testing.assert_array_equal(values[order], fvalues[forder], err_msg=name)
        assert not frozen.get_tensor(f"{name}/frozen_values")[-1].any()  # the zero row of absent ids

    line = eval_lines(runs)[0]
    raw = raw_columns(load_schema("criteo"), [line] * 3)
    for k in (1, 2):
        raw["C3"][k] = f"never-seen-{k}"
    scores = score_in_fresh_process({n: str(runs[n][1]) for n in ("dlrm_ev", "wide_and_deep_ev")}, raw, tmp_path)
    plain, adaptive = scores["dlrm_ev"], scores["wide_and_deep_ev"]
    assert plain[1] == pytest.approx(plain[2], abs=1e-7)  # both read the zero vector
    buckets = [hash_bucket(f"never-seen-{k}", 50) for k in (1, 2)]
    assert buckets[0] != buckets[1]
    assert abs(adaptive[1] - adaptive[2]) > 1e-7, "two ids of different hash buckets scored alike"


def hash_bucket(value, buckets):
    import tensorflow as tf
    from modelzoo.embedding_variables import keys_of
    return int(keys_of(tf.constant([value])).numpy()[0]) % buckets


RELOAD_SCRIPT = r"""
import json, resource, sys
import tensorflow as tf
export, rows = sys.argv[1], json.load(open(sys.argv[2]))

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
rss, first = [], None
for i in range(20):
    fn = tf.saved_model.load(export).signatures["serving_default"]
    inputs = fn.structured_input_signature[1]
    out = fn(**{k: tf.constant(v, inputs[k].dtype) for k, v in rows.items()})["probabilities"].numpy()
    first = out if first is None else first
    assert abs(out - first).max() < 1e-7
    del fn
    rss.append(rss_mb())
json.dump(rss, open(sys.argv[3], "w"))
"""

RELOAD_GROWTH_MB = 150  # allowed growth from the 2nd to the 20th load (a leak of the tables would exceed it)


def test_twenty_reloads_in_one_process_keep_rss_bounded(runs, tmp_path):
    from modelzoo.schema import load_schema
    raw = raw_columns(load_schema("criteo"), eval_lines(runs)[:50])
    (tmp_path / "rows.json").write_text(json.dumps(raw))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(runs["dlrm_ev"][1]), tmp_path / "rows.json",
                           tmp_path / "rss.json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rss = json.loads((tmp_path / "rss.json").read_text())
    growth = rss[-1] - rss[1]
    print(f"RSS over 20 loads: first {rss[0]:.0f} MB, second {rss[1]:.0f} MB, last {rss[-1]:.0f} MB "
          f"(+{growth:.0f} MB from the 2nd to the 20th)")
    assert len(rss) == 20 and growth < RELOAD_GROWTH_MB, rss


def serve(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "modelzoo.serve", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


REST_SCRIPT = r"""
import json, sys
import tensorflow as tf
body = json.load(open(sys.argv[2]))
fn = tf.saved_model.load(sys.argv[1]).signatures[body["signature_name"]]
inputs = fn.structured_input_signature[1]
out = fn(**{k: tf.constant(v, inputs[k].dtype) for k, v in body["inputs"].items()})
json.dump({"outputs": {k: v.numpy().tolist() for k, v in out.items()}}, open(sys.argv[3], "w"))
"""


@pytest.mark.parametrize("name", ["dlrm_ev", "wide_and_deep"])
def test_serve_scores_raw_rows_and_the_rest_request_gives_the_same_scores(runs, tmp_path, name):
    lines = eval_lines(runs)
    rows = tmp_path / "rows.csv"  # comma-separated and without the label, as a client has them
    rows.write_text("".join(",".join(line.split("\t")[1:]) + "\n" for line in lines))
    proc = serve(runs[name][1], rows, "--output", tmp_path / "scores.csv", "--request", tmp_path / "request.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = (tmp_path / "scores.csv").read_text().splitlines()
    assert out[0] == "probability"
    served = np.array([float(v) for v in out[1:]])
    np.testing.assert_allclose(served, runs[name][2], atol=1e-5)

    body = json.loads((tmp_path / "request.json").read_text())
    assert body["signature_name"] == "serving_default" and len(body["inputs"]) == 39
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", REST_SCRIPT, runs[name][1], tmp_path / "request.json",
                           tmp_path / "response.json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    response = json.loads((tmp_path / "response.json").read_text())
    assert list(response["outputs"]) == ["probabilities"]
    np.testing.assert_allclose(response["outputs"]["probabilities"], runs[name][2], atol=1e-5)


def test_serve_matches_a_header_s_columns_by_name(runs, tmp_path):
    """A CSV with a header, its columns in another order and no label, scores as the plain rows do;
    a header naming a column the schema lacks is refused by file and line."""
    lines = [line.split("\t")[1:] for line in eval_lines(runs)]
    names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    order = list(reversed(range(len(names))))
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(names[k] for k in order) + "\n"
                    + "".join(",".join(fields[k] for k in order) + "\n" for fields in lines))
    proc = serve(runs["wide_and_deep"][1], rows, "--output", tmp_path / "scores.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.array([float(v) for v in (tmp_path / "scores.csv").read_text().splitlines()[1:]])
    np.testing.assert_allclose(served, runs["wide_and_deep"][2], atol=1e-5)
    rows.write_text(",".join(["id"] + names) + "\n" + ",".join(["7"] + lines[0]) + "\n")
    proc = serve(runs["wide_and_deep"][1], rows)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"modelzoo.serve: error: {rows}:1: the header names column(s) ['id'] that the schema criteo does not have")


def test_serve_names_the_file_and_line_of_a_bad_row(runs, tmp_path):
    rows = tmp_path / "rows.tsv"
    good = eval_lines(runs)[0]
    rows.write_text(good + "\n" + good.replace("\t", "\t\t", 1) + "\n")
    proc = serve(runs["dlrm"][1], rows)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"modelzoo.serve: error: {rows}:2: expected 40 fields")


@pytest.mark.parametrize("batch", ["-1", "0"])
def test_serve_refuses_a_batch_below_one_in_one_line(tmp_path, capsys, batch):
    """--batch -1 used to score nothing and exit 0, --batch 0 to end in a ValueError traceback."""
    from modelzoo import serve as serve_module
    rows = tmp_path / "rows.tsv"
    rows.write_text("0\t1\n")
    assert serve_module.main([str(tmp_path), str(rows), "--batch", batch]) == 1
    assert capsys.readouterr().err.strip() == (
        f"modelzoo.serve: error: --batch {batch}: give a positive number of rows per call")


# -- warm start ------------------------------------------------------------------------------------

def test_warm_start_from_an_export_loads_the_ev_rows_and_dense_layers(runs, tmp_path):
    import tensorflow as tf
    from modelzoo.export import table_rows
    ckpt, export, _ = runs["dlrm_ev"]
    model, flags = flags_of("dlrm_ev", runs["root"])
    new = tmp_path / "warm"
    flags[flags.index("--checkpoint") + 1] = new
    # one step at a negligible learning rate: the new run's variables are the source's, as trained
    proc = run_train(model, [*flags, "--steps", 1, "--learning_rate", 1e-12, "--warm_start_from", export])
    assert "warm start: initialized from" in proc.stdout
    source = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt)))
    warm = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(new)))
    assert int(warm.get_tensor("global_step")) == 1
    for name in ("top_mlp/layer0/kernel", "bottom_mlp/layer0/bias", "ev/C3/init_bank"):
        np.testing.assert_allclose(warm.get_tensor(name), source.get_tensor(name), atol=1e-6, err_msg=name)
    for column in ("C3", "C12"):
        keys, values = table_rows(source, f"ev/{column}/rows")
        wkeys, wvalues = table_rows(warm, f"ev/{column}/rows")
        assert set(keys.tolist()) <= set(wkeys.tolist()), column
        rows = dict(zip(wkeys.tolist(), wvalues))
        np.testing.assert_allclose(np.stack([rows[k] for k in keys.tolist()]), values, atol=1e-6, err_msg=column)


def test_warm_start_from_a_checkpoint_without_ev(runs, tmp_path):
    import tensorflow as tf
    ckpt = runs["dlrm"][0]
    model, flags = flags_of("dlrm", runs["root"])
    flags[flags.index("--checkpoint") + 1] = tmp_path / "warm"
    proc = run_train(model, [*flags, "--steps", 1, "--learning_rate", 1e-12, "--warm_start_from", ckpt])
    assert "warm start: initialized from" in proc.stdout
    source = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(ckpt)))
    warm = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "warm")))
    for name in ("embedding/fused_dim16", "top_mlp/layer1/kernel"):
        np.testing.assert_allclose(warm.get_tensor(name), source.get_tensor(name), atol=1e-6, err_msg=name)


@pytest.mark.parametrize("target,source,says", [
    ("dlrm_ev", "dlrm", "it has no variable ev/C1/init_bank"),
    ("wide_and_deep", "dlrm", "wide_and_deep"),  # (a variable missing, or of another shape)
    ("dlrm", "missing", "no such file or folder"),
])
def test_warm_start_from_an_incompatible_model_is_refused_in_one_line(runs, tmp_path, target, source, says):
    model, flags = flags_of(target, runs["root"])
    flags[flags.index("--checkpoint") + 1] = tmp_path / "new"
    path = tmp_path / "nothing" if source == "missing" else runs[source][1]
    proc = run_train(model, [*flags, "--warm_start_from", path], check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{model}/train.py: error: --warm_start_from {path}"), last
    if says == "wide_and_deep":
        assert "it has no variable" in last or " there, " in last, last
    else:
        assert says in last, last


@pytest.mark.parametrize("stored", [0, 3])
def test_frozen_rows_read_the_stored_row_or_the_zero_row_even_when_the_table_is_empty(stored):
    """A table with no row yet (every id below --ev_filter_freq) must still export and load."""
    import tensorflow as tf
    from modelzoo.export import FrozenRows
    tf1 = tf.compat.v1
    keys = np.array([5, 1 << 62, 7][:stored], np.int64)
    values = np.arange(stored * 2, dtype=np.float32).reshape(stored, 2) + 1
    with tf.Graph().as_default(), tf1.Session() as session:
        rows = FrozenRows("ev/C1/rows", 2, (keys, values))
        found, exists = rows.lookup(tf.constant([7, 5, 9, 0], tf.int64), return_exists=True)
        session.run(tf1.global_variables_initializer())
        rows.load(session)
        session.run(tf1.tables_initializer())
        found, exists = session.run([found, exists])
    expected = {int(k): v for k, v in zip(keys, values)}
    for k, key in enumerate([7, 5, 9, 0]):
        assert exists[k] == (key in expected)
        np.testing.assert_array_equal(found[k], expected.get(key, np.zeros(2, np.float32)))


def test_export_only_without_a_checkpoint_is_refused_in_one_line(tmp_path):
    proc = run_train("dlrm", ["--checkpoint", tmp_path / "empty", "--export_only"], check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"dlrm/train.py: error: --export_only needs a trained model in --checkpoint {tmp_path / 'empty'}, which "
        "holds no checkpoint; train first or give the folder of a trained one")

"""A user's first run on a dataset that is not Criteo: an Avazu-shaped CSV with a header line (columns
matched by name, its row id ignored), a schema written by `python -m modelzoo.schema infer`, tables
sized from that schema, and the start-up line that says what the variables take."""
import json
import re

import numpy as np
import pytest

from conftest import read_result, run_train
from test_schema import generated_avazu, run_infer

# measured (see data/README.md): W&D, 22 categorical columns of this layout at 100,000 buckets each
# (width 128), 20 steps of 256 on 8,100 rows: peak RSS 8,594 MB, of which the variables 3,288 MB
OLD_PEAK_MB = 8594


@pytest.fixture(scope="module")
def avazu(tmp_path_factory):
    """9,000 generated rows with a header, and the schema inferred from them (C15/C16, banner sizes,
    read as numbers: DLRM needs a dense part)."""
    folder = tmp_path_factory.mktemp("avazu")
    data = generated_avazu(folder / "train.csv", 9000, seed=1)
    proc = run_infer(data, "--label", "click", "--numeric", "C15,C16", "--output", folder / "schema.json")
    assert proc.returncode == 0, proc.stderr
    return data, folder / "schema.json"


def checkpoint_bytes(checkpoint):
    """Bytes of the checkpoint's tables, dense variables and their optimizer slots, by name: a slot is
    VAR/NAME beside VAR; tables live under an `embedding` or `cross` scope; top-level names (the
    global step, counters, Adam's beta powers) are bookkeeping."""
    import tensorflow as tf
    shapes = dict(tf.train.list_variables(str(checkpoint)))
    sizes = {"tables": 0, "table_slots": 0, "dense": 0, "dense_slots": 0}
    for name, shape in shapes.items():
        if "/" not in name:
            continue
        owner = next((m for m in shapes if name.startswith(m + "/")), None)
        base = owner or name
        table = re.search(r"(^|/)(embedding|cross)/", base)
        key = ("table_slots" if table else "dense_slots") if owner else ("tables" if table else "dense")
        sizes[key] += 4 * int(np.prod(shape))
    return sizes


def test_wide_and_deep_on_an_inferred_schema_is_small_and_says_its_memory(avazu, tmp_path):
    """W&D on 9K rows used to peak at 8.6 GB (22 x 100,000 buckets x 128 wide); from the inferred schema
    its tables are sized by the data and the run stays far below. The start-up line's figures are the
    bytes of the variables the checkpoint holds."""
    data, schema = avazu
    ckpt = tmp_path / "wd"
    proc = run_train("wide_and_deep", ["--train_files", data, "--schema", schema, "--steps", 20, "--batch_size", 256,
                                       "--checkpoint", ckpt])
    result = read_result(ckpt)
    assert result["peak_rss_mb"] < OLD_PEAK_MB / 4, result["peak_rss_mb"]
    sizes = result["variable_bytes"]
    assert {k: sizes[k] for k in ("tables", "table_slots", "dense", "dense_slots")} == checkpoint_bytes(ckpt)
    line = next(out for out in proc.stdout.splitlines() if out.startswith("variables: "))
    mb = {k: f"{v / 2 ** 20:,.1f} MB" for k, v in sizes.items()}
    assert f"tables {mb['tables']} + optimizer slots {mb['table_slots']}; dense layers {mb['dense']}" in line
    assert "header line" in proc.stdout and "note: the schema's tables" not in proc.stdout
    assert (result["train_rows"], result["eval_rows"]) == (8100, 900)
    assert result["auc"] > 0.6  # the columns were read by name: the clicks' hidden model is learnt


def test_dlrm_trains_on_the_inferred_schema(avazu, tmp_path):
    data, schema = avazu
    ckpt = tmp_path / "dlrm"
    proc = run_train("dlrm", ["--train_files", data, "--schema", schema, "--steps", 10, "--batch_size", 256,
                              "--checkpoint", ckpt])
    result = read_result(ckpt)
    assert result["steps"] == 10 and result["auc"] is not None
    columns = json.loads(schema.read_text())["columns"]  # 16 float32s per hash bucket
    assert result["variable_bytes"]["tables"] == 4 * 16 * sum(c["hash_buckets"] for c in columns
                                                              if c["kind"] == "categorical")
    assert "variables: tables" in proc.stdout


def test_a_schema_far_larger_than_the_data_gets_a_note(avazu, tmp_path):
    """Tables with more than 10 rows per training row: the run says how to size them from the data."""
    data, schema = avazu
    doc = json.loads(schema.read_text())
    for col in doc["columns"]:
        if col["kind"] == "categorical":
            col["hash_buckets"] = 5000
    big = tmp_path / "big.json"
    big.write_text(json.dumps(doc))
    proc = run_train("dlrm", ["--train_files", data, "--schema", big, "--steps", 1, "--batch_size", 64, "--no_eval",
                              "--checkpoint", tmp_path / "c"])
    assert "note: the schema's tables have 100,000 rows for 8,100 training rows" in proc.stdout

"""Shared test fixtures: the repository on sys.path, the real data beside the checkout, tiny runs."""
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CRITEO_SAMPLE = SHARED_DATA / "criteo-kaggle-head10k" / "train.txt"
sys.path.insert(0, str(REPO))


@pytest.fixture
def criteo_sample():
    """The first 9,999 rows of Criteo Kaggle train.txt, read in place (never copied into the repo)."""
    if not CRITEO_SAMPLE.is_file():
        pytest.skip(f"real Criteo sample not found at {CRITEO_SAMPLE} (../shared/data beside the checkout)")
    return CRITEO_SAMPLE


@functools.lru_cache(maxsize=None)
def dense_only_auc(path, train_rows, eval_rows):
    """Held-out AUC of a logistic regression on the 13 integer columns alone (log1p of the counts, as the
    models normalize them), fitted on the first TRAIN_ROWS rows of PATH and scored on the EVAL_ROWS after
    them, the models' split. It reaches 0.722 on the Criteo sample, above the 0.70 bar: a model's AUC must
    beat it by a margin, or embeddings that contribute nothing would pass (data/generate_criteo.py)."""
    sys.path.insert(0, str(REPO / "data"))
    from generate_criteo import dense_lr_auc
    lines = Path(path).read_text().splitlines()
    assert len(lines) == train_rows + eval_rows, (len(lines), train_rows, eval_rows)
    return dense_lr_auc(lines[:train_rows], lines[train_rows:])


def run_train(model, args, check=True, timeout=900):
    """Run MODEL/train.py in a subprocess like a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(REPO / model / "train.py"), *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def load_train_module(model):
    """MODEL/train.py as a module (its SPEC, flags and model functions), without running it."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"{model}_train", REPO / model / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_schema_data(folder, schema_name, buckets=50):
    """256 generated rows of a schema that has a generator (Criteo, Taobao: modelzoo.run.local.data_generator)
    in FOLDER/train.txt, and that schema with every table capped at `buckets` rows; returns (data, schema)."""
    from modelzoo.run.local import data_generator
    from modelzoo.schema import load_schema
    data = Path(folder) / "train.txt"
    data_generator(load_schema(schema_name))(str(data), 256, 3)
    doc = json.loads((REPO / "modelzoo" / "schemas" / f"{schema_name}.json").read_text())
    for col in doc["columns"]:
        if "hash_buckets" in col:
            col["hash_buckets"] = min(col["hash_buckets"], buckets)
    schema = Path(folder) / f"{schema_name}_tiny.json"
    schema.write_text(json.dumps(doc))
    return data, schema


def small_schema_file(path):
    """The Criteo schema with every table capped at 1,000 rows: same graph, small checkpoints."""
    doc = json.loads((REPO / "modelzoo" / "schemas" / "criteo.json").read_text())
    for col in doc["columns"]:
        if col["kind"] == "categorical":
            col["hash_buckets"] = min(col["hash_buckets"], 1000)
    path.write_text(json.dumps(doc))
    return path


def bf16_matmuls(checkpoint):
    """Names of the bfloat16 MatMul ops in the graph of a checkpoint folder's latest checkpoint."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(Path(tf.train.latest_checkpoint(str(checkpoint)) + ".meta").read_bytes())
    return [n.name for n in meta.graph_def.node if n.op == "MatMul" and n.attr["T"].type == tf.bfloat16]


def read_result(checkpoint):
    return json.loads((Path(checkpoint) / "result.json").read_text())


@pytest.fixture
def small_schema(tmp_path):
    return small_schema_file(tmp_path / "criteo_small.json")


@pytest.fixture(scope="session")
def generated_criteo(tmp_path_factory):
    """20,000 synthetic Criteo rows (Kaggle TSV), made once per test session."""
    from modelzoo.synthetic import generate_criteo
    path = tmp_path_factory.mktemp("gen") / "train.txt"
    generate_criteo(str(path), 20_000, seed=5)
    return path


# Stock TensorFlow only: neither modelzoo nor TFRA is imported, and every op of each SavedModel (its graph
# and its function library) must be registered in this plain TensorFlow, as in TF Serving.
SERVE_SCRIPT = r"""
import json, sys
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
rows, exports, out = json.load(open(sys.argv[1])), json.loads(sys.argv[2]), sys.argv[3]
scores, unregistered = {}, {}
for name, export in exports.items():
    model = saved_model_pb2.SavedModel()
    model.ParseFromString(open(export + "/saved_model.pb", "rb").read())
    ops = set()
    for meta in model.meta_graphs:
        ops |= {n.op for n in meta.graph_def.node}
        ops |= {n.op for f in meta.graph_def.library.function for n in f.node_def}
    unregistered[name] = sorted(op for op in ops if op_def_registry.get(op) is None)
    if unregistered[name]:
        continue
    fn = tf.saved_model.load(export).signatures["serving_default"]
    inputs = fn.structured_input_signature[1]
    outputs = fn(**{k: tf.constant(v, inputs[k].dtype) for k, v in rows.items()})
    scores[name] = {key: value.numpy().tolist() for key, value in outputs.items()}
modules = sorted(m for m in sys.modules if m.split(".")[0] in ("modelzoo", "tensorflow_recommenders_addons"))
json.dump({"scores": scores, "unregistered": unregistered, "modules": modules}, open(out, "w"))
"""


def raw_columns(schema, lines):
    """The serving signature's raw input columns for some tab-separated Criteo lines."""
    fields = [line.split("\t") for line in lines]
    raw = {}
    for k, col in enumerate(schema.columns):
        if col.kind == "numeric":
            number = int if col.dtype == "int64" else float
            raw[col.name] = [number(f[k]) if f[k] else 0 for f in fields]
        elif col.kind in ("categorical", "multi_value", "sequence"):  # (a list column: its joined string)
            raw[col.name] = [f[k] for f in fields]
    return raw


def score_in_fresh_process(exports, raw, tmp_path, every_output=False):
    """Load each SavedModel ({name: export_dir}) in a fresh Python process of stock TensorFlow (no
    modelzoo, no TFRA, no TF_CONFIG), check that each one's ops are all stock, and score the raw rows;
    returns {name: numpy array of probabilities} (with `every_output`: {name: {output: array}}, a
    multi-task model's probabilities_<task> too)."""
    import numpy as np
    rows_file, out = tmp_path / "rows.json", tmp_path / "scores.json"
    rows_file.write_text(json.dumps(raw))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, str(rows_file), json.dumps(exports), str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, \
        f"fresh process failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    found = json.loads(out.read_text())
    assert found["modules"] == [], f"the serving process imported {found['modules']}"
    bad = {name: ops for name, ops in found["unregistered"].items() if ops}
    assert not bad, f"ops not registered in stock TensorFlow {tf_version()}: {bad}"
    if every_output:
        return {name: {k: np.array(v) for k, v in outputs.items()} for name, outputs in found["scores"].items()}
    return {name: np.array(v["probabilities"]) for name, v in found["scores"].items()}


def tf_version():
    from importlib.metadata import version
    return version("tensorflow")


def graph_ancestors(fetch):
    """Every op a tensor or op depends on, through data and control inputs (graph-order checks)."""
    import tensorflow as tf
    seen, stack = set(), [fetch if isinstance(fetch, tf.Operation) else fetch.op]
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return seen


K8S_JOB_NAME_LABEL = "training.kubeflow.org/job-name"  # the label the Kubeflow operators put on a job's pods


def expand_env_refs(job, container, text):
    """$(VAR) in a manifest's command/args as the kubelet expands it, from the container's env (a fieldRef to
    the job-name label reads the job's own name, which the operator sets that label to)."""
    env = {e["name"]: e for e in container.get("env", [])}

    def value(match):
        var = env[match.group(1)]
        if "value" in var:
            return var["value"]
        path = var["valueFrom"]["fieldRef"]["fieldPath"]
        assert path == f"metadata.labels['{K8S_JOB_NAME_LABEL}']", path
        return job["metadata"]["name"]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, text)


def flag_value(args, flag):
    """The value after `flag` in an argument list that gives it exactly once."""
    assert args.count(flag) == 1, f"{flag} given {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def dockerfile_stages(path=REPO / "Dockerfile"):
    """{stage name: [instruction lines]} of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, flags=re.I)
        if match:
            current = match.group(1) or f"stage{len(stages)}"
            stages[current] = []
        stages[current].append(line)
    return stages


def for_mode(model, argv, mode):
    """A training command's flags reused for another mode (modelzoo.flags.EVALUATE, PREDICT, EXPORT): without
    the flags (and their values) that do nothing there, which modelzoo/flags.py refuses."""
    from modelzoo import flags
    from modelzoo.models import load_spec
    parser = flags.spec_parser(load_spec(model))
    kept, keep = [], True
    for arg in argv:
        if str(arg).startswith("--"):
            action = parser._option_string_actions.get(str(arg).split("=", 1)[0])
            keep = action is None or mode in parser.modes_of(action)
        if keep:
            kept.append(arg)
    return kept

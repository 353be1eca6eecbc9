"""Shared test fixtures: the repository on sys.path, the real data beside the checkout, tiny runs."""
import json
import os
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


def small_schema_file(path):
    """The Criteo schema with every table capped at 1,000 rows: same graph, small checkpoints."""
    doc = json.loads((REPO / "modelzoo" / "schemas" / "criteo.json").read_text())
    for col in doc["columns"]:
        if col["kind"] == "categorical":
            col["hash_buckets"] = min(col["hash_buckets"], 1000)
    path.write_text(json.dumps(doc))
    return path


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

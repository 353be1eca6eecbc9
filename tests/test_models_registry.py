"""modelzoo/models.py is the one list of models; ModelSpec refuses a malformed spec by model and field."""
import re
from pathlib import Path

import pytest

from modelzoo import models
from modelzoo.runner import ModelSpec

REPO = Path(__file__).resolve().parents[1]
SPEED = {"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False}


@pytest.mark.parametrize("model", models.ESTIMATOR_MODELS)
def test_every_registered_estimator_model_has_its_spec(model):
    spec = models.load_spec(model)
    assert spec.name == model and (REPO / model / "README.md").exists()


def test_dockerfile_copies_every_registered_model_in_every_stage_that_copies_one():
    text = (REPO / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (\w+)/ \1/$", text, flags=re.M)
    for model in models.MODELS:
        assert copied.count(model) == copied.count("dlrm") >= 1, f"Dockerfile: COPY {model}/ {model}/ missing"


def test_benchmark_matrix_iterates_over_the_registry():
    import importlib.util
    spec = importlib.util.spec_from_file_location("matrix_for_registry_test", REPO / "benchmarks" / "matrix.py")
    matrix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(matrix)
    assert matrix.TRAINERS == models.ESTIMATOR_MODELS and set(models.MODELS) == set(matrix.MODELS)


@pytest.mark.parametrize("change, message", [
    ({"speed_defaults": {"smartstaged": True}}, "ModelSpec 'm': speed_defaults lacks ['emb_fusion', 'op_fusion', 'xla']"),
    ({"speed_defaults": {**SPEED, "turbo": True}}, "speed_defaults has unknown keys ['turbo']"),
    ({"defaults": {"bach_size": 1}}, "defaults has unknown keys ['bach_size']"),
    ({"small_data_defaults": {"batch_size": 256}}, "small_data_defaults has unknown keys ['batch_size']"),
    ({"build_logits": 3}, "ModelSpec 'm': build_logits must be callable"),
    ({"loss": "bce"}, "loss must be callable"),
    ({"shape_flags": ("depth",)}, "shape_flags names ['depth'], which its add_flags does not add"),
    ({"shape_flags": "depth"}, "must be a tuple of flag names"),
    ({"embedding_dim": 0}, "embedding_dim must be a positive int"),
])
def test_a_malformed_spec_is_refused_naming_model_and_field(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelSpec(**{"name": "m", "schema": "criteo", "build_logits": print, "speed_defaults": SPEED, **change})


def test_unknown_model_is_refused_naming_the_registry():
    with pytest.raises(KeyError, match="modelzoo/models.py"):
        models.train_py("dcn_v3")

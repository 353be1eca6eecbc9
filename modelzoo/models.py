"""The registered models: the one list that benchmarks, tests, manifest checks and the Dockerfile
iterate over. An Estimator model's MODEL/train.py defines `SPEC` (a modelzoo.runner.ModelSpec);
gdmix_lr is listed as a non-Estimator model (its own train.py and flags, no SPEC)."""
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# train.py built on modelzoo/runner.py's shared flags
ESTIMATOR_MODELS = ("dlrm", "wide_and_deep", "dcn_v2", "lr", "fm", "deepfm", "din", "esmm", "mmoe", "ple")
OTHER_MODELS = ("gdmix_lr",)  # not Estimator jobs: own flags, no SPEC
MODELS = ESTIMATOR_MODELS + OTHER_MODELS


def train_py(model):
    """MODEL/train.py of a registered model."""
    if model not in MODELS:
        raise KeyError(f"unknown model {model!r}; registered: {', '.join(MODELS)} (modelzoo/models.py)")
    return os.path.join(REPO, model, "train.py")


def load_spec(model):
    """The SPEC of an Estimator model's train.py, imported as a module (its main does not run)."""
    return load_module(model).SPEC


def load_module(model):
    """An Estimator model's train.py as a module (its main does not run), once per process."""
    if model not in ESTIMATOR_MODELS:
        raise KeyError(f"{model!r} is not a registered Estimator model ({', '.join(ESTIMATOR_MODELS)}); "
                       "only those have a ModelSpec")
    name = f"modelzoo_registered_{model}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, train_py(model))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]

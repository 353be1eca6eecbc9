"""The coordinates of a GLMix model, from a YAML or JSON file, so that a coordinate is added without code.

    feature_bags:              # optional: bags beyond those the data defines (features.json)
      movie_genres: ["genre=*"]          # column names or glob patterns
    coordinates:
      - name: global
        type: fixed_effect     # one model on all rows
        feature_bag: global
        l2: 1.0                # absolute L2 weight (the loss is a sum over rows, as in GDMix)
        regularize_intercept: false
        max_iter: 100          # L-BFGS iterations
        tolerance: 1.0e-8      # stop when max |gradient| <= tolerance x total weight
      - name: per_user
        type: random_effect    # one model per value of `entity`
        entity: user_id
        feature_bag: per_user
        l2: 1.0
        max_iter: 50           # Newton iterations
        tolerance: 1.0e-8
      - name: deep_global
        type: scores           # another model's scores, e.g. Wide & Deep's (paths relative to the working folder)
        training_scores: result/wide_and_deep/train_predictions.csv
        validation_scores: result/wide_and_deep/predictions.csv

Coordinates run in the listed order; each one's offset is the sum of the scores of the others.
"""
import fnmatch
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from modelzoo.datafiles import DataError
from modelzoo.io_utils import read_yaml

TYPES = ("fixed_effect", "random_effect", "scores")
DEFAULTS = {
    "fixed_effect": {"l2": 1.0, "regularize_intercept": False, "max_iter": 100, "tolerance": 1e-8},
    "random_effect": {"l2": 1.0, "regularize_intercept": False, "max_iter": 50, "tolerance": 1e-8},
    "scores": {},
}
REQUIRED = {"fixed_effect": ("feature_bag",), "random_effect": ("feature_bag", "entity"),
            "scores": ("training_scores", "validation_scores")}
ALLOWED = {kind: {"name", "type", *REQUIRED[kind], *DEFAULTS[kind]} for kind in TYPES}


class ConfigError(DataError):
    """A config file that does not describe a model of this data; the message names the file and coordinate."""


@dataclass(frozen=True)
class Coordinate:
    name: str
    type: str
    feature_bag: Optional[str] = None
    entity: Optional[str] = None
    l2: float = 1.0
    regularize_intercept: bool = False
    max_iter: int = 100
    tolerance: float = 1e-8
    training_scores: Optional[str] = None
    validation_scores: Optional[str] = None

    @property
    def trained(self):
        return self.type != "scores"


@dataclass
class Config:
    path: str
    coordinates: List[Coordinate]
    feature_bags: Dict[str, List[str]] = field(default_factory=dict)


STRINGS = ("feature_bag", "entity", "training_scores", "validation_scores")  # names and paths


def load_config(path):
    """Parse and check a config file's structure (the data is checked by `check_against`)."""
    doc = read_yaml(path, ConfigError)  # (YAML or JSON)
    if not isinstance(doc, dict) or not isinstance(doc.get("coordinates"), list) or not doc["coordinates"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty `coordinates` list")
    unknown = set(doc) - {"coordinates", "feature_bags"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(map(str, unknown))}; expected coordinates, "
                          "feature_bags")
    bags = doc.get("feature_bags") or {}
    if not isinstance(bags, dict) or not all(isinstance(v, list) and v for v in bags.values()):
        raise ConfigError(f"{path}: `feature_bags` must map each bag name to a non-empty list of columns or patterns")
    coordinates, names = [], set()
    for i, raw in enumerate(doc["coordinates"]):
        where = f"{path}: coordinate {i + 1}"
        if not isinstance(raw, dict) or "name" not in raw or "type" not in raw:
            raise ConfigError(f"{where}: expected a mapping with at least `name` and `type`")
        name, kind = str(raw["name"]), raw["type"]
        where = f"{path}: coordinate {name!r}"
        if kind not in TYPES:
            raise ConfigError(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
        if name in names:
            raise ConfigError(f"{where}: two coordinates share this name")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{where}: a name is a folder name: letters, digits, '_' and '-' only")
        names.add(name)
        unknown = set(raw) - ALLOWED[kind]
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))} for a {kind}; allowed: "
                              f"{', '.join(sorted(ALLOWED[kind]))}")
        missing = [key for key in REQUIRED[kind] if key not in raw]
        if missing:
            raise ConfigError(f"{where}: a {kind} needs {', '.join(missing)}")
        wrong = [key for key in STRINGS if key in raw and not (isinstance(raw[key], str) and raw[key])]
        if wrong:
            raise ConfigError(f"{where}: {wrong[0]} must be a name or path, got {raw[wrong[0]]!r}")
        values = dict(DEFAULTS[kind], **{k: v for k, v in raw.items() if k not in ("name", "type")})
        try:
            if "l2" in values:
                values["l2"] = float(values["l2"])
                values["tolerance"] = float(values["tolerance"])
                max_iter = values["max_iter"]
                if isinstance(max_iter, bool) or not (isinstance(max_iter, int) or isinstance(max_iter, float)
                                                      and max_iter.is_integer()):
                    raise ValueError(f"max_iter must be a whole number, got {max_iter!r}")
                values["max_iter"] = int(max_iter)
                l2, tolerance = values["l2"], values["tolerance"]
                if not (math.isfinite(l2) and l2 >= 0 and math.isfinite(tolerance) and tolerance > 0
                        and values["max_iter"] > 0):
                    raise ValueError("l2 >= 0, tolerance > 0 (both finite) and max_iter > 0 are required")
                if not isinstance(values["regularize_intercept"], bool):
                    raise ValueError("regularize_intercept must be true or false")
        except (TypeError, ValueError, OverflowError) as err:  # (float() of an int beyond float range)
            raise ConfigError(f"{where}: {err}") from None
        coordinates.append(Coordinate(name=name, type=kind, **values))
    return Config(path=str(path), coordinates=coordinates, feature_bags={k: list(map(str, v)) for k, v in bags.items()})


def check_against(config, dataset):
    """Resolve the config's feature bags against the data's columns and check every coordinate's bag and
    entity exist; returns {bag name: column indices}. Errors name the config file and the coordinate."""
    bags = {name: list(dataset.bag_columns(name)) for name in dataset.bags}
    for name, patterns in config.feature_bags.items():
        columns = []
        for pattern in patterns:
            matched = [i for i, column in enumerate(dataset.columns) if fnmatch.fnmatchcase(column, pattern)]
            if not matched:
                raise ConfigError(f"{config.path}: feature bag {name!r}: {pattern!r} matches no column of the data "
                                  f"({dataset.folder}/features.json)")
            columns += [i for i in matched if i not in columns]
        bags[name] = columns
    for c in config.coordinates:
        where = f"{config.path}: coordinate {c.name!r}"
        if c.feature_bag is not None and c.feature_bag not in bags:
            raise ConfigError(f"{where}: feature bag {c.feature_bag!r} is not in the data; it has "
                              f"{', '.join(sorted(bags))} (features.json or the config's feature_bags)")
        if c.entity is not None and c.entity not in dataset.entities:
            raise ConfigError(f"{where}: entity column {c.entity!r} is not in the data; it has "
                              f"{', '.join(dataset.entities)}")
    return bags


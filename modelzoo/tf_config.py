"""TF_CONFIG, parsed and checked once for every reader (the pod launcher, PS training, gdmix_lr, the
embedding-variable shards), so that they cannot disagree about what a cluster is.

TF_CONFIG is {"cluster": {type: ["host:port", ...]}, "task": {"type": ..., "index": ...}} as the
Kubeflow training operator injects it. `master` is the legacy name of the chief (TFJob's Master
replica): accepted here, at most one, and never next to a `chief`; each reader decides whether it
runs under it (PS training asks for `chief`). The evaluator stays outside the cluster (as the operator
and tf.estimator want it), so its index is not checked against the cluster. A missing task index is 0,
as in tf.estimator's RunConfig.

Pure Python, no TensorFlow: distribute_k8s/launch.py checks TF_CONFIG in each pod before TF is imported.
"""
import json
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional, Tuple

TASK_TYPES = ("chief", "worker", "ps", "evaluator", "master")
CHIEF_TYPES = ("chief", "master")


class TFConfigError(ValueError):
    """TF_CONFIG is not a valid cluster description; the message (one line, starting "TF_CONFIG") says why."""


@dataclass(frozen=True)
class TFConfig:
    cluster: Mapping[str, Tuple[str, ...]]  # every type as given (master stays "master"), read-only
    task_type: str
    task_index: int
    raw: Mapping  # the parsed JSON (launch.py passes the operator's text on unchanged)

    @property
    def chief_type(self) -> Optional[str]:
        """"chief" or "master" (the legacy name), whichever the cluster names; None without one."""
        return next((kind for kind in CHIEF_TYPES if self.cluster.get(kind)), None)

    @property
    def names_master(self) -> bool:
        """The cluster or the task uses the legacy name `master`."""
        return "master" in self.cluster or self.task_type == "master"

    @property
    def is_chief(self) -> bool:
        """The chief (or master) task; worker 0 when the cluster has neither (tf.estimator's rule)."""
        return self.task_type in CHIEF_TYPES or (self.task_type == "worker" and self.task_index == 0
                                                 and self.chief_type is None)

    def addresses(self, kind) -> Tuple[str, ...]:
        return self.cluster.get(kind, ())

    @property
    def trainers(self) -> Tuple[str, ...]:
        """The chief (or master) first, then the workers: the tasks that train."""
        return self.addresses("chief") + self.addresses("master") + self.addresses("worker")

    @property
    def trainer_index(self) -> Optional[int]:
        """This task's place in `trainers` (None for ps and evaluator)."""
        if self.task_type in CHIEF_TYPES:
            return self.task_index
        if self.task_type == "worker":
            return len(self.addresses("chief") + self.addresses("master")) + self.task_index
        return None


def _counts(cluster):
    return ", ".join(f"{kind}:{len(addresses)}" for kind, addresses in cluster.items())


def parse(text) -> TFConfig:
    """The TFConfig of a TF_CONFIG text; TFConfigError naming what is wrong."""
    try:
        config = json.loads(text)
    except ValueError as err:
        raise TFConfigError(f"TF_CONFIG is not JSON ({err}): {text[:200]!r}") from None
    if not isinstance(config, dict):
        raise TFConfigError(f"TF_CONFIG: expected a JSON object with cluster and task, got {text[:200]!r}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise TFConfigError("TF_CONFIG: expected \"cluster\": {\"chief\": [\"host:port\"], \"worker\": [...], ...}, "
                            f"got {json.dumps(cluster)}")
    for kind, addresses in cluster.items():
        if kind not in TASK_TYPES:
            raise TFConfigError(f"TF_CONFIG: cluster type {kind!r} is not one of {', '.join(TASK_TYPES)} (lowercase)")
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise TFConfigError(f"TF_CONFIG: cluster.{kind}: expected a list of \"host:port\" strings, "
                                f"got {json.dumps(addresses)}")
    for kind in CHIEF_TYPES:
        if len(cluster.get(kind, [])) > 1:
            raise TFConfigError(f"TF_CONFIG: cluster.{kind} names {len(cluster[kind])} tasks; a cluster has at most "
                                "one chief")
    if cluster.get("chief") and cluster.get("master"):
        raise TFConfigError("TF_CONFIG: the cluster names both chief and master (the legacy name of the chief); "
                            "keep one, chief")
    if not isinstance(task, dict):
        raise TFConfigError(f"TF_CONFIG: expected \"task\": {{\"type\": ..., \"index\": ...}}, got {json.dumps(task)}")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in TASK_TYPES:
        raise TFConfigError(f"TF_CONFIG: task.type {json.dumps(kind)} is not one of {', '.join(TASK_TYPES)}")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise TFConfigError(f"TF_CONFIG: task.index {json.dumps(index)} is not an integer >= 0")
    if kind != "evaluator" and index >= len(cluster.get(kind, [])):
        raise TFConfigError(f"TF_CONFIG: task {kind}:{index} is not in the cluster ({_counts(cluster)})")
    frozen = MappingProxyType({k: tuple(v) for k, v in cluster.items()})
    return TFConfig(frozen, kind, index, MappingProxyType(config))


def from_environment(environ=os.environ) -> Optional[TFConfig]:
    """The TFConfig of $TF_CONFIG; None when it is unset or blank (one process)."""
    text = environ.get("TF_CONFIG", "").strip()
    return parse(text) if text else None

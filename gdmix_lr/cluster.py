"""Worker k of N from TF_CONFIG, and the shared-folder exchange between workers.

GDMix hands each coordinate's scores to the next through files; here, too: the workers of a TFJob
share the output folder (the PVC), worker k solves the entity partitions p with p % N == k, writes
what the others need into OUTPUT/_exchange/RUN/ (atomically) and reads theirs. One process keeps it
all in memory. A run is named by the chief (rank 0): a restarted worker rejoins the same run and
recomputes its part (solutions are deterministic); a restarted chief starts a new run, and the other
workers leave theirs with an error so that the operator restarts them into the new one.
"""
import io
import json
import os
import shutil
import time
import uuid

import numpy as np

from modelzoo import tf_config
from modelzoo.world import World
from modelzoo.datafiles import DataError
from modelzoo.io_utils import atomic_writer, atomic_write_json

POLL_SECONDS = 0.2


class ClusterError(DataError):
    """A TF_CONFIG this job cannot run under, a failed peer or a timeout; the message says which."""


def world_from_tf_config(text):
    """Rank and size among the chief (or master, its legacy name) and the workers of TF_CONFIG
    (modelzoo/tf_config.py), chief first. gdmix_lr has no parameter servers and no separate evaluator:
    the chief reports the validation metrics."""
    if not text or not text.strip():
        return World()
    try:
        config = tf_config.parse(text)
    except tf_config.TFConfigError as err:
        raise ClusterError(str(err)) from None
    if config.trainer_index is None:
        raise ClusterError(f"TF_CONFIG: task type {config.task_type!r}: gdmix_lr runs as Chief and Worker replicas "
                           "only (no parameter servers; the chief evaluates), see gdmix_lr/distribute_k8s/")
    return World(config.trainer_index, len(config.trainers), f"{config.task_type}:{config.task_index}")


class Exchange:
    """Named sets of numpy arrays shared by all workers of a run."""

    def __init__(self, output_dir, world, timeout):
        self.world, self.timeout = world, timeout
        self.memory = {}
        self.root = os.path.join(output_dir, "_exchange")
        self.folder = None
        if world.size > 1:
            self.run_id = self._join()
            self.folder = os.path.join(self.root, self.run_id)

    def _join(self):
        marker = os.path.join(self.root, "run.json")
        if self.world.is_chief:
            shutil.rmtree(self.root, ignore_errors=True)
            run_id = uuid.uuid4().hex[:12]
            os.makedirs(os.path.join(self.root, run_id), exist_ok=True)
            atomic_write_json(marker, {"run": run_id, "workers": self.world.size})
            return run_id
        deadline = time.time() + self.timeout
        while True:
            try:
                with open(marker, encoding="utf-8") as f:
                    run = json.load(f)
                if not os.path.exists(os.path.join(self.root, run["run"], "DONE")):
                    if run["workers"] != self.world.size:
                        raise ClusterError(f"{marker}: the chief runs with {run['workers']} workers, TF_CONFIG "
                                           f"says {self.world.size}")
                    return run["run"]
            except (OSError, ValueError, KeyError):
                pass
            if time.time() > deadline:
                raise ClusterError(f"worker {self.world.rank}: no run started by the chief in {marker} after "
                                   f"{self.timeout:.0f}s")
            time.sleep(POLL_SECONDS)

    def _path(self, key):
        return os.path.join(self.folder, key.replace("/", "__") + ".npz")

    def put(self, key, **arrays):
        self.memory[key] = arrays
        if self.folder:
            with atomic_writer(self._path(key), "wb") as f:
                np.savez(f, **arrays)

    def get(self, key):
        if key in self.memory:
            return self.memory[key]
        path, deadline = self._path(key), time.time() + self.timeout
        while not os.path.exists(path):
            self._check_peers()
            if time.time() > deadline:
                raise ClusterError(f"worker {self.world.rank}: waited {self.timeout:.0f}s for {path}")
            time.sleep(POLL_SECONDS)
        with open(path, "rb") as f:
            with np.load(io.BytesIO(f.read())) as data:
                self.memory[key] = {name: data[name] for name in data.files}
        return self.memory[key]

    def _check_peers(self):
        if not os.path.isdir(self.folder):
            raise ClusterError(f"worker {self.world.rank}: run {self.run_id} was replaced by a new run of the chief; "
                               "exiting so that this worker restarts into it")
        for name in os.listdir(self.folder):
            if name.startswith("FAILED-"):
                with open(os.path.join(self.folder, name), encoding="utf-8") as f:
                    raise ClusterError(f"worker {name[7:]} failed: {f.read().strip()}")

    def barrier(self, name):
        """Every worker has reached `name`."""
        self.put(f"{name}/{self.world.rank}", done=np.array(1))
        for rank in range(self.world.size):
            self.get(f"{name}/{rank}")

    def fail(self, message):
        if self.folder and os.path.isdir(self.folder):
            with atomic_writer(os.path.join(self.folder, f"FAILED-{self.world.rank}")) as f:
                f.write(message)

    def finish(self):
        if self.folder and self.world.is_chief:
            with atomic_writer(os.path.join(self.folder, "DONE")) as f:
                f.write("done\n")

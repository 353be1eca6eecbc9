#!/usr/bin/env python
"""gdmix_lr: GDMix-style generalized linear mixed models (GLMix) without Spark or Scala.

A global logistic regression (the fixed effect) plus one small logistic regression per entity (random
effects: per user, per movie, ...), trained by block coordinate descent: each coordinate is fitted with
the other coordinates' scores as offsets. The coordinates come from a config file
(gdmix_lr/configs/movielens.yaml by default; see gdmix_lr/config.py).

    python gdmix_lr/train.py --data_location ../shared/data/ml-100k --output_dir result/gdmix_lr --seed 1

--data_location holds the official ml-100k files (prepared into OUTPUT_DIR/data with the seeded 80/20
split), or an already prepared folder (features.json); without it the job runs on generated data with
the same schema and says so. Under TF_CONFIG (a TFJob's Chief and Workers) worker k of N solves the
entity partitions p with p % N == k; see gdmix_lr/cluster.py.
"""
import argparse
import csv
import io
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up noise (as the runner does)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gdmix_lr import glmix, photon  # noqa: E402
from gdmix_lr.cluster import Exchange, world_from_tf_config  # noqa: E402
from gdmix_lr.config import check_against, load_config  # noqa: E402
from modelzoo.datasets import movielens  # noqa: E402
from modelzoo.datafiles import DataError  # noqa: E402
from modelzoo.flags import (FlagError, FlagParser, given_flags, non_negative_int, positive_float,  # noqa: E402
                            positive_int, probability, seed_int)
from modelzoo.io_utils import OutputError, atomic_write_json, probe_writable, write_problem  # noqa: E402
from modelzoo.metrics import roc_auc  # noqa: E402
from modelzoo.system import cpu_info, peak_rss_mb  # noqa: E402

MODEL = "gdmix_lr"
AUC_UNDEFINED = "one class in the validation labels"  # result.json then says "auc": null and why
DEFAULT_CONFIG = REPO / "gdmix_lr" / "configs" / "movielens.yaml"


# The modes of gdmix_lr's flags: what --data_location holds (`data_mode`), and one process or several (a
# TF_CONFIG job of a chief and workers). A flag acts in a run when both of the run's modes are among its own.
PREPARED, ML100K, GENERATED = "prepared", "ml-100k", "generated"
ONE, SEVERAL = "one process", "several processes"
AXES = {"--data_location": (PREPARED, ML100K, GENERATED), "processes": (ONE, SEVERAL)}
EVERY = frozenset({PREPARED, ML100K, GENERATED, ONE, SEVERAL})
SPLITS = EVERY - {PREPARED}  # the seeded 80/20 split (and the generation): a prepared folder has its own
GENERATES = EVERY - {PREPARED, ML100K}
# gdmix_lr's refusal table (modelzoo/flags.py's ACTS_IN for its own flags): a flag given where it does nothing is
# refused in one line naming it and the mode (`validate`)
ACTS_IN = {"data_location": EVERY, "output_dir": EVERY, "config": EVERY, "seed": SPLITS, "train_fraction": SPLITS,
           "sweeps": EVERY, "partitions": EVERY, "intra": EVERY, "wait_timeout": EVERY - {ONE},
           "generate_users": GENERATES, "generate_movies": GENERATES, "generate_rows": GENERATES}
MODE_WORDS = {PREPARED: "--data_location {} is a prepared folder (features.json), read as it is",
              ML100K: "--data_location {} holds the official ml-100k files (nothing is generated)",
              ONE: "this run is one process (no TF_CONFIG job of a chief and workers)"}
WHAT = {"seed": "the 80/20 split and the generated data", "train_fraction": "the 80/20 split",
        "wait_timeout": "the wait for the other workers of a TF_CONFIG job"}


def data_mode(location):
    """What --data_location holds: a prepared folder, the ml-100k files, or nothing (generated data). Anything
    else is left to obtain_data, which refuses it naming the folder."""
    if location and movielens.is_prepared(location):
        return PREPARED
    if location and movielens.is_official_ml100k(location):
        return ML100K
    return GENERATED


def refusal(name, mode, location):
    """The one line that refuses --name in `mode`, where it does nothing."""
    return (f"--{name} acts on {WHAT.get(name, 'the generated data')}, and {MODE_WORDS[mode].format(location)}; "
            f"drop --{name}")


def validate(args, world):
    """Refuse a flag given where it does nothing (ACTS_IN), in one line."""
    given, _, _ = given_flags(args)
    modes = (data_mode(args.data_location), SEVERAL if world.size > 1 else ONE)
    for name in sorted(given):
        idle = [mode for mode in modes if mode not in ACTS_IN[name]]
        if idle:
            raise FlagError(refusal(name, idle[0], args.data_location))


def build_parser():
    p = FlagParser(prog="gdmix_lr/train.py", description=__doc__.split("\n\n")[0],
                   formatter_class=argparse.ArgumentDefaultsHelpFormatter, table=ACTS_IN)
    p.add_argument("--data_location", default=None,
                   help="folder with the official ml-100k files (u.data, u.user, u.item) or a prepared folder "
                        "(features.json); none or empty: generated data")
    p.add_argument("--output_dir", default="./result/gdmix_lr", help="outputs: OUTPUT_DIR/<coordinate>/, result.json")
    p.add_argument("--config", default=str(DEFAULT_CONFIG.relative_to(REPO)),
                   help="coordinates (YAML or JSON), see gdmix_lr/config.py")
    p.add_argument("--seed", type=seed_int, default=2021, help="the 80/20 split (and the generated data)")
    p.add_argument("--train_fraction", type=probability, default=0.8, help="share of rows in training")
    p.add_argument("--sweeps", type=positive_int, default=1,
                   help="passes over the coordinates; the sweep with the best validation AUC is kept")
    p.add_argument("--partitions", type=positive_int, default=4,
                   help="entity partitions of each random effect (the unit of work of a worker)")
    p.add_argument("--intra", type=non_negative_int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    p.add_argument("--wait_timeout", type=positive_float, default=3600.0,
                   help="seconds a worker waits for the others' results before giving up")
    g = p.add_argument_group("generated data (when no --data_location)")
    g.add_argument("--generate_users", type=positive_int, default=943, help="users of the generated data")
    g.add_argument("--generate_movies", type=positive_int, default=1682, help="movies of the generated data")
    g.add_argument("--generate_rows", type=positive_int, default=100_000, help="ratings of the generated data")
    return p


def partition_of(entity_ids, partitions):
    """A stable hash of each entity id into [0, partitions): the same in every worker and every run."""
    return np.array([zlib.crc32(str(e).encode()) % partitions for e in entity_ids.tolist()], dtype=np.int64)


def obtain_data(args, world, exchange, say):
    """Load or prepare the data: the chief prepares into OUTPUT_DIR/data, the others wait for it."""
    source = args.data_location
    prepared = os.path.join(args.output_dir, "data")
    if source and movielens.is_prepared(source):
        return movielens.load(source)
    if source and os.path.isdir(source) and os.listdir(source) and not movielens.is_official_ml100k(source):
        raise DataError(f"{source}: holds neither the official ml-100k files (u.data, u.user, u.item) nor a "
                        "prepared folder (features.json); leave --data_location out for generated data")
    if source and not os.path.isdir(source):
        raise DataError(f"{source}: no such folder (--data_location)")
    if world.is_chief:
        if source and movielens.is_official_ml100k(source):
            summary = movielens.prepare(source, prepared, args.seed, args.train_fraction)
            say(f"prepared ml-100k from {source} into {prepared}: {summary['rows']}")
        else:
            say(f"no data given: generating MovieLens-schema data ({args.generate_users:,} users, "
                f"{args.generate_movies:,} movies, {args.generate_rows:,} rows, labels from a known mixed model; "
                f"truth.json beside it) into {prepared}")
            movielens.generate(prepared, args.seed, args.generate_users, args.generate_movies, args.generate_rows,
                               args.train_fraction)
    exchange.barrier("data")
    return movielens.load(prepared)


def read_score_file(path, split, coordinate):
    """Another model's scores for the rows of `split`, as logits. A `uid` column keys the rows; without it
    the file must list the split's rows in order (as Wide & Deep's --predict writes them), which its
    `label` column, when present, must confirm. A `score` column is a logit, `probability` is converted.
    The file is read as written (no quoting, blank lines kept), so that row i is line i + 2 in messages."""
    where = f"{path} (coordinate {coordinate})"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise DataError(f"{where}: cannot read the score file ({err.strerror})") from None
    movielens.check_csv_text(data, where)
    try:
        frame = pd.read_csv(io.BytesIO(data), quoting=csv.QUOTE_NONE, skip_blank_lines=False)
    except ValueError as err:  # pandas' EmptyDataError and ParserError (a row with more fields) among them
        raise DataError(f"{where}: cannot read the score file: {' '.join(str(err).split())}") from None
    if "score" in frame:
        scores = pd.to_numeric(frame["score"], errors="coerce").to_numpy(np.float64)
    elif "probability" in frame:
        p = np.clip(pd.to_numeric(frame["probability"], errors="coerce").to_numpy(np.float64), 1e-15, 1 - 1e-15)
        scores = np.log(p) - np.log1p(-p)
    else:
        raise DataError(f"{where}: expected a `score` (logit) or `probability` column, found {list(frame.columns)}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise DataError(f"{where}:{bad[0] + 2}: the score is not a finite number")
    if "uid" in frame:
        uids = frame["uid"]
        again = np.flatnonzero(uids.duplicated().to_numpy())
        if again.size:
            raise DataError(f"{where}:{again[0] + 2}: uid {uids.iloc[again[0]]!r} appears again")
        position = {u: i for i, u in enumerate(uids.tolist())}
        missing = [u for u in split.uid.tolist() if u not in position]
        if missing:
            raise DataError(f"{where}: {len(missing):,} rows of {split.path} have no score (first uid {missing[0]})")
        return scores[[position[u] for u in split.uid.tolist()]]
    if len(scores) != len(split.uid):
        raise DataError(f"{where}: {len(scores):,} scores without a uid column, but {split.path} has "
                        f"{len(split.uid):,} rows; give a uid column or one score per row in order")
    if "label" in frame:
        labels = pd.to_numeric(frame["label"], errors="coerce").to_numpy(np.float64)
        if not np.array_equal(labels, split.label):
            raise DataError(f"{where}: its labels differ from those of {split.path}: the rows are not in the same "
                            "order")
    return scores


class Coordinates:
    """Block coordinate descent over the config's coordinates, sharing work among the workers."""

    def __init__(self, args, config, bags, data, world, exchange):
        self.args, self.data, self.world, self.exchange = args, data, world, exchange
        self.x = {name: {split: glmix.with_intercept(getattr(data, split).features[:, columns])
                         for split in ("train", "validation")} for name, columns in bags.items()}
        self.state = {}   # coordinate -> its latest solution (warm start of the next sweep)
        self.entities = {c.name: self._entity_layout(c) for c in config.coordinates if c.type == "random_effect"}

    def _entity_layout(self, c):
        train, validation = self.data.train.entities[c.entity], self.data.validation.entities[c.entity]
        ids, train_index = np.unique(train, return_inverse=True)
        position = np.searchsorted(ids, validation)
        known = (position < ids.size) & (ids[np.minimum(position, ids.size - 1)] == validation)
        validation_index = np.where(known, position, -1)
        partition = partition_of(ids, self.args.partitions)
        counts = np.bincount(partition, minlength=self.args.partitions)
        if (counts == 0).any():
            empty = int(np.flatnonzero(counts == 0)[0])
            raise DataError(f"coordinate {c.name!r}: entity partition {empty} of {self.args.partitions} has no "
                            f"training entity ({ids.size:,} {c.entity} values in all); use --partitions at most "
                            f"{max(1, ids.size // 4)}")
        return {"ids": ids, "train": train_index, "validation": validation_index, "partition": partition}

    def fit(self, c, sweep, offsets):
        """This coordinate's scores (train, validation) given the offsets; models kept in self.state."""
        start = time.time()
        if c.type == "scores":
            if c.name not in self.state:
                self.state[c.name] = {"scores": (read_score_file(c.training_scores, self.data.train, c.name),
                                                 read_score_file(c.validation_scores, self.data.validation, c.name))}
            out = self.state[c.name]["scores"]
        elif c.type == "fixed_effect":
            out = self._fixed_effect(c, sweep, offsets)
        else:
            out = self._random_effect(c, sweep, offsets)
        self.state[c.name]["seconds"] = time.time() - start
        return out

    def _fixed_effect(self, c, sweep, offsets):
        x = self.x[c.feature_bag]
        key = f"{sweep}/{c.name}"
        if self.world.is_chief:
            previous = self.state.get(c.name, {}).get("coefficients")
            solution = glmix.solve_fixed_effect(x["train"], self.data.train.label, self.data.train.weight, offsets[0],
                                                c.l2, c.regularize_intercept, c.max_iter, c.tolerance, previous,
                                                self.args.intra)
            self.exchange.put(key, coefficients=solution.coefficients, iterations=solution.iterations,
                              converged=solution.converged, evaluations=np.array(solution.loss_evaluations),
                              seconds=np.array(solution.seconds))
        got = self.exchange.get(key)
        coefficients = got["coefficients"]
        self.state[c.name] = {"coefficients": coefficients, "iterations": int(got["iterations"]),
                              "converged": bool(got["converged"]), "evaluations": int(got["evaluations"]),
                              "passes_per_second": float(got["evaluations"]) * len(self.data.train.uid)
                              / max(float(got["seconds"]), 1e-9)}
        return x["train"] @ coefficients, x["validation"] @ coefficients

    def _random_effect(self, c, sweep, offsets):
        x, layout = self.x[c.feature_bag], self.entities[c.name]
        previous = self.state.get(c.name, {}).get("coefficients")
        coefficients = np.zeros((layout["ids"].size, x["train"].shape[1])) if previous is None else previous.copy()
        mine = [p for p in range(self.args.partitions) if p % self.world.size == self.world.rank]
        solver = glmix.BatchedNewton(x["train"].shape[1], c.regularize_intercept, self.args.intra)
        try:
            for p in mine:
                members = np.flatnonzero(layout["partition"] == p)
                local = np.full(layout["ids"].size, -1)
                local[members] = np.arange(members.size)
                rows = np.flatnonzero(local[layout["train"]] >= 0)
                solution = glmix.solve_random_effect(
                    x["train"][rows], self.data.train.label[rows], self.data.train.weight[rows], offsets[0][rows],
                    local[layout["train"][rows]], members.size, c.l2, c.regularize_intercept, c.max_iter,
                    c.tolerance, coefficients[members], solver=solver)
                self.exchange.put(f"{sweep}/{c.name}/{p}", members=members, coefficients=solution.coefficients,
                                  iterations=solution.iterations, converged=solution.converged)
        finally:
            solver.close()
        iterations = np.zeros(layout["ids"].size, dtype=np.int64)
        converged = np.zeros(layout["ids"].size, dtype=bool)
        for p in range(self.args.partitions):
            got = self.exchange.get(f"{sweep}/{c.name}/{p}")
            coefficients[got["members"]] = got["coefficients"]
            iterations[got["members"]], converged[got["members"]] = got["iterations"], got["converged"]
        self.state[c.name] = {"coefficients": coefficients, "iterations": iterations, "converged": converged}
        return (glmix.random_effect_scores(x["train"], coefficients, layout["train"]),
                glmix.random_effect_scores(x["validation"], coefficients, layout["validation"]))


def write_outputs(args, config, bags, data, coords, best, world, exchange, staging):
    """OUTPUT_DIR/<coordinate>/{models, training_scores, validation_scores, metric} of the best sweep, written
    into a staging folder by every worker (its partitions) and moved into place by the chief."""
    splits = {"training_scores": data.train, "validation_scores": data.validation}
    if world.size == 1:
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run; a cluster run has its own name
    for c in config.coordinates:
        folder = os.path.join(staging, c.name)
        record = best["coordinates"][c.name]
        columns = [data.columns[i] for i in bags[c.feature_bag]] if c.feature_bag else []
        if c.type == "random_effect":
            layout = coords.entities[c.name]
            parts = [p for p in range(args.partitions) if p % world.size == world.rank]
            row_partition = {"training_scores": layout["partition"][layout["train"]],
                             "validation_scores": np.where(layout["validation"] >= 0,
                                                           layout["partition"][np.maximum(layout["validation"], 0)],
                                                           partition_of(data.validation.entities[c.entity],
                                                                        args.partitions))}
            for p in parts:
                members = np.flatnonzero(layout["partition"] == p)
                photon.write_models(os.path.join(folder, "models", f"part-{p:05d}.avro"), layout["ids"][members],
                                    record["coefficients"][members], columns)
                for kind, split in splits.items():
                    rows = np.flatnonzero(row_partition[kind] == p)
                    write_score_part(os.path.join(folder, kind, f"part-{p:05d}.avro"), split, rows, record, kind)
        elif world.is_chief:
            if c.type == "fixed_effect":
                photon.write_models(os.path.join(folder, "models", "part-00000.avro"), [c.name],
                                    record["coefficients"][None, :], columns)
            for kind, split in splits.items():
                write_score_part(os.path.join(folder, kind, "part-00000.avro"), split,
                                 np.arange(len(split.uid)), record, kind)
        if world.is_chief:
            atomic_write_json(os.path.join(folder, "metric", "evalSummary.json"), {"auc": record["auc"]})
    exchange.barrier("outputs")
    if world.is_chief:
        # result.json, written last, says the coordinate folders are complete and of one run: it is
        # gone while they are replaced (a folder by two renames: a kill leaves whole files only)
        result = os.path.join(args.output_dir, "result.json")
        if os.path.exists(result):
            os.unlink(result)
        for c in config.coordinates:
            target, previous = os.path.join(args.output_dir, c.name), os.path.join(staging, f".previous-{c.name}")
            if os.path.exists(target):
                os.replace(target, previous)
            os.replace(os.path.join(staging, c.name), target)
        for name in os.listdir(args.output_dir):  # this run's, and any left by killed runs
            if name.startswith(".staging-"):
                shutil.rmtree(os.path.join(args.output_dir, name), ignore_errors=True)


def write_score_part(path, split, rows, record, kind):
    index = 0 if kind == "training_scores" else 1
    photon.write_scores(path, split.uid[rows], split.label[rows], split.weight[rows],
                        record["cumulative"][index][rows], record["own"][index][rows])


def coordinate_report(c, record, coords, data):
    report = {"name": c.name, "type": c.type, "feature_bag": c.feature_bag, "entity": c.entity, "l2": c.l2,
              "regularize_intercept": c.regularize_intercept, "validation_auc": record["auc"],
              "seconds": round(record["seconds"], 3)}
    if c.type == "fixed_effect":
        report.update(iterations=record["iterations"], converged=record["converged"],
                      loss_evaluations=record["evaluations"],
                      samples_per_second_per_pass=round(record["passes_per_second"]))
    elif c.type == "random_effect":
        layout = coords.entities[c.name]
        train_counts = np.bincount(layout["train"], minlength=layout["ids"].size)
        labels = np.bincount(layout["train"], weights=data.train.label, minlength=layout["ids"].size)
        single_label = (labels == 0) | (labels == train_counts)
        report.update(entities=int(layout["ids"].size),
                      converged_fraction=round(float(record["converged"].mean()), 4),
                      entities_single_label=int(single_label.sum()),
                      converged_fraction_two_labels=round(float(record["converged"][~single_label].mean()), 4)
                      if (~single_label).any() else None,
                      newton_iterations_max=int(record["iterations"].max()),
                      validation_rows_unseen_entity=int((layout["validation"] < 0).sum()))
    return report


def run(args, world, say):
    wall_start = time.time()
    if world.is_chief:
        probe_writable(args.output_dir, "--output_dir")
    exchange = Exchange(args.output_dir, world, args.wait_timeout)
    try:
        config = load_config(args.config)
        data = obtain_data(args, world, exchange, say)
        bags = check_against(config, data)
        say(f"data: {data.source} | {len(data.train.uid):,} training rows, {len(data.validation.uid):,} "
            f"validation rows" + (" (generated)" if data.synthetic else ""))
        coords = Coordinates(args, config, bags, data, world, exchange)
        trained = [c for c in config.coordinates if c.trained]
        n_train, n_val = len(data.train.uid), len(data.validation.uid)
        own = {c.name: (np.zeros(n_train), np.zeros(n_val)) for c in config.coordinates}
        total = [np.zeros(n_train), np.zeros(n_val)]
        sweeps, best = [], None
        for sweep in range(1, args.sweeps + 1):
            record = {"sweep": sweep, "coordinates": {}}
            for c in config.coordinates:
                if sweep > 1 and not c.trained:
                    continue
                offsets = (total[0] - own[c.name][0], total[1] - own[c.name][1])
                own[c.name] = coords.fit(c, sweep, offsets)
                total = [offsets[0] + own[c.name][0], offsets[1] + own[c.name][1]]
                auc = roc_auc(data.validation.label, total[1])
                state = coords.state[c.name]
                record["coordinates"][c.name] = dict(
                    state, auc=auc, own=own[c.name], cumulative=(total[0].copy(), total[1].copy()))
                say(f"sweep {sweep} | {c.name} ({c.type}{', ' + c.entity if c.entity else ''}): "
                    f"validation AUC {auc_text(auc)} | {state['seconds']:.2f}s")
            record["auc"] = roc_auc(data.validation.label, total[1])
            sweeps.append({"sweep": sweep, "auc": record["auc"],
                           "coordinate_auc": {k: v["auc"] for k, v in record["coordinates"].items()}})
            if best is None or (record["auc"] is not None and (best["auc"] is None or record["auc"] > best["auc"])):
                # Coordinates not refitted in this sweep (score files) keep their first record.
                best = {**record, "coordinates": {**(best or {}).get("coordinates", {}), **record["coordinates"]}}
            if not trained:
                break
        staging = os.path.join(args.output_dir, f".staging-{exchange.run_id if world.size > 1 else 'local'}")
        write_outputs(args, config, bags, data, coords, best, world, exchange, staging)
        if world.is_chief:
            result = {
                "model": MODEL, "flags": vars(args), "config": config.path, "data": data.source,
                "generated_data": data.synthetic, "train_rows": n_train, "validation_rows": n_val,
                "workers": world.size, "partitions": args.partitions,
                "coordinates": [coordinate_report(c, best["coordinates"][c.name], coords, data)
                                for c in config.coordinates],
                "sweeps": sweeps, "best_sweep": best["sweep"], "auc": best["auc"],
                "wall_seconds": round(time.time() - wall_start, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                "cpu": cpu_info(),
            }
            if best["auc"] is None:
                result["auc_undefined"] = AUC_UNDEFINED
                print(f"warning: AUC undefined: the {n_val:,} validation rows hold one class only (every label the "
                      "same); result.json has \"auc\": null", file=sys.stderr, flush=True)
            import tensorflow as tf
            result["tf_version"] = tf.__version__
            atomic_write_json(os.path.join(args.output_dir, "result.json"), result)
            print_summary(result, args.output_dir)
        exchange.finish()
    except BaseException as err:
        exchange.fail(str(err) or type(err).__name__)
        raise
    return 0


def auc_text(auc):
    """An AUC for the log: None (labels of one class, metrics.roc_auc) says so."""
    return "n/a: one class" if auc is None else f"{auc:.4f}"


def print_summary(r, output_dir):
    print("\n==== summary ====")
    print(f"model {r['model']} | {r['train_rows']:,} training rows, {r['validation_rows']:,} validation rows"
          + (" (generated)" if r["generated_data"] else "") + f" | {r['workers']} worker(s)")
    for c in r["coordinates"]:
        print(f"  + {c['name']:<12} cumulative validation AUC {auc_text(c['validation_auc'])}  ({c['seconds']:.2f}s)")
    print(f"best sweep {r['best_sweep']} of {len(r['sweeps'])}: AUC {auc_text(r['auc'])} | "
          f"wall {r['wall_seconds']:.1f}s | "
          f"peak RSS {r['peak_rss_mb']:,.0f} MB")
    print(f"outputs: {output_dir}/<coordinate>/ | result: {os.path.join(output_dir, 'result.json')}", flush=True)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        world = world_from_tf_config(os.environ.get("TF_CONFIG", ""))
        validate(args, world)
        prefix = f"[{world.task}] " if world.size > 1 else ""

        def say(message):
            print(f"{MODEL}: {prefix}{message}", flush=True)

        return run(args, world, say)
    except FlagError as err:
        parser.print_usage(sys.stderr)
        print(f"{MODEL}/train.py: error: {err}", file=sys.stderr, flush=True)
        return err.code
    except (DataError, OutputError) as err:
        print(f"{MODEL}/train.py: error: {err}", file=sys.stderr, flush=True)
        return 1
    except OSError as err:
        if write_problem(err) is None:
            raise
        print(f"{MODEL}/train.py: error: could not write {err.filename}: {write_problem(err)}; the outputs in "
              f"{args.output_dir} are complete only when result.json is there: free space or make the folder "
              "writable and run again", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

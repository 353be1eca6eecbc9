"""gdmix_lr: GDMix-style mixed models. The solvers against scipy and Newton references, the pipeline on
the real ml-100k (AUCs, Photon-ML outputs, offsets), generated data with known effects, multi-sweep,
score files from another model, two workers against one, and bad input."""
import glob
import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conftest import REPO, SHARED_DATA, load_train_module, run_train

from gdmix_lr import glmix, photon
from gdmix_lr.cluster import ClusterError, world_from_tf_config
from gdmix_lr.config import ConfigError, load_config
from modelzoo.datasets import movielens
from modelzoo.flags import FlagError

ML100K = SHARED_DATA / "ml-100k"
CONFIG = REPO / "gdmix_lr" / "configs" / "movielens.yaml"
COORDINATES = ("global", "per_user", "per_movie")


def need_ml100k():
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"real MovieLens ml-100k not found at {ML100K} (../shared/data beside the checkout)")


def read_all(folder, kind):
    return [r for path in sorted(glob.glob(os.path.join(folder, kind, "part-*.avro")))
            for r in photon.read_records(path)]


def models_of(folder):
    models = {}
    for path in sorted(glob.glob(os.path.join(folder, "models", "part-*.avro"))):
        for model_id, means in photon.read_models(path).items():
            assert model_id not in models, f"{model_id} in two partitions"
            models[model_id] = means
    return models


def scores_by_uid(folder, kind):
    return {r["uid"]: r for r in read_all(folder, kind)}


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory):
    """The shipped config on the real ml-100k, seed 1 (as a user runs it)."""
    need_ml100k()
    out = tmp_path_factory.mktemp("gdmix_ml")
    proc = run_train("gdmix_lr", ["--data_location", ML100K, "--output_dir", out, "--seed", 1])
    return out, json.loads((out / "result.json").read_text()), proc


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A generated folder (known mixed model) shared by the tests that need no real data."""
    out = tmp_path_factory.mktemp("gdmix_gen") / "data"
    movielens.generate(out, seed=5)
    return out


def test_ml100k_reaches_gdmix_aucs_per_coordinate(ml_run):
    out, result, proc = ml_run
    aucs = {c["name"]: c["validation_auc"] for c in result["coordinates"]}
    # GDMix publishes 0.6237, 0.7058, 0.7599 (one split); one seed here, with a margin for the split.
    assert aucs["global"] >= 0.60 and aucs["per_user"] >= 0.69 and aucs["per_movie"] >= 0.74, aucs
    assert aucs["global"] < aucs["per_user"] < aucs["per_movie"]
    assert result["train_rows"] + result["validation_rows"] == 100_000
    assert not result["generated_data"] and "prepared ml-100k" in proc.stdout


def test_metric_files_equal_the_auc_of_the_written_scores(ml_run):
    out, result, _ = ml_run
    for name in COORDINATES:
        rows = read_all(out / name, "validation_scores")
        assert len(rows) == result["validation_rows"] and len({r["uid"] for r in rows}) == len(rows)
        expected = roc_auc_score([r["response"] for r in rows], [r["predictionScore"] for r in rows])
        summary = json.loads((out / name / "metric" / "evalSummary.json").read_text())
        assert summary["auc"] == pytest.approx(expected, abs=1e-12)


def test_cumulative_scores_add_each_coordinate_score(ml_run):
    """predictionScore after a coordinate = predictionScore before it + its own score, row by row."""
    out, _, _ = ml_run
    for kind in ("training_scores", "validation_scores"):
        before = None
        for name in COORDINATES:
            rows = scores_by_uid(out / name, kind)
            for uid, r in rows.items():
                previous = 0.0 if before is None else before[uid]["predictionScore"]
                assert r["predictionScore"] == pytest.approx(previous + r["predictionScorePerCoordinate"], abs=1e-9)
            before = rows


def test_models_are_photon_ml_avro_with_intercept_first(ml_run):
    out, result, _ = ml_run
    global_model = models_of(out / "global")
    assert list(global_model) == ["global"]
    keys = list(global_model["global"])
    assert keys[0] == (photon.INTERCEPT, "") and ("gender", "M") in keys and ("age", "") in keys and len(keys) == 45
    record = photon.read_records(glob.glob(str(out / "per_user" / "models" / "part-*.avro"))[0])[0]
    assert record["modelClass"] == photon.LOGISTIC_REGRESSION and record["means"][0]["name"] == photon.INTERCEPT
    users = models_of(out / "per_user")
    entities = {c["name"]: c["entities"] for c in result["coordinates"] if c["type"] == "random_effect"}
    assert len(users) == entities["per_user"] == 943
    assert len(models_of(out / "per_movie")) == entities["per_movie"]
    assert all(len(m) == 21 and ("genre", "Drama") in m for m in users.values())


def test_fixed_effect_matches_a_newton_solve(ml_run):
    out, _, _ = ml_run
    data = movielens.load(out / "data")
    x = glmix.with_intercept(data.train.features[:, data.bag_columns("global")])
    y, w = data.train.label, data.train.weight
    mask = glmix.penalty_mask(x.shape[1], False)
    b = np.zeros(x.shape[1])
    for _ in range(30):  # Newton on the same objective (sum of log losses + 1.0/2 |b without intercept|^2)
        p = 1 / (1 + np.exp(-(x @ b)))
        b -= np.linalg.solve((x * (w * p * (1 - p))[:, None]).T @ x + np.diag(mask), x.T @ (w * (p - y)) + mask * b)
    fitted = np.array(list(models_of(out / "global")["global"].values()))
    assert np.abs(fitted - b).max() < 1e-4


@pytest.mark.parametrize("coordinate,entity,bag", [("per_user", "user_id", "per_user"),
                                                    ("per_movie", "movie_id", "per_movie")])
def test_per_entity_models_match_scipy_lbfgs(ml_run, coordinate, entity, bag):
    """A sample of entities (with both labels: the objective then has a unique finite minimum), each re-solved
    by scipy's L-BFGS with the offsets read back from the previous coordinate's training scores."""
    out, _, _ = ml_run
    data = movielens.load(out / "data")
    x = glmix.with_intercept(data.train.features[:, data.bag_columns(bag)])
    scores = scores_by_uid(out / coordinate, "training_scores")
    offsets = np.array([scores[u]["predictionScore"] - scores[u]["predictionScorePerCoordinate"]
                        for u in data.train.uid.tolist()])
    models = models_of(out / coordinate)
    ids = data.train.entities[entity]
    rng = np.random.default_rng(0)
    checked = 0
    for e in rng.permutation(np.unique(ids)):
        rows = ids == e
        if len(set(data.train.label[rows])) < 2:
            continue
        reference = glmix.scipy_solve(x[rows], data.train.label[rows], data.train.weight[rows], offsets[rows], 1.0)
        fitted = np.array(list(models[str(e)].values()))
        assert np.abs(fitted - reference).max() < 1e-4, (e, np.abs(fitted - reference).max())
        checked += 1
        if checked == 25:
            break
    assert checked == 25


def test_entities_with_one_row_or_one_label_get_finite_models():
    rng = np.random.default_rng(0)
    x = glmix.with_intercept(rng.normal(size=(9, 3)))
    labels = np.array([1.0, 1, 1, 1, 0, 0, 1, 0, 1])
    entity = np.array([0, 1, 1, 1, 2, 3, 3, 3, 3])  # 0: one row; 1: all positive; 2: one negative row
    for regularize in (False, True):
        solution = glmix.solve_random_effect(x, labels, np.ones(9), np.zeros(9), entity, 4, 1.0, regularize)
        assert np.isfinite(solution.coefficients).all() and np.abs(solution.coefficients).max() < 30
        assert solution.converged[3]
    # Under the unpenalized intercept the positive-only entity's intercept grows towards +inf until the
    # iteration limit; its probability is then within 1e-6 of its label, its intercept stays finite.
    z = x[entity == 1] @ solution.coefficients[1]
    assert (z > 0).all()


def test_generated_data_recovers_the_known_per_user_effects(generated, tmp_path):
    out = tmp_path / "out"
    proc = run_train("gdmix_lr", ["--data_location", generated, "--output_dir", out])
    assert "(generated)" in proc.stdout
    truth = json.loads((generated / "truth.json").read_text())
    models = models_of(out / "per_user")
    data = movielens.load(generated)
    rows = np.bincount(data.train.entities["user_id"])
    for feature in ("genre=Drama", "genre=Comedy"):
        name, _, term = feature.partition("=")
        pairs = np.array([(truth["per_user"][u][feature], models[u][(name, term)])
                          for u in truth["per_user"] if u in models and rows[int(u)] >= 60])
        assert len(pairs) > 100
        assert np.corrcoef(pairs.T)[0, 1] > 0.6, feature


def test_no_data_location_generates_data_and_says_so(tmp_path):
    proc = run_train("gdmix_lr", ["--output_dir", tmp_path, "--generate_users", 200, "--generate_movies", 300,
                                  "--generate_rows", 12000, "--partitions", 2])
    assert "no data given: generating" in proc.stdout and "(generated)" in proc.stdout
    assert (tmp_path / "data" / "truth.json").is_file()
    assert json.loads((tmp_path / "result.json").read_text())["generated_data"] is True


def test_validation_labels_of_one_class_give_auc_null_and_the_reason(tmp_path):
    """No AUC is defined when every validation label is the same: result.json says null and why (not NaN,
    which is not JSON), the log says n/a."""
    data = tmp_path / "data"
    movielens.generate(data, seed=3, users=200, movies=300, rows=12000)
    path = data / movielens.VALIDATION_FILE
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index(movielens.LABEL)
    path.write_text("\n".join([lines[0]] + [",".join(f[:column] + ["0"] + f[column + 1:])
                                             for f in (line.split(",") for line in lines[1:])]) + "\n")
    proc = run_train("gdmix_lr", ["--data_location", data, "--output_dir", tmp_path / "out", "--partitions", 2])
    text = (tmp_path / "out" / "result.json").read_text()
    assert "NaN" not in text
    result = json.loads(text)
    assert result["auc"] is None and result["auc_undefined"] == "one class in the validation labels"
    assert all(c["validation_auc"] is None for c in result["coordinates"])
    assert "AUC n/a: one class" in proc.stdout and "warning: AUC undefined" in proc.stderr


def test_sweeps_keep_the_best_sweep(generated, tmp_path):
    run_train("gdmix_lr", ["--data_location", generated, "--output_dir", tmp_path, "--sweeps", 3])
    result = json.loads((tmp_path / "result.json").read_text())
    aucs = [s["auc"] for s in result["sweeps"]]
    assert len(aucs) == 3 and result["best_sweep"] == int(np.argmax(aucs)) + 1 and result["auc"] == max(aucs)
    assert max(aucs) > aucs[0]  # re-fitting each coordinate against the others' newer scores helps
    best = result["sweeps"][result["best_sweep"] - 1]["coordinate_auc"]
    for name in COORDINATES:
        assert json.loads((tmp_path / name / "metric" / "evalSummary.json").read_text())["auc"] == best[name]


def test_fixed_effect_from_another_models_score_file(generated, tmp_path):
    """GDMix's third mode: the global scores come from a file (uid, score); per-user and per-movie models fitted
    on those offsets equal the ones fitted after our own global model."""
    first = tmp_path / "first"
    run_train("gdmix_lr", ["--data_location", generated, "--output_dir", first])
    files = {}
    for kind in ("training_scores", "validation_scores"):
        rows = read_all(first / "global", kind)[::-1]  # any order: the uid keys them
        files[kind] = tmp_path / f"{kind}.csv"
        files[kind].write_text("uid,score\n" + "".join(f"{r['uid']},{r['predictionScore']!r}\n" for r in rows))
    config = tmp_path / "scores.yaml"
    config.write_text(CONFIG.read_text().replace(
        "  - name: global\n    type: fixed_effect\n    feature_bag: global\n    l2: 1.0\n    regularize_intercept: false\n",
        f"  - name: global\n    type: scores\n    training_scores: {files['training_scores']}\n"
        f"    validation_scores: {files['validation_scores']}\n"))
    second = tmp_path / "second"
    run_train("gdmix_lr", ["--data_location", generated, "--output_dir", second, "--config", config])
    one, two = (json.loads((d / "result.json").read_text()) for d in (first, second))
    assert [c["validation_auc"] for c in two["coordinates"]] == pytest.approx(
        [c["validation_auc"] for c in one["coordinates"]], abs=1e-9)
    assert not (second / "global" / "models").exists() and (second / "global" / "validation_scores").is_dir()


def test_wide_and_deep_scores_feed_the_random_effects(generated, tmp_path):
    """Wide & Deep trained on the MovieLens schema, its --predict files (label,probability in file order)
    as the global coordinate: the per-user and per-movie models then improve on it."""
    wd = tmp_path / "wd"
    common = ["--schema", REPO / "modelzoo" / "schemas" / "movielens.json", "--checkpoint", wd]
    data = ["--data_location", generated / "wide_and_deep"]
    run_train("wide_and_deep", common + data + ["--steps", 40, "--no_eval", "--seed", 1])
    train_csv = generated / "wide_and_deep" / "train.csv"
    run_train("wide_and_deep", common + ["--predict", "--train_files", train_csv, "--eval_files", train_csv])
    (wd / "predictions.csv").rename(tmp_path / "train_predictions.csv")
    run_train("wide_and_deep", common + data + ["--predict"])
    config = tmp_path / "wd.yaml"
    config.write_text(CONFIG.read_text().replace(
        "  - name: global\n    type: fixed_effect\n    feature_bag: global\n    l2: 1.0\n    regularize_intercept: false\n",
        f"  - name: wide_and_deep\n    type: scores\n    training_scores: {tmp_path / 'train_predictions.csv'}\n"
        f"    validation_scores: {wd / 'predictions.csv'}\n"))
    out = tmp_path / "out"
    run_train("gdmix_lr", ["--data_location", generated, "--output_dir", out, "--config", config])
    aucs = [c["validation_auc"] for c in json.loads((out / "result.json").read_text())["coordinates"]]
    assert aucs[0] > 0.55 and aucs[0] < aucs[1] < aucs[2], aucs
    # The rows of a score file without uids must be the split's rows in order: a shuffled file is refused.
    lines = (tmp_path / "train_predictions.csv").read_text().splitlines()
    (tmp_path / "train_predictions.csv").write_text("\n".join(lines[:1] + lines[1:][::-1]) + "\n")
    proc = run_train("gdmix_lr", ["--data_location", generated, "--output_dir", out, "--config", config], check=False)
    assert proc.returncode == 1 and "not in the same order" in proc.stderr and "Traceback" not in proc.stderr


def test_two_workers_train_the_same_models_as_one(generated, tmp_path):
    single = tmp_path / "single"
    run_train("gdmix_lr", ["--data_location", generated, "--output_dir", single, "--partitions", 6])
    shared = tmp_path / "shared"
    cluster = {"chief": ["127.0.0.1:2222"], "worker": ["127.0.0.1:2223"]}
    procs = []
    for kind in ("chief", "worker"):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": kind, "index": 0}}))
        procs.append(subprocess.Popen([sys.executable, str(REPO / "gdmix_lr" / "train.py"), "--data_location",
                                       str(generated), "--output_dir", str(shared), "--partitions", "6"],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "[chief:0]" in outputs[0] and "[worker:0]" in outputs[1]
    assert json.loads((shared / "result.json").read_text())["workers"] == 2
    for name in COORDINATES:
        one, two = models_of(single / name), models_of(shared / name)
        assert one.keys() == two.keys()
        for model_id in one:
            assert np.allclose(list(one[model_id].values()), list(two[model_id].values()), rtol=0, atol=1e-9)
        parts = sorted(os.listdir(shared / name / "models"))
        assert parts == (["part-00000.avro"] if name == "global" else [f"part-{p:05d}.avro" for p in range(6)])
        one, two = (scores_by_uid(d / name, "validation_scores") for d in (single, shared))
        assert one.keys() == two.keys()
        assert np.allclose([one[u]["predictionScore"] for u in one], [two[u]["predictionScore"] for u in one],
                           rtol=0, atol=1e-9)


def test_tf_config_ranks_chief_first_and_refuses_parameter_servers():
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"], "ps": ["d:1"]}
    ranks = [world_from_tf_config(json.dumps({"cluster": cluster, "task": {"type": t, "index": i}})).rank
             for t, i in (("chief", 0), ("worker", 0), ("worker", 1))]
    assert ranks == [0, 1, 2]
    assert world_from_tf_config("").size == 1
    with pytest.raises(ClusterError, match="Chief and Worker replicas only"):
        world_from_tf_config(json.dumps({"cluster": cluster, "task": {"type": "ps", "index": 0}}))
    with pytest.raises(ClusterError, match="TF_CONFIG"):
        world_from_tf_config("{not json")


def write_config(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("change,message", [
    (("entity: user_id", "entity: customer_id"), "entity column 'customer_id' is not in the data"),
    (("feature_bag: per_movie", "feature_bag: per_region"), "feature bag 'per_region' is not in the data"),
])
def test_config_naming_what_the_data_lacks_is_refused(generated, tmp_path, change, message):
    config = write_config(tmp_path, CONFIG.read_text().replace(*change))
    proc = run_train("gdmix_lr", ["--data_location", generated, "--output_dir", tmp_path / "out", "--config", config],
                     check=False)
    assert proc.returncode == 1 and message in proc.stderr and str(config) in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("text,message", [
    ("coordinates: []\n", "non-empty `coordinates` list"),
    ("coordinates:\n  - {name: g, type: fixed_effect}\n", "a fixed_effect needs feature_bag"),
    ("coordinates:\n  - {name: g, type: mixed, feature_bag: global}\n", "type 'mixed' is not one of"),
    ("coordinates:\n  - {name: g, type: fixed_effect, feature_bag: global, lambda: 2}\n", "unknown key(s) ['lambda']"),
    ("coordinates:\n  - {name: g, type: fixed_effect, feature_bag: global, l2: -1}\n", "l2 >= 0"),
])
def test_malformed_configs_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, text))
    assert message in str(err.value) and "config.yaml" in str(err.value)


def test_config_feature_bags_add_a_coordinate_without_code(generated, tmp_path):
    config = write_config(tmp_path, CONFIG.read_text().replace("coordinates:\n", "feature_bags:\n  genres: ['genre=*']\ncoordinates:\n")
                          + "  - name: per_user_genres\n    type: random_effect\n    entity: user_id\n"
                            "    feature_bag: genres\n    l2: 10.0\n")
    out = tmp_path / "out"
    run_train("gdmix_lr", ["--data_location", generated, "--output_dir", out, "--config", config])
    model = next(iter(models_of(out / "per_user_genres").values()))
    assert len(model) == 20 and all(name in (photon.INTERCEPT, "genre") for name, _ in model)


def corrupt(generated, tmp_path, line, column, value):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in os.listdir(generated):
        if os.path.isfile(generated / name):
            (folder / name).write_bytes((generated / name).read_bytes())
    lines = (folder / "train.csv").read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[line - 1].split(",")
    fields[header.index(column)] = value
    lines[line - 1] = ",".join(fields)
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("column,value,message", [("response", "2", "response"), ("age", "nan", "age")])
def test_bad_rows_stop_with_file_and_line(generated, tmp_path, column, value, message):
    folder = corrupt(generated, tmp_path, 7, column, value)
    proc = run_train("gdmix_lr", ["--data_location", folder, "--output_dir", tmp_path / "out"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "train.csv" in proc.stderr and "7" in proc.stderr and message in proc.stderr


def test_an_empty_partition_is_refused(tmp_path):
    data = tmp_path / "data"
    movielens.generate(data, seed=1, users=30, movies=40, rows=900)
    proc = run_train("gdmix_lr", ["--data_location", data, "--output_dir", tmp_path / "out", "--partitions", 64],
                     check=False)
    assert proc.returncode == 1 and "has no training entity" in proc.stderr and "--partitions" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_folder_without_movielens_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    proc = run_train("gdmix_lr", ["--data_location", tmp_path, "--output_dir", tmp_path / "out"], check=False)
    assert proc.returncode == 1 and "neither the official ml-100k files" in proc.stderr


def test_padding_ladder_wastes_at_most_a_quarter():
    counts = np.arange(1, 5000)
    padded = glmix.padded_length(counts)
    assert (padded >= counts).all() and (padded <= np.ceil(counts * 1.25 + 1)).all()
    assert glmix.padded_length([0])[0] == 0


def test_flags_are_gdmix_specific():
    parser = load_train_module("gdmix_lr").build_parser()
    args = parser.parse_args([])
    assert args.sweeps == 1 and args.partitions == 4 and args.data_location is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--sweeps", "0"])


@pytest.fixture
def data_folders(tmp_path):
    """{mode: --data_location}: a prepared folder, the ml-100k files (their names: what selects the mode), none."""
    gd = load_train_module("gdmix_lr")
    prepared, official = tmp_path / "prepared", tmp_path / "ml-100k"
    prepared.mkdir()
    (prepared / movielens.FEATURES_FILE).write_text("{}")
    official.mkdir()
    for name in movielens.REQUIRED_SOURCE_FILES:
        (official / name).write_text("")
    return {gd.PREPARED: str(prepared), gd.ML100K: str(official), gd.GENERATED: None}


@pytest.mark.fast
def test_every_gdmix_flag_acts_or_is_refused_in_every_mode(data_folders, capsys):
    """gdmix_lr's refusal table walked against each data mode, in one process and in several: a flag that does
    nothing there (--seed or --train_fraction with a prepared folder, --generate_* with real data, --wait_timeout
    in one process) is refused in one line naming it and the mode; elsewhere it parses and validates."""
    gd = load_train_module("gdmix_lr")
    parser = gd.build_parser()
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in actions} == set(gd.ACTS_IN)  # a flag added without its modes fails here
    refused = set()
    for data_mode, location in data_folders.items():
        for processes in (gd.ONE, gd.SEVERAL):
            world = SimpleNamespace(size=3 if processes == gd.SEVERAL else 1)
            for action in actions:
                value = "0.5" if action.dest == "train_fraction" else location or "x" if \
                    action.dest == "data_location" else "2"
                base = ["--data_location", location] if location and action.dest != "data_location" else []
                args = parser.parse_args([*base, action.option_strings[0], value])
                if action.dest == "data_location":
                    continue  # (it chooses the mode)
                idle = [m for m in (data_mode, processes) if m not in gd.ACTS_IN[action.dest]]
                if idle:
                    with pytest.raises(FlagError) as err:
                        gd.validate(args, world)
                    assert err.value.message == gd.refusal(action.dest, idle[0], location)
                    refused.add((action.dest, idle[0]))
                else:
                    gd.validate(args, world)
    assert {("seed", gd.PREPARED), ("train_fraction", gd.PREPARED), ("generate_rows", gd.ML100K),
            ("generate_users", gd.PREPARED), ("wait_timeout", gd.ONE)} <= refused


def test_gdmix_refuses_seed_with_a_prepared_folder_in_one_line(generated, tmp_path):
    proc = run_train("gdmix_lr", ["--data_location", generated, "--output_dir", tmp_path, "--seed", 3], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (f"gdmix_lr/train.py: error: --seed acts on the 80/20 split and the "
                                            f"generated data, and --data_location {generated} is a prepared folder "
                                            "(features.json), read as it is; drop --seed")


def test_a_negative_seed_is_refused_before_any_work(capsys):
    """numpy's generators (the split, the generated data) take no negative seed: refused as a flag."""
    parser = load_train_module("gdmix_lr").build_parser()
    with pytest.raises(SystemExit) as err:
        parser.parse_args(["--seed", "-1"])
    assert err.value.code == 2
    assert "--seed: expected an integer from 0 to 2**63-1, got -1" in capsys.readouterr().err
    assert parser.parse_args(["--seed", "0"]).seed == 0


def test_a_row_of_weight_two_counts_as_two_rows():
    """Sample weights: a row of weight 2 gives the models of that row written twice (fixed and random effects)."""
    rng = np.random.default_rng(3)
    x = glmix.with_intercept(rng.normal(size=(60, 4)))
    labels = (rng.random(60) < 0.5).astype(float)
    offsets = rng.normal(size=60) * 0.3
    entity = np.repeat(np.arange(3), 20)
    weights = np.ones(60)
    weights[::7] = 2.0
    twice = np.concatenate([np.arange(60), np.arange(60)[::7]])
    fixed = [glmix.solve_fixed_effect(x, labels, weights, offsets, 1.0).coefficients,
             glmix.solve_fixed_effect(x[twice], labels[twice], np.ones(twice.size), offsets[twice], 1.0).coefficients]
    assert np.abs(fixed[0] - fixed[1]).max() < 1e-5
    random = [glmix.solve_random_effect(x, labels, weights, offsets, entity, 3, 1.0).coefficients,
              glmix.solve_random_effect(x[twice], labels[twice], np.ones(twice.size), offsets[twice], entity[twice], 3,
                                        1.0).coefficients]
    assert np.abs(random[0] - random[1]).max() < 1e-6
    assert np.abs(random[0] - glmix.solve_random_effect(x, labels, np.ones(60), offsets, entity, 3, 1.0)
                  .coefficients).max() > 1e-3  # the weights did change the models


def test_a_killed_runs_leftovers_do_not_leak_into_the_outputs(generated, tmp_path):
    stale = tmp_path / ".staging-local" / "per_user" / "models"
    stale.mkdir(parents=True)
    (stale / "part-00099.avro").write_bytes(b"from a run killed while writing")
    (tmp_path / ".staging-0123abcd").mkdir()
    run_train("gdmix_lr", ["--data_location", generated, "--output_dir", tmp_path])
    assert sorted(os.listdir(tmp_path / "per_user" / "models")) == [f"part-{p:05d}.avro" for p in range(4)]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".staging-")]


def test_a_run_killed_while_moving_its_outputs_leaves_no_result_json_and_whole_files(generated, tmp_path):
    """result.json says the coordinate folders are complete and of one run: a run killed while it
    replaces them (the second of three folders) leaves none, every file there is a whole Avro file,
    and the same command again writes them all."""
    run_train("gdmix_lr", ["--data_location", generated, "--output_dir", tmp_path])
    killed = subprocess.run([sys.executable, "tests/fault_injection.py", "gdmix_move:2", "gdmix_lr/train.py",
                             "--data_location", str(generated), "--output_dir", str(tmp_path), "--sweeps", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL and "fault_injection: SIGKILL before moving" in killed.stdout
    assert not (tmp_path / "result.json").exists()
    for path in tmp_path.glob("*/*/part-*.avro"):
        photon.read_records(path)  # whole: fastavro reads it to the end
    again = run_train("gdmix_lr", ["--data_location", generated, "--output_dir", tmp_path, "--sweeps", "2"])
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["flags"]["sweeps"] == 2 and "outputs:" in again.stdout
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".staging-")]


def test_a_score_file_with_a_non_numeric_score_names_its_line(generated, tmp_path):
    scores = tmp_path / "scores.csv"
    uids = movielens.load(generated).train.uid.tolist()
    scores.write_text("uid,score\n" + "".join(f"{u},{'oops' if i == 3 else 0.5}\n" for i, u in enumerate(uids)))
    config = write_config(tmp_path, f"coordinates:\n  - name: other\n    type: scores\n    training_scores: {scores}\n"
                                    f"    validation_scores: {scores}\n")
    proc = run_train("gdmix_lr", ["--data_location", generated, "--output_dir", tmp_path / "out", "--config", config],
                     check=False)
    assert proc.returncode == 1 and f"{scores} (coordinate other):5: the score is not a finite number" in proc.stderr
    assert "Traceback" not in proc.stderr

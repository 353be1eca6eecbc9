"""Tests of modelzoo/datasets/movielens.py: MovieLens 100k prepared for mixed models (gdmix_lr) and Wide & Deep.

Why: gdmix_lr trains one model per user and per movie on these rows, so a wrong split, a feature
in the wrong column, a label off by one rating or a truth.json that does not describe the
generated labels would silently give wrong models. The real data is read in place from
../shared/data/ml-100k (never copied); its tests skip when it is absent.
"""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA, run_train
from modelzoo.datasets import movielens as ml
from modelzoo.metrics import roc_auc
from modelzoo.schema import load_schema

ML100K = SHARED_DATA / "ml-100k"
SMALL = dict(users=40, movies=80, rows=1_200)


def need_ml100k():
    if not ml.is_official_ml100k(ML100K):
        pytest.skip(f"official ml-100k not found at {ML100K} (../shared/data beside the checkout)")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """ml-100k prepared with seed 0: (summary, Dataset)."""
    need_ml100k()
    out = tmp_path_factory.mktemp("ml100k") / "seed0"
    summary = ml.prepare(ML100K, out, seed=0)
    return summary, ml.load(out)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Generated data of ml-100k's size, seed 7: (summary, Dataset, truth)."""
    out = tmp_path_factory.mktemp("gen") / "full"
    summary = ml.generate(out, seed=7)
    return summary, ml.load(out), json.loads((out / "truth.json").read_text())


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "small"
    ml.generate(out, seed=3, **SMALL)
    return out


@pytest.fixture
def bad(small_folder, tmp_path):
    """A fresh copy of a small generated folder, to break."""
    return shutil.copytree(small_folder, tmp_path / "folder")


def both(ds, name):
    """A per-row array of both splits in uid order (train and validation interleaved back)."""
    uid = np.concatenate([ds.train.uid, ds.validation.uid])
    if name == "features":
        values = np.concatenate([ds.train.features, ds.validation.features])
    elif name == "label":
        values = np.concatenate([ds.train.label, ds.validation.label])
    else:
        values = np.concatenate([ds.train.entities[name], ds.validation.entities[name]])
    return values[np.argsort(uid)]


# ---------------------------------------------------------------------------------------------------------
# Real ml-100k

def test_real_has_all_rows_split_80_20_in_uid_order(real):
    summary, ds = real
    n_train, n_val = len(ds.train), len(ds.validation)
    assert n_train + n_val == 100_000
    assert abs(n_train / 100_000 - 0.8) < 0.01
    assert summary["rows"] == {"train": n_train, "validation": n_val}
    assert np.array_equal(np.sort(np.concatenate([ds.train.uid, ds.validation.uid])), np.arange(100_000))
    for split in (ds.train, ds.validation):
        assert np.all(np.diff(split.uid) > 0), "rows must stay in uid order (W&D predictions are matched by order)"
        assert np.all(split.weight == 1.0)
    assert not ds.synthetic and ds.seed == 0 and "ml-100k" in ds.source


def test_real_split_is_reproducible_for_a_seed_and_differs_for_another(real, tmp_path):
    _, ds = real
    ml.prepare(ML100K, tmp_path / "a", seed=0)
    for name in ("train.csv", "validation.csv", "wide_and_deep/train.csv", "features.json"):
        assert (tmp_path / "a" / name).read_bytes() == (Path(ds.folder) / name).read_bytes(), name
    ml.prepare(ML100K, tmp_path / "b", seed=1)
    other = ml.load(tmp_path / "b")
    assert not np.array_equal(other.train.uid[:1000], ds.train.uid[:1000])
    assert abs(len(other.train) / 100_000 - 0.8) < 0.01
    # the rule gdmix and others may rely on: row i trains iff default_rng(seed).random(n)[i] < fraction
    assert np.array_equal(np.flatnonzero(np.random.default_rng(0).random(100_000) < 0.8), ds.train.uid)


def test_real_labels_are_ratings_above_3(real):
    summary, ds = real
    ratings = np.loadtxt(ML100K / "u.data", dtype=np.int64, usecols=2)
    assert int((ratings > 3).sum()) == 55_375
    assert np.array_equal(both(ds, "label"), (ratings > 3).astype(float))
    assert summary["positive_rate"] == pytest.approx(0.55375)
    assert sum(summary["positives"].values()) == 55_375


def test_real_bags_have_44_20_24_columns(real):
    _, ds = real
    assert ds.label == "response" and ds.entities == ["user_id", "movie_id"]
    assert ds.columns == ml.GLOBAL_FEATURES and len(ds.columns) == 44
    assert [len(ds.bags[b]) for b in ("global", "per_user", "per_movie")] == [44, 20, 24]
    assert ds.bags["per_user"] == [f"genre={g}" for g in ml.GENRES] + ["release_year"]
    assert ds.bags["per_movie"][:3] == ["age", "gender=M", "gender=F"]
    assert "genre=Children's" in ds.bags["per_user"] and "genre=Film-Noir" in ds.bags["per_user"]
    assert list(ds.bag_columns("per_user")) == list(range(24, 44))
    assert list(ds.bag_columns("per_movie")) == list(range(24))
    assert ds.train.features.shape == (len(ds.train), 44) and ds.train.features.dtype == np.float64


def test_real_gender_and_occupation_are_one_hot(real):
    _, ds = real
    cols = {c: i for i, c in enumerate(ds.columns)}
    for split in (ds.train, ds.validation):
        x = split.features
        gender = x[:, [cols["gender=M"], cols["gender=F"]]]
        occupation = x[:, [cols[f"occupation={o}"] for o in ml.OCCUPATIONS]]
        assert np.all(gender.sum(1) == 1) and np.all(occupation.sum(1) == 1)
        assert set(np.unique(gender)) == {0.0, 1.0}
        genres = x[:, [cols[f"genre={g}"] for g in ml.GENRES]]
        assert set(np.unique(genres)) == {0.0, 1.0}


def test_real_first_rating_has_user_196_and_kolya_features(real):
    """u.data line 1 is `196 242 3 881250949`; u.user: 196|49|M|writer; u.item 242: Kolya, 24-Jan-1997, Comedy."""
    _, ds = real
    x, label = both(ds, "features")[0], both(ds, "label")[0]
    assert both(ds, "user_id")[0] == 196 and both(ds, "movie_id")[0] == 242
    assert label == 0.0  # rating 3 is not > 3
    row = dict(zip(ds.columns, x))
    assert row["age"] == 49 / 100
    assert row["gender=M"] == 1.0 and row["gender=F"] == 0.0
    assert row["occupation=writer"] == 1.0
    assert row["release_year"] == 1997 / 2000
    assert [g for g in ml.GENRES if row[f"genre={g}"] == 1.0] == ["Comedy"]
    # and every user's age feature is age/100 from u.user
    users = {int(f[0]): int(f[1]) for f in csv.reader(open(ML100K / "u.user", encoding="latin-1"), delimiter="|")}
    ages = both(ds, "features")[:, 0]
    assert np.array_equal(ages, np.array([users[u] for u in both(ds, "user_id")]) / 100)


def test_real_missing_release_date_gives_zero(real):
    summary, ds = real
    assert summary["missing_release_dates"] == 1  # movie 267, "unknown"
    x, movie = both(ds, "features"), both(ds, "movie_id")
    year = x[:, ds.columns.index("release_year")]
    assert np.all(year[movie == 267] == 0.0)
    assert summary["rows_with_missing_release_date"] == int((movie == 267).sum()) > 0
    assert np.all(year[movie != 267] > 0.95)


def test_real_wide_and_deep_csv_has_the_same_rows_in_the_same_order(real):
    _, ds = real
    schema = load_schema("movielens")
    names = [c.name for c in schema.columns]
    for split, name in ((ds.train, "train.csv"), (ds.validation, "eval.csv")):
        rows = list(csv.reader(open(Path(ds.folder) / "wide_and_deep" / name)))
        assert len(rows) == len(split) and all(len(r) == len(names) for r in rows)
        col = {n: np.array([r[i] for r in rows]) for i, n in enumerate(names)}
        assert np.array_equal(col["label"].astype(float), split.label)
        assert np.array_equal(col["user_id"].astype(int), split.entities["user_id"])
        assert np.array_equal(col["movie_id"].astype(int), split.entities["movie_id"])
        assert np.array_equal(col["age"].astype(float), split.features[:, 0])
        assert np.array_equal(col["release_year"].astype(float), split.features[:, 43])
        assert set(col["gender"]) <= set(schema.columns[names.index("gender")].vocabulary)
        assert set(col["occupation"]) == set(ml.OCCUPATIONS)


# ---------------------------------------------------------------------------------------------------------
# The Wide & Deep schema

def test_schema_file_is_the_one_the_module_describes():
    path = REPO / "modelzoo" / "schemas" / "movielens.json"
    assert path.read_text() == ml.wide_and_deep_schema_text(), \
        "regenerate with: python -c 'from modelzoo.datasets import movielens; movielens.write_wide_and_deep_schema()'"
    schema = load_schema("movielens")
    assert schema.columns[0].kind == "label"
    assert [c.name for c in schema.numeric] == ml.WD_NUMERIC
    assert [c.name for c in schema.categorical] == ml.WD_CATEGORICAL
    assert all(c.normalization == "none" for c in schema.numeric)
    ids = {c.name: c for c in schema.categorical}
    assert ids["user_id"].vocabulary[0] == "1" and len(ids["user_id"].vocabulary) == 943
    assert len(ids["movie_id"].vocabulary) == 1682


def test_wide_and_deep_trains_and_predicts_rows_in_uid_order(small_folder, tmp_path):
    """The W&D files train with modelzoo/schemas/movielens.json, and --predict's rows are the
    validation rows in order (gdmix_lr uses predictions.csv as a score source)."""
    ckpt = tmp_path / "ckpt"
    common = ["--data_location", small_folder / "wide_and_deep", "--schema", REPO / "modelzoo/schemas/movielens.json",
              "--checkpoint", ckpt, "--batch_size", 128, "--deep_hidden_units", 8]
    run_train("wide_and_deep", common + ["--steps", 3])
    run_train("wide_and_deep", common + ["--predict"])
    labels = np.loadtxt(ckpt / "predictions.csv", delimiter=",", skiprows=1, usecols=0)
    assert np.array_equal(labels, ml.load(small_folder).validation.label)


# ---------------------------------------------------------------------------------------------------------
# Generated data

def test_generated_loads_with_the_real_columns_and_bags(generated):
    summary, ds, _ = generated
    assert ds.synthetic and "NOT real" in ds.source and ds.seed == 7
    assert ds.columns == ml.GLOBAL_FEATURES
    assert ds.bags == ml.BAGS
    assert len(ds.train) + len(ds.validation) == 100_000
    assert abs(len(ds.train) / 100_000 - 0.8) < 0.01
    assert abs(summary["positive_rate"] - 0.5537) < 0.02
    users, movies = both(ds, "user_id"), both(ds, "movie_id")
    assert len(np.unique(users)) == 943 and np.bincount(users)[1:].min() >= 20
    assert len(np.unique(users * 10_000 + movies)) == 100_000, "each (user, movie) pair at most once"
    x = both(ds, "features")
    assert np.all(x[:, 1] + x[:, 2] == 1)
    assert np.all(x[:, 3:24].sum(1) == 1)
    assert np.all((x[:, 24:43].sum(1) >= 1) & (x[:, 24:43].sum(1) <= 3))
    first = np.unique(users, return_index=True)[1]
    ages = x[first, 0] * 100
    assert 7 <= ages.min() and ages.max() <= 73 and 25 <= np.median(ages) <= 37
    assert 0.6 < x[first, 1].mean() < 0.8  # ~71% male


def test_generated_is_deterministic_for_a_seed(small_folder, tmp_path):
    ml.generate(tmp_path / "same", seed=3, **SMALL)
    for name in ("train.csv", "validation.csv", "truth.json", "features.json", "wide_and_deep/eval.csv"):
        assert (tmp_path / "same" / name).read_bytes() == (small_folder / name).read_bytes(), name
    ml.generate(tmp_path / "other", seed=4, **SMALL)
    assert (tmp_path / "other" / "train.csv").read_bytes() != (small_folder / "train.csv").read_bytes()


def test_truth_has_every_user_and_movie_and_describes_the_labels(generated):
    summary, ds, truth = generated
    assert set(truth["per_user"]) == {str(u) for u in range(1, 944)}
    assert set(truth["per_movie"]) == {str(m) for m in range(1, 1683)}
    assert list(truth["global"]) == ["(INTERCEPT)"] + ds.bags["global"]
    assert list(truth["per_user"]["1"]) == ["(INTERCEPT)"] + ds.bags["per_user"]
    assert list(truth["per_movie"]["1"]) == ["(INTERCEPT)"] + ds.bags["per_movie"]
    # recompute the known model's probabilities from truth.json and the loaded features
    split = ds.validation
    g = np.array([truth["global"][c] for c in ds.bags["global"]])
    pu, pm = ds.bag_columns("per_user"), ds.bag_columns("per_movie")
    logit = truth["global"]["(INTERCEPT)"] + split.features[:, ds.bag_columns("global")] @ g
    for i, (u, m) in enumerate(zip(split.entities["user_id"], split.entities["movie_id"])):
        tu, tm = truth["per_user"][str(u)], truth["per_movie"][str(m)]
        logit[i] += tu["(INTERCEPT)"] + sum(tu[c] * split.features[i, j] for c, j in zip(ds.bags["per_user"], pu))
        logit[i] += tm["(INTERCEPT)"] + sum(tm[c] * split.features[i, j] for c, j in zip(ds.bags["per_movie"], pm))
    assert roc_auc(split.label, logit) == pytest.approx(summary["truth_auc_validation"], abs=1e-9)
    assert summary["truth_auc_validation"] > 0.8
    assert np.mean(1 / (1 + np.exp(-logit))) == pytest.approx(split.label.mean(), abs=0.02)


def test_generate_command_line_writes_a_folder(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "data" / "generate_movielens.py"), "--output_dir",
                           str(tmp_path / "g"), "--users", "30", "--movies", "50", "--rows", "700", "--seed", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "generated" in proc.stdout and ml.is_prepared(tmp_path / "g")
    again = subprocess.run([sys.executable, str(REPO / "data" / "generate_movielens.py"), "--output_dir",
                            str(tmp_path / "g")], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_prepare_command_line_refuses_to_write_real_data_into_the_repository(tmp_path):
    target = REPO / "modelzoo" / "movielens_prepared_here"
    proc = subprocess.run([sys.executable, str(REPO / "data" / "prepare_movielens.py"), "--source", str(tmp_path),
                           "--output_dir", str(target)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "redistributed" in proc.stderr
    assert not target.exists()


# ---------------------------------------------------------------------------------------------------------
# prepare on small hand-written source files (no real data needed)

def tiny_source(folder, data=None, user=None, item=None):
    """A miniature ml-100k: 3 users, 3 movies (one without a release date), 6 ratings."""
    folder.mkdir(parents=True, exist_ok=True)
    zeros = "|".join(["0"] * 19)
    comedy = "|".join("1" if g == "Comedy" else "0" for g in ml.GENRES)
    (folder / "u.user").write_text(user or "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    (folder / "u.item").write_bytes((item or (
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{comedy}\n"
        f"2|Caf\u00e9 (1996)|05-Mar-1996||http://y|{zeros}\n"
        f"3|unknown||||{zeros}\n")).encode("latin-1"))
    (folder / "u.data").write_text(data or "1\t1\t5\t881250949\n2\t1\t3\t881250950\n3\t2\t4\t881250951\n"
                                           "1\t3\t1\t881250952\n2\t2\t2\t881250953\n3\t3\t4\t881250954\n")
    return folder


def test_prepare_reads_the_official_formats(tmp_path):
    src = tiny_source(tmp_path / "src")
    summary = ml.prepare(src, tmp_path / "out", seed=0, train_fraction=0.5)
    assert summary["missing_release_dates"] == 1 and summary["rows_with_missing_release_date"] == 2
    ds = ml.load(tmp_path / "out")
    assert np.array_equal(both(ds, "label"), [1, 0, 1, 0, 0, 1])
    x = both(ds, "features")
    assert x[0, ds.columns.index("genre=Comedy")] == 1.0 and x[0, ds.columns.index("release_year")] == 1995 / 2000
    assert x[3, ds.columns.index("release_year")] == 0.0
    assert x[1, ds.columns.index("age")] == 0.53 and x[1, ds.columns.index("gender=F")] == 1.0


def test_prepare_finds_the_ml100k_folder_inside_its_parent(tmp_path):
    tiny_source(tmp_path / "download" / "ml-100k")
    found = ml.prepare(tmp_path / "download", tmp_path / "out", seed=0)["rows"]
    assert found == ml.prepare(tmp_path / "download" / "ml-100k", tmp_path / "direct", seed=0)["rows"]
    assert sum(found.values()) == 6, found  # tiny_source's 6 ratings, all read through the parent folder


@pytest.mark.parametrize("kind,kwargs,words", [
    ("missing u.data", None, ["u.data", "missing"]),
    ("short u.data line", dict(data="1\t1\t5\t881250949\n2\t1\t3\n"), ["u.data:2:", "expected 4", "found 3"]),
    ("long u.data line", dict(data="1\t1\t5\t881250949\t9\n"), ["u.data:1:", "found 5"]),
    ("non-integer id", dict(data="1\t1\t5\t881250949\nx\t1\t3\t881250950\n"), ["u.data:2:", "user id 'x'"]),
    ("unknown user", dict(data="1\t1\t5\t881250949\n9\t1\t3\t881250950\n"), ["u.data:2:", "user id 9", "u.user"]),
    ("unknown movie", dict(data="1\t1\t5\t881250949\n\n1\t7\t3\t881250950\n"), ["u.data:3:", "movie id 7", "u.item"]),
    ("bad rating", dict(data="1\t1\t5\t881250949\n1\t2\t6\t881250950\n"), ["u.data:2:", "rating '6'", "1 to 5"]),
    ("bad gender", dict(user="1|24|M|technician|1\n2|53|X|other|2\n3|23|M|writer|3\n"), ["u.user:2:", "gender 'X'"]),
    ("bad occupation", dict(user="1|24|M|technician|1\n2|53|F|other|2\n3|23|M|pilot|3\n"),
     ["u.user:3:", "occupation 'pilot'"]),
    ("duplicate user", dict(user="1|24|M|technician|1\n2|53|F|other|2\n2|23|M|writer|3\n"),
     ["u.user:3:", "user id 2", "line 2"]),
    ("bad date", dict(item="1|A|1995-01-01||u|" + "|".join(["0"] * 19) + "\n"), ["u.item:1:", "release date"]),
    ("bad genre flag", dict(item="1|A|01-Jan-1995||u|" + "|".join(["2"] + ["0"] * 18) + "\n"),
     ["u.item:1:", "genre flag 'unknown'"]),
])
def test_prepare_names_file_and_line_of_bad_source_input(tmp_path, kind, kwargs, words):
    src = tiny_source(tmp_path / "src", **(kwargs or {}))
    if kwargs is None:
        (src / "u.data").unlink()
    with pytest.raises(ml.DataError) as err:
        ml.prepare(src, tmp_path / "out", seed=0)
    for word in words:
        assert word in str(err.value), (kind, str(err.value))
    assert not ml.is_prepared(tmp_path / "out")


def test_prepare_rejects_a_different_occupation_list(tmp_path):
    src = tiny_source(tmp_path / "src")
    (src / "u.occupation").write_text("\n".join(ml.OCCUPATIONS[:5] + ["pilot"] + ml.OCCUPATIONS[6:]) + "\n")
    with pytest.raises(ml.DataError, match=r"u\.occupation: occupation number 6 is 'pilot'"):
        ml.prepare(src, tmp_path / "out", seed=0)


# ---------------------------------------------------------------------------------------------------------
# load: bad prepared folders

def set_field(path, line, column, value):
    """Replace one field (by header name) on a 1-based line of a prepared CSV."""
    lines = path.read_text().split("\n")
    header = lines[0].split(",")
    fields = lines[line - 1].split(",")
    fields[header.index(column)] = value
    lines[line - 1] = ",".join(fields)
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("file,line,column,value,words", [
    ("train.csv", 5, "response", "2", ["train.csv:5:", "'response'", "0 or 1", "'2'"]),
    ("validation.csv", 3, "response", "yes", ["validation.csv:3:", "'response'", "'yes'"]),
    ("train.csv", 7, "age", "nan", ["train.csv:7:", "'age'", "finite number", "'nan'"]),
    ("train.csv", 8, "genre=Drama", "inf", ["train.csv:8:", "'genre=Drama'", "'inf'"]),
    ("validation.csv", 2, "release_year", "abc", ["validation.csv:2:", "'release_year'", "'abc'"]),
    ("train.csv", 4, "gender=M", "", ["train.csv:4:", "'gender=M'", "''"]),
    ("train.csv", 6, "weight", "0", ["train.csv:6:", "'weight'", "positive"]),
    ("validation.csv", 4, "weight", "-1.5", ["validation.csv:4:", "'weight'", "positive"]),
    ("train.csv", 3, "user_id", "1.5", ["train.csv:3:", "'user_id'", "integer"]),
    ("train.csv", 9, "uid", "x", ["train.csv:9:", "'uid'", "integer"]),
])
def test_load_names_file_line_and_column_of_a_bad_value(bad, file, line, column, value, words):
    set_field(bad / file, line, column, value)
    with pytest.raises(ml.DataError) as err:
        ml.load(bad)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_load_rejects_duplicate_uids_within_and_across_files(bad):
    lines = (bad / "train.csv").read_text().split("\n")
    uid3 = lines[2].split(",")[0]
    set_field(bad / "train.csv", 6, "uid", uid3)
    with pytest.raises(ml.DataError, match=rf"train\.csv:6: .*uid {uid3} appears again \(first at line 3\)"):
        ml.load(bad)
    set_field(bad / "train.csv", 6, "uid", lines[5].split(",")[0])
    first_val = (bad / "validation.csv").read_text().split("\n")[1].split(",")[0]
    set_field(bad / "train.csv", 4, "uid", first_val)
    with pytest.raises(ml.DataError, match=rf"validation\.csv:2: .*uid {first_val} is also in .*train\.csv \(line 4\)"):
        ml.load(bad)


def test_load_rejects_a_line_with_a_wrong_field_count(bad):
    lines = (bad / "validation.csv").read_text().split("\n")
    lines[3] += ",1.0"
    (bad / "validation.csv").write_text("\n".join(lines))
    with pytest.raises(ml.DataError, match=r"validation\.csv:4: expected 49 comma-separated fields .*found 50"):
        ml.load(bad)
    lines[3] = ""
    (bad / "validation.csv").write_text("\n".join(lines))
    with pytest.raises(ml.DataError, match=r"validation\.csv:4: .*found an empty line"):
        ml.load(bad)


def test_load_rejects_a_missing_column(bad):
    for name in ("train.csv", "validation.csv"):
        lines = (bad / name).read_text().split("\n")
        cut = [",".join(f for i, f in enumerate(line.split(",")) if i != 4) for line in lines if line]
        (bad / name).write_text("\n".join(cut) + "\n")
    with pytest.raises(ml.DataError, match=r"train\.csv:1: missing column\(s\) \['weight'\]"):
        ml.load(bad)


def test_load_rejects_a_bag_naming_a_column_not_in_the_csv(bad):
    meta = json.loads((bad / "features.json").read_text())
    meta["bags"]["per_user"].append("genre=Noir")
    (bad / "features.json").write_text(json.dumps(meta))
    with pytest.raises(ml.DataError, match=r"features\.json: bag 'per_user' names column\(s\) \['genre=Noir'\]"):
        ml.load(bad)


def test_load_rejects_missing_files(bad, tmp_path):
    (bad / "validation.csv").unlink()
    with pytest.raises(ml.DataError, match=r"validation\.csv: file not found"):
        ml.load(bad)
    (bad / "features.json").unlink()
    with pytest.raises(ml.DataError, match=r"features\.json: file not found"):
        ml.load(bad)
    with pytest.raises(ml.DataError, match="no such folder"):
        ml.load(tmp_path / "nowhere")


def test_load_rejects_a_features_json_of_another_format(bad):
    (bad / "features.json").write_text('{"format": "other/2"}')
    with pytest.raises(ml.DataError, match=r"features\.json: expected \"format\": \"modelzoo-glmix-csv/1\""):
        ml.load(bad)
    (bad / "features.json").write_text("{not json")
    with pytest.raises(ml.DataError, match=r"features\.json: not valid JSON"):
        ml.load(bad)


def test_load_rejects_a_truncated_file(bad):
    lines = (bad / "train.csv").read_text().split("\n")
    (bad / "train.csv").write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(ml.DataError, match=r"train\.csv: .* rows, but .*features\.json says"):
        ml.load(bad)


def test_unknown_bag_is_named_with_the_bags_available(small_folder):
    ds = ml.load(small_folder)
    with pytest.raises(ml.DataError, match=r"features\.json: no feature bag 'per_item'; bags available: "
                                           r"\['global', 'per_movie', 'per_user'\]"):
        ds.bag_columns("per_item")


def test_download_fetches_unzips_and_checks_the_official_archive(tmp_path):
    """--download: the zip is fetched (here from a file:// URL: no internet in CI), unzipped and checked by
    the official u.data's SHA-256, then prepared; a second call keeps the intact copy."""
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"real ml-100k not found at {ML100K}")
    import zipfile
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("u.data", "u.user", "u.item", "u.genre", "u.occupation"):
            zf.write(ML100K / name, f"ml-100k/{name}")
    dest, out = tmp_path / "downloads", tmp_path / "prepared"
    proc = subprocess.run([sys.executable, str(REPO / "data" / "prepare_movielens.py"), "--download", "--url",
                           archive.as_uri(), "--source", str(dest), "--output_dir", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "ml-100k" / "u.data").is_file() and ml.is_prepared(out)
    assert ml.download_ml100k(dest, "file:///nonexistent.zip") == str(dest / "ml-100k")  # kept
    (dest / "ml-100k" / "u.data").write_text("1\t1\t5\t0\n")
    with pytest.raises(ml.DataError, match="cannot download"):
        ml.download_ml100k(dest, "file:///nonexistent.zip")
    with pytest.raises(ml.DataError, match="SHA-256"):
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("ml-100k/u.data", "1\t1\t5\t0\n")
        ml.download_ml100k(tmp_path / "other", bad.as_uri())

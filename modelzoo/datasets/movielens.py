"""MovieLens 100k for mixed models (GDMix's movieLens example) and Wide & Deep (numpy + pandas only).

Two ways to make a prepared folder, and one way to read it:
- `prepare(SOURCE, OUT, seed)` turns the official ml-100k files (u.data, u.user, u.item) into
  feature rows: one row per rating, label `response` = rating > 3, a seeded random 80/20 split;
- `generate(OUT, seed)` writes rows with the same schema and realistic statistics (users' ages,
  genders, occupations, movies' genres and years, long-tailed activity and popularity) whose labels
  are drawn from a known generalized linear mixed model, written to truth.json;
- `load(OUT)` reads and checks a prepared folder: numpy arrays per split and the feature bags.

A prepared folder holds
- train.csv, validation.csv: header `uid,user_id,movie_id,response,weight,<44 feature columns>`;
- wide_and_deep/train.csv, wide_and_deep/eval.csv: the same rows in the same order, in the zoo's
  DeepRec CSV format for modelzoo/schemas/movielens.json (no header; see `wide_and_deep_schema`);
- truth.json (generated data only): the mixed model the labels were drawn from;
- features.json, written last: its presence means the folder is complete.

Feature columns are named Photon-ML style, `name=term` (`name` alone without a term):
user features `age` (age/100), `gender=M`, `gender=F`, `occupation=<occ>` (21, u.occupation order);
movie features `genre=<g>` (19, u.genre order), `release_year` (year/2000; 0.0 when u.item has no
release date, as GDMix's preparation effectively does: one movie of ml-100k, "unknown", id 267).
Bags: `global` = user then movie features, `per_user` = movie features, `per_movie` = user features.
"""
import csv
import hashlib
import io
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd

from modelzoo.datafiles import DataError, open_binary
from modelzoo.io_utils import atomic_write_text, atomic_writer
from modelzoo.metrics import roc_auc

__all__ = ["FORMAT", "DataError", "Split", "Dataset", "is_official_ml100k", "is_prepared", "prepare", "check_csv_text",
           "generate", "load", "wide_and_deep_schema", "GENRES", "OCCUPATIONS", "USER_FEATURES",
           "MOVIE_FEATURES", "GLOBAL_FEATURES", "BAGS"]

FORMAT = "modelzoo-glmix-csv/1"
LABEL = "response"
UID = "uid"
WEIGHT = "weight"
ENTITIES = ["user_id", "movie_id"]
INTERCEPT = "(INTERCEPT)"
TRAIN_FILE, VALIDATION_FILE, FEATURES_FILE, TRUTH_FILE = "train.csv", "validation.csv", "features.json", "truth.json"
WD_FOLDER, WD_TRAIN, WD_EVAL = "wide_and_deep", "train.csv", "eval.csv"
REQUIRED_SOURCE_FILES = ("u.data", "u.user", "u.item")

# u.genre and u.occupation of ml-100k (public category names, in the files' order)
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]
OCCUPATIONS = ["administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
               "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
               "retired", "salesman", "scientist", "student", "technician", "writer"]
GENDERS = ["M", "F"]

USER_FEATURES = ["age"] + [f"gender={g}" for g in GENDERS] + [f"occupation={o}" for o in OCCUPATIONS]
MOVIE_FEATURES = [f"genre={g}" for g in GENRES] + ["release_year"]
GLOBAL_FEATURES = USER_FEATURES + MOVIE_FEATURES
BAGS = {"global": GLOBAL_FEATURES, "per_user": MOVIE_FEATURES, "per_movie": USER_FEATURES}
HEADER = [UID] + ENTITIES + [LABEL, WEIGHT] + GLOBAL_FEATURES

# Wide & Deep CSV columns (names must be valid TensorFlow op names: they name serving placeholders)
WD_GENRE_COLUMNS = ["genre_" + "".join(ch if ch.isalnum() else ("_" if ch == "-" else "") for ch in g).lower()
                    for g in GENRES]
WD_NUMERIC = ["age", "release_year"] + WD_GENRE_COLUMNS
WD_CATEGORICAL = ["user_id", "movie_id", "gender", "occupation"]
ML100K_USERS, ML100K_MOVIES, ML100K_ROWS = 943, 1682, 100_000
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_U_DATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
# Integers are read through float64 (pandas), exact up to 2**53: larger ones would be silently rounded
# (or wrap around on the cast to int64), so they are refused.
MAX_INT = 2 ** 53 - 1


class _Table:
    """Per-entity feature rows and their CSV text, for writing rows without a per-value loop."""

    def __init__(self, ids, features, text, wd_text):
        self.ids = np.asarray(ids, np.int64)            # raw ids, sorted
        self.features = features                         # [entities, F] float64
        self.text = text                                 # CSV text of each entity's features
        self.wd_text = wd_text                           # its Wide & Deep fields

    def index(self, raw_ids):
        return np.searchsorted(self.ids, raw_ids)


def _float_text(values):
    return ",".join(repr(float(v)) for v in values)


def _user_table(ids, ages, genders, occupations):
    """Users' 24 features; genders in GENDERS, occupations in OCCUPATIONS."""
    n = len(ids)
    feats = np.zeros((n, len(USER_FEATURES)))
    feats[:, 0] = np.asarray(ages, np.float64) / 100.0
    g = np.array([GENDERS.index(x) for x in genders])
    o = np.array([OCCUPATIONS.index(x) for x in occupations])
    feats[np.arange(n), 1 + g] = 1.0
    feats[np.arange(n), 1 + len(GENDERS) + o] = 1.0
    text = [_float_text(row) for row in feats]
    # W&D: the age numeric field, and the categorical tail user_id is written per row
    wd = [(repr(float(feats[i, 0])), f"{genders[i]},{occupations[i]}") for i in range(n)]
    return _Table(ids, feats, text, wd)


def _movie_table(ids, genre_flags, years):
    """Movies' 20 features; genre_flags [n, 19] 0/1, years (0 = unknown release date)."""
    n = len(ids)
    feats = np.zeros((n, len(MOVIE_FEATURES)))
    feats[:, :len(GENRES)] = genre_flags
    feats[:, -1] = np.asarray(years, np.float64) / 2000.0
    text = [_float_text(row) for row in feats]
    wd = [repr(float(feats[i, -1])) + "," + ",".join(str(int(v)) for v in feats[i, :len(GENRES)])
          for i in range(n)]
    return _Table(ids, feats, text, wd)


# ---------------------------------------------------------------------------------------------------------
# Data classes and small predicates

@dataclass
class Split:
    uid: np.ndarray                      # int64 [n]
    label: np.ndarray                    # float64 [n], 0/1
    weight: np.ndarray                   # float64 [n], > 0
    entities: Dict[str, np.ndarray]      # name -> int64 [n]
    features: np.ndarray                 # float64 [n, F], Dataset.columns order
    path: str

    def __len__(self):
        return len(self.uid)


@dataclass
class Dataset:
    train: Split
    validation: Split
    columns: List[str]
    bags: Dict[str, List[str]]
    label: str
    entities: List[str]
    source: str
    synthetic: bool
    seed: int
    folder: str

    def bag_columns(self, bag):
        """Indices into `columns` (and into a Split's features) of a bag's columns."""
        if bag not in self.bags:
            raise DataError(f"{Path(self.folder) / FEATURES_FILE}: no feature bag {bag!r}; "
                            f"bags available: {sorted(self.bags)}")
        where = {c: i for i, c in enumerate(self.columns)}
        return np.array([where[c] for c in self.bags[bag]], dtype=np.int64)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_ml100k(dest_dir, url=ML100K_URL):
    """Download GroupLens' ml-100k.zip into DEST_DIR and unzip it (kept if already there and intact);
    returns DEST_DIR/ml-100k. u.data is checked against the official file's SHA-256."""
    folder = os.path.join(dest_dir, "ml-100k")
    u_data = os.path.join(folder, "u.data")
    if os.path.isfile(u_data) and _sha256(u_data) == ML100K_U_DATA_SHA256:
        return folder
    os.makedirs(dest_dir, exist_ok=True)
    archive = os.path.join(dest_dir, ".ml-100k.zip.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.startswith("ml-100k/") and ".." not in n.split("/")]
            if "ml-100k/u.data" not in names:
                raise DataError(f"{url}: the archive has no ml-100k/u.data; is it GroupLens' ml-100k.zip?")
            zf.extractall(dest_dir, members=names)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DataError(f"cannot download {url} ({getattr(err, 'reason', err)}); download ml-100k.zip from "
                        "https://grouplens.org/datasets/movielens/100k/ yourself, unzip it and pass its folder"
                        ) from None
    except zipfile.BadZipFile:
        raise DataError(f"{url}: not a zip archive") from None
    finally:
        if os.path.exists(archive):
            os.unlink(archive)
    if _sha256(u_data) != ML100K_U_DATA_SHA256:
        raise DataError(f"{u_data}: its SHA-256 is not that of the official ml-100k u.data ({ML100K_U_DATA_SHA256})")
    return folder


def is_official_ml100k(folder):
    """True when `folder` holds the official ml-100k files that `prepare` reads."""
    return all((Path(folder) / name).is_file() for name in REQUIRED_SOURCE_FILES)


def is_prepared(folder):
    """True when `folder` is a complete prepared folder (features.json is written last)."""
    return (Path(folder) / FEATURES_FILE).is_file()


def _find_source(source_dir):
    """The ml-100k folder: SOURCE itself, or SOURCE/ml-100k (the unzipped download's parent)."""
    source = Path(source_dir)
    if is_official_ml100k(source):
        return source
    if is_official_ml100k(source / "ml-100k"):
        return source / "ml-100k"
    if not source.is_dir():
        raise DataError(f"{source}: no such folder, expected the unzipped ml-100k download "
                        f"({', '.join(REQUIRED_SOURCE_FILES)})")
    missing = [n for n in REQUIRED_SOURCE_FILES if not (source / n).is_file()]
    raise DataError(f"{source}: missing {', '.join(missing)}; expected the official ml-100k files "
                    f"{', '.join(REQUIRED_SOURCE_FILES)} (from GroupLens' ml-100k.zip)")


# ---------------------------------------------------------------------------------------------------------
# Reading the official files

def _sep_name(sep):
    return {"\t": "tab", "|": "'|'", ",": "comma"}.get(sep, repr(sep))


def _read_bytes(path):
    with open_binary(path) as f:
        return f.read()


def _decode(data, path, encoding):
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not {encoding} text ({err.reason} at byte {err.start})") from None


def _read_source(path, sep, names, encoding="utf-8"):
    """A `sep`-separated file without header: a frame of strings and the 1-based line of each row.
    Blank lines are skipped; every other line must have len(names) fields."""
    text = _decode(_read_bytes(path), path, encoding)
    rows, numbers = [], []
    for i, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != len(names):
            raise DataError(f"{path}:{i}: expected {len(names)} {_sep_name(sep)}-separated fields "
                            f"({', '.join(names)}), found {len(fields)}")
        rows.append(fields)
        numbers.append(i)
    if not rows:
        raise DataError(f"{path}: no data, expected lines of {len(names)} {_sep_name(sep)}-separated fields")
    return pd.DataFrame(rows, columns=names, dtype=object), np.array(numbers, np.int64)


def _int_column(frame, name, path, lines, what=None, low=-MAX_INT, high=MAX_INT):
    raw = frame[name]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < low) | (values > high)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}:{lines[pos]}: {what or name} {raw.iloc[pos]!r} is not an integer from {low} to {high}")
    return values.astype(np.int64)


def _unique_ids(ids, path, lines, what):
    seen = pd.Series(ids).duplicated().to_numpy()
    if seen.any():
        pos = int(np.flatnonzero(seen)[0])
        first = int(np.flatnonzero(ids == ids[pos])[0])
        raise DataError(f"{path}:{lines[pos]}: {what} {ids[pos]} appears again (first at line {lines[first]})")


def _check_list_file(path, expected, what, encoding="latin-1"):
    """u.genre / u.occupation, when present, must list the official categories in order."""
    if not path.is_file():
        return
    names = []
    with open(path, encoding=encoding) as f:
        for line in f:
            line = line.strip()
            if line:
                names.append(line.split("|")[0])
    if names != expected:
        pos = next((i for i, (a, b) in enumerate(zip(names, expected)) if a != b), min(len(names), len(expected)))
        found = names[pos] if pos < len(names) else "end of file"
        want = expected[pos] if pos < len(expected) else "end of file"
        raise DataError(f"{path}: {what} number {pos + 1} is {found!r}, expected {want!r}: this is not the "
                        f"official ml-100k list ({len(expected)} {what}s: {', '.join(expected)})")


def _read_users(path):
    frame, lines = _read_source(path, "|", ["id", "age", "gender", "occupation", "zip"], encoding="latin-1")
    ids = _int_column(frame, "id", path, lines, "user id", 1)
    ages = _int_column(frame, "age", path, lines, "age", 1, 150)
    _unique_ids(ids, path, lines, "user id")
    gender = frame["gender"].to_numpy(dtype=object)
    bad = ~np.isin(gender, GENDERS)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}:{lines[pos]}: gender {gender[pos]!r} is not one of {GENDERS}")
    occ = frame["occupation"].to_numpy(dtype=object)
    bad = ~np.isin(occ, OCCUPATIONS)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}:{lines[pos]}: occupation {occ[pos]!r} is not one of the {len(OCCUPATIONS)} "
                        f"of u.occupation ({', '.join(OCCUPATIONS)})")
    order = np.argsort(ids)
    return _user_table(ids[order], ages[order], gender[order], occ[order])


def _read_movies(path):
    names = ["id", "title", "release_date", "video_release_date", "url"] + [f"g{i}" for i in range(len(GENRES))]
    frame, lines = _read_source(path, "|", names, encoding="latin-1")
    ids = _int_column(frame, "id", path, lines, "movie id", 1)
    _unique_ids(ids, path, lines, "movie id")
    flags = np.stack([_int_column(frame, f"g{i}", path, lines, f"genre flag {g!r}", 0, 1)
                      for i, g in enumerate(GENRES)], axis=1).astype(np.float64)
    dates = frame["release_date"].str.strip()
    parsed = pd.to_datetime(dates, format="%d-%b-%Y", errors="coerce")
    bad = parsed.isna().to_numpy() & (dates != "").to_numpy()
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}:{lines[pos]}: release date {dates.iloc[pos]!r} is not a date like "
                        "'01-Jan-1995' (or empty)")
    years = parsed.dt.year.fillna(0).to_numpy(dtype=np.float64)
    order = np.argsort(ids)
    return _movie_table(ids[order], flags[order], years[order]), int((years == 0).sum()), ids[years == 0]


def _read_ratings(path, users, movies):
    frame, lines = _read_source(path, "\t", ["user", "item", "rating", "timestamp"])
    user = _int_column(frame, "user", path, lines, "user id")
    item = _int_column(frame, "item", path, lines, "movie id")
    rating = _int_column(frame, "rating", path, lines, "rating", 1, 5)
    _int_column(frame, "timestamp", path, lines, "timestamp")
    for ids, table, what, other in ((user, users, "user id", "u.user"), (item, movies, "movie id", "u.item")):
        pos = np.minimum(table.index(ids), len(table.ids) - 1)
        bad = table.ids[pos] != ids
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}:{lines[p]}: {what} {ids[p]} is not in {other}")
    return user, item, rating


# ---------------------------------------------------------------------------------------------------------
# Writing a prepared folder

def _split_mask(n, seed, train_fraction):
    """Row i trains iff the i-th draw of default_rng(seed).random(n) is below train_fraction."""
    return np.random.default_rng(seed).random(n) < train_fraction


def _check_args(seed, train_fraction):
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 < float(train_fraction) <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")


def _rows_text(uids, user_ids, movie_ids, labels, ui, mi, users, movies):
    ut, mt = users.text, movies.text
    return "".join([f"{u},{a},{b},{y},1.0,{ut[i]},{mt[j]}\n" for u, a, b, y, i, j in
                    zip(uids.tolist(), user_ids.tolist(), movie_ids.tolist(), labels.tolist(),
                        ui.tolist(), mi.tolist())])


def _wd_text(user_ids, movie_ids, labels, ui, mi, users, movies):
    uw, mw = users.wd_text, movies.wd_text
    out = []
    for a, b, y, i, j in zip(user_ids.tolist(), movie_ids.tolist(), labels.tolist(), ui.tolist(), mi.tolist()):
        age, cats = uw[i]
        out.append(f"{y},{age},{mw[j]},{a},{b},{cats}\n")
    return "".join(out)


def _write_prepared(out_dir, users, movies, user_ids, movie_ids, labels, seed, train_fraction, source, synthetic,
                    extra_files=()):
    """Write train/validation CSVs, the Wide & Deep CSVs, any extra files, then features.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = out / FEATURES_FILE
    if done.exists():
        done.unlink()  # the folder is incomplete until features.json is written again, last
    n = len(labels)
    uids = np.arange(n, dtype=np.int64)
    labels = np.asarray(labels, np.int64)
    ui, mi = users.index(user_ids), movies.index(movie_ids)
    train = _split_mask(n, seed, train_fraction)
    header = ",".join(HEADER) + "\n"
    (out / WD_FOLDER).mkdir(exist_ok=True)
    rows, positives = {}, {}
    for split, mask, name, wd_name in (("train", train, TRAIN_FILE, WD_TRAIN),
                                       ("validation", ~train, VALIDATION_FILE, WD_EVAL)):
        idx = np.flatnonzero(mask)
        args = (user_ids[idx], movie_ids[idx], labels[idx], ui[idx], mi[idx], users, movies)
        with atomic_writer(out / name) as f:
            f.write(header)
            f.write(_rows_text(uids[idx], *args))
        with atomic_writer(out / WD_FOLDER / wd_name) as f:
            f.write(_wd_text(*args))
        rows[split], positives[split] = int(len(idx)), int(labels[idx].sum())
    for name, text in extra_files:
        atomic_write_text(out / name, text)
    doc = {"format": FORMAT, "label": LABEL, "uid": UID, "weight": WEIGHT, "entities": list(ENTITIES),
           "bags": {k: list(v) for k, v in BAGS.items()}, "source": source, "synthetic": bool(synthetic),
           "seed": int(seed), "train_fraction": float(train_fraction), "rows": rows}
    atomic_write_text(done, json.dumps(doc, indent=1) + "\n")
    return rows, positives


def prepare(source_dir, out_dir, seed, train_fraction=0.8):
    """Official ml-100k files in SOURCE_DIR (or SOURCE_DIR/ml-100k) -> a prepared folder OUT_DIR.

    Returns a summary: rows and positives per split, positive_rate, users, movies,
    missing_release_dates (movies without a release date, given release_year 0.0),
    rows_with_missing_release_date, seconds.
    """
    _check_args(seed, train_fraction)
    start = time.perf_counter()
    source = _find_source(source_dir)
    _check_list_file(source / "u.genre", GENRES, "genre")
    _check_list_file(source / "u.occupation", OCCUPATIONS, "occupation")
    users = _read_users(source / "u.user")
    movies, missing_dates, undated = _read_movies(source / "u.item")
    user_ids, movie_ids, ratings = _read_ratings(source / "u.data", users, movies)
    labels = (ratings > 3).astype(np.int64)
    description = (f"official MovieLens ml-100k at {source.resolve()}: {len(labels):,} ratings of "
                   f"{len(movies.ids):,} movies by {len(users.ids):,} users; response = rating > 3; "
                   f"release_year 0.0 for {missing_dates} movie(s) without a release date")
    rows, positives = _write_prepared(out_dir, users, movies, user_ids, movie_ids, labels, seed, train_fraction,
                                      description, synthetic=False)
    return {"out_dir": str(out_dir), "source": str(source), "synthetic": False, "seed": int(seed),
            "train_fraction": float(train_fraction), "rows": rows, "positives": positives,
            "positive_rate": float(labels.mean()), "users": int(len(users.ids)), "movies": int(len(movies.ids)),
            "missing_release_dates": missing_dates,
            "rows_with_missing_release_date": int(np.isin(movie_ids, undated).sum()),
            "seconds": round(time.perf_counter() - start, 3)}


# ---------------------------------------------------------------------------------------------------------
# Generated data: ml-100k's schema and statistics, labels from a known mixed model

# Shares of ml-100k's 943 users per occupation (u.occupation order) and 1,682 movies per genre.
OCCUPATION_SHARE = [79, 28, 7, 95, 67, 18, 32, 16, 7, 12, 51, 26, 9, 105, 66, 14, 12, 31, 196, 27, 45]
GENRE_SHARE = [2, 251, 135, 42, 122, 505, 109, 50, 725, 22, 24, 92, 56, 61, 247, 101, 251, 71, 27]
YEAR_1990S_SHARE = [24, 22, 37, 126, 214, 219, 355, 286, 65]  # 1990..1998
MALE_SHARE = 670 / 943
POSITIVE_RATE = 55_375 / 100_000  # ratings > 3 in ml-100k
MIN_ROWS_PER_USER = 20            # ml-100k keeps users with at least 20 ratings
MAX_USER_SHARE = 0.44             # the most active ml-100k user rated 737 of 1,682 movies
POPULARITY_EXPONENT, POPULARITY_OFFSET = 1.2, 30.0  # movie popularity ~ (rank + offset)^-exponent (Zipf-like)
# sizes of the known mixed model's effects (standard deviations)
GLOBAL_SD, PER_USER_SD, PER_USER_INTERCEPT_SD, PER_MOVIE_SD, PER_MOVIE_INTERCEPT_SD = 0.3, 0.8, 1.0, 0.5, 1.0


def _gumbel_top(rng, log_weights, counts, chunk_cells=1 << 22):
    """For each row i, counts[i] distinct column indices drawn without replacement, with probabilities
    proportional to exp(log_weights) (Gumbel top-k); log_weights is [columns] or [rows, columns]."""
    rows, cols = len(counts), log_weights.shape[-1]
    step = max(1, chunk_cells // cols)
    picked = []
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        base = log_weights if log_weights.ndim == 1 else log_weights[lo:hi]
        keys = base + rng.gumbel(size=(hi - lo, cols))
        order = np.argsort(-keys, axis=1, kind="stable")
        for k, row in zip(counts[lo:hi], order):
            picked.append(row[:k])
    return picked


def _allocate(total, weights, low, high):
    """Integer counts in [low, high], summing to total, shared above `low` in proportion to weights."""
    n = len(weights)
    counts = np.full(n, float(low))
    free = np.ones(n, bool)
    remaining = float(total - low * n)
    while remaining > 1e-9 and free.any():
        share = remaining * weights[free] / weights[free].sum()
        room = high - counts[free]
        over = share >= room
        if not over.any():
            counts[free] += share
            break
        idx = np.flatnonzero(free)[over]
        remaining -= float((high - counts[idx]).sum())
        counts[idx] = high
        free[idx] = False
    out = np.floor(counts + 1e-9).astype(np.int64)
    short = int(total - out.sum())
    if short > 0:
        frac = np.where(out < high, counts - out, -1.0)
        out[np.argsort(-frac, kind="stable")[:short]] += 1
    return out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def generate(out_dir, seed, users=ML100K_USERS, movies=ML100K_MOVIES, rows=ML100K_ROWS, train_fraction=0.8):
    """Write a prepared folder of generated data (ml-100k's schema) plus truth.json; returns a summary.

    Deterministic for (seed, users, movies, rows, train_fraction). The split uses the same rule as
    `prepare`; every user has min(20, rows // users) rows or more, each (user, movie) pair at most once.
    """
    _check_args(seed, train_fraction)
    for name, value in (("users", users), ("movies", movies), ("rows", rows)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if rows > users * movies:
        raise ValueError(f"rows={rows:,} is more than users x movies = {users * movies:,} distinct pairs")
    start = time.perf_counter()
    streams = [np.random.default_rng([seed, k]) for k in range(6)]

    # users: ages ~ 7..73 (median ~30, like ml-100k), ~71% male, skewed occupations
    rng = streams[0]
    ages = np.clip(np.round(7 + rng.gamma(3.4, 8.0, users)), 7, 73).astype(np.int64)
    genders = np.where(rng.random(users) < MALE_SHARE, "M", "F")
    occ_p = np.array(OCCUPATION_SHARE, float) / sum(OCCUPATION_SHARE)
    occupations = np.array(OCCUPATIONS, dtype=object)[rng.choice(len(OCCUPATIONS), users, p=occ_p)]
    user_table = _user_table(np.arange(1, users + 1), ages, genders, occupations)

    # movies: 1-3 genres (Drama, Comedy frequent), release years mostly in the 1990s
    rng = streams[1]
    n_genres = rng.choice([1, 2, 3], movies, p=[0.52, 0.34, 0.14])
    picked = _gumbel_top(rng, np.log(np.array(GENRE_SHARE, float)), n_genres)
    flags = np.zeros((movies, len(GENRES)))
    for i, cols in enumerate(picked):
        flags[i, cols] = 1.0
    year_p = np.array(YEAR_1990S_SHARE, float) / sum(YEAR_1990S_SHARE)
    recent = 1990 + rng.choice(len(YEAR_1990S_SHARE), movies, p=year_p)
    older = np.maximum(1920, 1989 - np.floor(rng.exponential(14.0, movies))).astype(np.int64)
    years = np.where(rng.random(movies) < 0.8, recent, older)
    movie_table = _movie_table(np.arange(1, movies + 1), flags, years)

    # rows: long-tailed activity per user (>= 20 rows each), Zipf-like movie popularity, no repeated pair
    rng = streams[2]
    low = min(MIN_ROWS_PER_USER, rows // users)
    high = max(low, min(movies, int(math.ceil(MAX_USER_SHARE * movies))))
    if rows > high * users:
        high = movies
    per_user = _allocate(rows, rng.lognormal(0.0, 1.2, users), low, high)
    rank = rng.permutation(movies) + 1.0
    chosen = _gumbel_top(rng, -POPULARITY_EXPONENT * np.log(rank + POPULARITY_OFFSET), per_user)
    user_ids = np.repeat(np.arange(1, users + 1, dtype=np.int64), per_user)
    movie_ids = np.concatenate(chosen).astype(np.int64) + 1
    order = rng.permutation(rows)  # interleave users, as u.data does
    user_ids, movie_ids = user_ids[order], movie_ids[order]

    # the known mixed model
    rng = streams[3]
    g_coef = rng.normal(0.0, GLOBAL_SD, len(GLOBAL_FEATURES))
    u_int = rng.normal(0.0, PER_USER_INTERCEPT_SD, users)
    u_coef = rng.normal(0.0, PER_USER_SD, (users, len(MOVIE_FEATURES)))
    m_int = rng.normal(0.0, PER_MOVIE_INTERCEPT_SD, movies)
    m_coef = rng.normal(0.0, PER_MOVIE_SD, (movies, len(USER_FEATURES)))
    ui, mi = user_ids - 1, movie_ids - 1
    xu, xm = user_table.features[ui], movie_table.features[mi]
    logit_rest = (np.concatenate([xu, xm], axis=1) @ g_coef + u_int[ui] + np.einsum("ij,ij->i", u_coef[ui], xm)
                  + m_int[mi] + np.einsum("ij,ij->i", m_coef[mi], xu))
    lo_b, hi_b = -20.0, 20.0  # the global intercept that gives ml-100k's positive rate on average
    for _ in range(60):
        mid = (lo_b + hi_b) / 2
        lo_b, hi_b = (mid, hi_b) if _sigmoid(mid + logit_rest).mean() < POSITIVE_RATE else (lo_b, mid)
    intercept = (lo_b + hi_b) / 2
    prob = _sigmoid(intercept + logit_rest)
    labels = (streams[4].random(rows) < prob).astype(np.int64)

    truth = {"global": {INTERCEPT: intercept, **dict(zip(GLOBAL_FEATURES, g_coef.tolist()))},
             "per_user": {str(u + 1): {INTERCEPT: float(u_int[u]), **dict(zip(MOVIE_FEATURES, u_coef[u].tolist()))}
                          for u in range(users)},
             "per_movie": {str(m + 1): {INTERCEPT: float(m_int[m]), **dict(zip(USER_FEATURES, m_coef[m].tolist()))}
                           for m in range(movies)}}
    description = (f"generated by modelzoo/datasets/movielens.py generate(seed={seed}, users={users}, movies={movies}, "
                   f"rows={rows}): ml-100k's schema and statistics, labels drawn from the known mixed model in "
                   f"{TRUTH_FILE}; NOT real MovieLens data")
    rows_out, positives = _write_prepared(out_dir, user_table, movie_table, user_ids, movie_ids, labels, seed,
                                          train_fraction, description, synthetic=True,
                                          extra_files=[(TRUTH_FILE, json.dumps(truth, indent=1) + "\n")])
    valid = ~_split_mask(rows, seed, train_fraction)
    return {"out_dir": str(out_dir), "synthetic": True, "seed": int(seed), "train_fraction": float(train_fraction),
            "rows": rows_out, "positives": positives, "positive_rate": float(labels.mean()), "users": int(users),
            "movies": int(movies), "rows_per_user": {"min": int(per_user.min()), "median": float(np.median(per_user)),
                                                     "max": int(per_user.max())},
            "truth_auc_validation": roc_auc(labels[valid], prob[valid]),
            "seconds": round(time.perf_counter() - start, 3)}


# ---------------------------------------------------------------------------------------------------------
# Loading a prepared folder

def _field(data, line, col):
    """Field `col` (0-based) of 1-based line `line` of a comma-separated file, for error messages."""
    text = data.split(b"\n")[line - 1].rstrip(b"\r").decode("utf-8", errors="replace")
    return text.split(",")[col]


def check_csv_text(data, path):
    """The bytes of a CSV file that pandas is to read, checked line by line: UTF-8, no NUL byte, no "\\r"
    but before "\\n". pandas' parser ends a line at a lone "\\r" too, and what it does with NUL bytes is
    its own: either would make its rows and the file's lines part, and the line numbers of messages wrong."""
    _decode(data, path, "utf-8")
    for found, what in ((data.find(b"\x00"), "contains a NUL byte"),
                        (next((m.start() for m in re.finditer(rb"\r(?!\n)", data)), -1),
                         "contains a carriage return (\\r) that does not end the line")):
        if found >= 0:
            line = data.count(b"\n", 0, found) + 1
            raise DataError(f"{path}:{line}: {what}")


def _read_csv(path, required):
    """A prepared CSV: its header (line 1) and rows; the header must name the `required` columns and
    every row must have as many fields as the header."""
    if not Path(path).exists():
        raise DataError(f"{path}: file not found (an incomplete folder? run data/prepare_movielens.py "
                        "or data/generate_movielens.py again)")
    data = _read_bytes(path)
    check_csv_text(data, path)
    end = data.find(b"\n")
    first = (data if end < 0 else data[:end]).decode("utf-8").rstrip("\r")
    if not first.strip():
        raise DataError(f"{path}:1: expected a header line ({','.join(required)},<feature columns>), found "
                        f"{'an empty file' if not data else 'an empty line'}")
    header = first.split(",")
    if "" in header:
        raise DataError(f"{path}:1: column {header.index('') + 1} of the header has no name")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path}:1: column(s) {dupes} appear more than once in the header")
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {missing} in the header; expected "
                        f"{','.join(required)} and the feature columns")
    # every line's field count, vectorized: commas between consecutive newlines
    raw = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(raw == 10)
    if len(data) and data[-1:] != b"\n":
        newlines = np.append(newlines, len(data))
    commas = np.flatnonzero(raw == 44)
    fields = np.diff(np.concatenate([[0], np.searchsorted(commas, newlines)])) + 1
    bad = np.flatnonzero(fields != len(header))
    if len(bad):
        line = int(bad[0]) + 1
        blank = not data.split(b"\n")[line - 1].strip(b"\r")
        raise DataError(f"{path}:{line}: expected {len(header)} comma-separated fields (as in the header), found "
                        f"{'an empty line' if blank else fields[bad[0]]}")
    frame = pd.read_csv(io.BytesIO(data), sep=",", header=0, engine="c",
                        quoting=csv.QUOTE_NONE, skip_blank_lines=False, encoding="utf-8")
    frame.columns = header  # the names as written (pandas would rename some, e.g. "nan")
    return data, header, frame


def _bad_cell(data, path, header, pos, name, expected):
    line = int(pos) + 2
    col = header.index(name)
    raise DataError(f"{path}:{line}: column {name!r} (field {col + 1}): expected {expected}, found "
                    f"{_field(data, line, col)!r}")


def _numeric(frame, data, name, path, header, expected):
    """A column as float64; a non-numeric, empty, NaN or infinite value is an error naming its line."""
    col = frame[name]
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64)
    else:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        _bad_cell(data, path, header, np.flatnonzero(bad)[0], name, expected)
    return values


def _integers(frame, data, name, path, header):
    expected = f"an integer from {-MAX_INT} to {MAX_INT}"
    values = _numeric(frame, data, name, path, header, expected)
    bad = (values != np.round(values)) | (np.abs(values) > MAX_INT)
    if bad.any():
        _bad_cell(data, path, header, np.flatnonzero(bad)[0], name, expected)
    return values.astype(np.int64)


def _load_split(path, meta, columns_expected=None):
    label, uid, weight, entities = meta["label"], meta["uid"], meta["weight"], meta["entities"]
    required = [uid, *entities, label, weight]
    data, header, frame = _read_csv(path, required)
    special = set(required)
    columns = [c for c in header if c not in special]
    if columns_expected is not None and columns != columns_expected:
        raise DataError(f"{path}:1: feature columns differ from the training file's: expected "
                        f"{columns_expected}, found {columns}")
    uids = _integers(frame, data, uid, path, header)
    labels = _numeric(frame, data, label, path, header, "a label 0 or 1")
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        _bad_cell(data, path, header, np.flatnonzero(bad)[0], label, "a label 0 or 1")
    weights = _numeric(frame, data, weight, path, header, "a positive weight")
    bad = ~(weights > 0)
    if bad.any():
        _bad_cell(data, path, header, np.flatnonzero(bad)[0], weight, "a positive weight")
    ents = {e: _integers(frame, data, e, path, header) for e in entities}
    block = frame[columns]
    numeric = [pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in block.dtypes]
    for name, ok in zip(columns, numeric):
        if not ok:
            _numeric(frame, data, name, path, header, "a finite number")
    feats = block.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(feats)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        _bad_cell(data, path, header, r, columns[c], "a finite number")
    dup = pd.Series(uids).duplicated().to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(uids == uids[pos])[0])
        raise DataError(f"{path}:{pos + 2}: column {uid!r}: uid {uids[pos]} appears again (first at line "
                        f"{first + 2}); expected unique uids")
    return Split(uids, labels, weights, ents, np.ascontiguousarray(feats), str(path)), columns


def _meta(folder):
    path = Path(folder) / FEATURES_FILE
    if not Path(folder).is_dir():
        raise DataError(f"{folder}: no such folder, expected a prepared MovieLens folder "
                        "(data/prepare_movielens.py or data/generate_movielens.py writes one)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found: {folder} is not a complete prepared folder "
                        "(features.json is written last; run data/prepare_movielens.py or "
                        "data/generate_movielens.py)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(f"{path}: expected \"format\": \"{FORMAT}\", found {found!r}")
    kinds = {"label": str, "uid": str, "weight": str, "entities": list, "bags": dict}
    for key, kind in kinds.items():
        if not isinstance(doc.get(key), kind):
            raise DataError(f"{path}: expected key {key!r} holding a {kind.__name__}, found {doc.get(key)!r}")
    # and the optional keys `load` reads, so that a damaged file is named rather than crashing it
    optional = {"entities": (lambda v: all(isinstance(e, str) for e in v), "a list of column names"),
                "rows": (lambda v: isinstance(v, dict) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                               for n in v.values()), "row counts per split"),
                "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
                "source": (lambda v: isinstance(v, str), "a string"),
                "synthetic": (lambda v: isinstance(v, bool), "true or false")}
    for key, (ok, what) in optional.items():
        if key in doc and doc[key] is not None and not ok(doc[key]):
            raise DataError(f"{path}: expected key {key!r} holding {what}, found {doc[key]!r}")
    for bag, cols in doc["bags"].items():
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise DataError(f"{path}: bag {bag!r}: expected a non-empty list of column names, found {cols!r}")
    return path, doc


def load(folder):
    """Read and check a prepared folder; bad input raises DataError naming file, line and column."""
    meta_path, meta = _meta(folder)
    folder = Path(folder)
    train, columns = _load_split(folder / TRAIN_FILE, meta)
    validation, _ = _load_split(folder / VALIDATION_FILE, meta, columns)
    for bag, cols in meta["bags"].items():
        unknown = [c for c in cols if c not in columns]
        if unknown:
            raise DataError(f"{meta_path}: bag {bag!r} names column(s) {unknown} that are not feature columns of "
                            f"{train.path} (its header, line 1)")
    clash = np.isin(validation.uid, train.uid)
    if clash.any():
        pos = int(np.flatnonzero(clash)[0])
        line = int(np.flatnonzero(train.uid == validation.uid[pos])[0]) + 2
        raise DataError(f"{validation.path}:{pos + 2}: column {meta['uid']!r}: uid {validation.uid[pos]} is also "
                        f"in {train.path} (line {line}); expected unique uids across the splits")
    for split, part in (("train", train), ("validation", validation)):
        said = (meta.get("rows") or {}).get(split)
        if said is not None and said != len(part):
            raise DataError(f"{part.path}: {len(part):,} rows, but {meta_path} says {said:,} "
                            "(a truncated or replaced file?)")
    return Dataset(train, validation, columns, {k: list(v) for k, v in meta["bags"].items()}, meta["label"],
                   list(meta["entities"]), str(meta.get("source", "")), bool(meta.get("synthetic", False)),
                   int(meta.get("seed", -1)), str(folder))


# ---------------------------------------------------------------------------------------------------------
# The Wide & Deep schema of the wide_and_deep/ CSVs

def wide_and_deep_schema():
    """The content of modelzoo/schemas/movielens.json (tests check that the file matches)."""
    numeric = [{"name": n, "kind": "numeric", "dtype": "float32", "normalization": "none"} for n in WD_NUMERIC]
    cats = [{"name": "user_id", "kind": "categorical", "vocabulary": [str(i) for i in range(1, ML100K_USERS + 1)],
             "embedding_dim": 16},
            {"name": "movie_id", "kind": "categorical",
             "vocabulary": [str(i) for i in range(1, ML100K_MOVIES + 1)], "embedding_dim": 16},
            {"name": "gender", "kind": "categorical", "vocabulary": list(GENDERS), "embedding_dim": 4},
            {"name": "occupation", "kind": "categorical", "vocabulary": list(OCCUPATIONS), "embedding_dim": 8}]
    return {"name": "movielens",
            "description": ("MovieLens 100k rows prepared by data/prepare_movielens.py (or generated by "
                            "data/generate_movielens.py) in OUT_DIR/wide_and_deep/{train,eval}.csv: label "
                            "(rating > 3), age/100, release_year (year/2000, 0 when unknown), 19 genre flags "
                            "(u.genre order), then user_id, movie_id, gender, occupation as raw strings. "
                            "Numeric values are already scaled (normalization none). Ids use ml-100k's "
                            "vocabularies (users 1..943, movies 1..1682); other ids share one unknown row."),
            "columns": [{"name": "label", "kind": "label"}] + numeric + cats}


def wide_and_deep_schema_text():
    doc = wide_and_deep_schema()
    cols = ",\n  ".join(json.dumps(c) for c in doc["columns"])
    return (f"{{\n \"name\": {json.dumps(doc['name'])},\n \"description\": {json.dumps(doc['description'])},\n"
            f" \"columns\": [\n  {cols}\n ]\n}}\n")


def write_wide_and_deep_schema(path=None):
    path = path or Path(__file__).resolve().parents[1] / "schemas" / "movielens.json"
    atomic_write_text(path, wide_and_deep_schema_text())
    os.chmod(path, 0o644)  # a source file of the repository (atomic writes create private files)
    return path


def summary_text(summary):
    """A few lines describing prepare's or generate's summary, for the command lines."""
    rows, pos = summary["rows"], summary["positives"]
    total = rows["train"] + rows["validation"]
    lines = [f"{'generated' if summary['synthetic'] else 'prepared'} {summary['out_dir']}: {total:,} rows "
             f"({rows['train']:,} train, {rows['validation']:,} validation; seed {summary['seed']}, "
             f"train_fraction {summary['train_fraction']}), {summary['users']:,} users, "
             f"{summary['movies']:,} movies",
             f"positives: {pos['train'] + pos['validation']:,} ({summary['positive_rate']:.2%}); "
             f"train {pos['train']:,}, validation {pos['validation']:,}"]
    if "missing_release_dates" in summary:
        lines.append(f"movies without a release date (release_year 0.0): {summary['missing_release_dates']} "
                     f"({summary['rows_with_missing_release_date']:,} rows)")
    if summary.get("truth_auc_validation") is not None:
        lines.append(f"AUC of the known model's probabilities on validation: {summary['truth_auc_validation']:.4f}; "
                     f"rows per user min {summary['rows_per_user']['min']}, median "
                     f"{summary['rows_per_user']['median']:g}, max {summary['rows_per_user']['max']}")
    lines.append(f"{summary['seconds']:.2f} s")
    return "\n".join(lines)


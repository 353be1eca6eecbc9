"""A synthetic Taobao-shaped click log (numpy only): why sequence models such as DIN exist, as data.

Rows (tab-separated, schema modelzoo/schemas/taobao.json): label, user (the GAUC group), age, gender,
city, the candidate item, its category, and the user's item and category histories (oldest first,
"|"-joined; 0 to MAX_HISTORY items, longer than the schema's max_length for some rows).

The hidden model. Each user has a timeline of clicked items whose category drifts: it stays for a while,
then jumps to another (STAY). A row is the user at some time t of that timeline: the history is the
timeline before t, and the candidate is one of the last REPEAT_WINDOW items again (at REPEAT x 1/2), else
an item of the user's interest at t (what the timeline turns to next) half of the time, else any item
(popularity-weighted). The click probability rises with the candidate category's similarity to the
RECENT history (weights halving every HALF_LIFE items back, so the interest before the last jump counts
little), strongly with the candidate item itself among the last few items (a repeat), with the item's
popularity, and a little with the user's profile (age x category group). So: without the
history a model sees only popularity and profile; a mean over the whole history blurs the old interests
into the new; attention of the candidate over the items can weigh the history items like the candidate.
"""
import os

import numpy as np

from modelzoo.io_utils import atomic_writer
from modelzoo.line_index import IndexingWriter

USERS, ITEMS, CATEGORIES, FACTORS = 4000, 6000, 60, 8
MAX_HISTORY = 40  # the longest generated history (taobao.json keeps the newest 20)
STAY = 0.75  # the chance the timeline's next item keeps the category
HALF_LIFE = 2.0  # items back at which a history item's weight halves
REPEAT_WINDOW, REPEAT = 5, 0.3  # the last items a candidate of the user's interest repeats, at this chance
COLUMNS = ("label", "user", "age", "gender", "city", "item", "cat", "hist_item", "hist_cat")


def _world(seed):
    """The fixed catalogue and users of a seed: categories, items, popularity, profiles, timelines."""
    rng = np.random.default_rng([seed, 1])
    cat_vec = rng.normal(size=(CATEGORIES, FACTORS))
    cat_vec /= np.linalg.norm(cat_vec, axis=1, keepdims=True)
    item_cat = rng.integers(0, CATEGORIES, ITEMS)
    popularity = rng.normal(0.0, 0.5, ITEMS)  # the logit's item term
    pick = np.exp(0.8 * popularity) * rng.pareto(1.5, ITEMS)  # how often an item is shown or clicked
    by_cat = [np.flatnonzero(item_cat == c) for c in range(CATEGORIES)]
    cat_cdf = [np.cumsum(pick[i]) / pick[i].sum() for i in by_cat]  # (sampled by searchsorted: fast)
    age, gender, city = rng.integers(0, 7, USERS), rng.integers(0, 2, USERS), rng.integers(0, 30, USERS)
    age_taste = rng.normal(0.0, 0.4, (7, 6))  # age x category group (category % 6)
    timelines = []
    for _ in range(USERS):
        cats = [rng.integers(CATEGORIES)]
        for _ in range(MAX_HISTORY):
            cats.append(cats[-1] if rng.random() < STAY else rng.integers(CATEGORIES))
        timelines.append(np.array([_draw(by_cat[c], cat_cdf[c], rng) for c in cats]))
    return dict(cat_vec=cat_vec, item_cat=item_cat, popularity=popularity, cdf=np.cumsum(pick) / pick.sum(),
                by_cat=by_cat, cat_cdf=cat_cdf, age=age, gender=gender, city=city, age_taste=age_taste,
                timelines=timelines)


def _draw(items, cdf, rng):
    return items[min(int(np.searchsorted(cdf, rng.random())), len(items) - 1)]


def click_logit(w, user, hist, item):
    """The hidden model's logit of one row (hist: the item ids before t, oldest first)."""
    cat = w["item_cat"][item]
    logit = -1.5 + w["popularity"][item] + w["age_taste"][w["age"][user], cat % 6]
    if len(hist):
        back = np.arange(len(hist))[::-1]  # 0 for the newest
        weight = 0.5 ** (back / HALF_LIFE)
        sim = w["cat_vec"][w["item_cat"][hist]] @ w["cat_vec"][cat]  # 1 for the same category
        logit += 3.0 * float(weight @ sim) / weight.sum()
        logit += 2.0 * float(np.any(hist[-REPEAT_WINDOW:] == item))  # a recent item again
    return logit


def generate_taobao(path, rows, seed=0):
    """Write `rows` rows to `path` (atomically); returns {path, rows, ctr, hidden_auc, seed}."""
    w = _world(seed)
    rng = np.random.default_rng([seed, 2])
    users = rng.integers(0, USERS, rows)
    lines, labels, probs = [], np.zeros(rows, np.int64), np.zeros(rows)
    for r, user in enumerate(users):
        timeline = w["timelines"][user]
        t = int(rng.integers(0, MAX_HISTORY + 1)) if rng.random() > 0.03 else 0  # a few new users: no history
        hist = timeline[:t]
        if t and rng.random() < 0.5 * REPEAT:  # an item of the last few again
            item = hist[-REPEAT_WINDOW:][rng.integers(min(t, REPEAT_WINDOW))]
        elif rng.random() < 0.5:  # the user's interest at t
            nxt = w["item_cat"][timeline[t]]
            item = _draw(w["by_cat"][nxt], w["cat_cdf"][nxt], rng)
        else:
            item = _draw(np.arange(ITEMS), w["cdf"], rng)
        p = 1.0 / (1.0 + np.exp(-click_logit(w, user, hist, item)))
        labels[r], probs[r] = rng.random() < p, p
        lines.append("\t".join([str(labels[r]), f"u{user}", f"a{w['age'][user]}", f"g{w['gender'][user]}",
                                f"c{w['city'][user]}", f"i{item}", f"k{w['item_cat'][item]}",
                                "|".join(f"i{i}" for i in hist), "|".join(f"k{w['item_cat'][i]}" for i in hist)]))
    with atomic_writer(path, "wb") as f:
        out = IndexingWriter(f)  # its line index, counted as it is written (modelzoo/line_index.py)
        out.write(("\n".join(lines) + ("\n" if lines else "")).encode())
    out.save(os.fspath(path))
    return {"path": os.fspath(path), "rows": rows, "ctr": float(labels.mean()) if rows else float("nan"),
            "hidden_auc": auc(labels, probs), "seed": seed}


def auc(labels, scores):
    """ROC AUC by ranks (ties averaged)."""
    labels = np.asarray(labels)
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="mergesort")
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(np.asarray(scores)[order], return_inverse=True, return_counts=True)
    ranks[order] = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    pos = labels.sum()
    neg = len(labels) - pos
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg)) if pos and neg else float("nan")

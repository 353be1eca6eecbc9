"""An Ali-CCP-shaped impression log from a hidden model: a click, then a purchase observed only after a
click (buy <= click), for multi-task models (esmm/, mmoe/).

Why generated: Ali-CCP (Ma et al. 2018) may not be redistributed, and a known hidden model gives what
the real log cannot: each impression's conversion propensity whether or not it was clicked, so a CVR
model can be scored over the entire impression space (ESMM's claim), not only on the clicked rows.

The hidden model, with the two structures ESMM (Ma et al. 2018) exists for:
- a shared part: users belong to clusters and items to categories; each has a latent vector near its
  group's (8 dimensions), and their affinity (user . item / sqrt 8) drives both tasks, conversion more
  than the click (weights CTR_AFFINITY, CVR_AFFINITY). The model sees the user's cluster, age and gender
  and the item's id, category and shop, not the user id (uid is the GAUC group only);
- click-specific: the display position and an item "attractiveness"; conversion-specific: the price
  (the young mind it more) and an item "quality", partly the opposite of attractiveness (BAIT: the
  eye-catching items convert less);
- sample selection: the click favours high affinity and attractive items, so the clicked rows are a
  sample of the impressions unlike the rest on features the CVR model sees (higher affinity, the
  lower-quality eye-catching items), and a CVR model trained on them alone sees little of the space it
  is asked to rank;
- sparsity: about 4.4% of impressions clicked (Ali-CCP: 4.0%, 3.4M clicks of 84M impressions) and about
  2.8% of clicks bought (Ali-CCP: 0.5%, 18k conversions; higher here so that the 100,000-row benchmark
  holds ~120 conversions to learn from, not ~20): few conversions, many clicks to share embeddings with.
The purchase is drawn for every impression (would_buy, independent of the click given the features) and
observed as buy = click x would_buy; p_cvr, would_buy and p_ctr of the eval rows go to eval_truth.csv.
Columns (tab-separated, schema modelzoo/schemas/aliccp.json): click, buy,
uid (the group column: GAUC per user), user_cluster, user_age, user_gender, item_id, category, shop,
position, price.
"""
import os

import numpy as np

from modelzoo.io_utils import atomic_writer
from modelzoo.line_index import IndexingWriter
from modelzoo.run.spec import Task

# What a multi-task model on these rows takes in its ModelSpec (esmm/, mmoe/): the schema, the folder the runner
# generates into, Adam at 0.001 on batches of 1,024 (benchmarks/multitask.py's runs), 16-wide embeddings,
# multi_value columns pooled into the towers' input (modelzoo.layers.embedded_inputs).
MODEL_SETTINGS = {
    "schema": "aliccp",
    "defaults": {"batch_size": 1024, "optimizer": "adam", "learning_rate": 0.001, "data_location": "./data/aliccp"},
    "speed_defaults": {"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False},
    "embedding_dim": 16,
    "list_kinds": ("multi_value",),
}

# The two tasks of a mixture-of-experts model on these rows (mmoe/, ple/). ctcvr's positives are ~36x rarer than
# ctr's: at equal weights the click loss shapes the shared experts and the purchase falls behind a single-task
# model; weight 10 (--task_weights) measured against 1, 5, 20 and 30 in mmoe/README.md.
MIXTURE_TASKS = (Task("ctr", label="click"), Task("ctcvr", label="buy", weight=10.0))

COLUMNS = ("click", "buy", "uid", "user_cluster", "user_age", "user_gender", "item_id", "category", "shop",
           "position", "price")
DIM = 8  # latent width of the hidden model
USERS, ITEMS, CLUSTERS, CATEGORIES, SHOPS, POSITIONS = 4000, 20_000, 40, 120, 3000, 10
CTR_BIAS, CVR_BIAS = -3.3, -7.0  # intercepts: about 4.5% of impressions clicked, 3% of clicks bought
CTR_AFFINITY, CVR_AFFINITY = 0.9, 1.5  # weights of the shared part in each task
POSITION, PRICE, BAIT = 0.12, 0.3, 0.5  # the task-specific features; BAIT: how much attractiveness lowers quality


class World:
    """The hidden model's users and items (drawn from `seed`)."""

    def __init__(self, seed):
        rng = np.random.default_rng([seed, 1])
        self.cluster = rng.integers(0, CLUSTERS, USERS)
        self.age = rng.integers(0, 7, USERS)
        self.gender = rng.integers(0, 2, USERS)
        self.user_vec = rng.normal(size=(CLUSTERS, DIM))[self.cluster] + 0.5 * rng.normal(size=(USERS, DIM))
        self.category = rng.integers(0, CATEGORIES, ITEMS)
        self.shop = rng.integers(0, SHOPS, ITEMS)
        self.item_vec = rng.normal(size=(CATEGORIES, DIM))[self.category] + 0.5 * rng.normal(size=(ITEMS, DIM))
        self.attractive = 0.6 * rng.normal(size=ITEMS)  # click-specific
        self.quality = (0.4 * rng.normal(size=ITEMS) + 0.3 * rng.normal(size=CATEGORIES)[self.category]
                        - BAIT * self.attractive)  # buy: the eye-catching items convert less
        self.log_price = rng.normal(3.0, 0.8, ITEMS) + 0.5 * rng.normal(size=CATEGORIES)[self.category]
        self.user_share, self.item_share = _power_law(USERS, 0.7), _power_law(ITEMS, 0.9)

    def impressions(self, rows, rng):
        """A dict of the columns plus the hidden truth: p_ctr, p_cvr and would_buy (the purchase drawn for
        every impression, observed as `buy` only where clicked)."""
        user = rng.choice(USERS, rows, p=self.user_share)  # heavy users and a long tail
        item = rng.choice(ITEMS, rows, p=self.item_share)
        position = rng.integers(1, POSITIONS + 1, rows)
        affinity = np.einsum("ij,ij->i", self.user_vec[user], self.item_vec[item]) / np.sqrt(DIM)
        price_z = (self.log_price[item] - 3.0) / 0.9
        ctr = CTR_BIAS + CTR_AFFINITY * affinity + self.attractive[item] - POSITION * (position - 1)
        price_effect = PRICE * price_z * (1 + 0.3 * (self.age[user] < 2))  # the young mind the price more
        cvr = CVR_BIAS + CVR_AFFINITY * affinity + self.quality[item] - price_effect
        p_ctr, p_cvr = 1 / (1 + np.exp(-ctr)), 1 / (1 + np.exp(-cvr))
        click = rng.random(rows) < p_ctr
        would_buy = rng.random(rows) < p_cvr
        return {"click": click.astype(int), "buy": (click & would_buy).astype(int), "uid": user,
                "user_cluster": self.cluster[user], "user_age": self.age[user], "user_gender": self.gender[user],
                "item_id": item, "category": self.category[item], "shop": self.shop[item], "position": position,
                "price": np.round(np.exp(self.log_price[item]), 2),
                "p_ctr": p_ctr, "p_cvr": p_cvr, "would_buy": would_buy.astype(int)}


def _power_law(n, exponent):
    """Shares of n ids falling as 1 / (rank + 10) ** exponent."""
    weights = 1.0 / (np.arange(n) + 10.0) ** exponent
    return weights / weights.sum()


def write_rows(path, data):
    """The columns of `data` as tab-separated lines, through a temporary file renamed when complete, and
    its line index, counted as it is written (modelzoo/line_index.py: no count at the first start)."""
    text = [data[c].astype(str) for c in COLUMNS]
    with atomic_writer(path, "wb") as f:
        out = IndexingWriter(f)
        out.write("".join("\t".join(row) + "\n" for row in zip(*text)).encode())
    out.save(os.fspath(path))


def generate_sample(path, rows, seed=0):
    """`rows` impressions into `path` (the runner's sample where --data_location holds no data: its last 10%
    held out, as any file's)."""
    write_rows(path, World(seed).impressions(rows, np.random.default_rng([seed, 2])))


def generate(folder, train_rows, eval_rows, seed=0):
    """FOLDER/train.txt, FOLDER/eval.txt and FOLDER/eval_truth.csv (per eval row: would_buy, p_ctr, p_cvr);
    returns a summary of the rates."""
    os.makedirs(folder, exist_ok=True)
    world = World(seed)
    rng = np.random.default_rng([seed, 2])
    train, held = world.impressions(train_rows, rng), world.impressions(eval_rows, rng)
    write_rows(os.path.join(folder, "train.txt"), train)
    write_rows(os.path.join(folder, "eval.txt"), held)
    truth = os.path.join(folder, "eval_truth.csv")
    with open(truth + ".tmp", "w", encoding="utf-8") as f:
        f.write("would_buy,p_ctr,p_cvr\n")
        f.writelines(f"{w},{a:.6f},{b:.6f}\n" for w, a, b in zip(held["would_buy"], held["p_ctr"], held["p_cvr"]))
    os.replace(truth + ".tmp", truth)
    return {"train_rows": train_rows, "eval_rows": eval_rows, "seed": seed,
            "ctr": float(train["click"].mean()),
            "cvr_on_clicks": float(train["buy"].sum() / max(train["click"].sum(), 1)),
            "ctcvr": float(train["buy"].mean()), "users": int(len(np.unique(train["uid"])))}


def read_truth(path):
    """(would_buy, p_ctr, p_cvr) arrays of an eval_truth.csv."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return table[:, 0], table[:, 1], table[:, 2]

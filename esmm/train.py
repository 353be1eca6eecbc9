"""ESMM (Ma et al. 2018, "Entire Space Multi-Task Model") on an Ali-CCP-shaped log with the shared runner.

A CTR tower and a CVR tower (MLPs 256-128-64) over the same embeddings; pCTCVR = pCTR x pCVR on every
impression. The loss is BCE(click, pCTR) + BCE(click x buy, pCTCVR) over all impressions: the CVR tower
has no loss of its own and learns only through the product, so it is trained over the entire impression
space, not on the clicked rows a CVR model usually sees (the sample selection bias ESMM removes). Tasks:
ctr (the main one: result.json's auc), ctcvr, and cvr (reported on the clicked rows, weight 0). A row
with buy = 1 and click = 0 is refused. Everything not specific to ESMM lives in modelzoo/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.datasets.aliccp import MODEL_SETTINGS  # noqa: E402
from modelzoo.runner import ModelSpec, Task, main  # noqa: E402

TASKS = (Task("ctr", label="click"), Task("ctcvr", label=("click", "buy")),
         Task("cvr", label="buy", within="click", weight=0.0))


def add_flags(group):
    group.add_argument("--tower_units", type=int, nargs="+", default=[256, 128, 64],
                       help="hidden units of each of the CTR and CVR towers")


def build_heads(inputs, args, training):
    from modelzoo.layers import embedded_inputs, logit, mlp
    x = embedded_inputs(inputs)
    return {t: logit(mlp(x, args.tower_units, f"{t}_tower"), f"{t}_logit") for t in ("ctr", "cvr")}


def predict(logits):
    import tensorflow as tf
    ctr, cvr = tf.sigmoid(logits["ctr"]), tf.sigmoid(logits["cvr"])
    return {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}


SPEC = ModelSpec(
    name="esmm",
    tasks=TASKS,
    build_heads=build_heads,
    predict=predict,
    add_flags=add_flags,
    shape_flags=("tower_units",),
    **MODEL_SETTINGS,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

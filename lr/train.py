"""Logistic regression on Criteo with the shared runner: the baseline every deep model must beat.

One weight per hashed categorical value, one per crossed value of the schema's crosses (if any) and one
per normalized numeric column, plus a bias: modelzoo.layers.linear_logit, the same linear part as Wide &
Deep's wide part. It has no MLP, so --bf16 and --dropout are refused; --emb_l2 is its (lazy) L2 penalty.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.flags import LINEAR_FTRL_RATE  # noqa: E402
from modelzoo.runner import ModelSpec, main  # noqa: E402


def build_logits(inputs, args, training):
    from modelzoo.layers import linear_logit
    return linear_logit(inputs)


SPEC = ModelSpec(
    name="lr",
    schema="criteo",
    build_logits=build_logits,
    # measured on the Criteo sample (lr/README.md): FTRL beat Adagrad and Adam; its rate at batch 2,048 is shared
    defaults={"batch_size": 2048, "optimizer": "ftrl", "learning_rate": LINEAR_FTRL_RATE},
    speed_defaults={"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False},
    embedding_dim=1,  # its tables are the weights
    uses_crosses=True,
    has_mlp=False,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

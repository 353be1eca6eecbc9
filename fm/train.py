"""Factorization machine (Rendle, 2010) on Criteo with the shared runner.

logit = bias + first-order weights (modelzoo.layers.linear_logit, as logistic regression: one weight per
hashed categorical value, per crossed value and per numeric column) + the pairwise term
sum_{i<j} <v_i, v_j> (modelzoo.layers.fm_pairwise) over one k-dim vector per field
(modelzoo.layers.field_vectors): a categorical column's vector is its value's embedding (width 16); a numeric
column's vector is a learned field vector scaled by its normalized value, so numeric columns enter both
orders. It has no MLP: --bf16 and --dropout are refused.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.runner import ModelSpec, main  # noqa: E402

EMBEDDING_DIM = 16  # k, the factors per field


def build_logits(inputs, args, training):
    from modelzoo.layers import field_vectors, fm_pairwise, linear_logit
    return linear_logit(inputs) + fm_pairwise(field_vectors(inputs, EMBEDDING_DIM))


SPEC = ModelSpec(
    name="fm",
    schema="criteo",
    build_logits=build_logits,
    # measured on the Criteo sample at 300 steps of 256 (fm/README.md): Adagrad 0.05 with --emb_l2 0.01 beat
    # FTRL 0.1, lazy Adam 0.001, Adagrad 0.2 and --emb_l2 0, 0.1, 1
    defaults={"batch_size": 2048, "optimizer": "adagrad", "learning_rate": 0.05, "emb_l2": 0.01},
    speed_defaults={"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False},
    embedding_dim=EMBEDDING_DIM,
    uses_crosses=True,
    has_mlp=False,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

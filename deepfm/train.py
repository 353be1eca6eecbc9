"""DeepFM (Guo et al., 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction") on
Criteo with the shared runner: fm/'s terms plus a DNN over the same field vectors.

logit = first-order part (modelzoo.layers.linear_logit, lr/'s: one weight per hashed categorical value, per
crossed value and per numeric column, plus a bias; trained with FTRL as lr/ and Wide & Deep's wide part)
+ FM part (modelzoo.layers.fm_pairwise over modelzoo.layers.field_vectors, fm/'s: one 16-wide vector per field)
+ DNN part (a relu MLP, 400-400-400 as the paper's, over those field vectors flattened, and one logit).
The FM and DNN parts read the same embeddings (the paper's point against Wide & Deep's separate inputs) and are
trained with --optimizer. Everything that is not specific to DeepFM lives in modelzoo/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.flags import add_linear_ftrl_flags, positive_int  # noqa: E402
from modelzoo.runner import ModelSpec, linear_ftrl_optimizers, main  # noqa: E402

EMBEDDING_DIM = 16  # k, the factors per field (fm/'s)
DNN = (400, 400, 400)  # the paper's (its section 3.3: 200-400 neurons a layer, 3 hidden layers)


def add_flags(group):
    group.add_argument("--dnn_hidden_units", type=positive_int, nargs="+", default=list(DNN),
                       help="widths of the DNN's hidden layers over the field vectors")
    add_linear_ftrl_flags(group)


def build_logits(inputs, args, training):
    import tensorflow as tf
    from modelzoo.layers import field_vectors, fm_pairwise, linear_logit, logit, mlp
    vectors = field_vectors(inputs, EMBEDDING_DIM)  # [B, fields, k], float32
    flat = tf.reshape(vectors, [-1, vectors.shape[1] * vectors.shape[2]])
    deep = logit(mlp(flat, args.dnn_hidden_units, "dnn"), "dnn_logit")  # (--bf16, --dropout: the runner's scopes)
    return linear_logit(inputs) + fm_pairwise(vectors) + deep


SPEC = ModelSpec(
    name="deepfm",
    schema="criteo",
    build_logits=build_logits,
    # measured on the Criteo sample at 100 steps of 256, 3 seeds (deepfm/README.md): --dropout 0.5 lifts the
    # median from 0.7417 (seed 1 at the dense-only floor) to 0.7553, with --emb_l2 0.001 to 0.7561
    defaults={"batch_size": 2048, "optimizer": "adamasync", "learning_rate": 0.001, "emb_l2": 0.001, "dropout": 0.5},
    speed_defaults={"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False},
    add_flags=add_flags,
    shape_flags=("dnn_hidden_units",),
    embedding_dim=EMBEDDING_DIM,
    optimizers=linear_ftrl_optimizers,  # FTRL for the first order, --optimizer for the rest
    uses_crosses=True,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

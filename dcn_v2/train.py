"""DCN-v2 (Wang et al., 2021, "DCN V2: Improved Deep & Cross Network") on Criteo with the shared runner.

The 13 log-transformed counts and 26 embeddings of width 16 are concatenated into x0; the
stacked structure of the paper: 3 full-rank cross layers x_{l+1} = x0 * (W_l x_l + b_l) + x_l,
then a 512-256 relu DNN and one logit. Everything that is not specific to DCN-v2 lives in modelzoo/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.flags import positive_int  # noqa: E402
from modelzoo.runner import ModelSpec, main  # noqa: E402

EMBEDDING_DIM = 16
DNN = (512, 256)


def add_flags(group):
    group.add_argument("--cross_layers", type=positive_int, default=3, help="number of full-rank cross layers")
    group.add_argument("--dnn_hidden_units", type=positive_int, nargs="+", default=list(DNN),
                       help="widths of the DNN's hidden layers after the cross network")


def cross_network(x0, layers):
    """x_{l+1} = x0 * (W_l x_l + b_l) + x_l, W_l full rank [d, d]; float32 or bfloat16 as x0."""
    from modelzoo.layers import dense
    x = x0
    for i in range(layers):
        x = x0 * dense(x, x0.shape[-1], f"layer{i}") + x
    return x


def build_logits(inputs, args, training):
    import tensorflow as tf
    from modelzoo.layers import active_precision, bf16_getter, logit, mlp
    parts = inputs.tables.lookup(inputs.ids)
    if inputs.dense is not None:
        parts.append(inputs.dense)
    x0 = tf.concat(parts, axis=1)
    bf16 = active_precision() == tf.bfloat16  # the runner's --bf16 scope, as modelzoo.layers.mlp reads it
    with tf.compat.v1.variable_scope("cross", custom_getter=bf16_getter if bf16 else None):
        crossed = tf.cast(cross_network(tf.cast(x0, active_precision()), args.cross_layers), tf.float32)
    return logit(mlp(crossed, args.dnn_hidden_units, "dnn"), "logit")  # the logit float32 even with --bf16


SPEC = ModelSpec(
    name="dcn_v2",
    schema="criteo",
    build_logits=build_logits,
    defaults={"batch_size": 2048, "optimizer": "adamasync", "learning_rate": 0.001},
    speed_defaults={"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False, "emb_fusion_ev": True},
    add_flags=add_flags,
    shape_flags=("cross_layers", "dnn_hidden_units"),
    embedding_dim=EMBEDDING_DIM,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

"""Wide & Deep (Cheng et al., 2016) on Criteo, as DeepRec's and NVIDIA's recipes train it.

Wide part: a linear model over the hashed categorical columns, the normalized integer columns and
the schema's crossed columns (if any), trained with FTRL. Deep part: embeddings of width 64 (128
for the columns with 100,000 or more hash buckets, DeepRec's WDL sizes) and the normalized integer
columns into a 1024-512-256 relu DNN, trained with --optimizer. The two logits are added.
Everything that is not specific to Wide & Deep lives in modelzoo/.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.flags import non_negative_float, positive_float, positive_int  # noqa: E402
from modelzoo.runner import ModelSpec, main  # noqa: E402

WIDE_SCOPE = "linear"  # variables under this scope are trained by FTRL
LARGE_COLUMN_BUCKETS = 100_000  # columns with at least this many hash buckets get the wider embedding


def embedding_dim(column):
    """DeepRec WDL's widths: 128 for the high-cardinality columns, 64 for the others."""
    return 128 if column.num_ids >= LARGE_COLUMN_BUCKETS else 64


def dropout_rate(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a dropout rate in [0, 1), got {text}")
    return value


def add_flags(group):
    group.add_argument("--deep_hidden_units", type=positive_int, nargs="+", default=[1024, 512, 256],
                       help="widths of the DNN's hidden layers")
    group.add_argument("--deep_dropout", type=dropout_rate, default=0.0,
                       help="dropout rate after each hidden layer (training only)")
    group.add_argument("--deep_learning_rate", type=positive_float, dest="learning_rate", default=argparse.SUPPRESS,
                       help="learning rate of the deep part (the same as --learning_rate)")
    group.add_argument("--linear_learning_rate", type=positive_float, default=0.2,
                       help="FTRL learning rate of the wide (linear) part")
    group.add_argument("--linear_l1_regularization", type=non_negative_float, default=0.0,
                       help="FTRL L1 regularization strength of the wide part")
    group.add_argument("--linear_l2_regularization", type=non_negative_float, default=0.0,
                       help="FTRL L2 regularization strength of the wide part")


def optimizers(args, global_step, lr_factor):
    """FTRL for the wide part, --optimizer for everything else (embeddings and DNN)."""
    from modelzoo.optimizers import FtrlOptimizer, build_optimizer
    ftrl = FtrlOptimizer(args.linear_learning_rate * lr_factor,
                         l1_regularization_strength=args.linear_l1_regularization,
                         l2_regularization_strength=args.linear_l2_regularization)
    deep = build_optimizer(args.optimizer, args.learning_rate * lr_factor, global_step=global_step)
    return [(WIDE_SCOPE + "/", ftrl), (None, deep)]


def wide_logit(inputs):
    """Sum of one weight per categorical value, per crossed value and per numeric column, plus a bias."""
    import tensorflow as tf
    from modelzoo.layers import dense
    tf1 = tf.compat.v1
    zeros = tf1.zeros_initializer()
    # the wide weights are input-layer tables: --input_layer_partitioner slices them (the crosses too)
    with tf1.variable_scope(WIDE_SCOPE, reuse=tf1.AUTO_REUSE, partitioner=inputs.tables.partitioner):
        weights = inputs.tables.sibling(inputs.schema.with_embedding_dim(1), initializer=zeros)
        terms = weights.lookup(inputs.ids)
        for i, cross in enumerate(inputs.schema.crosses):
            table = tf1.get_variable(f"cross/{cross.name}", [cross.hash_buckets, 1], initializer=zeros)
            terms.append(tf.nn.embedding_lookup(table, inputs.cross_ids[:, i]))
        if inputs.dense is not None:
            terms.append(dense(inputs.dense, 1, "numeric"))  # weights and the bias
        else:
            terms.append(tf1.get_variable("bias", [1, 1], initializer=zeros) + tf.zeros_like(terms[0]))
        return tf.add_n(terms)


def deep_logit(inputs, args, training):
    import tensorflow as tf
    from modelzoo.layers import logit, mlp
    parts = inputs.tables.lookup(inputs.ids)
    if inputs.dense is not None:
        parts.append(inputs.dense)
    hidden = mlp(tf.concat(parts, axis=1), args.deep_hidden_units, "dnn",
                 dropout=args.deep_dropout if training else 0.0)
    return logit(hidden, "dnn_logit")  # float32 even with --bf16


def build_logits(inputs, args, training):
    return wide_logit(inputs) + deep_logit(inputs, args, training)


SPEC = ModelSpec(
    name="wide_and_deep",
    schema="criteo",
    build_logits=build_logits,
    defaults={"batch_size": 2048, "optimizer": "adamasync", "learning_rate": 0.001},
    speed_defaults={"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False},
    add_flags=add_flags,
    shape_flags=("deep_hidden_units",),
    embedding_dim=embedding_dim,
    optimizers=optimizers,
    uses_crosses=True,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

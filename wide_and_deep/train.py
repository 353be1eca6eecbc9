"""Wide & Deep (Cheng et al., 2016) on Criteo, as DeepRec's and NVIDIA's recipes train it.

Wide part (modelzoo.layers.linear_logit, all of lr/): a linear model over the hashed categorical columns,
the normalized integer columns and the schema's crossed columns (if any), trained with FTRL. Deep part:
embeddings of width 64 (128 for the columns with 100,000 or more hash buckets, DeepRec's WDL sizes) and the
normalized integer columns into a 1024-512-256 relu DNN, trained with --optimizer. The two logits are added.
Everything that is not specific to Wide & Deep lives in modelzoo/.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.flags import add_linear_ftrl_flags, positive_float, positive_int  # noqa: E402
from modelzoo.runner import ModelSpec, linear_ftrl_optimizers, main  # noqa: E402

LARGE_COLUMN_BUCKETS = 100_000  # columns with at least this many hash buckets get the wider embedding


def embedding_dim(column):
    """DeepRec WDL's widths: 128 for the high-cardinality columns, 64 for the others."""
    return 128 if column.num_ids >= LARGE_COLUMN_BUCKETS else 64


def moved_to_dropout(text):
    """--deep_dropout is the shared --dropout now (every model's MLPs): refused, pointing there."""
    raise argparse.ArgumentTypeError(f"--deep_dropout is now the shared --dropout (every model's MLPs); "
                                     f"use --dropout {text}")


def add_flags(group):
    group.add_argument("--deep_hidden_units", type=positive_int, nargs="+", default=[1024, 512, 256],
                       help="widths of the DNN's hidden layers")
    group.add_argument("--deep_dropout", type=moved_to_dropout, default=argparse.SUPPRESS,
                       help="refused: the shared --dropout is the DNN's dropout rate")
    group.add_argument("--deep_learning_rate", type=positive_float, dest="learning_rate", default=argparse.SUPPRESS,
                       help="learning rate of the deep part (the same as --learning_rate)")
    add_linear_ftrl_flags(group)


def deep_logit(inputs, args, training):
    import tensorflow as tf
    from modelzoo.layers import logit, mlp
    parts = inputs.tables.lookup(inputs.ids)
    if inputs.dense is not None:
        parts.append(inputs.dense)
    hidden = mlp(tf.concat(parts, axis=1), args.deep_hidden_units, "dnn")  # (--dropout: the runner's scope)
    return logit(hidden, "dnn_logit")  # float32 even with --bf16


def build_logits(inputs, args, training):
    from modelzoo.layers import linear_logit
    return linear_logit(inputs) + deep_logit(inputs, args, training)


SPEC = ModelSpec(
    name="wide_and_deep",
    schema="criteo",
    build_logits=build_logits,
    defaults={"batch_size": 2048, "optimizer": "adamasync", "learning_rate": 0.001},
    # on small data the deep part at 0.001 has memorized the rows by epoch 4, long before the wide part (lr/'s
    # FTRL) has learned: W&D's best step was under LR's. At 0.0001 both peak together and W&D is not below LR
    # (README, "Small data"; benchmarks/results/small_data_auc.md). Larger data keeps 0.001.
    small_data_defaults={"learning_rate": 0.0001},
    speed_defaults={"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False},
    add_flags=add_flags,
    shape_flags=("deep_hidden_units",),
    embedding_dim=embedding_dim,
    optimizers=linear_ftrl_optimizers,  # FTRL for the wide part, --optimizer for the rest
    uses_crosses=True,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

"""DIN (Zhou et al., 2018), Deep Interest Network, on a user-behaviour log: train, evaluate and export with
the shared runner.

The candidate item (and its category) attends over the user's history of items (and their categories)
with the paper's local activation unit: an MLP over [q, k, q - k, q * k] gives each history position a
weight, padding's weight is 0 and there is no softmax (the weights are not normalized, so the pooled
interest also says how much of the history matches). The weighted sum of the history, the candidate's
embeddings and the other columns (pooled: single ids, multi_value columns by their combiner) feed the top
MLP 200-80 and a logit. The history and its candidate read one table (shares_embedding_with) in one lookup.
`--history_pooling mean` pools the history by its mean instead, `none` leaves it out: the same network
for the comparison (benchmarks/sequence_models.py). Everything that is not specific to DIN lives in modelzoo/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.flags import positive_int  # noqa: E402
from modelzoo.runner import ModelSpec, main  # noqa: E402

EMBEDDING_DIM = 16
TOP_MLP = (200, 80)


def add_flags(group):
    group.add_argument("--attention_units", type=positive_int, nargs="+", default=[80, 40],
                       help="hidden layers of the activation unit (the paper's 80 40)")
    group.add_argument("--history_pooling", choices=("attention", "mean", "none"), default="attention",
                       help="how the history is pooled: by the candidate's attention (DIN), by its mean, or "
                            "left out (for comparison)")


def histories(schema):
    """[(candidate column name, its sequence column)]: every sequence column reading a categorical column's
    table; all of one max_length (their positions are attended together: item and category of one event)."""
    from modelzoo.schema import SchemaError
    pairs = [(c.shares_embedding_with, c) for c in schema.lists if c.kind == "sequence" and c.shares_embedding_with]
    if not pairs:
        raise SchemaError(f"{schema.source}: DIN needs a sequence column that shares_embedding_with a categorical "
                          "column (the history of the candidate's ids); this schema has none")
    if len({c.max_length for _, c in pairs}) > 1:
        raise SchemaError(f"{schema.source}: DIN attends the histories {[c.name for _, c in pairs]} position by "
                          "position: give them one max_length")
    return pairs


def activation_unit(query, keys, mask, units):
    """The paper's local activation unit: query [B, D], keys [B, L, D], mask [B, L] -> weights [B, L], 0 at
    padding, no softmax. (One [B*L, 4D] matrix: a fusable MatMul rather than a batched one.)"""
    import tensorflow as tf
    from modelzoo.layers import logit, mlp
    length, width = keys.shape[1], keys.shape[2]
    q = tf.tile(query[:, None, :], [1, length, 1])
    x = tf.reshape(tf.concat([q, keys, q - keys, q * keys], axis=-1), [-1, 4 * width])
    weights = tf.reshape(logit(mlp(x, units, "attention"), "attention_score"), [-1, length])
    return tf.where(mask, weights, tf.zeros_like(weights))


def build_logits(inputs, args, training):
    import tensorflow as tf
    from modelzoo.layers import logit, mlp
    tables = inputs.tables
    pairs = histories(inputs.schema)
    if args.history_pooling == "none":
        parts = tables.pooled(inputs, exclude=[c.name for _, c in pairs])
    else:
        parts = tables.pooled(inputs, exclude=[n for owner, c in pairs for n in (owner, c.name)])
        looked_up = [tables.lookup_shared(owner, tables.ids_of(inputs, owner), inputs.lists[c.name], c.max_length)
                     for owner, c in pairs]
        query = tf.concat([cand for cand, _ in looked_up], axis=1)  # [B, kD]: the candidate's item and category
        keys = tf.concat([seq for _, (seq, _) in looked_up], axis=2)  # [B, L, kD], zeros at padding
        mask = looked_up[0][1][1]
        for _, (_, more) in looked_up[1:]:
            mask = tf.logical_or(mask, more)
        if args.history_pooling == "attention":
            weights = activation_unit(query, keys, mask, args.attention_units)
        else:
            weights = tf.cast(mask, tf.float32) / tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32), 1, True), 1.0)
        parts += [query, tf.reduce_sum(weights[:, :, None] * keys, axis=1)]
    if inputs.dense is not None:
        parts.append(inputs.dense)
    return logit(mlp(tf.concat(parts, axis=1), TOP_MLP, "top_mlp"), "logit")  # (the mlp in bfloat16 with --bf16)


SPEC = ModelSpec(
    name="din",
    schema="taobao",
    build_logits=build_logits,
    # Adam at 0.004: at 0.001 two epochs of 90,000 generated rows left attention under-trained (AUC 0.638, mean
    # pooling 0.665); at 0.004 0.730 and 0.698 (seed 0, one run each, on the generator before its repeat term;
    # benchmarks/results/sequence_models.md: 3 seeds of the generator as it is)
    defaults={"batch_size": 1024, "optimizer": "adam", "learning_rate": 0.004, "generate_rows": 200_000,
              "data_location": "./data/taobao"},
    speed_defaults={"smartstaged": True, "op_fusion": True, "emb_fusion": False, "xla": False},
    add_flags=add_flags,
    shape_flags=("attention_units", "history_pooling"),
    list_kinds=("multi_value", "sequence"),
    embedding_dim=EMBEDDING_DIM,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

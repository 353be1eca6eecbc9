"""DLRM (Naumov et al., 2019) on Criteo: train, evaluate and export with the shared runner.

Bottom MLP 512-256-64-16 over the 13 log-transformed counts (none for a schema without numeric
columns: the embeddings then interact alone), 26 embeddings of width 16, feature
interaction by pairwise dot products of the 27 vectors (lower triangle, with the bottom output
concatenated; the paper's default) or by concatenation, then the top MLP 512-256-1 to one logit.
Everything that is not specific to DLRM lives in modelzoo/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.runner import ModelSpec, main  # noqa: E402

BOTTOM_MLP = (512, 256, 64, 16)
TOP_MLP = (512, 256, 1)
EMBEDDING_DIM = BOTTOM_MLP[-1]  # the dot interaction needs the bottom output as wide as an embedding


def add_flags(group):
    group.add_argument("--interaction_op", choices=("dot", "cat"), default="dot",
                       help="feature interaction: pairwise dot products (the paper's default) or concatenation")


def interact(bottom, embeddings, op):
    """bottom [B, D] (None: a schema without numeric columns), embeddings [B, C, D] -> the top MLP's input."""
    import tensorflow as tf
    vectors = embeddings if bottom is None else tf.concat([tf.expand_dims(bottom, 1), embeddings], axis=1)
    if op == "cat":
        return tf.reshape(vectors, [-1, vectors.shape[1] * vectors.shape[2]])
    n = vectors.shape[1]
    dots = tf.matmul(vectors, vectors, transpose_b=True)  # [B, n, n]
    lower = [i * n + j for i in range(n) for j in range(i)]  # strictly lower triangle: each pair once
    pairs = tf.gather(tf.reshape(dots, [-1, n * n]), lower, axis=1)
    return pairs if bottom is None else tf.concat([bottom, pairs], axis=1)


def build_logits(inputs, args, training):
    from modelzoo.layers import logit, mlp
    # without numeric columns (Avazu) there is no dense part: no bottom MLP, the embeddings interact alone
    bottom = None if inputs.dense is None else mlp(inputs.dense, BOTTOM_MLP, "bottom_mlp")
    embeddings = inputs.tables.lookup_stacked(inputs.ids)
    if bottom is None and embeddings.shape[1] < 2 and args.interaction_op == "dot":
        from modelzoo.schema import SchemaError
        raise SchemaError(f"{inputs.schema.source}: DLRM's dot interaction needs two vectors, and this schema "
                          "has one categorical column and no numeric one; give more columns or --interaction_op cat")
    top_in = interact(bottom, embeddings, args.interaction_op)
    hidden = mlp(top_in, TOP_MLP[:-1], "top_mlp")  # bfloat16 with --bf16 (the runner's precision scope)
    return logit(hidden, "logit")  # float32 even with --bf16


SPEC = ModelSpec(
    name="dlrm",
    schema="criteo",
    build_logits=build_logits,
    defaults={"batch_size": 2048, "optimizer": "adamasync", "learning_rate": 0.001},
    # measured: one fused table is faster, with or without --ev (benchmarks/results/matrix_emb_fusion_dlrm.md,
    # ev_compare.md there), and scores as well (criteo_sample_auc.py over 7 seeds: dlrm/README)
    speed_defaults={"smartstaged": True, "op_fusion": True, "emb_fusion": True, "xla": False},
    add_flags=add_flags,
    shape_flags=("interaction_op",),
    embedding_dim=EMBEDDING_DIM,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

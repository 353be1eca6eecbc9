"""multi_value and sequence columns through the input pipeline and every kind of tables: the split and cut in
`transform`, pooling, padding and masks, a shared table read once, and --ev never storing or counting padding."""
import os
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo import features as F  # noqa: E402
from modelzoo.schema import parse_schema  # noqa: E402

tf1 = tf.compat.v1
pytestmark = pytest.mark.fast

DIM = 4
SEEDED = tf1.random_uniform_initializer(-0.05, 0.05, seed=1)


def _schema(buckets=50):
    return parse_schema({"columns": [
        {"name": "label", "kind": "label"},
        {"name": "user", "kind": "group"},
        {"name": "item", "kind": "categorical", "hash_buckets": buckets, "embedding_dim": DIM},
        {"name": "tags", "kind": "multi_value", "max_length": 3, "combiner": "mean", "hash_buckets": buckets,
         "embedding_dim": DIM},
        {"name": "tags_sum", "kind": "multi_value", "max_length": 3, "combiner": "sum", "shares_embedding_with": "item"},
        {"name": "hist", "kind": "sequence", "max_length": 3, "shares_embedding_with": "item"},
    ]})


RAW = {"item": ["a", "b", "c"], "tags": ["x|y", "", "x|y|z|w"], "tags_sum": ["a|b", "a||b", ""],
       "hist": ["a|b|c|d|e", "b", ""]}


def _run(fetch, feed=None):
    with tf1.Session() as sess:
        sess.run(tf1.global_variables_initializer())
        return sess.run(fetch, feed)


def _eager(tensor):
    return tensor.numpy()


def _inputs(schema, tables, raw=RAW, keyed=False):
    feats = F.transform({k: tf.constant(v) for k, v in raw.items()}, schema, keyed=keyed)
    return SimpleNamespace(ids=feats[F.IDS], lists=F.lists_of(feats), schema=schema, tables=tables)


def test_transform_splits_drops_empty_tokens_and_cuts_multi_value_first_sequence_newest():
    """An empty field is no id (tf.strings.split("") gives one empty token), "a||b" is two ids, a multi_value
    keeps its first max_length ids and a sequence (oldest first) its newest; a shared column's ids are its
    owner's hash of the same string."""
    schema = _schema()
    with tf.Graph().as_default():
        feats = F.transform({k: tf.constant(v) for k, v in RAW.items()}, schema)
        lists = _run(F.lists_of(feats))
    hashed = lambda *s: _eager(tf.strings.to_hash_bucket_fast(list(s), 50)).tolist()  # noqa: E731
    assert lists["tags"].to_list() == [hashed("x", "y"), [], hashed("x", "y", "z")]
    assert lists["tags_sum"].to_list() == [hashed("a", "b"), hashed("a", "b"), []]
    assert lists["hist"].to_list() == [hashed("c", "d", "e"), hashed("b"), []]


def test_transform_takes_ragged_tokens_as_a_joined_string():
    """A Parquet list column arrives as ragged tokens: the same ids as the joined field."""
    schema = _schema()
    with tf.Graph().as_default():
        joined = F.lists_of(F.transform({k: tf.constant(v) for k, v in RAW.items()}, schema))
        ragged = {**{k: tf.constant(v) for k, v in RAW.items()},
                  "hist": tf.ragged.constant([["a", "b", "c", "d", "e"], ["b"], []], dtype=tf.string)}
        got = F.lists_of(F.transform(ragged, schema))
        a, b = _run((joined["hist"], got["hist"]))
    assert a.to_list() == b.to_list()


def test_raw_dtypes_ask_one_string_per_list_column_and_never_the_group():
    schema = _schema()
    assert F.raw_dtypes(schema) == {"item": tf.string, "tags": tf.string, "tags_sum": tf.string, "hist": tf.string}


@pytest.mark.parametrize("fused", [False, True])
def test_pooled_and_sequence_against_numpy(fused):
    """mean / sum pooling of the rows present (an empty field, here the last row too, pools to zeros: B rows
    out), the sequence padded with zeros to max_length with its mask; a shared column reads its owner's table:
    no table of its own."""
    schema = _schema()
    with tf.Graph().as_default():
        tables = F.EmbeddingTables(schema, fused=fused, initializer=SEEDED)
        inputs = _inputs(schema, tables)
        pooled = tables.pooled(inputs)
        seq, mask = tables.sequence(inputs, "hist")
        names = sorted(v.op.name for v in tf1.global_variables())
        with tables._scope():  # every row of the two tables
            table_of = {c: tables._gather([([schema.table_of(c)], tf.range(50, dtype=tf.int64))])[0][:, 0, :]
                        for c in ("item", "tags")}
        lists = inputs.lists
        got = _run((pooled, seq, mask, table_of, lists, inputs.ids))
    pooled, seq, mask, rows, lists, ids = got
    assert names == (["embedding/fused_dim4"] if fused else ["embedding/item", "embedding/tags"])
    assert len(pooled) == 3 and all(p.shape == (3, DIM) for p in pooled)
    np.testing.assert_allclose(pooled[0], rows["item"][ids[:, 0]], atol=1e-7)
    tags = lists["tags"].to_list()
    np.testing.assert_allclose(pooled[1][0], rows["tags"][tags[0]].mean(0), atol=1e-7)
    np.testing.assert_array_equal(pooled[1][1], np.zeros(DIM))
    np.testing.assert_allclose(pooled[1][2], rows["tags"][tags[2]].mean(0), atol=1e-7)
    sums = lists["tags_sum"].to_list()
    np.testing.assert_allclose(pooled[2][0], rows["item"][sums[0]].sum(0), atol=1e-7)
    np.testing.assert_array_equal(pooled[2][2], np.zeros(DIM))
    assert seq.shape == (3, 3, DIM)
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    hist = lists["hist"].to_list()
    np.testing.assert_allclose(seq[0], rows["item"][hist[0]], atol=1e-7)
    np.testing.assert_allclose(seq[1, 0], rows["item"][hist[1][0]], atol=1e-7)
    np.testing.assert_array_equal(seq[1, 1:], 0.0)
    np.testing.assert_array_equal(seq[2], 0.0)


def test_lookup_shared_is_one_gather_of_one_row():
    """The candidate and its history read one table in one gather: an id's row is the same in both."""
    schema = _schema()
    with tf.Graph().as_default():
        tables = F.EmbeddingTables(schema, fused=False, initializer=SEEDED)
        inputs = _inputs(schema, tables, {**RAW, "item": ["e", "b", "z"]})
        cand, (seq, mask) = tables.lookup_shared("item", tables.ids_of(inputs, "item"), inputs.lists["hist"], 3)
        gathers = [op for op in tf1.get_default_graph().get_operations() if op.type in ("GatherV2", "ResourceGather")
                   and "embedding" in op.name]
        cand, seq, mask = _run((cand, seq, mask))
    assert len(gathers) == 1, [op.name for op in gathers]
    np.testing.assert_array_equal(cand[0], seq[0, 2])  # "e", the newest of row 0's history
    np.testing.assert_array_equal(cand[1], seq[1, 0])  # "b"
    assert mask[2].tolist() == [False] * 3


def test_ev_stores_and_counts_only_the_ids_present():
    """--ev with a counter filter: after one training step the shared table holds exactly the distinct ids of
    the candidate and its (cut) history, padding never looked up, and each id's sightings are its
    occurrences in both (one lookup: "b" is a candidate once and in two histories)."""
    pytest.importorskip("tensorflow_recommenders_addons.dynamic_embedding")
    from modelzoo.embedding_variables import DynamicEmbeddingTables, EVOptions, _de
    schema = _schema()
    raw = {**RAW, "hist": ["a|b|c|d|e", "b", ""], "item": ["b", "b", "q"]}
    with tf.Graph().as_default():
        gs = tf1.train.get_or_create_global_step()
        tables = DynamicEmbeddingTables(schema, False, EVOptions(filter="counter", filter_freq=1), True,
                                        initializer=SEEDED)
        inputs = _inputs(schema, tables, raw, keyed=True)
        cand, (seq, mask) = tables.lookup_shared("item", tables.ids_of(inputs, "item"), inputs.lists["hist"], 3)
        loss = tf.reduce_sum(cand) + tf.reduce_sum(seq)
        opt = _de().DynamicEmbeddingOptimizer(tf1.train.GradientDescentOptimizer(0.1))
        train = tf.group(opt.minimize(loss, global_step=gs), *tables.finish([opt], gs))
        table = tables.tables["item"]
        keys, counts = table.counter.export()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            sess.run(train)
            stored = sess.run(table.tables[0].size())
            keys, counts = sess.run((keys, counts))
    expect = _eager(F.keys_of(tf.constant(["b", "c", "d", "e", "q"])))
    assert list(tables.tables) == ["item"]
    assert stored == 5
    assert dict(zip(keys.tolist(), counts[:, 0].tolist())) == dict(zip(expect.tolist(), [3, 1, 1, 1, 1]))


def test_a_list_separator_equal_to_the_files_delimiter_is_refused(tmp_path):
    from modelzoo.datafiles import DataError, resolve
    schema = parse_schema({"columns": [{"name": "label", "kind": "label"},
                                       {"name": "item", "kind": "categorical", "hash_buckets": 5, "embedding_dim": 2},
                                       {"name": "tags", "kind": "multi_value", "max_length": 2, "separator": ",",
                                        "hash_buckets": 5, "embedding_dim": 2}]})
    path = tmp_path / "train.csv"
    path.write_text("".join(f"{i % 2},i{i},a\n" for i in range(20)))
    args = SimpleNamespace(train_files=str(path), eval_files=None, data_location=None, header="auto",
                           generate_rows=0, seed=0)
    with pytest.raises(DataError, match="list column.*tags.*separator"):
        resolve(args, schema)


def test_tables_sliced_over_ps_tasks_serve_the_list_lookups():
    """--input_layer_partitioner: a shared table sliced in 3 still gives the candidate and its history one row
    per id (the rows of the joined slices), and the gradient to the slices stays sparse."""
    schema = _schema(buckets=50)
    with tf.Graph().as_default():
        tables = F.EmbeddingTables(schema, fused=False, initializer=SEEDED)
        tables.partitioner = tf1.fixed_size_partitioner(3)
        inputs = _inputs(schema, tables)
        cand, (seq, _) = tables.lookup_shared("item", tables.ids_of(inputs, "item"), inputs.lists["hist"], 3)
        pooled = tables.pooled(inputs, exclude=("item", "hist"))
        parts = [v for v in tf1.global_variables() if v.op.name.startswith("embedding/item/part_")]
        grads = tf.gradients(tf.reduce_sum(cand) + tf.reduce_sum(seq), parts)
        whole = tf.concat(parts, 0)
        cand, seq, whole, ids, lists, pooled = _run((cand, seq, whole, inputs.ids, inputs.lists, pooled))
    assert len(parts) == 3 and all(isinstance(g, tf.IndexedSlices) for g in grads)
    np.testing.assert_array_equal(cand, whole[ids[:, 0]])
    np.testing.assert_array_equal(seq[0], whole[lists["hist"].to_list()[0]])
    assert len(pooled) == 2  # tags, tags_sum


def test_tf_feature_columns_refuse_list_columns_in_one_line():
    from modelzoo import flags
    from modelzoo.schema import load_schema
    args = SimpleNamespace(tf=True, ev=False)
    with pytest.raises(flags.FlagError, match=r"--tf .* does not read .*hist_item, hist_cat.*; drop --tf"):
        flags.validate_with_schema(args, load_schema("taobao"), "din", False, ("multi_value", "sequence"))


@pytest.mark.parametrize("model,words", [
    ("dlrm", "dlrm does not read sequence columns (hist_item, hist_cat): declare them 'ignore'"),
    ("esmm", "esmm does not read sequence columns (hist_item, hist_cat): it reads multi_value columns;"),
])
def test_a_model_refuses_the_list_columns_it_does_not_read_instead_of_ignoring_them(model, words):
    from modelzoo import flags
    from modelzoo.models import load_spec
    from modelzoo.schema import load_schema
    spec = load_spec(model)
    with pytest.raises(flags.FlagError, match=re.escape(words)):
        flags.validate_with_schema(SimpleNamespace(tf=False, ev=False), load_schema("taobao"), model,
                                   spec.uses_crosses, spec.list_kinds)


@pytest.mark.parametrize("extra", [["--micro_batch", "2", "--smartstaged"], ["--emb_fusion", "--micro_batch", "2"],
                                   ["--ev", "--emb_fusion", "--ev_filter", "cbf"]])
def test_micro_batches_slice_the_ragged_histories_and_fused_ev_tables_train(extra, tmp_path):
    """--micro_batch slices every feature of the batch, the ragged histories too (transformed in the input
    pipeline with --smartstaged, in the step without); one fused --ev table serves the single ids and each
    candidate with its history (disjoint keys: each column's salt, a history's its owner's). The step trains."""
    import math
    from conftest import tiny_schema_data
    from test_fast_models import train_one_step
    data, schema = tiny_schema_data(tmp_path, "taobao")
    loss, before, after, _ = train_one_step("din", extra, data, schema, tmp_path)
    assert math.isfinite(loss) and (before, after) == (0, 1)

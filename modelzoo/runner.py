"""The Estimator runner shared by every model: flags -> data -> train -> evaluate -> export -> result.json.

A model's train.py gives a `ModelSpec` (its name, schema, defaults and a function from inputs to
logits); everything else lives here once: the session settings behind --op_fusion and --tf, the
input pipeline behind --smartstaged, BF16, micro-batching, optimizers, metrics, throughput and
timeline hooks, checkpoints that resume, the SavedModel export and the run's result.json, and
synchronous data parallelism with Horovod (--hvd, modelzoo/data_parallel.py).
"""
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Union

from modelzoo import data_parallel, distributed
from modelzoo import flags as flaglib
from modelzoo.data_parallel import DataParallelError
from modelzoo.datafiles import DataError, diagnose, resolve
from modelzoo.distributed import ClusterError, progress_variable
from modelzoo.export import ExportError
from modelzoo.io_utils import OutputError, atomic_write_json, atomic_writer, probe_writable, write_problem
from modelzoo.schema import SchemaError, load_schema, schema_summary
from modelzoo.system import bf16_message, cpu_info, peak_rss_mb


class CheckpointMismatch(Exception):
    """--checkpoint holds a model that this run's flags or schema could not restore (or, for
    --evaluate and --predict, no model at all)."""


class TrainingStopped(Exception):
    """Training ended before --steps on purpose: SIGTERM (a final checkpoint was saved) or a NaN/Inf
    loss (the last good checkpoint was kept). `code` is the exit status."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


SIGTERM_EXIT = 143  # 128 + SIGTERM, as a shell reports it; Kubernetes' ExitCode policy retries it


# what a ModelSpec's `defaults` may set (modelzoo/flags.py reads these), and the speed defaults a model may
# give besides one for each of flags.SPEED_SWITCHES (a switch's default with --ev)
MODEL_DEFAULT_KEYS = ("batch_size", "learning_rate", "optimizer", "generate_rows")
OPTIONAL_SPEED_DEFAULTS = tuple(f"{name}_ev" for name in flaglib.SPEED_SWITCHES)


@dataclass
class ModelSpec:
    name: str
    schema: str
    build_logits: Callable  # (ModelInputs, args, training: bool) -> logits [B] or [B, 1]
    defaults: Dict[str, Any] = field(default_factory=dict)
    speed_defaults: Dict[str, bool] = field(default_factory=dict)
    add_flags: Optional[Callable] = None
    uses_crosses: bool = False  # the model reads the schema's crosses (a wide part); else they are refused
    shape_flags: Tuple[str, ...] = ()  # model flags that change the variables
    # embedding widths the model imposes: one for every categorical column, or a function of the column
    embedding_dim: Optional[Union[int, Callable]] = None
    # (args, global_step, lr_factor) -> [(variable-name prefix or None for the rest, optimizer)];
    # default: one --optimizer at --learning_rate for every variable
    optimizers: Optional[Callable] = None
    # (labels [B] float32, logits [B]) -> scalar mean loss; default: binary cross-entropy on one logit
    loss: Optional[Callable] = None

    def __post_init__(self):
        """Refuse a malformed spec when the model's train.py is imported, naming the model and field."""
        def bad(field_name, why):
            raise ValueError(f"ModelSpec {self.name!r}: {field_name} {why}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ModelSpec: name must be a non-empty string, got {self.name!r}")
        for name in ("build_logits", "add_flags", "optimizers", "loss"):
            value = getattr(self, name)
            if (value is not None or name == "build_logits") and not callable(value):
                bad(name, f"must be callable, got {type(value).__name__}")
        if self.embedding_dim is not None and not callable(self.embedding_dim) and \
                not (isinstance(self.embedding_dim, int) and self.embedding_dim > 0):
            bad("embedding_dim", f"must be a positive int or a function of the column, got {self.embedding_dim!r}")
        unknown = sorted(set(self.defaults) - set(MODEL_DEFAULT_KEYS))
        if unknown:
            bad("defaults", f"has unknown keys {unknown} (known: {sorted(MODEL_DEFAULT_KEYS)})")
        speed = set(flaglib.SPEED_SWITCHES)
        missing, extra = sorted(speed - set(self.speed_defaults)), sorted(
            set(self.speed_defaults) - speed - set(OPTIONAL_SPEED_DEFAULTS))
        if missing or extra:
            bad("speed_defaults", (f"lacks {missing}" if missing else "") + (" and " if missing and extra else "")
                + (f"has unknown keys {extra}" if extra else "") + f" (it must give every one of {sorted(speed)})")
        if isinstance(self.shape_flags, str):
            bad("shape_flags", f"must be a tuple of flag names, got the string {self.shape_flags!r}")
        if self.shape_flags:
            import argparse
            parser = argparse.ArgumentParser(add_help=False)
            if self.add_flags:
                self.add_flags(parser)
            added = {action.dest for action in parser._actions}
            unknown = [f for f in self.shape_flags if f not in added]
            if unknown:
                bad("shape_flags", f"names {unknown}, which its add_flags does not add "
                    f"(it adds {sorted(added) or 'none'})")


@dataclass
class ModelInputs:
    """What a model's build_logits receives."""
    dense: Any  # [B, numeric columns] float32, normalized
    ids: Any  # [B, categorical columns] int64 (with --tf: {column: [B] raw strings})
    tables: Any  # modelzoo.features.EmbeddingTables
    schema: Any = None  # modelzoo.schema.Schema (with the model's embedding widths)
    cross_ids: Any = None  # [B, schema crosses] int64, when the schema declares crosses


def set_environment(args):
    """Environment that TensorFlow reads when it starts: set before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ start-up noise; errors still raise
    if args.xla:
        # XLA auto-clustering on CPU is off unless this flag is given; the jit level is set per session.
        flags_now = os.environ.get("TF_XLA_FLAGS", "")
        if "--tf_xla_cpu_global_jit" not in flags_now:
            os.environ["TF_XLA_FLAGS"] = (flags_now + " --tf_xla_cpu_global_jit").strip()


def session_config(args, cluster=None):
    import tensorflow as tf
    from tensorflow.core.protobuf import rewriter_config_pb2
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True,
                                      inter_op_parallelism_threads=args.inter,
                                      intra_op_parallelism_threads=args.intra)
    if cluster is not None:  # a trainer's session sees the PS tasks and itself, never another worker
        config.device_filters.extend(cluster.device_filters())
    rewrite = config.graph_options.rewrite_options
    # Stock TensorFlow runs the remapper by default; --op_fusion false (and --tf) turn it off.
    rewrite.remapping = rewriter_config_pb2.RewriterConfig.ON if args.op_fusion else \
        rewriter_config_pb2.RewriterConfig.OFF
    if args.bf16 and getattr(args, "bf16_mode", "casts") == "grappler":
        # the model graph stays float32; Grappler's oneDNN pass puts its allow-listed ops in bfloat16
        rewrite.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    if args.xla:
        config.graph_options.optimizer_options.global_jit_level = tf.compat.v1.OptimizerOptions.ON_1
    return config


def checkpoint_identity(spec, args, schema):
    """What must match for a checkpoint to be restored into this run's graph: every flag that changes the
    set or the shapes of the variables. (Not the partitioners: a checkpoint restores into other slices.
    Not --bf16: its master weights are float32.) --evaluate, --predict and --export_only build no
    optimizer, and --export_only joins the shards of a parameter-server job's --ev tables."""
    from modelzoo.embedding_variables import identity as ev_identity
    ev = ev_identity(args)
    if ev and args.export_only:
        ev = {key: value for key, value in ev.items() if key != "shards"}
    ident = {"model": spec.name, "schema": schema.name, "schema_fingerprint": schema.fingerprint(),
             "emb_fusion": bool(args.emb_fusion), "embedding_variables": ev,
             "feature_columns": "stock (--tf)" if args.tf else "model zoo"}
    if not (args.evaluate or args.predict or args.export_only):
        ident["optimizer"] = args.optimizer  # its slots
    ident.update({name: getattr(args, name) for name in spec.shape_flags})
    return ident


# what a checkpoint made before a key was added to its identity had (so it still resumes, or is refused
# by name when this run differs)
def identity_before_keys(theirs):
    """`theirs` with the entries an older record lacks, as that model zoo made them."""
    theirs = {"feature_columns": "model zoo", **theirs}
    ev = theirs.get("embedding_variables")
    if ev and "fused_filters" not in ev:  # before: one filter and one set of buckets for a fused table
        shared = theirs.get("emb_fusion") and (ev.get("filter") == "cbf" or ev.get("adaptive_buckets"))
        theirs["embedding_variables"] = {**ev, "fused_filters": "one for all its columns" if shared else None}
    return theirs


# keys an older record may lack without a known value: not compared (the restore itself checks the
# variables, and a mismatch is refused in one line: restore_problem)
IDENTITY_UNRECORDED = ("optimizer", "shards")

# the flags behind each identity key, for the refusal
IDENTITY_FLAGS = {"emb_fusion": "--emb_fusion", "feature_columns": "--tf", "optimizer": "--optimizer"}
EV_IDENTITY_FLAGS = {"filter": "--ev_filter", "cbf": "--ev_cbf_max_elements/--ev_cbf_fpr",
                     "adaptive_buckets": "--adaptive_emb/--adaptive_emb_buckets",
                     "dynamic_dims": "--dynamic_ev/--dynamic_ev_dims",
                     "tracks_updates": "--ev_elimination gstep or --incremental_ckpt (the rows' update steps)",
                     "shards": "the PS tasks the --ev tables are sharded over (TF_CONFIG)",
                     "fused_filters": "--emb_fusion's counting Bloom filter and hash buckets (per column since "
                                      "this version)"}


def identity_differences(theirs, ours):
    """'FLAG: checkpoint has OLD, this run NEW' for each identity entry that differs."""
    diff = []
    for key, new in ours.items():
        old = theirs.get(key)
        if old == new or (key in IDENTITY_UNRECORDED and key not in theirs):
            continue
        if key == "embedding_variables" and old is not None and new is not None:
            for sub in sorted(new):  # (what this run does not depend on, it does not compare)
                if old.get(sub) != new.get(sub) and not (sub in IDENTITY_UNRECORDED and sub not in old):
                    diff.append(f"{EV_IDENTITY_FLAGS.get(sub, sub)}: checkpoint has {old.get(sub)!r}, this run "
                                f"{new.get(sub)!r}")
        elif key == "embedding_variables":
            diff.append(f"--ev: checkpoint has {'on' if old else 'off'}, this run {'on' if new else 'off'}")
        else:
            flag = key if key in ("model", "schema", "schema_fingerprint") else IDENTITY_FLAGS.get(key, f"--{key}")
            diff.append(f"{flag}: checkpoint has {old!r}, this run {new!r}")
    return diff


def check_checkpoint(path, identity, record_new=True):
    """Refuse a checkpoint folder made by another model, schema or layout; record ours if new."""
    record = os.path.join(path, "run_config.json")
    if os.path.exists(record):
        with open(record, encoding="utf-8") as f:
            theirs = json.load(f)
        theirs = identity_before_keys(theirs)
        diff = identity_differences(theirs, identity)
        if diff:
            raise CheckpointMismatch(f"--checkpoint {path} cannot be resumed by this run ({'; '.join(diff)}); "
                                     "give another --checkpoint or the same flags")
    elif os.path.exists(os.path.join(path, "checkpoint")):
        raise CheckpointMismatch(f"--checkpoint {path} holds a checkpoint without run_config.json (not made "
                                 "by this model zoo); give an empty or new --checkpoint folder")
    elif record_new:
        atomic_write_json(record, identity)


def _cross_entropy(labels, logits):
    import tensorflow as tf
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def micro_batched_gradients(forward, features, labels, micro_batches, loss_of=None):
    """Gradients of the full-batch mean loss, computed one micro-batch after another.

    Each micro-batch's forward pass waits for the previous one's gradients, so only one
    micro-batch's activations are alive at a time. Dense gradients are summed; sparse (embedding)
    gradients are concatenated, never densified. Returns (loss, [(grad, var)]).
    """
    import tensorflow as tf
    tf1 = tf.compat.v1
    batch = tf.shape(labels)[0]
    base, rest = batch // micro_batches, batch % micro_batches
    total_loss, sums, previous, variables = 0.0, None, [], None
    for i in range(micro_batches):
        with tf.control_dependencies(previous):
            start = i * base + tf.minimum(i, rest)
            size = base + tf.cast(i < rest, tf.int32)
            part = {k: v[start:start + size] for k, v in features.items()}
            # this micro-batch's share of the full-batch mean (an empty micro-batch adds 0, not NaN)
            if loss_of is None or loss_of is _cross_entropy:
                weighted = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
                    labels=labels[start:start + size], logits=forward(part))) / tf.cast(batch, tf.float32)
            else:  # a mean loss weighted by the micro-batch's share of the batch
                weighted = loss_of(labels[start:start + size], forward(part)) * \
                    tf.cast(size, tf.float32) / tf.cast(batch, tf.float32)
            if variables is None:
                variables = tf1.trainable_variables()
            grads = tf.gradients(weighted, variables)
        total_loss += weighted
        previous = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]
        if sums is None:
            sums = list(grads)
            continue
        for k, g in enumerate(grads):
            if g is None:
                continue
            if sums[k] is None:
                sums[k] = g
            elif isinstance(g, tf.IndexedSlices):
                sums[k] = tf.IndexedSlices(tf.concat([sums[k].values, g.values], 0),
                                           tf.concat([sums[k].indices, g.indices], 0), g.dense_shape)
            else:
                sums[k] = sums[k] + g
    return total_loss, [(g, v) for g, v in zip(sums, variables) if g is not None]


def default_optimizers(args, global_step, lr_factor):
    from modelzoo.optimizers import build_optimizer
    return [(None, build_optimizer(args.optimizer, args.learning_rate * lr_factor, global_step=global_step))]


def variable_bytes(grads_and_vars, groups):
    """Bytes of the variables training holds, read from the graph: the tables (the variables updated by
    sparse gradients: embeddings and wide weights) and the dense layers, each with its optimizer slots.
    Dynamic embedding variables (--ev) grow with the ids admitted: only their count is given."""
    import tensorflow as tf
    sizes = {"tables": 0, "table_slots": 0, "dense": 0, "dense_slots": 0, "dynamic_tables": 0}

    def nbytes(var):
        return var.shape.num_elements() * var.dtype.base_dtype.size

    for grad, var in grads_and_vars:
        if type(var).__name__ == "TrainableWrapper":  # TFRA: a lookup's rows, the table lives elsewhere
            sizes["dynamic_tables"] += 1
            continue
        kind = "tables" if isinstance(grad, tf.IndexedSlices) else "dense"
        sizes[kind] += nbytes(var)
        slot_key = "table_slots" if kind == "tables" else "dense_slots"
        for _, opt in groups:
            slots = [opt.get_slot(var, name) for name in opt.get_slot_names()]
            sizes[slot_key] += sum(nbytes(slot) for slot in slots if slot is not None)
    return sizes


def describe_variable_bytes(sizes):
    """The start-up line on the memory the variables take (MB = 2**20 bytes, as peak_rss_mb)."""
    def mb(n):
        return f"{n / (1 << 20):,.1f} MB"
    total = sum(v for k, v in sizes.items() if k != "dynamic_tables")
    dynamic = sizes["dynamic_tables"]
    tables = [f"tables {mb(sizes['tables'])} + optimizer slots {mb(sizes['table_slots'])}"] \
        if sizes["tables"] or not dynamic else []
    if dynamic:  # (their rows and slots live in TFRA hash tables, sized by the ids admitted)
        tables.append(f"{dynamic} dynamic embedding table{'s' if dynamic > 1 else ''} (sized by the ids admitted, "
                      "not counted; ev_tables in result.json)")
    return (f"variables: {'; '.join(tables)}; dense layers {mb(sizes['dense'])} + optimizer slots "
            f"{mb(sizes['dense_slots'])}; {mb(total)} in all")


def apply_by_group(groups, grads_and_vars, global_step):
    """Each variable is updated by the optimizer of the first group whose prefix its name starts with
    (the group with prefix None takes the rest); the global step then advances once."""
    import tensorflow as tf
    fallback = [k for k, (prefix, _) in enumerate(groups) if prefix is None]
    buckets = [[] for _ in groups]
    for grad, var in grads_and_vars:
        matches = [k for k, (prefix, _) in enumerate(groups) if prefix and var.op.name.startswith(prefix)]
        if not matches and not fallback:
            raise ValueError(f"no optimizer group takes variable {var.op.name}")
        buckets[(matches or fallback)[0]].append((grad, var))
    updates = [opt.apply_gradients(gv) for (_, opt), gv in zip(groups, buckets) if gv]
    with tf.control_dependencies(updates):
        return tf.compat.v1.assign_add(global_step, 1).op


def make_model_fn(spec, args, schema, meter, steps_range, world=None, ev_report=None):
    import tensorflow as tf
    from modelzoo import features as F
    from modelzoo.hooks import TRAINING_LOSS, ThroughputHook
    from modelzoo.layers import precision
    from modelzoo.metrics import eval_metrics, streaming_sum
    tf1 = tf.compat.v1
    world = world or data_parallel.World()
    loss_of = spec.loss or _cross_entropy
    ev_report = {} if ev_report is None else ev_report

    def model_fn(features, labels, mode, params):
        features = dict(features)
        bad_rows = features.pop(F.BAD_ROWS, None)
        label_passed = features.pop(F.LABEL, None)  # --predict writes it next to the score
        training = mode == tf.estimator.ModeKeys.TRAIN
        if args.ev:
            from modelzoo.embedding_variables import DynamicEmbeddingTables, EVOptions, ps_devices
            tables = DynamicEmbeddingTables(schema, args.emb_fusion, EVOptions.from_args(args), training,
                                            devices=ps_devices(training), frozen=params.get("frozen"))
        else:
            tables = F.FeatureColumnTables(schema) if args.tf else F.EmbeddingTables(schema, fused=args.emb_fusion)
            tables.partitioner = world.input_partitioner(args)

        def forward(feats):
            if F.is_raw(feats):  # (always with --tf: it turns --smartstaged off)
                feats = F.transform(feats, schema, keyed=args.ev, stock_columns=args.tf)
            inputs = ModelInputs(feats.get(F.DENSE), feats[F.IDS], tables, schema, feats.get(F.CROSS_IDS))
            # --dense_layer_partitioner: every other variable of the model (its tables set their own);
            # --bf16: the precision scope every modelzoo.layers.mlp reads (so no model can forget it), except
            # under --bf16_mode grappler, where the model builds float32 and session_config's pass converts it
            casts = args.bf16 and getattr(args, "bf16_mode", "casts") != "grappler"
            with tf1.variable_scope(tf1.get_variable_scope(), partitioner=world.dense_partitioner(args)), \
                    precision(tf.bfloat16 if casts else tf.float32):
                return tf.reshape(spec.build_logits(inputs, args, training), [-1])

        if mode == tf.estimator.ModeKeys.PREDICT:
            logits = forward(features)
            probs = tf.sigmoid(logits)
            predictions = {"probabilities": probs, "logits": logits}
            if label_passed is not None:
                predictions["label"] = label_passed
            return tf.estimator.EstimatorSpec(
                mode, predictions=predictions,
                export_outputs={"serving_default": tf.estimator.export.PredictOutput({"probabilities": probs})})
        if mode == tf.estimator.ModeKeys.EVAL:
            logits = forward(features)
            metrics = eval_metrics(labels, tf.sigmoid(logits))
            if bad_rows is not None:
                metrics["bad_rows_skipped"] = streaming_sum(bad_rows)
            return tf.estimator.EstimatorSpec(mode, loss=loss_of(labels, logits),
                                              eval_metric_ops=metrics)
        global_step = tf1.train.get_or_create_global_step()
        groups = (spec.optimizers or default_optimizers)(args, global_step, world.lr_factor(args.lr_scaling))
        if args.micro_batch:
            loss, grads_and_vars = micro_batched_gradients(forward, features, labels, args.micro_batch, loss_of)
        else:
            loss = loss_of(labels, forward(features))
            variables = tf1.trainable_variables()
            grads_and_vars = [(g, v) for g, v in zip(tf.gradients(loss, variables), variables) if g is not None]
        grads_and_vars = world.average_gradients(grads_and_vars)
        if args.ev:  # TFRA's wrapper: slots as tables, updated rows written back to the tables
            from tensorflow_recommenders_addons import dynamic_embedding as de
            groups = [(prefix, de.DynamicEmbeddingOptimizer(opt)) for prefix, opt in groups]
        train_op = apply_by_group(groups, grads_and_vars, global_step)
        meter.variable_bytes = variable_bytes(grads_and_vars, groups)
        if world.is_chief:
            print(describe_variable_bytes(meter.variable_bytes), flush=True)
        if args.ev:
            train_op = tf.group(train_op, *tables.finish([opt for _, opt in groups], global_step, after=train_op))
        # Always present (0 unless --bad_rows skip), so checkpoints resume across that flag.
        counter = tf1.get_variable("bad_rows_skipped", [], tf.int64, tf1.zeros_initializer(), trainable=False)
        if bad_rows is not None:
            train_op = tf.group(train_op, counter.assign_add(world.sum(bad_rows, "bad_rows")))
        # the rows this trainer has consumed (every step's batch is full: the training input repeats)
        progress = progress_variable()
        train_op = tf.group(train_op, tf1.scatter_add(progress, [world.progress_slot],
                                                      [args.batch_size * world.size]))
        hooks = [ThroughputHook(meter, loss, args.batch_size * world.size, steps_range[0], steps_range[1],
                                args.log_steps if world.logs_progress else 0, world.progress_prefix,
                                trainers=world.cluster.trainers if world.cluster else 1)]
        tf1.add_to_collection(TRAINING_LOSS, loss)  # for FiniteLossHook
        hooks += world.training_hooks()
        if args.ev and world.is_chief:
            if args.incremental_ckpt:  # (the deltas are restored by the scaffold's saver; this hook writes them)
                from modelzoo.incremental_ckpt import IncrementalCheckpointHook
                hooks.append(IncrementalCheckpointHook(params["model_dir"], args.incremental_ckpt, steps_range[1]))
            hooks += tables.hooks(ev_report)
        if args.timeline and world.is_chief:
            hooks.append(tf1.train.ProfilerHook(save_steps=args.timeline, output_dir=os.path.join(
                params["model_dir"], "timeline"), show_memory=True))
        scaffold = None
        if args.ev and args.incremental_ckpt:  # its restore applies the deltas after the full checkpoint
            from modelzoo.incremental_ckpt import training_saver
            scaffold = tf1.train.Scaffold(saver=training_saver(args.keep_checkpoint_max))
        if args.warm_start_from:  # (its init_fn runs only when no checkpoint of this run is restored)
            from modelzoo.export import warm_start
            scaffold = tf1.train.Scaffold(saver=scaffold.saver if scaffold else None, init_fn=warm_start(
                args.warm_start_from, tables.root.all_tables if args.ev else []))
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op, training_hooks=hooks,
                                          scaffold=scaffold)

    return model_fn


def build_estimator(spec, args, schema, checkpoint, meter=None, steps_range=(0, 1), world=None, ev_report=None):
    import tensorflow as tf
    from modelzoo.hooks import ThroughputMeter
    world = world or data_parallel.World()
    if getattr(args, "benchmark", False):  # no checkpoint, no summaries
        saving = dict(save_checkpoints_steps=None, save_checkpoints_secs=None, save_summary_steps=0)
    elif world.is_chief or world.cluster:  # (a PS job's non-chief tasks write nothing: the Estimator knows)
        saving = dict(save_checkpoints_steps=args.save_steps or 10 ** 12, save_checkpoints_secs=None,
                      save_summary_steps=max(args.log_steps, 100))
    else:  # only rank 0 writes checkpoints and summaries (`checkpoint` is a scratch folder here)
        saving = dict(save_checkpoints_steps=None, save_checkpoints_secs=None, save_summary_steps=0)
    config = tf.estimator.RunConfig(
        model_dir=checkpoint, tf_random_seed=args.seed, session_config=session_config(args, world.cluster),
        keep_checkpoint_max=args.keep_checkpoint_max, log_step_count_steps=None,
        experimental_max_worker_delay_secs=0, **saving)
    model_fn = make_model_fn(spec, args, schema, meter or ThroughputMeter(), steps_range, world, ev_report)
    return tf.estimator.Estimator(model_fn, config=config, params={"model_dir": checkpoint})


def export_model(spec, args, schema, checkpoint):
    """The latest checkpoint as a SavedModel of stock TensorFlow ops (modelzoo/export.py), on this
    machine: the raw input columns in, `probabilities` out. Returns its folder."""
    import tensorflow as tf
    from modelzoo.export import export_saved_model
    from modelzoo.hooks import ThroughputMeter
    model_fn = make_model_fn(spec, args, schema, ThroughputMeter(), (0, 1))  # one process, no partitioners
    return export_saved_model(model_fn, schema, tf.train.latest_checkpoint(checkpoint),
                              os.path.join(checkpoint, "export"))


def input_fn(args, schema, data, slices, training, shard=(1, 0), with_label=False, skip_rows=0, world=None):
    """The Estimator's input. A training input skips `skip_rows` already-trained rows; in a PS job
    it reads the trainer's own shard (or the --workqueue's items) and skips the rows its slot of
    `input_progress` counts, read from the PS when the iterator starts (a restarted worker resumes)."""
    from modelzoo.features import LABEL, make_dataset

    def fn():
        trainer_shard, lines = (1, 0), None
        skip = skip_rows
        if training and world is not None and world.cluster:
            skip = progress_variable()[world.progress_slot]
            if args.workqueue:
                lines = world.workqueue_lines(data)
            else:
                trainer_shard = (world.cluster.trainers, world.progress_slot)
        ds = make_dataset(slices, schema, data.delimiter, args.batch_size, training, args.smartstaged,
                          args.bad_rows, seed=args.seed, shard=shard, keyed=args.ev,
                          trainer_shard=trainer_shard, skip_rows=skip, lines=lines, layout=data.layout(schema))
        return ds.map(lambda f, y: ({**f, LABEL: y}, y)) if with_label else ds
    return fn


def tf_error_line(message):
    """The line of a TensorFlow error that says what failed: TF 2.15's graph errors start with
    "Graph execution error:" and a stack trace, and give the op's message after its "Node: ..." line."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    for k, line in enumerate(lines[:-1]):
        if line.startswith("Node: "):
            return lines[k + 1]
    return lines[0] if lines and not lines[0].startswith("Graph execution error") else lines[-1] if lines else ""


def restore_problem(err):
    """A CheckpointMismatch for a restore that failed because the checkpoint's variables are not this
    graph's (a variable missing, or of another shape: a checkpoint whose run_config.json predates a key
    of checkpoint_identity), else None."""
    import re
    message = err.message or str(err)
    missing = re.search(r"Key (\S+) not found in checkpoint", message)
    if missing:
        what = f"has no variable {missing.group(1)}, which this run's model has"
    elif "Restoring from checkpoint failed" in message and "shape" in message:
        what = f"holds a variable of another shape ({tf_error_line(message.split('Original error:')[-1])})"
    else:
        return None
    return CheckpointMismatch(f"the --checkpoint {what}: it was made with other flags (e.g. another --optimizer; "
                              "its run_config.json does not record them all); give its flags or another "
                              "--checkpoint")


def run_reading(call, data, schema, slices):
    """Run estimator.train/evaluate; a malformed row becomes a DataError naming file, line and problem."""
    import tensorflow as tf
    try:
        return call()
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError, tf.errors.NotFoundError) as err:
        mismatch = restore_problem(err)
        if mismatch is not None:
            raise mismatch from None
        if isinstance(err, tf.errors.NotFoundError):
            raise
        problem = diagnose(slices, data.layout(schema), data.delimiter)
        first = tf_error_line(err.message or str(err))
        raise DataError(problem or f"reading {slices[0].path}: {first}") from None


def global_step_of(checkpoint):
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(checkpoint)
    return int(tf.train.load_variable(latest, "global_step")) if latest else 0


def rows_consumed(checkpoint, slot=0, incremental=False):
    """Rows the checkpoint's run has trained on (its `input_progress` slot; 0 without a checkpoint), with
    `incremental` as the deltas after the full checkpoint leave it."""
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(checkpoint)
    if not latest:
        return 0
    try:
        if incremental:
            from modelzoo.incremental_ckpt import dense_value
            return int(dense_value(checkpoint, "input_progress")[slot])
        return int(tf.train.load_variable(latest, "input_progress")[slot])
    except tf.errors.NotFoundError:
        raise CheckpointMismatch(f"--checkpoint {checkpoint} was written by an older version of this model zoo "
                                 "(it has no input_progress); give a new --checkpoint folder") from None


def generate_criteo_sample(path, rows, seed):
    from modelzoo.synthetic import generate_criteo
    return generate_criteo(path, rows, seed=seed)


def describe_switches(args):
    names = ("smartstaged", "op_fusion", "emb_fusion", "xla", "bf16")
    on = [n for n in names if getattr(args, n)]
    return ("--tf baseline: " if args.tf else "") + (", ".join(on) if on else "no speed switches")


def model_schema(spec, args):
    schema = load_schema(args.schema or spec.schema)
    schema = schema.with_embedding_dim(spec.embedding_dim) if spec.embedding_dim else schema
    flaglib.validate_with_schema(args, schema, spec.name, spec.uses_crosses)
    return schema


# what a run killed while writing leaves: TensorFlow's checkpoint shards before their merge, the
# Estimator's SavedModel before its rename, our atomic writers' temporary files
LEFTOVER_PATTERNS = ("model.ckpt-*_temp*", os.path.join("export", "temp-*"), ".tmp-*")


def remove_leftovers(checkpoint):
    """Remove what an interrupted write left in the checkpoint folder (never read: the checkpoint
    state, the export folders and result.json only name complete files)."""
    import glob
    found = sorted(p for pattern in LEFTOVER_PATTERNS for p in glob.glob(os.path.join(checkpoint, pattern)))
    for path in found:
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    if found:
        print(f"removed what an interrupted write left: {', '.join(os.path.relpath(p, checkpoint) for p in found)}",
              flush=True)


def checkpoint_folder(spec, args):
    return args.checkpoint or os.path.join(args.output_dir, spec.name)


def claim_checkpoint(checkpoint, identity):
    """The chief's checks before any work: the folder can be written, an interrupted write's leftovers
    go, and a checkpoint already there is this model's (ours is recorded if new)."""
    probe_writable(checkpoint, "--checkpoint")
    remove_leftovers(checkpoint)
    check_checkpoint(checkpoint, identity)


def prepare(spec, args, schema, checkpoint, world):
    """Check the checkpoint folder and find (or generate) the data: rank 0 first, the others after it."""
    identity = checkpoint_identity(spec, args, schema)
    generate = generate_criteo_sample if schema.name == "criteo" else None
    data = None
    if world.is_chief:
        claim_checkpoint(checkpoint, identity)
        data = resolve(args, schema, generate)
    world.barrier("rank 0 stopped while checking the checkpoint and the data (its message says why)")
    if not world.is_chief:
        check_checkpoint(checkpoint, identity, record_new=False)
        data = resolve(args, schema, generate)
    return data


TABLE_ROWS_PER_TRAIN_ROW = 10  # more table rows than this per training row: say how to size them


def announce(spec, args, schema, data, steps, checkpoint, world, cpu):
    print(f"{spec.name}: {schema_summary(schema)}", flush=True)
    if args.ev:
        from modelzoo.embedding_variables import describe
        print(describe(args, schema), flush=True)
    print(f"data: {data.description}: {data.train_rows:,} train rows, {data.eval_rows:,} eval rows", flush=True)
    table_rows = sum(c.num_ids for c in schema.categorical)
    if not args.ev and table_rows > TABLE_ROWS_PER_TRAIN_ROW * data.train_rows:
        print(f"note: the schema's tables have {table_rows:,} rows for {data.train_rows:,} training rows (most are "
              f"never trained, and they take memory): `python -m modelzoo.schema infer FILE --label COLUMN` sizes "
              "the hash buckets from the data", flush=True)
    if world.size > 1:
        print(f"horovod: {world.size} processes x batch {args.batch_size:,} = global batch "
              f"{args.batch_size * world.size:,}; learning rates x {world.lr_factor(args.lr_scaling):g} "
              f"(--lr_scaling {args.lr_scaling}); each process decodes 1/{world.size} of every global batch",
              flush=True)
    print(f"train: {steps:,} steps of {args.batch_size * world.size:,} | optimizer {args.optimizer} lr "
          f"{args.learning_rate} | {describe_switches(args)} | checkpoint {checkpoint}", flush=True)
    print(f"cpu: {cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['flags'])}; BF16 hardware: "
          f"{', '.join(cpu['bf16_hardware']) or 'none'})", flush=True)
    if args.bf16:
        print(bf16_message(cpu), flush=True)


def incremental_listeners(args):
    """--incremental_ckpt: the listener that tells the chief's delta hook of each full checkpoint."""
    if not (args.ev and args.incremental_ckpt):
        return []
    from modelzoo.incremental_ckpt import IncrementalCheckpointListener
    return [IncrementalCheckpointListener()]


def train(spec, args, schema, data, steps, checkpoint, world):
    """Train to `steps` (resuming the checkpoint); returns the estimator, meter and, with several
    processes, each process's digest of its variables after training (in rank order)."""
    from modelzoo.hooks import FiniteCheckpointGuard, FiniteLossHook, StopRequest, ThroughputMeter
    from modelzoo.embedding_variables import saving_listeners
    start_step = global_step_of(checkpoint)  # rank 0's checkpoint: every process decides alike
    full_step = start_step
    if args.ev and args.incremental_ckpt:  # the full checkpoint and the delta checkpoints after it
        from modelzoo.incremental_ckpt import latest_step
        start_step = latest_step(checkpoint)
    meter, ev_report = ThroughputMeter(), {}
    model_dir = checkpoint if world.is_chief else tempfile.mkdtemp(prefix=f"{spec.name}-rank{world.rank}-")
    try:
        estimator = build_estimator(spec, args, schema, model_dir, meter, (start_step, steps), world, ev_report)
        if full_step >= steps:  # (a delta at or past --steps is restored, then saved as a full checkpoint)
            if world.is_chief:
                print(f"checkpoint {checkpoint} is already at step {start_step:,} >= --steps {steps:,}: "
                      "nothing to train", flush=True)
        else:
            if start_step and world.is_chief:
                print(f"resuming from step {start_step:,}", flush=True)
            consumed = rows_consumed(checkpoint, incremental=args.ev and bool(args.incremental_ckpt))
            if consumed and world.is_chief:
                print(f"input: skipping the {consumed:,} rows trained on before", flush=True)
            train_input = input_fn(args, schema, data, data.train, True, shard=(world.size, world.rank),
                                   skip_rows=consumed)
            listeners = [] if args.benchmark else saving_listeners(args) + incremental_listeners(args)
            if world.is_chief and not args.benchmark:
                listeners.append(FiniteCheckpointGuard())
            # Horovod's processes must stop at the same step: a SIGTERM there ends them at once (the
            # last checkpoint is resumed); one process (or a PS job's task) stops after its step
            with StopRequest(signals=() if world.size > 1 else (signal.SIGTERM,)) as stop, \
                    guarded_training(checkpoint, stop):
                run_reading(lambda: estimator.train(train_input, max_steps=steps,
                                                    hooks=[FiniteLossHook(), stop.hook()],
                                                    saving_listeners=listeners), data, schema, data.train)
        digests = world.gather(world.digest) if world.size > 1 else None
    finally:
        if not world.is_chief:
            shutil.rmtree(model_dir, ignore_errors=True)
    return estimator, meter, digests, ev_report


def last_checkpoint_words(checkpoint):
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(checkpoint)
    if not latest:
        return f"No checkpoint was saved in {checkpoint} yet."
    return f"The latest checkpoint, step {global_step_of(checkpoint):,} ({latest}), stays the last good one."


@contextlib.contextmanager
def guarded_training(checkpoint, stop, saves=True):
    """What ends training early, each as one line (TrainingStopped, OutputError): SIGTERM (the saver
    wrote a final checkpoint), a NaN or Inf loss or variable (the last good checkpoint stays), a
    volume that refuses the checkpoint (full, read-only: the previous checkpoint stays)."""
    import tensorflow as tf
    from modelzoo.hooks import NonFiniteError
    try:
        yield
    except NonFiniteError as err:
        raise TrainingStopped(f"{err}; training stopped. {last_checkpoint_words(checkpoint)} Lower "
                              "--learning_rate or look at the input rows, then run again", 1) from None
    except (OSError, tf.errors.OpError) as err:
        problem = write_problem(err)
        if problem is None:
            raise
        raise OutputError(f"could not write the checkpoint in {checkpoint}: {problem}. "
                          f"{last_checkpoint_words(checkpoint)} Free some space (or make the folder writable) "
                          "and run the same command to resume") from None
    if stop.received:
        where = (f"with a checkpoint saved at step {global_step_of(checkpoint):,}" if saves else
                 "(the chief's checkpoints hold the job's progress)")
        raise TrainingStopped(f"{stop.received}: training stopped {where}; the same command resumes",
                              SIGTERM_EXIT)


def write_predictions(estimator, args, schema, data, checkpoint):
    """--predict: label and probability per eval row, in file order, to CHECKPOINT/predictions.csv."""
    path = os.path.join(checkpoint, "predictions.csv")

    def write():  # streams batch by batch; the file appears only when every row is written
        rows = 0
        with atomic_writer(path) as out:
            out.write("label,probability\n")
            for batch in estimator.predict(input_fn(args, schema, data, data.eval, False, with_label=True),
                                           yield_single_examples=False):
                out.writelines(f"{int(label)},{prob:.6f}\n"
                               for label, prob in zip(batch["label"], batch["probabilities"]))
                rows += len(batch["label"])
        return rows

    rows = run_reading(write, data, schema, data.eval)
    print(f"predictions: {rows:,} eval rows scored by {estimator.latest_checkpoint()} -> {path}", flush=True)
    return 0


def export_only(spec, args, schema, checkpoint):
    """--export_only: the latest checkpoint (a parameter-server job's too) exported on this machine."""
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(checkpoint)
    if not latest:
        raise CheckpointMismatch(f"--export_only needs a trained model in --checkpoint {checkpoint}, which holds "
                                 "no checkpoint; train first or give the folder of a trained one")
    check_checkpoint(checkpoint, checkpoint_identity(spec, args, schema), record_new=False)
    export_dir = export_model(spec, args, schema, checkpoint)
    print(f"SavedModel: {export_dir} (from {latest})", flush=True)
    return 0


def run(spec, args):
    wall_start = time.time()
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")

    cluster = distributed.from_environment()
    if cluster is not None:
        return run_cluster(spec, args, cluster, wall_start)
    if args.benchmark:
        return benchmark(spec, args, wall_start)
    world = data_parallel.init(args)
    schema = model_schema(spec, args)
    checkpoint = checkpoint_folder(spec, args)
    if args.export_only:
        return export_only(spec, args, schema, checkpoint)
    if args.warm_start_from:
        from modelzoo.export import warm_start_source
        warm_start_source(args.warm_start_from)  # a missing or unreadable source is refused before any work
    data = prepare(spec, args, schema, checkpoint, world)
    steps = args.steps or math.ceil(data.train_rows / (args.batch_size * world.size))
    cpu = cpu_info()
    if world.is_chief:
        announce(spec, args, schema, data, steps, checkpoint, world, cpu)

    only = "evaluate" if args.evaluate else "predict" if args.predict else None
    if only:
        if not tf.train.latest_checkpoint(checkpoint):
            raise CheckpointMismatch(f"--{only} needs a trained model in --checkpoint {checkpoint}, which holds "
                                     "no checkpoint; train first or give the folder of a trained one")
        if not data.eval:
            raise DataError(f"--{only} needs evaluation data; {data.description} has none")
        estimator = build_estimator(spec, args, schema, checkpoint)
        if args.predict:
            return write_predictions(estimator, args, schema, data, checkpoint)
        from modelzoo.hooks import ThroughputMeter
        meter, digests, ev_report = ThroughputMeter(), None, {}
    else:
        estimator, meter, digests, ev_report = train(spec, args, schema, data, steps, checkpoint, world)
    if not world.is_chief:
        return 0  # rank 0 evaluates, exports and reports

    metrics = {}
    if not args.no_eval and data.eval:
        metrics = run_reading(lambda: estimator.evaluate(input_fn(args, schema, data, data.eval, False)),
                              data, schema, data.eval)
    return finish(spec, args, schema, data, checkpoint, estimator, meter, metrics, world, cpu, wall_start,
                  only=only, digests=digests, ev_report=ev_report)


def benchmark(spec, args, wall_start):
    """--benchmark (NVIDIA's flag): --steps training steps in a temporary folder, timed as the throughput
    hook does (steady state, warm-up excluded); no evaluation, export or checkpoint is written."""
    import tensorflow as tf
    world = data_parallel.World()
    schema = model_schema(spec, args)
    workdir = tempfile.mkdtemp(prefix=f"{spec.name}-benchmark-")
    try:
        data = prepare(spec, args, schema, workdir, world)
        cpu = cpu_info()
        announce(spec, args, schema, data, args.steps, workdir, world, cpu)
        _, meter, _, _ = train(spec, args, schema, data, args.steps, workdir, world)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    from tensorflow.python.util import _pywrap_util_port
    result = {"model": spec.name, "benchmark": True, "flags": vars(args), "data": data.description,
              "generated_data": data.generated, "steps": args.steps, "batch_size": args.batch_size,
              "samples_per_sec": meter.samples_per_sec, "steady_steps": meter.steady_steps,
              "train_loss": meter.last_loss, "wall_seconds": round(time.time() - wall_start, 2),
              "peak_rss_mb": round(peak_rss_mb(), 1), "tf_version": tf.__version__, "cpu": cpu,
              "onednn": {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                         "enabled": bool(_pywrap_util_port.IsMklEnabled())}}
    out = os.path.join(args.output_dir, f"{spec.name}_benchmark")
    os.makedirs(out, exist_ok=True)
    atomic_write_json(os.path.join(out, "result.json"), result)
    speed = "n/a (too few steps for a steady state)" if meter.samples_per_sec is None else \
        f"{meter.samples_per_sec:,.0f} samples/s"
    print(f"benchmark: {speed} (steady state over {meter.steady_steps} of {args.steps} steps x batch "
          f"{args.batch_size:,}) | oneDNN {'on' if result['onednn']['enabled'] else 'off'} | "
          f"result: {os.path.join(out, 'result.json')}", flush=True)
    return 0


def finish(spec, args, schema, data, checkpoint, estimator, meter, metrics, world, cpu, wall_start,
           only=None, digests=None, ev_report=None, extra=None):
    """The chief's last part: export the SavedModel, write result.json and print the summary."""
    import tensorflow as tf
    export_dir = None
    if not only:
        export_dir = export_model(spec, args, schema, checkpoint)
    skipped_train = int(tf.train.load_variable(estimator.latest_checkpoint(), "bad_rows_skipped"))

    def metric(name):
        return float(metrics[name]) if name in metrics else None

    result = {
        "model": spec.name, "flags": vars(args), "schema": schema.name, "data": data.description,
        "generated_data": data.generated, "train_rows": data.train_rows, "eval_rows": data.eval_rows,
        "steps": global_step_of(checkpoint), "steps_this_run": meter.steps_run,
        "batch_size": args.batch_size * world.size, "processes": world.size,
        "samples_per_sec": meter.samples_per_sec, "steady_steps": meter.steady_steps,
        "wall_seconds": round(time.time() - wall_start, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
        "auc": metric("auc"), "logloss": metric("logloss"), "accuracy": metric("accuracy"),
        "eval_loss": metric("loss"), "train_loss": meter.last_loss,
        "bad_rows_skipped": {"train": skipped_train, "eval": int(metrics.get("bad_rows_skipped", 0))},
        "tf_version": tf.__version__, "cpu": cpu, "checkpoint": checkpoint, "export_dir": export_dir,
    }
    if result["auc"] is not None and math.isnan(result["auc"]):  # metrics.exact_auc: one class in the labels
        print(f"warning: AUC undefined: the {data.eval_rows:,} eval rows hold one class only (every label "
              "the same); result.json has \"auc\": null", file=sys.stderr, flush=True)
        result["auc"], result["auc_undefined"] = None, "one class in the eval labels"
    if getattr(meter, "variable_bytes", None):
        result["variable_bytes"] = meter.variable_bytes
    if ev_report:
        result["ev_tables"] = ev_report
    result.update(extra or {})
    if digests:
        result["horovod"] = {"processes": world.size, "per_process_batch": args.batch_size,
                             "lr_factor": world.lr_factor(args.lr_scaling), "variable_digests": digests,
                             "identical_variables": len(set(digests)) == 1}
    result_path = os.path.join(checkpoint, "result.json")
    if meter.steps_run == 0 and os.path.exists(result_path):
        # Nothing trained in this run: keep the figures of the run that trained (and its export).
        with open(result_path, encoding="utf-8") as f:
            before = json.load(f)
        kept = ["samples_per_sec", "steady_steps", "train_loss", "processes", "batch_size", "horovod", "ev_tables",
                "variable_bytes"]
        for key in kept + (["export_dir"] if only else []):
            if key in before:
                result[key] = before[key]
    atomic_write_json(result_path, result)
    print_summary(result)
    return 0


TRAINER_REPORT_WAIT_SECS = 30  # the workers end with the chief; their reports may come a little later
EVALUATOR_RETRIES = 20  # an evaluation whose checkpoint the chief deleted is started again on the newest
CLUSTER_WAIT_SECS = 900  # a non-chief task waits this long for the chief's checkpoint record and data


def cluster_data(spec, args, schema, checkpoint, world):
    """The chief checks the checkpoint folder and finds (or generates) the data on the shared
    volume; the other tasks wait for its run_config.json and for the data to be there."""
    identity = checkpoint_identity(spec, args, schema)
    generate = generate_criteo_sample if schema.name == "criteo" else None
    if world.is_chief:
        claim_checkpoint(checkpoint, identity)
        return resolve(args, schema, generate)
    distributed.wait_for(f"the chief to record {checkpoint}/run_config.json",
                         lambda: os.path.exists(os.path.join(checkpoint, "run_config.json")), CLUSTER_WAIT_SECS)
    check_checkpoint(checkpoint, identity, record_new=False)
    last = []

    def ready():  # the chief may still be writing a generated sample (it appears atomically)
        try:
            return resolve(args, schema)
        except DataError as err:
            last[:] = [err]
            return None
    try:
        return distributed.wait_for("the chief's data", ready, CLUSTER_WAIT_SECS)
    except distributed.ClusterError:
        raise last[0] if last else DataError("no data") from None


def run_cluster(spec, args, cluster, wall_start):
    """One task of a parameter-server job (modelzoo/distributed.py): ps, chief, worker or evaluator."""
    import tensorflow as tf
    from modelzoo.embedding_variables import saving_listeners
    from modelzoo.hooks import FiniteCheckpointGuard, FiniteLossHook, StopRequest, ThroughputMeter
    print(f"{cluster.name}: parameter-server job: {cluster.trainers} trainer(s), {cluster.num_ps} ps task(s) "
          f"(TF_CONFIG)", flush=True)
    if cluster.task_type == "ps":
        if args.ev:  # the tables live on the PS tasks: their server runs TFRA's kernels
            from modelzoo.embedding_variables import load_kernels
            load_kernels()
        return distributed.serve_ps(cluster, args.protocol, checkpoint_folder(spec, args))
    world = data_parallel.ClusterWorld(cluster)
    distributed.speed_up_worker_start()
    schema = model_schema(spec, args)
    checkpoint = checkpoint_folder(spec, args)
    data = cluster_data(spec, args, schema, checkpoint, world)
    steps = args.steps or math.ceil(data.train_rows / args.batch_size)
    cpu = cpu_info()
    if world.is_chief:
        announce(spec, args, schema, data, steps, checkpoint, world, cpu)
    meter, ev_report = ThroughputMeter(), {}
    start_step = global_step_of(checkpoint)
    if args.ev and args.incremental_ckpt:  # the chief restores the full checkpoint and the deltas after it
        from modelzoo.incremental_ckpt import latest_step
        start_step = latest_step(checkpoint)
    estimator = build_estimator(spec, args, schema, checkpoint, meter, (start_step, steps), world, ev_report)
    stop = StopRequest()  # SIGTERM: the chief saves a final checkpoint; every trainer exits 143
    train_spec = tf.estimator.TrainSpec(input_fn(args, schema, data, data.train, True, world=world), max_steps=steps,
                                        hooks=[*world.workqueue_hooks(args, data, steps, checkpoint),
                                               FiniteLossHook(world.progress_prefix), stop.hook()],
                                        saving_listeners=[*saving_listeners(args), *incremental_listeners(args),
                                                          FiniteCheckpointGuard(),
                                                          *world.workqueue_listeners(args, data, checkpoint)]
                                        if world.is_chief else ())
    evaluate = not args.no_eval and bool(data.eval)
    eval_spec = tf.estimator.EvalSpec(input_fn(args, schema, data, data.eval or data.train, False), steps=None,
                                      start_delay_secs=0, throttle_secs=args.eval_throttle_secs,
                                      exporters=[distributed.eval_recorder(checkpoint)])
    if cluster.task_type == "evaluator":
        if not evaluate:
            print(f"evaluator: nothing to do ({'--no_eval' if args.no_eval else 'no evaluation data'})", flush=True)
            return 0
        with distributed.Heartbeat(checkpoint):
            for retry in range(EVALUATOR_RETRIES + 1):
                try:
                    run_reading(lambda: tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec),
                                data, schema, data.eval)
                    break
                except (ValueError, tf.errors.NotFoundError):
                    # the chief replaced the checkpoint (--keep_checkpoint_max) while it was being read
                    if retry == EVALUATOR_RETRIES or tf.train.latest_checkpoint(checkpoint) is None:
                        raise
                    print("evaluator: the checkpoint was replaced while it was being read; evaluating the "
                          "newest one", flush=True)
        print("evaluator: evaluated the final checkpoint; exiting", flush=True)
        return 0

    started = time.time()
    with stop, guarded_training(checkpoint, stop, saves=world.is_chief):
        run_reading(lambda: tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec),
                    data, schema, data.train)
    distributed.report_trainer(checkpoint, cluster, meter)
    distributed.signal_training_done(cluster)
    final_step = global_step_of(checkpoint) if world.is_chief else (meter.span or [(0, 0)])[-1][0]
    if args.workqueue and final_step < steps:
        print(f"{cluster.name}: the work queue ran out at step {final_step:,}, before --steps {steps:,}",
              flush=True)
    if not world.is_chief:
        print(f"{cluster.name}: training ended ({meter.steps_run:,} steps of the job's {final_step:,} were "
              "this task's); exiting", flush=True)
        return 0
    metrics, evaluated_by = {}, None
    if evaluate:
        metrics, evaluated_by = distributed.wait_for_final_eval(checkpoint, steps, started), "evaluator"
        if metrics is None:
            print("chief: no evaluator is running; evaluating the final checkpoint here", flush=True)
            metrics, evaluated_by = run_reading(
                lambda: estimator.evaluate(input_fn(args, schema, data, data.eval, False)),
                data, schema, data.eval), "chief"
    # the cluster's samples/s: the trainers' own steady rates added up (when every one reported one),
    # else the global step's rate from the first trainer's first step to the last one's last
    trainers = distributed.trainer_reports(checkpoint, cluster, started - 60, wait=TRAINER_REPORT_WAIT_SECS)
    rates = [r["samples_per_sec"] for r in trainers.values() if r.get("samples_per_sec")]
    if len(rates) == cluster.trainers:
        meter.samples_per_sec = sum(rates)
    else:
        meter.samples_per_sec = meter.cluster_samples_per_sec(
            args.batch_size, [r.get("span") for r in trainers.values()])
    job = {"trainers": cluster.trainers, "trainer_reports": trainers, "ps": cluster.num_ps, "evaluated_by": evaluated_by,
           "evaluated_step": int(metrics["global_step"]) if "global_step" in metrics else None,
           "workqueue": bool(args.workqueue), "input_layer_partitioner_mb": args.input_layer_partitioner,
           "dense_layer_partitioner_kb": args.dense_layer_partitioner}
    return finish(spec, args, schema, data, checkpoint, estimator, meter, metrics, world, cpu, wall_start,
                  ev_report=ev_report, extra={"parameter_server_job": job})


def print_summary(r):
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)
    print("\n==== summary ====")
    print(f"model {r['model']} | {r['train_rows']:,} train rows, {r['eval_rows']:,} eval rows"
          + (" (synthetic)" if r["generated_data"] else ""))
    print(f"steps {r['steps']:,} (this run {r['steps_this_run']:,}) x batch {r['batch_size']:,} | "
          f"throughput {fmt(r['samples_per_sec'], ',.0f')} samples/s (steady state) | wall {r['wall_seconds']:.1f}s "
          f"| peak RSS {r['peak_rss_mb']:,.0f} MB")
    auc = "n/a: one class" if r.get("auc_undefined") else fmt(r["auc"], ".4f")
    print(f"eval: AUC {auc} | logloss {fmt(r['logloss'], '.4f')} | "
          f"accuracy {fmt(r['accuracy'], '.4f')}")
    skipped = r["bad_rows_skipped"]
    if skipped["train"] or skipped["eval"]:
        print(f"bad rows skipped: {skipped['train']:,} in training, {skipped['eval']:,} in evaluation")
    print(f"SavedModel: {r['export_dir']}")
    print(f"result: {os.path.join(r['checkpoint'], 'result.json')}", flush=True)


def main(spec, argv=None):
    """Entry point of every train.py: clear one-line errors for bad flags, data and checkpoints."""
    try:
        args = flaglib.parse(spec.name, argv, spec.defaults, spec.speed_defaults, spec.add_flags)
    except flaglib.FlagError as err:
        return err.code
    set_environment(args)
    try:
        return run(spec, args)
    except flaglib.FlagError as err:  # a refusal that needs the schema
        print(f"{spec.name}/train.py: error: {err}", file=sys.stderr, flush=True)
        return err.code
    except (DataError, SchemaError, CheckpointMismatch, DataParallelError, ClusterError, OutputError,
            ExportError) as err:
        print(f"{spec.name}/train.py: error: {err}", file=sys.stderr, flush=True)
        return 1
    except TrainingStopped as err:
        print(f"{spec.name}/train.py: {'error: ' if err.code == 1 else ''}{err}", file=sys.stderr, flush=True)
        return err.code

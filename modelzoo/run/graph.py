"""The graph of a run: the session settings, the model_fn (its tables, micro-batches and optimizer groups),
the Estimator, the input pipeline and the SavedModel export."""
import dataclasses
import os

import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2
from tensorflow.python.ops import resources as tf_resources  # (Scaffold's default init_op, no public name)

from modelzoo import features as F
from modelzoo import memory, parquet
from modelzoo.data_parallel import World
from modelzoo.datafiles import PARQUET
from modelzoo.distributed import progress_variable
from modelzoo.embedding_variables import DynamicEmbeddingTables, ps_devices
from modelzoo.export import export_saved_model, warm_start
from modelzoo.hooks import (TRAINING_LOSS, EvaluatingCheckpointSaver, Evaluation, FollowDecisions, ThroughputHook,
                            ThroughputMeter)
from modelzoo.layers import dropout, precision
from modelzoo.metrics import eval_metrics, streaming_sum
from modelzoo.optimizers import build_optimizer
from modelzoo.run import tasks as multitask
from modelzoo.run.report import describe_variable_bytes
from modelzoo.run.spec import ModelInputs

tf1 = tf.compat.v1


def session_config(speed, cluster=None):
    """The session of options.SpeedOptions `speed` (--inter/--intra, --op_fusion, --bf16_mode, --xla)."""
    config = tf1.ConfigProto(allow_soft_placement=True, inter_op_parallelism_threads=speed.inter,
                             intra_op_parallelism_threads=speed.intra)
    if cluster is not None:  # a trainer's session sees the PS tasks and itself, never another worker
        config.device_filters.extend(cluster.device_filters())
    rewrite = config.graph_options.rewrite_options
    # Stock TensorFlow runs the remapper by default; --op_fusion false (and --tf) turn it off.
    rewrite.remapping = rewriter_config_pb2.RewriterConfig.ON if speed.op_fusion else \
        rewriter_config_pb2.RewriterConfig.OFF
    if speed.bf16 and speed.bf16_mode == "grappler":
        # the model graph stays float32; Grappler's oneDNN pass puts its allow-listed ops in bfloat16
        rewrite.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    if speed.xla:
        config.graph_options.optimizer_options.global_jit_level = tf1.OptimizerOptions.ON_1
    return config


def _cross_entropy(labels, logits):
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def embedding_penalty(rows, emb_l2):
    """--emb_l2: `emb_l2` x the squared L2 norms of the looked-up embedding rows, summed (the runner divides by
    the batch). It counts occurrences, not unique rows: an id seen k times in the batch is penalized k times,
    so the penalty is the mean over examples of each example's own penalty (the same at any batch size and
    micro-batching, and under Horovod's averaged gradients), and it needs only the looked-up rows, which every
    kind of table gives (fixed, fused, --tf feature columns, --ev) while not all expose the row ids. Only the
    rows looked up get a gradient from it: the rest of each table is untouched (FuxiCTR/BARS's
    embedding_regularizer, applied lazily)."""
    return emb_l2 * tf.add_n([tf.reduce_sum(tf.square(r)) for r in rows]) if rows else tf.constant(0.0)


def micro_batched_gradients(forward, features, labels, micro_batches, loss_of=None, penalty_of=None):
    """Gradients of the full-batch mean loss, computed one micro-batch after another (plus, with `penalty_of`,
    the penalty its call returns after each micro-batch's forward pass, summed over that micro-batch's
    examples and divided by the full batch: --emb_l2).

    Each micro-batch's forward pass waits for the previous one's gradients, so only one
    micro-batch's activations are alive at a time. Dense gradients are summed; sparse (embedding)
    gradients are concatenated, never densified. Returns (loss, [(grad, var)]).
    """
    batch = tf.shape(tf.nest.flatten(labels)[0])[0]  # (labels: [B], or {column: [B]} with several)
    base, rest = batch // micro_batches, batch % micro_batches
    total_loss, sums, previous, variables = 0.0, None, [], None
    for i in range(micro_batches):
        with tf.control_dependencies(previous):
            start = i * base + tf.minimum(i, rest)
            size = base + tf.cast(i < rest, tf.int32)
            part = {k: v[start:start + size] for k, v in features.items()}
            part_labels = tf.nest.map_structure(lambda y, s=start, n=size: y[s:s + n], labels)
            # this micro-batch's share of the full-batch mean (an empty micro-batch adds 0, not NaN)
            if loss_of is None or loss_of is _cross_entropy:
                weighted = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
                    labels=part_labels, logits=forward(part))) / tf.cast(batch, tf.float32)
            else:  # a mean loss weighted by the micro-batch's share of the batch
                weighted = loss_of(part_labels, forward(part)) * \
                    tf.cast(size, tf.float32) / tf.cast(batch, tf.float32)
            if penalty_of is not None:
                weighted += penalty_of() / tf.cast(batch, tf.float32)
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
    return [(None, build_optimizer(args.optimizer, args.learning_rate * lr_factor, global_step=global_step))]


def variable_nbytes(var):
    """The bytes of a variable's value (0 while its shape is not fully known)."""
    shape = var.shape
    return shape.num_elements() * var.dtype.base_dtype.size if shape.is_fully_defined() else 0


def variable_bytes(grads_and_vars, groups):
    """Bytes of the variables training holds, read from the graph: the tables (the variables updated by
    sparse gradients: embeddings and wide weights) and the dense layers, each with its optimizer slots.
    Dynamic embedding variables (--ev) grow with the ids admitted: only their count is given."""
    sizes = {"tables": 0, "table_slots": 0, "dense": 0, "dense_slots": 0, "dynamic_tables": 0}
    for grad, var in grads_and_vars:
        if type(var).__name__ == "TrainableWrapper":  # TFRA: a lookup's rows, the table lives elsewhere
            sizes["dynamic_tables"] += 1
            continue
        kind = "tables" if isinstance(grad, tf.IndexedSlices) else "dense"
        sizes[kind] += variable_nbytes(var)
        slot_key = "table_slots" if kind == "tables" else "dense_slots"
        for _, opt in groups:
            slots = [opt.get_slot(var, name) for name in opt.get_slot_names()]
            sizes[slot_key] += sum(variable_nbytes(slot) for slot in slots if slot is not None)
    return sizes


def plan_memory(ctx, sizes, groups):
    """(the start-up memory line, the plan for result.json) (modelzoo/memory.py), raising MemoryPlanError
    before the session allocates anything when the run cannot fit; --ev's tables are planned from the ids
    the schema expects (memory.dynamic_tables_plan)."""
    slots = max(len(opt.get_slot_names()) for _, opt in groups)
    ev = ctx.opts.ev
    dynamic = memory.dynamic_tables_plan(
        ctx.schema, slots, fused=ctx.opts.speed.emb_fusion,
        train_rows=ctx.data.train_rows if ctx.data is not None else None,
        counts=ev.counting, last_steps=ev.track_updates) if sizes["dynamic_tables"] else {}
    cluster = ctx.world.cluster
    servers = cluster.num_ps if cluster else 0
    # (one process evaluates the held-out rows: rank 0, or a PS job's evaluator task, which plans nothing here)
    evaluating = ctx.data is not None and ctx.world.is_chief and not cluster and not ctx.opts.train.no_eval \
        and not ctx.opts.train.benchmark
    eval_bytes = memory.evaluation_bytes(ctx.data.eval_rows) if evaluating else 0
    return (memory.check(sizes, sum(dynamic.values()), parameter_servers=servers, eval_bytes=eval_bytes),
            memory.record(sizes, dynamic, parameter_servers=servers, eval_bytes=eval_bytes))


def apply_by_group(groups, grads_and_vars, global_step):
    """Each variable is updated by the optimizer of the first group whose prefix its name starts with
    (the group with prefix None takes the rest); the global step then advances once."""
    fallback = [k for k, (prefix, _) in enumerate(groups) if prefix is None]
    buckets = [[] for _ in groups]
    for grad, var in grads_and_vars:
        matches = [k for k, (prefix, _) in enumerate(groups) if prefix and var.op.name.startswith(prefix)]
        if not matches and not fallback:
            raise ValueError(f"no optimizer group takes variable {var.op.name}")
        buckets[(matches or fallback)[0]].append((grad, var))
    updates = [opt.apply_gradients(gv) for (_, opt), gv in zip(groups, buckets) if gv]
    with tf.control_dependencies(updates):
        return tf1.assign_add(global_step, 1).op


def make_tables(ctx, training, frozen=None):
    """The run's embedding tables: --ev's dynamic hash tables, --tf's feature columns, or fixed tables.
    Every kind gives the lookups and features.TrainingInterface, so the model_fn has one path."""
    opts = ctx.opts
    if opts.ev is not None:
        return DynamicEmbeddingTables(ctx.schema, opts.speed.emb_fusion, opts.ev, training,
                                      devices=ps_devices(training), frozen=frozen)
    tables = F.FeatureColumnTables(ctx.schema) if opts.speed.tf else \
        F.EmbeddingTables(ctx.schema, fused=opts.speed.emb_fusion)
    tables.partitioner = ctx.world.input_partitioner(opts.distributed)
    return tables


def make_model_fn(ctx, meter, steps_range, ev_report=None, decide=None):
    """The Estimator's model_fn; `steps_range` = (the step training starts at, the step it stops at). With
    `decide` (run/local.in_session_decisions) the training graph evaluates the held-out rows at the schedule's
    evaluation steps in the training session (hooks.EvaluatingCheckpointSaver)."""
    spec, args, schema, world, opts = ctx.spec, ctx.args, ctx.schema, ctx.world, ctx.opts
    loss_of = multitask.loss_function(spec, args) if spec.tasks else (spec.loss or _cross_entropy)
    ev_report = {} if ev_report is None else ev_report

    def model_fn(features, labels, mode, params, config=None):
        features = dict(features)
        bad_rows = features.pop(F.BAD_ROWS, None)
        labels_passed = F.pop_label_features(features)  # --predict writes them next to the scores
        groups = features.pop(F.GROUP, None)  # the group column's keys, for GAUC (evaluation only)
        if labels is not None and spec.tasks:
            labels = multitask.refuse_outside(multitask.label_dict(labels, schema), spec.tasks)
        elif isinstance(labels, dict):  # a single-task model on a schema of several labels: the first
            labels = labels[schema.label.name]
        training = mode == tf.estimator.ModeKeys.TRAIN
        tables = make_tables(ctx, training, params.get("frozen"))

        penalties, penalties_on = [], bool(opts.train.emb_l2)  # --emb_l2: each training forward pass's penalty

        def forward(feats):
            if F.is_raw(feats):  # (always with --tf: it turns --smartstaged off)
                feats = F.transform(feats, schema, keyed=tables.keyed, stock_columns=opts.speed.tf)
            inputs = ModelInputs(feats.get(F.DENSE), feats[F.IDS], tables, schema, feats.get(F.CROSS_IDS),
                                 F.lists_of(feats))
            # --dense_layer_partitioner: every other variable of the model (its tables set their own);
            # --bf16: the precision scope every modelzoo.layers.mlp reads (so no model can forget it), except
            # under --bf16_mode grappler, where the model builds float32 and session_config's pass converts it;
            # --dropout: the dropout scope every mlp reads, open in training graphs only
            with tf1.variable_scope(tf1.get_variable_scope(), partitioner=world.dense_partitioner(opts.distributed)), \
                    precision(tf.bfloat16 if opts.speed.bf16_casts else tf.float32), \
                    dropout(opts.train.dropout if training else 0.0), F.record_lookups() as looked_up:
                if spec.tasks:
                    logits = {k: tf.reshape(v, [-1]) for k, v in spec.build_heads(inputs, args, training).items()}
                else:
                    logits = tf.reshape(spec.build_logits(inputs, args, training), [-1])
            if training and penalties_on:
                penalties.append(embedding_penalty(looked_up, opts.train.emb_l2))
            return logits

        if mode == tf.estimator.ModeKeys.PREDICT:
            logits = forward(features)
            if spec.tasks:
                predictions = multitask.predictions(spec, multitask.probabilities(spec, logits), logits)
            else:
                predictions = {"probabilities": tf.sigmoid(logits), "logits": logits}
            served = {k: v for k, v in predictions.items() if k.startswith("probabilities")}
            predictions.update({key[1:]: value for key, value in labels_passed.items()})  # label, label/NAME
            return tf.estimator.EstimatorSpec(
                mode, predictions=predictions,
                export_outputs={"serving_default": tf.estimator.export.PredictOutput(served)})
        if mode == tf.estimator.ModeKeys.EVAL:
            logits = forward(features)
            if spec.tasks:
                metrics = multitask.metrics(spec, labels, multitask.probabilities(spec, logits), groups)
            else:
                metrics = eval_metrics(labels, tf.sigmoid(logits), groups)
            if bad_rows is not None:
                metrics["bad_rows_skipped"] = streaming_sum(bad_rows)
            return tf.estimator.EstimatorSpec(mode, loss=loss_of(labels, logits),
                                              eval_metric_ops=metrics)
        global_step = tf1.train.get_or_create_global_step()
        groups = (spec.optimizers or default_optimizers)(args, global_step,
                                                         world.lr_factor(opts.distributed.lr_scaling))
        if opts.speed.micro_batch:
            loss, grads_and_vars = micro_batched_gradients(forward, features, labels, opts.speed.micro_batch,
                                                           loss_of, (lambda: penalties[-1]) if penalties_on else None)
        else:
            loss = loss_of(labels, forward(features))
            if penalties:
                loss += penalties[-1] / tf.cast(tf.shape(tf.nest.flatten(labels)[0])[0], tf.float32)
            variables = tf1.trainable_variables()
            grads_and_vars = [(g, v) for g, v in zip(tf.gradients(loss, variables), variables) if g is not None]
        grads_and_vars = world.average_gradients(grads_and_vars)
        groups = [(prefix, tables.wrap_optimizer(opt)) for prefix, opt in groups]
        train_op = apply_by_group(groups, grads_and_vars, global_step)
        if world.is_chief and meter.variable_bytes is None:  # (once: a run trains in segments between evaluations)
            print(describe_variable_bytes(variable_bytes(grads_and_vars, groups)), flush=True)
            line, meter.memory_plan = plan_memory(ctx, variable_bytes(grads_and_vars, groups), groups)
            print(line, flush=True)
        meter.variable_bytes = variable_bytes(grads_and_vars, groups)
        after_update = tables.finish([opt for _, opt in groups], global_step, after=train_op)
        if after_update:
            train_op = tf.group(train_op, *after_update)
        # Always present (0 unless --bad_rows skip), so checkpoints resume across that flag.
        counter = tf1.get_variable("bad_rows_skipped", [], tf.int64, tf1.zeros_initializer(), trainable=False)
        if bad_rows is not None:
            train_op = tf.group(train_op, counter.assign_add(world.sum(bad_rows, "bad_rows")))
        # the rows this trainer has consumed (every step's batch is full: the training input repeats)
        progress = progress_variable()
        train_op = tf.group(train_op, tf1.scatter_add(progress, [world.progress_slot], [ctx.global_batch]))
        hooks = [ThroughputHook(meter, loss, ctx.global_batch, steps_range[0], steps_range[1],
                                opts.checkpoint.log_steps if world.logs_progress else 0, world.progress_prefix,
                                trainers=world.cluster.trainers if world.cluster else 1)]
        tf1.add_to_collection(TRAINING_LOSS, loss)  # for FiniteLossHook
        hooks += world.training_hooks()
        if world.is_chief:
            hooks += tables.training_hooks(ev_report, params["model_dir"], steps_range[1])
        if opts.checkpoint.timeline and world.is_chief:
            hooks.append(tf1.train.ProfilerHook(save_steps=opts.checkpoint.timeline, output_dir=os.path.join(
                params["model_dir"], "timeline"), show_memory=True))
        saver = tables.saver(opts.checkpoint.keep_checkpoint_max)
        # (warm_start's init_fn runs only when no checkpoint of this run is restored)
        warm = warm_start(opts.checkpoint.warm_start_from, tables.warm_start_tables()) \
            if opts.checkpoint.warm_start_from else None
        evaluation = in_session_evaluation(ctx, model_fn, params, config) \
            if decide is not None and world.is_chief else None
        # (after every global variable of the graph is made: the evaluation's reuse scopes come before)
        init_op, init_fn = initialization(after=warm)
        scaffold = tf1.train.Scaffold(saver=saver, init_op=init_op, init_fn=init_fn)
        chief_hooks = []
        if decide is not None:
            due = ctx.schedule.evaluates_at
            if world.is_chief:
                chief_hooks.append(EvaluatingCheckpointSaver(
                    config.model_dir, config.save_checkpoints_secs, config.save_checkpoints_steps, scaffold,
                    evaluation, due, decide, meter))
            else:
                hooks.append(FollowDecisions(due, decide))
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op, training_hooks=hooks,
                                          training_chief_hooks=chief_hooks, scaffold=scaffold)

    return model_fn


LARGE_VARIABLE_BYTES = 64 * 2 ** 20


def initialization(after=None, large=LARGE_VARIABLE_BYTES):
    """(init_op, init_fn) of a fresh run's Scaffold: one op for the variables under `large` bytes, then the
    large ones one at a time, then `after` (a warm start's init_fn).

    One op for every variable (Scaffold's default) runs the initializers of all tables at once, and each
    holds its initial value beside its variable until the assignment: at the real Kaggle cardinalities
    (6.49 GB of tables and slots) the process peaked 1.42x its variables before the first step, against
    1.08x one table at a time (issue 27; benchmarks/scale.py `full`). Small variables keep the one op:
    hundreds of session calls would slow every start for nothing."""
    small, big = [], []
    for var in tf1.global_variables():
        (big if variable_nbytes(var) >= large else small).append(var)
    if not big:
        return None, after  # (Scaffold's default init_op)
    # (the rest of Scaffold's default init_op: shared resources and SavedModel initializers)
    init_op = tf.group(*[v.initializer for v in small],
                       tf_resources.initialize_resources(tf_resources.shared_resources()),
                       *tf1.get_collection("saved_model_initializers"))

    def init_fn(scaffold, session):
        for var in big:
            session.run(var.initializer)
        if after is not None:
            after(scaffold, session)
    return init_op, init_fn


def in_session_evaluation(ctx, model_fn, params, config):
    """The held-out rows' metrics in the training graph, built by the model_fn's own EVAL mode (so they are
    exactly Estimator.evaluate's, loss included) over the same variables (--ev's tables are read without
    inserting keys or counting sightings), from an input re-initialized at each evaluation (hooks.Evaluation)."""
    iterator = tf1.data.make_initializable_iterator(input_fn(ctx, ctx.data.eval, False)())
    features, labels = iterator.get_next()
    before = {v.name for v in tf1.local_variables()}
    # (the training graph's variables, whether or not a model's own scopes say reuse: DCN-v2's cross layers do not)
    with tf1.name_scope("in_session_evaluation"), \
            tf1.variable_scope(tf1.get_variable_scope(), reuse=tf1.AUTO_REUSE):
        spec = model_fn(features, labels, tf.estimator.ModeKeys.EVAL, params, config)
        metrics = {**spec.eval_metric_ops, "loss": tf1.metrics.mean(spec.loss)}  # (as Estimator.evaluate adds it)
    fresh = [v for v in tf1.local_variables() if v.name not in before]
    return Evaluation(tf.group(iterator.initializer, tf1.variables_initializer(fresh)),
                      tf.group(*[update for _, update in metrics.values()]),
                      {name: value for name, (value, _) in metrics.items()})


def build_estimator(ctx, model_dir, meter=None, steps_range=(0, 1), ev_report=None, decide=None):
    """The Estimator of the run in `model_dir` (the checkpoint folder, or a Horovod rank's scratch folder);
    `decide`: evaluations inside the training session (make_model_fn)."""
    opts, world = ctx.opts, ctx.world
    if opts.train.benchmark:  # no checkpoint, no summaries
        saving = dict(save_checkpoints_steps=None, save_checkpoints_secs=None, save_summary_steps=0)
    elif world.is_chief or world.cluster:  # (a PS job's non-chief tasks write nothing: the Estimator knows)
        every = opts.checkpoint  # by steps, by seconds, or (both 0) only at the start and the end
        saving = dict(save_checkpoints_steps=every.save_steps or (None if every.save_secs else 10 ** 12),
                      save_checkpoints_secs=every.save_secs or None,
                      save_summary_steps=max(opts.checkpoint.log_steps, 100))
    else:  # only rank 0 writes checkpoints and summaries (`model_dir` is a scratch folder here)
        saving = dict(save_checkpoints_steps=None, save_checkpoints_secs=None, save_summary_steps=0)
    config = tf.estimator.RunConfig(
        model_dir=model_dir, tf_random_seed=opts.data.seed, session_config=session_config(opts.speed, world.cluster),
        keep_checkpoint_max=opts.checkpoint.keep_checkpoint_max, log_step_count_steps=None,
        experimental_max_worker_delay_secs=0, **saving)
    model_fn = make_model_fn(ctx, meter or ThroughputMeter(), steps_range, ev_report, decide)
    return tf.estimator.Estimator(model_fn, config=config, params={"model_dir": model_dir})


def export_model(ctx, checkpoint_path=None):
    """The latest checkpoint (or `checkpoint_path`: early stopping's best) as a SavedModel of stock TensorFlow
    ops (modelzoo/export.py), on this machine: the raw input columns in, `probabilities` out. Returns its folder."""
    local = dataclasses.replace(ctx, world=World())  # one process, no partitioners
    model_fn = make_model_fn(local, ThroughputMeter(), (0, 1))
    return export_saved_model(model_fn, ctx.schema, checkpoint_path or tf.train.latest_checkpoint(ctx.checkpoint),
                              os.path.join(ctx.checkpoint, "export"))


def input_fn(ctx, slices, training, shard=(1, 0), with_label=False, skip_rows=0):
    """The Estimator's input. A training input skips `skip_rows` already-trained rows; in a PS job
    it reads the trainer's own shard (or the --workqueue's items) and skips the rows its slot of
    `input_progress` counts, read from the PS when the iterator starts (a restarted worker resumes)."""
    data, world, opts = ctx.data, ctx.world, ctx.opts.data

    def fn():
        trainer_shard, lines = (1, 0), None
        skip = skip_rows
        if training and world.cluster:
            skip = progress_variable()[world.progress_slot]
            if opts.workqueue:
                lines = world.workqueue_lines(data, parquet.range_dataset(ctx.schema)
                                              if data.delimiter == PARQUET else None)
            else:
                trainer_shard = (world.cluster.trainers, world.progress_slot)
        if data.delimiter == PARQUET:
            ds = F.make_parquet_dataset(slices, ctx.schema, opts.batch_size, training, opts.smartstaged, opts.bad_rows,
                                      seed=opts.seed, shard=shard, keyed=opts.keyed, trainer_shard=trainer_shard,
                                      skip_rows=skip, rows=lines)
        else:
            ds = F.make_dataset(slices, ctx.schema, data.delimiter, opts.batch_size, training, opts.smartstaged,
                                opts.bad_rows, seed=opts.seed, shard=shard, keyed=opts.keyed,
                                trainer_shard=trainer_shard, skip_rows=skip, lines=lines,
                                layout=data.layout(ctx.schema))
        return ds.map(lambda f, y: ({**f, **F.label_features(y)}, y)) if with_label else ds
    return fn

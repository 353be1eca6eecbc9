"""Checkpoints and identity: what a checkpoint folder must match to be resumed (checkpoint_identity and
its refusals), the chief's claim of the folder, the steps and input rows a checkpoint holds, and the
one-line endings of a training that stops early."""
import contextlib
import glob
import json
import os
import re
import shutil

import tensorflow as tf

from modelzoo import incremental_ckpt
from modelzoo.embedding_variables import identity as ev_identity
from modelzoo.hooks import NonFiniteError
from modelzoo.io_utils import OutputError, atomic_write_json, probe_writable, write_problem
from modelzoo.run.errors import SIGTERM_EXIT, CheckpointMismatch, TrainingStopped  # noqa: F401 (raised here)


def checkpoint_identity(spec, args, schema):
    """What must match for a checkpoint to be restored into this run's graph: every flag that changes the
    set or the shapes of the variables. (Not the partitioners: a checkpoint restores into other slices.
    Not --bf16: its master weights are float32.) --evaluate, --predict and --export_only build no
    optimizer, and --export_only joins the shards of a parameter-server job's --ev tables."""
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


def read_record(checkpoint):
    """The folder's run_config.json (the identity, and from check_data the data), or None before it is written
    (it is replaced atomically)."""
    try:
        with open(os.path.join(checkpoint, "run_config.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def data_recorded(checkpoint):
    """Whether the chief has recorded its data (check_data), having resolved and indexed it: what the other
    tasks of a PS job wait for before resolving the data themselves."""
    return "data" in (read_record(checkpoint) or {})


def check_checkpoint(path, identity, record_new=True):
    """Refuse a checkpoint folder made by another model, schema or layout; record ours if new."""
    record = os.path.join(path, "run_config.json")
    theirs = read_record(path)
    if theirs is not None:
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


def data_identity(data):
    """What a checkpoint was trained on (datafiles.DataSpec `data`): each training file's name, size and first
    line's fingerprint, and whether it is a generated sample."""
    from modelzoo.datafiles import file_identity
    paths = list(dict.fromkeys(piece.path for piece in data.train))  # (in order, each file once)
    return {"train_files": [file_identity(path) for path in paths], "generated": bool(data.generated)}


def describe_data(identity):
    files = identity["train_files"]
    words = ", ".join(f"{f['name']} ({f['bytes']:,} bytes)" for f in files[:3]) + \
        (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return f"{'generated ' if identity.get('generated') else ''}{words}"


def check_data(checkpoint, data):
    """The chief's check that a checkpoint is resumed on the data it was trained on (a generated sample
    replaced by real data would otherwise continue the synthetic model and skip as many real rows);
    records this run's data beside the identity (a folder without a checkpoint yet takes any data)."""
    theirs = read_record(checkpoint)
    ours, old = data_identity(data), theirs.get("data")
    if old == ours:
        return
    if old is not None and tf.train.latest_checkpoint(checkpoint):
        raise CheckpointMismatch(f"--checkpoint {checkpoint} was trained on {describe_data(old)}, not on this "
                                 f"run's {describe_data(ours)}: resuming would continue that model and skip the "
                                 "rows it had read; give a new --checkpoint, with --warm_start_from "
                                 f"{checkpoint} to fine-tune that model on this data deliberately")
    atomic_write_json(os.path.join(checkpoint, "run_config.json"), {**theirs, "data": ours})


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


def global_step_of(checkpoint):
    latest = tf.train.latest_checkpoint(checkpoint)
    return int(tf.train.load_variable(latest, "global_step")) if latest else 0


def resume_step(checkpoint, ev=None):
    """The step a run resumes from: the latest checkpoint's, or with --ev --incremental_ckpt (options.EVOptions
    `ev`) the last delta's after it."""
    if ev is not None and ev.incremental_secs:
        return incremental_ckpt.latest_step(checkpoint)
    return global_step_of(checkpoint)


def rows_consumed(checkpoint, slot=0, incremental=False):
    """Rows the checkpoint's run has trained on (its `input_progress` slot; 0 without a checkpoint), with
    `incremental` as the deltas after the full checkpoint leave it."""
    latest = tf.train.latest_checkpoint(checkpoint)
    if not latest:
        return 0
    try:
        if incremental:
            return int(incremental_ckpt.dense_value(checkpoint, "input_progress")[slot])
        return int(tf.train.load_variable(latest, "input_progress")[slot])
    except tf.errors.NotFoundError:
        raise CheckpointMismatch(f"--checkpoint {checkpoint} was written by an older version of this model zoo "
                                 "(it has no input_progress); give a new --checkpoint folder") from None


# what a run killed while writing leaves: TensorFlow's checkpoint shards before their merge, the
# Estimator's SavedModel before its rename, our atomic writers' temporary files
LEFTOVER_PATTERNS = ("model.ckpt-*_temp*", os.path.join("export", "temp-*"), ".tmp-*")


def remove_leftovers(checkpoint):
    """Remove what an interrupted write left in the checkpoint folder (never read: the checkpoint
    state, the export folders and result.json only name complete files)."""
    found = sorted(p for pattern in LEFTOVER_PATTERNS for p in glob.glob(os.path.join(checkpoint, pattern)))
    for path in found:
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    if found:
        print(f"removed what an interrupted write left: {', '.join(os.path.relpath(p, checkpoint) for p in found)}",
              flush=True)


def claim_checkpoint(checkpoint, identity):
    """The chief's checks before any work: the folder can be written, an interrupted write's leftovers
    go, and a checkpoint already there is this model's (ours is recorded if new)."""
    probe_writable(checkpoint, "--checkpoint")
    remove_leftovers(checkpoint)
    check_checkpoint(checkpoint, identity)


def last_checkpoint_words(checkpoint):
    latest = tf.train.latest_checkpoint(checkpoint)
    if not latest:
        return f"No checkpoint was saved in {checkpoint} yet."
    return f"The latest checkpoint, step {global_step_of(checkpoint):,} ({latest}), stays the last good one."


@contextlib.contextmanager
def guarded_training(checkpoint, stop, saves=True):
    """What ends training early, each as one line (TrainingStopped, OutputError): SIGTERM (the saver
    wrote a final checkpoint), a NaN or Inf loss or variable (the last good checkpoint stays), a
    volume that refuses the checkpoint (full, read-only: the previous checkpoint stays)."""
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

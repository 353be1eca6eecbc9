"""The one flag parser shared by every model's train.py.

Flag names and meanings follow Alibaba DeepRec's model zoo so that its users feel at home.
A flag either works as documented or is refused here with a message that says why: nothing is
accepted and silently ignored. This module does not import TensorFlow, so that the environment
(XLA flags, thread counts) can be set from the flags before TensorFlow starts.
"""
import argparse
import sys

from modelzoo.options import EVOptions


# The optimizers of --optimizer (DeepRec names); modelzoo/optimizers.py builds them.
OPTIMIZERS = ("adam", "adamasync", "adagraddecay", "adagrad", "gradientdescent", "ftrl")

# How --lr_scaling grows the learning rates with the number of Horovod processes.
LR_SCALINGS = ("none", "linear", "sqrt")

TRUE_WORDS = ("true", "t", "yes", "y", "1", "on")
FALSE_WORDS = ("false", "f", "no", "n", "0", "off")

# Speed switches that --tf turns off, and that are on or off by default as measured
# (see dlrm/README.md); None in the parsed namespace means "not given on the command line".
SPEED_SWITCHES = ("smartstaged", "op_fusion", "emb_fusion", "xla")

# Flags of DeepRec whose implementation belongs to a later issue of this project. They are
# parsed (so users get a clear message instead of "unrecognized argument") and refused when on.
# Flags of parameter-server jobs: refused outside one (no TF_CONFIG with ps tasks), with this reason.
NEEDS_PS = {
    "workqueue": "it deals the input files out to the workers of a parameter-server job through a queue on a PS",
    "input_layer_partitioner": "it slices embedding tables across the PS tasks of a parameter-server job",
    "dense_layer_partitioner": "it slices dense-layer variables across the PS tasks of a parameter-server job",
    "eval_throttle_secs": "it spaces the evaluations of a parameter-server job's evaluator task",
}
PS_JOB_HINT = ("run under a TF_CONFIG that names ps tasks (a TFJob from */distribute_k8s/, or "
               "python -m distribute_k8s.local_run MANIFEST)")
# Flags that refine another: given without it they would do nothing, so they are refused.
# name -> (whether the run uses it, what it needs)
REFINES = {
    "ev_filter_freq": (lambda a: a.ev_filter, "--ev --ev_filter counter or cbf"),
    "ev_cbf_max_elements": (lambda a: a.ev_filter == "cbf", "--ev --ev_filter cbf"),
    "ev_cbf_fpr": (lambda a: a.ev_filter == "cbf", "--ev --ev_filter cbf"),
    "ev_steps_to_live": (lambda a: a.ev_elimination == "gstep", "--ev --ev_elimination gstep"),
    "ev_l2_threshold": (lambda a: a.ev_elimination == "l2", "--ev --ev_elimination l2"),
    "ev_evict_steps": (lambda a: a.ev_elimination or a.dynamic_ev,
                       "--ev with --ev_elimination or --dynamic_ev (the eviction passes)"),
    "adaptive_emb_threshold": (lambda a: a.adaptive_emb, "--ev --adaptive_emb"),
    "adaptive_emb_buckets": (lambda a: a.adaptive_emb, "--ev --adaptive_emb"),
    "dynamic_ev_dims": (lambda a: a.dynamic_ev, "--ev --dynamic_ev"),
    "dynamic_ev_freqs": (lambda a: a.dynamic_ev, "--ev --dynamic_ev"),
    "bf16_mode": (lambda a: a.bf16, "--bf16 (it picks how --bf16 runs the MLPs in bfloat16)"),
    "generate_rows": (lambda a: not a.train_files, "--data_location (it is not read with --train_files)"),
    "early_stop_metric": (lambda a: not a.no_eval and (a.early_stop_patience or (
        a.early_stop_patience is None and not a.steps and not a.epochs)),
        "early stopping (--early_stop_patience N, or neither --steps nor --epochs: the run's default length)"),
}
# Flags that act on a model's MLP layers (modelzoo.layers.mlp): refused for a model without one (ModelSpec.has_mlp)
NEEDS_MLP = ("bf16", "dropout")
# The run's length when neither --steps nor --epochs is given (modelzoo/run/schedule.py decides; measured in
# benchmarks/epochs_by_size.py and benchmarks/small_data_auc.py): early stopping with this patience, capped at
# this many epochs.
DEFAULT_PATIENCE = 2
DEFAULT_MAX_EPOCHS = 100
# FTRL's default rate for a linear model's weights (lr/, Wide & Deep's wide part) at the default batch of 2,048.
# Stock FTRL moves a rarely seen weight by about rate x its gradient, which a batch mean divides by the batch size,
# so the rate must grow with the batch: on the real Criteo sample (benchmarks/results/small_data_auc.md), 100 steps
# of 2,048 at 0.4 score a median 0.7579 over 3 seeds, at 0.1 0.7483 and at 1.0 0.7529.
LINEAR_FTRL_RATE = 0.4
EARLY_STOP_METRICS = ("auc", "logloss")
EV_FILTERS = ("counter", "cbf")
BF16_MODES = ("casts", "grappler")
EV_ELIMINATIONS = ("gstep", "l2")

DEEPREC_ONLY_PROTOCOLS = ("grpc++", "star_server", "star", "grpc+verbs", "grpc+mpi", "grpc+seastar")

# The modes of a run, each named as its command line says it
TRAIN, EVALUATE, PREDICT, EXPORT, BENCHMARK = "training", "--evaluate", "--predict", "--export_only", "--benchmark"
MODES = (TRAIN, EVALUATE, PREDICT, EXPORT, BENCHMARK)
MODE_FLAGS = {"evaluate": EVALUATE, "predict": PREDICT, "export_only": EXPORT, "benchmark": BENCHMARK}
EVERY = frozenset(MODES)
TRAINING = frozenset({TRAIN, BENCHMARK})  # the training graph, the optimizer, the training input's order
TRAINING_RUN = frozenset({TRAIN})  # what a run that keeps its model does: its length, evaluations, checkpoints
READS_DATA = EVERY - {EXPORT}  # the input files and the session that reads them (--export_only has neither)
EVALUATES = frozenset({TRAIN, EVALUATE, PREDICT})  # the held-out rows (--benchmark evaluates nothing)
KEEPS_CHECKPOINT = EVERY - {BENCHMARK}  # a checkpoint folder (--benchmark trains in a temporary one)
# The one refusal table: the modes in which each shared flag acts. Given on the command line (even at its default
# value) in another mode it would do nothing, so it is refused there in one line naming it and the mode
# (`refusal`). A model's own flags act in every mode when they shape its variables (ModelSpec.shape_flags, which
# a checkpoint must match), else in training only, unless its add_flags says otherwise (`acts_in`).
ACTS_IN = {
    "data_location": READS_DATA, "train_files": READS_DATA, "eval_files": EVALUATES, "schema": EVERY,
    "bad_rows": READS_DATA, "header": READS_DATA, "generate_rows": READS_DATA,
    "steps": TRAINING, "epochs": TRAINING_RUN, "eval_steps": TRAINING_RUN, "early_stop_patience": TRAINING_RUN,
    "early_stop_metric": TRAINING_RUN, "batch_size": READS_DATA, "no_eval": TRAINING_RUN, "output_dir": EVERY,
    "checkpoint": KEEPS_CHECKPOINT, "save_steps": TRAINING_RUN, "save_secs": TRAINING_RUN,
    "keep_checkpoint_max": TRAINING_RUN, "seed": TRAINING, "learning_rate": TRAINING, "optimizer": TRAINING,
    "micro_batch": TRAINING, "log_steps": TRAINING, "timeline": TRAINING_RUN, "emb_l2": TRAINING,
    "dropout": TRAINING, "task_weights": TRAINING,
    **{name: EVERY for name in MODE_FLAGS},  # (they choose the mode; two of them are refused together)
    "warm_start_from": TRAINING_RUN, "hvd": TRAINING_RUN, "global_batch_size": READS_DATA,
    "lr_scaling": TRAINING_RUN,
    "inter": READS_DATA, "intra": READS_DATA, "tf": EVERY, "bf16": EVERY, "bf16_mode": EVERY,
    "smartstaged": READS_DATA, "op_fusion": READS_DATA, "xla": READS_DATA, "emb_fusion": EVERY,
    # the embedding variables' layout and admission act wherever the tables are read; eviction while training
    "ev": EVERY, "ev_filter": EVERY, "ev_filter_freq": EVERY, "ev_cbf_max_elements": EVERY, "ev_cbf_fpr": EVERY,
    "ev_elimination": EVERY, "ev_steps_to_live": TRAINING, "ev_l2_threshold": TRAINING, "ev_evict_steps": TRAINING,
    "adaptive_emb": EVERY, "adaptive_emb_threshold": EVERY, "adaptive_emb_buckets": EVERY, "dynamic_ev": EVERY,
    "dynamic_ev_dims": EVERY, "dynamic_ev_freqs": EVERY, "incremental_ckpt": KEEPS_CHECKPOINT,
    "protocol": EVERY,  # (only grpc is accepted; it names the transport of a parameter-server job)
    "workqueue": TRAINING_RUN, "input_layer_partitioner": TRAINING_RUN, "dense_layer_partitioner": TRAINING_RUN,
    "eval_throttle_secs": TRAINING_RUN,
}
# A flag that another flag replaces: name -> (the other flag, what the flag is for)
REPLACED_BY = {
    "output_dir": ("checkpoint", "the parent of the default checkpoint folder OUTPUT_DIR/MODEL"),
    "data_location": ("train_files", "the folder read (or generated into) when no --train_files are given"),
}
BENCHMARK_WORDS = "--benchmark (train --steps steps in a temporary folder; no evaluation, export or checkpoint)"


def acts_in(modes, action):
    """Mark a model flag's action (`group.add_argument(...)`) as acting in `modes` (e.g. flags.EVERY for one that
    changes the forward graph without changing the variables); returns the action."""
    action.modes = frozenset(modes)
    return action


def run_mode(args):
    """The mode of parsed `args`: training unless a mode flag says otherwise."""
    return next((mode for name, mode in MODE_FLAGS.items() if getattr(args, name)), TRAIN)


def refusal(name, mode, modes=None):
    """The one line that refuses --name in `mode`, where it would do nothing (it acts in `modes`: its ACTS_IN)."""
    modes = ACTS_IN[name] if modes is None else modes
    if mode == BENCHMARK:
        return f"{BENCHMARK_WORDS} contradicts --{name}; drop one of them"
    if mode != TRAIN and modes <= TRAINING:
        return f"--{name} acts on training, and {mode} does not train; drop --{name}"
    if mode == EXPORT:
        return (f"--{name} acts on the input or the session that reads it, and --export_only has neither (it writes "
                f"the checkpoint's SavedModel); drop --{name}")
    return f"--{name} does nothing in {mode}; drop --{name}"


class Default:
    """A default value, marked as not given on the command line (see `FlagParser`)."""

    def __init__(self, value):
        self.value = value

    def __str__(self):  # the help's "(default: ...)"
        return str(self.value)


GIVEN = "_given"  # the parsed namespace's set of the flags given on the command line (`validate` pops it)
# what `validate` leaves of it: the flags the command line gave (RunContext pops it: a ModelSpec's
# small_data_defaults apply only to the flags not given)
GIVEN_FLAGS = "_given_flags"
MODES_OF = "_modes"  # the parsed namespace's {flag: the modes it acts in} (`validate` pops it)
NAMED = "_named"  # the parsed namespace's {flag: the name the command line gave it by} (an alias's own name)


class FlagParser(argparse.ArgumentParser):
    """argparse that notes which flags the command line gave (the model's own flags too), so that a
    flag that refines another (`--ev_filter_freq` of `--ev_filter`) or that acts only in some runs is
    refused where it would do nothing, even at its default value, instead of being silently ignored.
    `shape_flags`: the model flags that act in every mode (ModelSpec.shape_flags); see ACTS_IN."""

    def __init__(self, *args, shape_flags=(), table=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.shape_flags = tuple(shape_flags)
        self.table = ACTS_IN if table is None else table  # (gdmix_lr/train.py has its own flags and modes)

    def modes_of(self, action):
        """Where the flag of `action` acts: its acts_in mark, the table (ACTS_IN), or for a model's own flag
        every mode (a shape flag) or training only."""
        if hasattr(action, "modes"):
            return action.modes
        if action.dest in self.table:
            return self.table[action.dest]
        return EVERY if action.dest in self.shape_flags else TRAINING

    def parse_known_args(self, args=None, namespace=None):
        named = self.refuse_two_names_of_one_flag(sys.argv[1:] if args is None else args)
        for action in self._actions:
            if action.dest != "help" and action.default is not argparse.SUPPRESS \
                    and not isinstance(action.default, Default):
                value = action.default
                if isinstance(value, str) and action.type is not None:
                    value = self._get_value(action, value)
                action.default = Default(value)
        namespace, extras = super().parse_known_args(args, namespace)
        given = set()
        for name, value in list(vars(namespace).items()):
            if isinstance(value, Default):
                setattr(namespace, name, value.value)
            elif name not in (GIVEN, MODES_OF, NAMED):
                given.add(name)
        setattr(namespace, GIVEN, given | getattr(namespace, GIVEN, set()))
        modes = {a.dest: self.modes_of(a) for a in self._actions if a.option_strings and a.dest != "help"}
        setattr(namespace, MODES_OF, modes)
        setattr(namespace, NAMED, named)
        return namespace, extras

    def refuse_two_names_of_one_flag(self, args):
        """Two options that set one value (W&D's --deep_learning_rate is --learning_rate) given together: the
        last would win silently."""
        named = {}
        for arg in map(str, args):
            if arg == "--":
                break
            found = self._parse_optional(arg) if arg.startswith("--") else None
            found = found[0] if isinstance(found, list) and len(found) == 1 else found  # (Python 3.12's form)
            if isinstance(found, tuple) and found[0] is not None:
                action = found[0]
                named.setdefault(action.dest, {})[action.option_strings[0]] = True
        for dest, names in named.items():
            if len(names) > 1:
                self.error(f"{' and '.join(names)} set the same value ({dest}); give one of them")
        return {dest: next(iter(names))[2:] for dest, names in named.items()}


class FlagError(SystemExit):
    """A refused flag: exits with status 2 and a one-line message, never a stack trace."""

    def __init__(self, message):
        super().__init__(2)
        self.message = message

    def __str__(self):
        return self.message


def str2bool(text):
    """Parse a boolean flag value: --ev, --ev True, --ev=false."""
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


SEED_LIMIT = 2 ** 63  # TensorFlow's seeds are int64


def seed_int(text):
    """A seed: TensorFlow takes any int64, but numpy's generators (the generated data) none below 0."""
    value = int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63-1, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def task_weight(text):
    """TASK=WEIGHT (a number >= 0) -> (task, weight)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected TASK=WEIGHT (e.g. ctcvr=10), got {text}")
    return name, non_negative_float(value)


def add_task_tower_flags(group):
    """The flags of a mixture-of-experts model's task towers (MMoE, PLE: modelzoo.layers.task_towers)."""
    group.add_argument("--tower_units", type=positive_int, nargs="+", default=[64],
                       help="hidden units of each task's tower")
    group.add_argument("--tower_input", choices=("mixture", "mixture_and_input"), default="mixture_and_input",
                       help="what each task's tower reads: its gate's mixture of the experts, or that and the "
                            "experts' input (a feature only a rare task needs reaches its tower; measured in "
                            "mmoe/README.md)")


def add_linear_ftrl_flags(group):
    """The flags of a model's linear part trained by its own FTRL (modelzoo.optimizers.linear_ftrl_optimizers:
    Wide & Deep's wide part, DeepFM's first order), at lr/'s rate by default: that part alone is lr/."""
    group.add_argument("--linear_learning_rate", type=positive_float, default=LINEAR_FTRL_RATE,
                       help="FTRL learning rate of the linear part (lr/'s default: the linear part alone is lr)")
    group.add_argument("--linear_l1_regularization", type=non_negative_float, default=0.0,
                       help="FTRL L1 regularization strength of the linear part")
    group.add_argument("--linear_l2_regularization", type=non_negative_float, default=0.0,
                       help="FTRL L2 regularization strength of the linear part")


def dropout_rate(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a dropout rate in [0, 1), got {text}")
    return value


def probability(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def int_list(text):
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return values


def add_bool(parser, name, help_text, default=False):
    parser.add_argument(f"--{name}", nargs="?", const=True, default=default, type=str2bool,
                        metavar="BOOL", help=help_text)


def build_parser(model_name, defaults, shape_flags=()):
    """The shared parser. `defaults` holds the model's own defaults (batch size, optimizer...)."""
    p = FlagParser(
        shape_flags=shape_flags, prog=f"{model_name}/train.py",
        description=f"Train, evaluate and export {model_name} (tf.compat.v1 graph mode, tf.estimator).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data_location", default=defaults.get("data_location", "./data/criteo"),
                   help="folder with train.csv/eval.csv (DeepRec CSV) or train.txt (Kaggle TSV, last 10%% "
                        "held out for eval); if it holds no data, a synthetic sample is generated there")
    g.add_argument("--train_files", default=None, help="glob(s) of training files, comma-separated")
    g.add_argument("--eval_files", default=None, help="glob(s) of evaluation files, comma-separated")
    g.add_argument("--schema", default=None, help="feature schema JSON (default: the model's own)")
    g.add_argument("--bad_rows", choices=("error", "skip"), default="error",
                   help="malformed rows stop the run with file, line and problem (error) or are "
                        "skipped and counted (skip)")
    g.add_argument("--header", choices=("auto", "true", "false"), default="auto",
                   help="line 1 of each file names the columns (true), does not (false), or does when it holds "
                        "the schema's column names (auto); with a header, columns are matched by name")
    g.add_argument("--generate_rows", type=positive_int, default=defaults.get("generate_rows", 500_000),
                   help="rows of synthetic data generated when --data_location holds no data")

    g = p.add_argument_group("training")
    g.add_argument("--steps", type=non_negative_int, default=0,
                   help="total global steps to train (0: see --epochs); a rerun resumes from the checkpoint and "
                        "stops at this step")
    g.add_argument("--epochs", type=positive_int, default=None,
                   help="passes over the training rows, evaluated on the held-out rows at the end of each (or "
                        "every --eval_steps). Without --steps or --epochs the run picks its length from the data "
                        "(one epoch on large data; on small data up to %d epochs, stopped early on the held-out "
                        "metric)" % DEFAULT_MAX_EPOCHS)
    g.add_argument("--eval_steps", type=positive_int, default=None,
                   help="evaluate the held-out rows every N steps (default: at the end of each epoch)")
    g.add_argument("--early_stop_patience", type=non_negative_int, default=None,
                   help="stop when N evaluations in a row have not improved on the best --early_stop_metric; the "
                        "best checkpoint is kept in CHECKPOINT/best and exported (0: off; default %d when the "
                        "run picks its length, else off)" % DEFAULT_PATIENCE)
    g.add_argument("--early_stop_metric", choices=EARLY_STOP_METRICS, default="auc",
                   help="the held-out metric that picks the best checkpoint: auc (higher is better) or logloss "
                        "(lower is better)")
    g.add_argument("--batch_size", type=positive_int, default=None,
                   help=f"samples per step in each process (default {defaults.get('batch_size', 2048)})")
    add_bool(g, "no_eval", "skip evaluation after training")
    g.add_argument("--output_dir", default="./result", help="parent folder of default checkpoint folders")
    g.add_argument("--checkpoint", default=None,
                   help="checkpoint folder (default: OUTPUT_DIR/MODEL); an existing one is resumed")
    g.add_argument("--save_steps", type=non_negative_int, default=0,
                   help="save a checkpoint every N steps instead of every --save_secs (0: by time)")
    g.add_argument("--save_secs", type=non_negative_int, default=600,
                   help="save a checkpoint every N seconds of training, as Estimator does (0: only at the start "
                        "and the end); --save_steps N replaces it")
    g.add_argument("--keep_checkpoint_max", type=positive_int, default=1)
    g.add_argument("--seed", type=seed_int, default=2021, help="graph-level seed, data shuffling and generated data")
    g.add_argument("--learning_rate", type=positive_float, default=defaults.get("learning_rate", 0.01))
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.get("optimizer", "adamasync"))
    g.add_argument("--micro_batch", type=non_negative_int, default=0,
                   help="split each batch into N micro-batches and accumulate their gradients "
                        "(same result, lower peak memory); 0 or 1: off")
    g.add_argument("--log_steps", type=positive_int, default=50, help="progress line every N steps")
    g.add_argument("--timeline", type=non_negative_int, default=0,
                   help="write a Chrome trace (timeline-STEP.json) every N steps; 0: off")
    g.add_argument("--emb_l2", type=non_negative_float, default=defaults.get("emb_l2", 0.0), metavar="LAMBDA",
                   help="L2 penalty on the embedding rows a batch looks up (linear weights included), LAMBDA x "
                        "the sum of their squares per example, averaged over the batch (each occurrence counts)")
    g.add_argument("--dropout", type=dropout_rate, default=defaults.get("dropout", 0.0), metavar="RATE",
                   help="dropout rate after each hidden relu layer of the model's MLPs, in training only "
                        "(never the logit layer)")

    g.add_argument("--task_weights", type=task_weight, nargs="+", default=None, metavar="TASK=WEIGHT",
                   help="a multi-task model's loss weight per task (EasyRec's loss_weight), e.g. ctcvr=10; a task "
                        "not named keeps the model's weight (1 unless its README says otherwise)")

    g = p.add_argument_group("evaluate or predict only (a trained --checkpoint)")
    add_bool(g, "evaluate", "evaluate the latest checkpoint on the eval data and exit (no training)")
    add_bool(g, "predict", "write predictions for the eval data to CHECKPOINT/predictions.csv and exit "
             "(no training)")
    add_bool(g, "export_only", "export the latest checkpoint (a parameter-server job's too) as a SavedModel of "
             "stock TensorFlow ops on this machine and exit (no training, no data needed)")
    g.add_argument("--warm_start_from", default=None, metavar="CHECKPOINT_OR_EXPORT",
                   help="a new run starts from this earlier model (a checkpoint folder or file prefix, or a "
                        "SavedModel folder): its dense layers and embedding tables (--ev: the rows); "
                        "ignored when --checkpoint is resumed")

    g = p.add_argument_group("synchronous data-parallel training (Horovod)")
    add_bool(g, "hvd", "train synchronously with Horovod (start with horovodrun -np N): each process reads "
             "its shard, gradients are averaged, only rank 0 writes checkpoints and exports")
    g.add_argument("--global_batch_size", type=positive_int, default=None,
                   help="samples per synchronous step over all processes; each process takes N / processes "
                        "(instead of --batch_size)")
    g.add_argument("--lr_scaling", choices=LR_SCALINGS, default="none",
                   help="multiply the learning rates by 1, by the number of processes (linear) or by its "
                        "square root (sqrt)")

    g = p.add_argument_group("performance")
    g.add_argument("--inter", type=non_negative_int, default=0, help="inter-op threads (0: TensorFlow's choice)")
    g.add_argument("--intra", type=non_negative_int, default=0, help="intra-op threads (0: TensorFlow's choice)")
    add_bool(g, "tf", "the stock TensorFlow baseline (DeepRec's --tf): tf.feature_column hash-bucket and "
             "embedding columns through input_layer, every speed switch off", default=False)
    add_bool(g, "bf16", "MLP compute in bfloat16 with float32 master weights", default=False)
    g.add_argument("--bf16_mode", choices=BF16_MODES, default="casts",
                   help="with --bf16: explicit bfloat16 casts around the MLPs (casts), or a float32 graph that "
                        "Grappler's auto_mixed_precision_onednn_bfloat16 pass rewrites (grappler; needs oneDNN)")
    add_bool(g, "benchmark", "train --steps steps on the data (generated when --data_location holds none) in a "
             "temporary folder: no evaluation, export or checkpoint; prints samples/s and writes "
             "OUTPUT_DIR/MODEL_benchmark/result.json", default=False)
    add_bool(g, "smartstaged", "hash and normalize the features in the tf.data pipeline (in parallel, "
             "prefetched, overlapping the training step) instead of in the step; the CSV decode is "
             "parallel and prefetched either way", default=None)
    add_bool(g, "op_fusion", "Grappler's remapper: fused MatMul+BiasAdd+Relu and similar kernels (off: the "
             "remapper is off)", default=None)
    add_bool(g, "xla", "XLA auto-clustering (JIT compilation of op clusters) on CPU", default=None)
    add_bool(g, "emb_fusion", "all categorical embeddings as one table and one lookup", default=None)

    g = p.add_argument_group("embedding variables (dynamic hash embeddings, modelzoo/embedding_variables.py)")
    add_bool(g, "ev", "one dynamic hash table per categorical column keyed by the raw id: no collisions, "
             "rows created when an id is admitted", default=False)
    g.add_argument("--ev_filter", choices=EV_FILTERS, default=None,
                   help="admit an id only after --ev_filter_freq sightings, counted exactly (counter) or in a "
                        "counting Bloom filter of bounded size (cbf); until then it reads the zero vector")
    g.add_argument("--ev_filter_freq", type=positive_int, default=3, help="sightings before admission (3)")
    g.add_argument("--ev_cbf_max_elements", type=positive_int, default=100_000,
                   help="distinct ids per column the counting Bloom filter is sized for (100000)")
    g.add_argument("--ev_cbf_fpr", type=probability, default=0.01,
                   help="the Bloom filter's false-positive rate at that many ids (0.01)")
    g.add_argument("--ev_elimination", choices=EV_ELIMINATIONS, default=None,
                   help="evict rows not updated in the last --ev_steps_to_live steps (gstep) or whose L2 norm "
                        "is below --ev_l2_threshold (l2), with their optimizer slots")
    g.add_argument("--ev_steps_to_live", type=positive_int, default=4000,
                   help="gstep eviction: steps a row may go without an update (4000, as DeepRec's zoo)")
    g.add_argument("--ev_l2_threshold", type=positive_float, default=0.05,
                   help="l2 eviction: rows trained to a smaller L2 norm go (0.05; a fresh dim-16 row has ~0.12; "
                        "rows that start below it, as W&D's zero-initialized wide weights, stay)")
    g.add_argument("--ev_evict_steps", type=positive_int, default=1000,
                   help="run the eviction every N steps, and at every checkpoint (1000)")
    add_bool(g, "adaptive_emb", "ids seen fewer than --adaptive_emb_threshold times share a small "
             "hash-bucket table; frequent ids get their own dynamic rows (needs --ev)", default=False)
    g.add_argument("--adaptive_emb_threshold", type=positive_int, default=5,
                   help="sightings that move an id to the dynamic table (5)")
    g.add_argument("--adaptive_emb_buckets", type=positive_int, default=10_000,
                   help="rows of each column's hash-bucket table for the rare ids (10000)")
    add_bool(g, "dynamic_ev", "dynamic-dimension embedding variables: rare ids get a narrower row, "
             "zero-padded to the full width (needs --ev)", default=False)
    g.add_argument("--dynamic_ev_dims", type=int_list, default=None,
                   help="row widths from rare to frequent ids, the last one the model's width; tables "
                        "of another width scale them (default: width/4,width)")
    g.add_argument("--dynamic_ev_freqs", type=int_list, default=None,
                   help="sightings that promote an id to the next width, one fewer than the widths (10)")
    g.add_argument("--incremental_ckpt", type=non_negative_int, default=0,
                   help="every SECS seconds between checkpoints, save only the embedding-variable rows "
                        "changed since the last save (and the dense variables); 0 = off (needs --ev)")

    g = p.add_argument_group("parameter-server training (TF_CONFIG with ps tasks; see distribute_k8s/README.md)")
    g.add_argument("--protocol", default="grpc", help="distributed transport; stock TensorFlow has grpc only")
    add_bool(g, "workqueue", "deal the input out to the trainers dynamically through a queue on PS 0 (a faster "
             "trainer takes more; every item once per epoch) instead of a fixed shard per trainer")
    g.add_argument("--input_layer_partitioner", type=non_negative_int, default=0,
                   help="slice each embedding table across the PS tasks in slices of at least N MB; 0: whole "
                        "tables, each on one PS")
    g.add_argument("--dense_layer_partitioner", type=non_negative_int, default=0,
                   help="slice the dense layers' variables across the PS tasks in slices of at least N KB; "
                        "0: whole")
    g.add_argument("--eval_throttle_secs", type=positive_int, default=60,
                   help="the evaluator task evaluates the newest checkpoint at most this often (and always "
                        "the final one)")
    return p


def given_flags(args):
    """Take off `args` what FlagParser noted: the flags the command line gave, {flag: the modes it acts in} and
    {flag: the name it was given by}. (A namespace not made by FlagParser: none given.)"""
    return vars(args).pop(GIVEN, set()), vars(args).pop(MODES_OF, {}), vars(args).pop(NAMED, {})


def validate(args, speed_defaults, defaults=None, model_name="the model", has_mlp=True):
    """Refuse what cannot work, then resolve the speed switches (None -> measured default)."""
    defaults = defaults or {}
    given, modes, named = given_flags(args)
    setattr(args, GIVEN_FLAGS, frozenset(given))
    validate_mode(args, given, modes, named)
    if not has_mlp:
        for name in NEEDS_MLP:
            if name in given and getattr(args, name):
                raise FlagError(f"--{name} acts on a model's MLP layers, and {model_name} has none; drop --{name}")
    if args.global_batch_size and args.batch_size:
        raise FlagError("--global_batch_size (split over the processes) and --batch_size (per process) "
                        "conflict; give one of them")
    if not args.global_batch_size:
        args.batch_size = args.batch_size or defaults.get("batch_size", 2048)
    elif not args.hvd:
        args.batch_size = args.global_batch_size  # one process: the global batch is its batch
    # (with --hvd and --global_batch_size the runner sets --batch_size once the processes are known)
    if args.lr_scaling != "none" and not args.hvd:
        raise FlagError(f"--lr_scaling {args.lr_scaling} scales with the number of Horovod processes; "
                        "it needs --hvd")
    if args.warm_start_from == "":
        raise FlagError("--warm_start_from needs a checkpoint or SavedModel path")
    validate_length(args, given)
    if args.save_steps and args.save_secs and "save_secs" in given:
        raise FlagError(f"--save_steps {args.save_steps} and --save_secs {args.save_secs}: checkpoints are saved on "
                        "one timer, by steps or by seconds; give one of them")
    if args.benchmark:
        if not args.steps:
            raise FlagError("--benchmark needs --steps N (the steps to time)")
    validate_ev(args)
    for name, (used, needs) in REFINES.items():
        if name in given and not used(args):
            raise FlagError(f"--{name} needs {needs}; without it the flag would do nothing: add that or drop "
                            f"--{name}")
    validate_cluster(args, given)
    if args.protocol in DEEPREC_ONLY_PROTOCOLS:
        raise FlagError(f"--protocol {args.protocol} is refused: it is a DeepRec-only transport; "
                        "stock TensorFlow has --protocol grpc")
    if args.protocol != "grpc":
        raise FlagError(f"--protocol {args.protocol!r} is not known; use grpc")
    if args.tf:
        turned_on = [f"--{n}" for n in SPEED_SWITCHES if getattr(args, n)]
        turned_on += ["--ev"] * bool(args.ev) + ["--micro_batch"] * (args.micro_batch > 1)
        if turned_on:
            raise FlagError(f"--tf (the stock TensorFlow baseline: its feature columns, every speed switch off) "
                            f"conflicts with {' '.join(turned_on)}; drop one of them")
        for name in SPEED_SWITCHES:
            setattr(args, name, False)
    else:
        for name in SPEED_SWITCHES:
            if getattr(args, name) is None:
                # a model may measure another default with embedding variables ("emb_fusion_ev")
                value = speed_defaults.get(f"{name}_ev", speed_defaults[name]) if args.ev else speed_defaults[name]
                setattr(args, name, value)
    if args.micro_batch == 1:
        args.micro_batch = 0
    if args.micro_batch and args.micro_batch > (args.global_batch_size or args.batch_size):
        raise FlagError(f"--micro_batch {args.micro_batch} is larger than --batch_size {args.batch_size}")
    if args.eval_files and not args.train_files:
        raise FlagError("--eval_files needs --train_files too")
    return args


def validate_mode(args, given, modes, named):
    """One mode a run, and no flag given where it would do nothing (ACTS_IN; `modes`: the parser's, model flags
    included; `named`: the name each flag was given by)."""
    chosen = [f"--{name}" for name in MODE_FLAGS if getattr(args, name)]
    if len(chosen) > 1:
        raise FlagError(f"{' and '.join(chosen)} are separate runs; give one of them")
    mode = run_mode(args)
    for name in sorted(given):
        acts = modes.get(name, ACTS_IN.get(name, EVERY))
        if mode not in acts:
            raise FlagError(refusal(named.get(name, name), mode, acts))
    for name, (other, what) in REPLACED_BY.items():
        if name in given and other in given:
            raise FlagError(f"--{name} is {what}, and --{other} replaces it; drop --{name}")


def validate_length(args, given):
    """--steps, --epochs and the evaluations and early stopping between them."""
    if args.steps and args.epochs:
        raise FlagError(f"--steps {args.steps} and --epochs {args.epochs} both set the run's length; give one of them")
    if args.no_eval:
        for name in ("eval_steps", "early_stop_patience"):
            if name in given:
                raise FlagError(f"--{name} acts on the held-out evaluations, and --no_eval turns them off; drop one "
                                "of them")


# what a task of a parameter-server job (TF_CONFIG) refuses, and why
PS_JOB_REFUSES = {
    "hvd": "Horovod trains without PS",
    "evaluate": "it runs in one process", "predict": "it runs in one process", "export_only": "it runs in one process",
    # the job's evaluator waits for checkpoints and its chief for the evaluator: neither comes from a benchmark
    "benchmark": "it times one process and writes no checkpoint, which the job's evaluator and chief wait for; "
                 "benchmark one process"}


def validate_cluster(args, given):
    """The flags that depend on whether this task belongs to a parameter-server job (TF_CONFIG)."""
    from modelzoo.distributed import ClusterError, from_environment
    try:
        cluster = from_environment()
    except ClusterError:
        return  # the runner reports what is wrong with TF_CONFIG
    if cluster is None:
        for name, why in NEEDS_PS.items():
            if name in given and getattr(args, name):
                raise FlagError(f"--{name} needs a parameter-server job: {why}; {PS_JOB_HINT}")
        return
    for name, why in PS_JOB_REFUSES.items():
        if getattr(args, name):
            raise FlagError(f"--{name} is refused: TF_CONFIG names a parameter-server job ({cluster.name}); "
                            f"{why}; unset TF_CONFIG")
    if "eval_throttle_secs" in given and args.no_eval:
        raise FlagError("--eval_throttle_secs spaces the evaluator's evaluations, and --no_eval turns them off; "
                        "drop one of them")
    if "eval_steps" in given:
        raise FlagError("--eval_steps is refused: TF_CONFIG names a parameter-server job, whose evaluator task "
                        "evaluates the newest checkpoint at most every --eval_throttle_secs; give that instead")
    if "early_stop_metric" in given and not args.early_stop_patience:
        raise FlagError("--early_stop_metric needs --early_stop_patience N in a parameter-server job (it does not "
                        "stop early by default); add that or drop --early_stop_metric")
    if args.global_batch_size:
        raise FlagError("--global_batch_size is refused: TF_CONFIG names a parameter-server job, whose trainers "
                        "step asynchronously with --batch_size each (it splits a synchronous Horovod step); "
                        "give --batch_size")
    if args.ev and args.input_layer_partitioner:
        raise FlagError("--input_layer_partitioner with --ev is refused: embedding variables are always sharded "
                        "over every PS task by key; drop --input_layer_partitioner")


def validate_ev(args):
    """The embedding-variable flags: each needs --ev, and the combinations that cannot work are refused."""
    needs_ev = {"ev_filter": args.ev_filter, "ev_elimination": args.ev_elimination,
                "adaptive_emb": args.adaptive_emb, "dynamic_ev": args.dynamic_ev,
                "incremental_ckpt": args.incremental_ckpt}
    given = [f"--{name}" for name, value in needs_ev.items() if value]
    if given and not args.ev:
        verb = "acts" if len(given) == 1 else "act"
        raise FlagError(f"{' '.join(given)} {verb} on embedding variables; add --ev")
    if not args.ev:
        return
    if args.hvd:
        raise FlagError("--ev with --hvd is refused: Horovod averages fixed-shape gradients, and each process "
                        "would look up different ids; train embedding variables on one process or with "
                        "parameter servers")
    if args.micro_batch and args.micro_batch > 1:
        raise FlagError("--ev with --micro_batch is refused: an embedding variable's rows are looked up and "
                        "written once per step, not per micro-batch")
    if args.adaptive_emb and args.ev_filter:
        raise FlagError("--adaptive_emb admits ids by its own --adaptive_emb_threshold; drop --ev_filter")
    if args.dynamic_ev and (args.adaptive_emb or args.ev_filter):
        raise FlagError("--dynamic_ev gives every id a row (narrow while rare); it does not combine with "
                        f"{'--adaptive_emb' if args.adaptive_emb else '--ev_filter'}")
    if args.dynamic_ev and (args.dynamic_ev_dims is not None or args.dynamic_ev_freqs is not None):
        dims, freqs = args.dynamic_ev_dims, args.dynamic_ev_freqs
        if dims is not None and (len(dims) < 2 or sorted(set(dims)) != dims or dims[0] < 1):
            raise FlagError(f"--dynamic_ev_dims {dims}: give two or more increasing widths, e.g. 4,16")
        if freqs is not None and (sorted(set(freqs)) != freqs or freqs[0] < 1):
            raise FlagError(f"--dynamic_ev_freqs {freqs}: give increasing positive counts, e.g. 10")
        if dims is not None and freqs is not None and len(freqs) != len(dims) - 1:
            raise FlagError(f"--dynamic_ev_freqs needs {len(dims) - 1} count(s), one per step between the "
                            f"widths {dims}")
        if dims is None and freqs is not None and len(freqs) != 1:
            raise FlagError(f"--dynamic_ev_freqs {','.join(map(str, freqs))}: the default widths (width/4,width) "
                            "take 1 count; give one, or as many widths in --dynamic_ev_dims as counts + 1")


def validate_with_schema(args, schema, model_name, uses_crosses, list_kinds=()):
    """The refusals that need the model's schema (its embedding widths, its crosses, its list columns)."""
    if schema.crosses and not uses_crosses:
        raise FlagError(f"--schema {schema.source}: its crosses ({', '.join(x.name for x in schema.crosses)}) "
                        f"feed a wide (linear) part, which {model_name} has not; remove 'crosses' from the schema")
    unread = [c for c in schema.lists if c.kind not in list_kinds]
    if unread:
        raise FlagError(f"--schema {schema.source}: {model_name} does not read {unread[0].kind} columns "
                        f"({', '.join(c.name for c in unread)}): "
                        + (f"it reads {' and '.join(list_kinds)} columns; " if list_kinds else "")
                        + "declare them 'ignore', or use a model that reads them (din reads both kinds)")
    if args.tf and schema.lists:
        raise FlagError(f"--tf (stock feature columns) does not read the multi_value/sequence columns of --schema "
                        f"{schema.source} ({', '.join(c.name for c in schema.lists)}); drop --tf")
    if args.ev and args.dynamic_ev and args.dynamic_ev_dims:
        dims, widths = args.dynamic_ev_dims, sorted({c.embedding_dim for c in schema.tables})
        if widths and dims[-1] not in widths:
            raise FlagError(f"--dynamic_ev_dims {','.join(map(str, dims))}: the last width must be the model's "
                            f"embedding width ({model_name}: {' or '.join(map(str, widths))}), e.g. "
                            f"{max(1, widths[0] // 4)},{widths[0]}")
        opts = EVOptions(dynamic=True, dynamic_dims=dims)
        for width in widths:
            if len(opts.widths(width)) != len(dims):
                raise FlagError(f"--dynamic_ev_dims {','.join(map(str, dims))}: scaled to the {width}-wide tables "
                                f"the widths merge into {opts.widths(width)}; give widths further apart")


def task_weights(args, tasks, model_name):
    """{task: loss weight}: each Task's weight, replaced by --task_weights where it names the task; a name
    that is no task of the model (or a single-task model) is refused."""
    weights = {t.name: t.weight for t in tasks}
    given = dict(getattr(args, "task_weights", None) or ())
    if given and not tasks:
        raise FlagError(f"--task_weights: {model_name} has one task (one loss); the flag weighs a multi-task "
                        f"model's tasks")
    unknown = [name for name in given if name not in weights]
    if unknown:
        raise FlagError(f"--task_weights names {', '.join(unknown)}, not a task of {model_name} "
                        f"(its tasks: {', '.join(weights)})")
    if given and not any({**weights, **given}.values()):
        raise FlagError("--task_weights: every task's weight is 0, so nothing would be trained")
    return {**weights, **given}


def model_parser(model_name, defaults=None, add_model_flags=None, shape_flags=()):
    """The shared flags and the model's own (`add_model_flags`, ModelSpec.add_flags), in one parser."""
    parser = build_parser(model_name, defaults or {}, shape_flags)
    if add_model_flags:
        add_model_flags(parser.add_argument_group(f"{model_name}"))
    return parser


def spec_parser(spec):
    """model_parser of a ModelSpec."""
    return model_parser(spec.name, spec.defaults, spec.add_flags, spec.shape_flags)


def parse(model_name, argv=None, defaults=None, speed_defaults=None, add_model_flags=None, has_mlp=True,
          shape_flags=()):
    """Parse and validate; a refused flag prints `train.py: error: ...` and exits with status 2.
    `has_mlp` False (ModelSpec.has_mlp): the flags that act on MLP layers are refused. `shape_flags`
    (ModelSpec.shape_flags): the model flags that act in every mode (the others act in training only)."""
    defaults = defaults or {}
    parser = model_parser(model_name, defaults, add_model_flags, shape_flags)
    args = parser.parse_args(None if argv is None else [str(a) for a in argv])
    try:
        return validate(args, speed_defaults or {n: False for n in SPEED_SWITCHES}, defaults, model_name, has_mlp)
    except FlagError as err:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {err.message}", file=sys.stderr)
        raise

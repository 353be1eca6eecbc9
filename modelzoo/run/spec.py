"""What a model's train.py gives the runner (`ModelSpec`, validated when built) and what its build_logits
receives (`ModelInputs`). No TensorFlow here: a train.py imports this before the flags set the environment."""
import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Union

from modelzoo import flags as flaglib


# what a ModelSpec's `defaults` may set (modelzoo/flags.py reads these), and the speed defaults a model may
# give besides one for each of flags.SPEED_SWITCHES (a switch's default with --ev)
MODEL_DEFAULT_KEYS = ("batch_size", "learning_rate", "optimizer", "generate_rows", "emb_l2", "dropout", "data_location")
# what a ModelSpec's `small_data_defaults` may set: the training settings, not the batch or optimizer (its slots
# are the checkpoint's), so that a run on larger data is the same as before
SMALL_DATA_DEFAULT_KEYS = ("learning_rate", "emb_l2", "dropout")
OPTIONAL_SPEED_DEFAULTS = tuple(f"{name}_ev" for name in flaglib.SPEED_SWITCHES)


def linear_ftrl_optimizers(args, global_step, lr_factor):
    """A ModelSpec.optimizers for a model with a linear part (modelzoo.layers.linear_logit; its flags:
    modelzoo.flags.add_linear_ftrl_flags): FTRL for that part, as lr/ trains it, and --optimizer for every other
    variable (embeddings, MLPs). Wide & Deep's wide part, DeepFM's first order."""
    from modelzoo.layers import LINEAR_SCOPE
    from modelzoo.optimizers import FtrlOptimizer, build_optimizer
    ftrl = FtrlOptimizer(args.linear_learning_rate * lr_factor,
                         l1_regularization_strength=args.linear_l1_regularization,
                         l2_regularization_strength=args.linear_l2_regularization)
    rest = build_optimizer(args.optimizer, args.learning_rate * lr_factor, global_step=global_step)
    return [(LINEAR_SCOPE + "/", ftrl), (None, rest)]


@dataclass(frozen=True)
class Task:
    """One task of a multi-task model: its probability is `probabilities_<name>` (the first task's is also
    `probabilities`), its metrics `auc/<name>`, `logloss/<name>` (and `gauc/<name>`) over its rows.
    `label`: a label column (default: `name`) or a tuple of them, whose product is the target (ESMM's
    click x buy); `within`: a label column whose 1-rows are the task's space (CVR: the clicked rows), its
    loss and metrics count only those rows, and a row with the label 1 outside it is refused; `weight`
    multiplies its loss (0: a task measured, not trained on its own)."""
    name: str
    label: Union[None, str, Tuple[str, ...]] = None
    weight: float = 1.0
    within: Optional[str] = None

    @property
    def columns(self):
        """The label columns whose product is the target."""
        label = self.label or self.name
        return (label,) if isinstance(label, str) else tuple(label)


def check_tasks(tasks, schema):
    """Each task's label and `within` columns must be label columns of the schema (SchemaError otherwise)."""
    from modelzoo.schema import SchemaError
    labels = [c.name for c in schema.labels]
    for task in tasks:
        missing = [c for c in task.columns + ((task.within,) if task.within else ()) if c not in labels]
        if missing:
            raise SchemaError(f"schema {schema.name}: task {task.name!r} reads the label column(s) {missing}, "
                              f"which it lacks (its labels: {labels})")


@dataclass
class ModelSpec:
    name: str
    schema: str
    build_logits: Optional[Callable] = None  # (ModelInputs, args, training: bool) -> logits [B] or [B, 1]
    defaults: Dict[str, Any] = field(default_factory=dict)
    speed_defaults: Dict[str, bool] = field(default_factory=dict)
    # defaults that replace `defaults` on small data when the run picks its length (modelzoo.run.schedule:
    # an epoch under ONE_EPOCH_STEPS steps and neither --steps nor --epochs), for the flags the command line
    # does not give: the model's settings for many epochs over few rows, measured (the model's README)
    small_data_defaults: Dict[str, Any] = field(default_factory=dict)
    add_flags: Optional[Callable] = None
    uses_crosses: bool = False  # the model reads the schema's crosses (a wide part); else they are refused
    # the kinds of list column the model reads (ModelInputs.lists: "multi_value" through tables.pooled,
    # "sequence" through tables.sequence); a schema column of another list kind is refused, not ignored
    list_kinds: Tuple[str, ...] = ()
    has_mlp: bool = True  # the model has modelzoo.layers.mlp layers; else --bf16 and --dropout (theirs) are refused
    shape_flags: Tuple[str, ...] = ()  # model flags that change the variables
    # embedding widths the model imposes: one for every categorical column, or a function of the column
    embedding_dim: Optional[Union[int, Callable]] = None
    # (args, global_step, lr_factor) -> [(variable-name prefix or None for the rest, optimizer)];
    # default: one --optimizer at --learning_rate for every variable
    optimizers: Optional[Callable] = None
    # (labels [B] float32, logits [B]) -> scalar mean loss; default: binary cross-entropy on one logit;
    # a multi-task model: (labels {column: [B]}, logits {head: [B]}, weights {task: w}) -> scalar mean loss,
    # default: the sum over tasks of weight x mean binary cross-entropy over the task's `within` rows
    loss: Optional[Callable] = None
    # a multi-task model (instead of build_logits): its tasks, the first being the main one, and
    # (ModelInputs, args, training) -> {head: logit [B]}
    tasks: Tuple[Task, ...] = ()
    build_heads: Optional[Callable] = None
    # (logits {head: [B]}) -> {task: probability [B]}; default: the sigmoid of the head named as the task
    predict: Optional[Callable] = None

    def __post_init__(self):
        """Refuse a malformed spec when the model's train.py is imported, naming the model and field."""
        def bad(field_name, why):
            raise ValueError(f"ModelSpec {self.name!r}: {field_name} {why}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ModelSpec: name must be a non-empty string, got {self.name!r}")
        builder = "build_heads" if self.tasks else "build_logits"
        for name in ("build_logits", "build_heads", "add_flags", "optimizers", "loss", "predict"):
            value = getattr(self, name)
            if (value is not None or name == builder) and not callable(value):
                bad(name, f"must be callable, got {type(value).__name__}")
        if self.tasks:
            if self.build_logits is not None:
                bad("build_logits", "is for single-task models: a model with tasks gives build_heads")
            names = [getattr(t, "name", None) for t in self.tasks]
            if not all(isinstance(t, Task) for t in self.tasks) or len(set(names)) != len(names):
                bad("tasks", f"must be Task()s with distinct names, got {self.tasks!r}")
        elif self.build_heads is not None or self.predict is not None:
            bad("build_heads" if self.build_heads is not None else "predict", "needs tasks")
        if self.embedding_dim is not None and not callable(self.embedding_dim) and \
                not (isinstance(self.embedding_dim, int) and self.embedding_dim > 0):
            bad("embedding_dim", f"must be a positive int or a function of the column, got {self.embedding_dim!r}")
        unknown = sorted(set(self.defaults) - set(MODEL_DEFAULT_KEYS))
        if unknown:
            bad("defaults", f"has unknown keys {unknown} (known: {sorted(MODEL_DEFAULT_KEYS)})")
        unknown = sorted(set(self.small_data_defaults) - set(SMALL_DATA_DEFAULT_KEYS))
        if unknown:
            bad("small_data_defaults", f"has unknown keys {unknown} (known: {sorted(SMALL_DATA_DEFAULT_KEYS)})")
        speed = set(flaglib.SPEED_SWITCHES)
        missing, extra = sorted(speed - set(self.speed_defaults)), sorted(
            set(self.speed_defaults) - speed - set(OPTIONAL_SPEED_DEFAULTS))
        if missing or extra:
            bad("speed_defaults", (f"lacks {missing}" if missing else "") + (" and " if missing and extra else "")
                + (f"has unknown keys {extra}" if extra else "") + f" (it must give every one of {sorted(speed)})")
        if isinstance(self.shape_flags, str):
            bad("shape_flags", f"must be a tuple of flag names, got the string {self.shape_flags!r}")
        if self.shape_flags:
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
    # {multi_value or sequence column: tf.RaggedTensor [B, (n)] int64}, cut to max_length (tables.pooled,
    # tables.sequence and tables.lookup_shared embed them)
    lists: Any = None

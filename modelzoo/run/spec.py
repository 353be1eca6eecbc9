"""What a model's train.py gives the runner (`ModelSpec`, validated when built) and what its build_logits
receives (`ModelInputs`). No TensorFlow here: a train.py imports this before the flags set the environment."""
import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Union

from modelzoo import flags as flaglib


# what a ModelSpec's `defaults` may set (modelzoo/flags.py reads these), and the speed defaults a model may
# give besides one for each of flags.SPEED_SWITCHES (a switch's default with --ev)
MODEL_DEFAULT_KEYS = ("batch_size", "learning_rate", "optimizer", "generate_rows", "emb_l2", "dropout", "data_location")
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
    has_mlp: bool = True  # the model has modelzoo.layers.mlp layers; else --bf16 and --dropout (theirs) are refused
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

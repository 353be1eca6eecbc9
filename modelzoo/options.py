"""Typed, frozen option groups, built once from the parsed flags (modelzoo/flags.py).

The flag parser resolves what the command line leaves open (the speed switches' measured defaults,
--batch_size from --global_batch_size); `Options.from_args` then adds what needs the processes (the
per-process batch of a Horovod job) and nothing changes afterwards: each part of the runner takes
the group it reads instead of the whole argparse Namespace. This module does not import TensorFlow.
"""
import os
from dataclasses import dataclass
from typing import List, Optional

from modelzoo.world import DataParallelError


@dataclass(frozen=True)
class EVOptions:
    """The embedding-variable flags (--ev ...), as the tables read them."""
    filter: Optional[str] = None  # None, "counter", "cbf"
    filter_freq: int = 3
    cbf_max_elements: int = 100_000
    cbf_fpr: float = 0.01
    elimination: Optional[str] = None  # None, "gstep", "l2"
    steps_to_live: int = 4000
    l2_threshold: float = 0.05
    evict_steps: int = 1000
    adaptive: bool = False
    adaptive_threshold: int = 5
    adaptive_buckets: int = 10_000
    dynamic: bool = False
    dynamic_dims: Optional[List[int]] = None
    dynamic_freqs: Optional[List[int]] = None
    track_updates: bool = False  # keep each row's last-updated step (gstep eviction, incremental saves)
    incremental_secs: int = 0  # --incremental_ckpt: seconds between delta checkpoints (0: off)

    @classmethod
    def from_args(cls, args):
        return cls(filter=args.ev_filter, filter_freq=args.ev_filter_freq,
                   cbf_max_elements=args.ev_cbf_max_elements, cbf_fpr=args.ev_cbf_fpr,
                   elimination=args.ev_elimination, steps_to_live=args.ev_steps_to_live,
                   l2_threshold=args.ev_l2_threshold, evict_steps=args.ev_evict_steps,
                   adaptive=args.adaptive_emb, adaptive_threshold=args.adaptive_emb_threshold,
                   adaptive_buckets=args.adaptive_emb_buckets, dynamic=args.dynamic_ev,
                   dynamic_dims=args.dynamic_ev_dims, dynamic_freqs=args.dynamic_ev_freqs,
                   track_updates=args.ev_elimination == "gstep" or bool(args.incremental_ckpt),
                   incremental_secs=args.incremental_ckpt)

    def widths(self, dim):
        """Row widths from rare to frequent ids; the last is the table's width. --dynamic_ev_dims are
        given for the model's width; a table of another width (W&D has 64 and 128) scales them."""
        if not self.dynamic or dim < 2:
            return [dim]
        dims = self.dynamic_dims or [max(1, dim // 4), dim]
        if dims[-1] != dim:
            dims = sorted({max(1, round(d * dim / dims[-1])) for d in dims})
        return dims

    def promotions(self, dim):
        """Sightings that move an id to the next width (one fewer than the widths)."""
        steps = len(self.widths(dim)) - 1
        freqs = self.dynamic_freqs or [10 * (k + 1) for k in range(steps)]
        return freqs[:steps]

    @property
    def counting(self):
        """An exact count per id is kept (counter filter, adaptive embedding, dynamic dimension)."""
        return self.filter == "counter" or self.adaptive or self.dynamic

    @property
    def admission_freq(self):
        return self.adaptive_threshold if self.adaptive else self.filter_freq

    @property
    def evicts(self):
        """Rows are evicted every --ev_evict_steps (and at checkpoints): --ev_elimination or --dynamic_ev."""
        return bool(self.elimination or self.dynamic)

    def layout(self):
        """What shapes the checkpoint's variables (a checkpoint restores only into the same layout)."""
        return {"filter": self.filter, "cbf": [self.cbf_max_elements, self.cbf_fpr] if self.filter == "cbf" else None,
                "adaptive_buckets": self.adaptive_buckets if self.adaptive else None,
                "dynamic_dims": (self.dynamic_dims or "default") if self.dynamic else None,
                "tracks_updates": self.track_updates}


@dataclass(frozen=True)
class DataOptions:
    """What the input pipeline reads (modelzoo/features.make_dataset)."""
    batch_size: int  # per process (a Horovod job's --global_batch_size split over its processes)
    seed: int
    smartstaged: bool
    bad_rows: str
    keyed: bool  # --ev: the ids stay raw 64-bit keys (no hash buckets)
    workqueue: bool


@dataclass(frozen=True)
class SpeedOptions:
    """The session and graph settings behind the speed switches."""
    inter: int
    intra: int
    op_fusion: bool
    xla: bool
    bf16: bool
    bf16_mode: str
    emb_fusion: bool
    tf: bool  # the stock TensorFlow baseline (its feature columns)
    micro_batch: int

    @property
    def bf16_casts(self):
        """--bf16 by explicit casts around the MLPs (else float32, or Grappler's pass converts it)."""
        return self.bf16 and self.bf16_mode != "grappler"


@dataclass(frozen=True)
class CheckpointOptions:
    folder: str  # --checkpoint, or OUTPUT_DIR/MODEL
    save_steps: int
    save_secs: int  # 0 when --save_steps is given: one timer, by steps or by seconds
    keep_checkpoint_max: int
    log_steps: int
    timeline: int
    warm_start_from: Optional[str]


@dataclass(frozen=True)
class TrainOptions:
    steps: int  # 0: --epochs, or the run's default length (modelzoo/run/schedule.py)
    epochs: Optional[int]
    eval_steps: Optional[int]  # None: evaluate at the end of each epoch
    early_stop_patience: Optional[int]  # None: the default length's patience when no length is given, else off
    early_stop_metric: str
    optimizer: str
    learning_rate: float
    no_eval: bool
    evaluate: bool
    predict: bool
    export_only: bool
    benchmark: bool
    output_dir: str
    emb_l2: float = 0.0  # --emb_l2: the L2 penalty on the looked-up embedding rows
    dropout: float = 0.0  # --dropout: the MLPs' dropout rate in training graphs

    @property
    def only(self):
        """The run that trains nothing: "evaluate", "predict" or None."""
        return "evaluate" if self.evaluate else "predict" if self.predict else None


@dataclass(frozen=True)
class DistributedOptions:
    """Horovod's and the parameter-server job's flags (the names of the flags: World reads them)."""
    hvd: bool
    global_batch_size: Optional[int]
    lr_scaling: str
    protocol: str
    workqueue: bool
    input_layer_partitioner: int
    dense_layer_partitioner: int
    eval_throttle_secs: int


@dataclass(frozen=True)
class Options:
    data: DataOptions
    speed: SpeedOptions
    checkpoint: CheckpointOptions
    train: TrainOptions
    distributed: DistributedOptions
    ev: Optional[EVOptions]  # None without --ev

    @classmethod
    def from_args(cls, args, model_name, processes=1):
        """The groups of a parsed, validated Namespace (flags.parse), for a job of `processes` Horovod
        processes; a global batch that does not split over them is refused (DataParallelError)."""
        batch_size = args.batch_size
        if args.hvd and args.global_batch_size:
            if args.global_batch_size % processes:
                raise DataParallelError(f"--global_batch_size {args.global_batch_size} does not split evenly over "
                                        f"{processes} processes; give a multiple of {processes}")
            batch_size = args.global_batch_size // processes
        if args.hvd and args.micro_batch and args.micro_batch > batch_size:
            raise DataParallelError(f"--micro_batch {args.micro_batch} is larger than the per-process batch "
                                    f"{batch_size}")
        return cls(
            data=DataOptions(batch_size=batch_size, seed=args.seed, smartstaged=args.smartstaged,
                             bad_rows=args.bad_rows, keyed=bool(args.ev), workqueue=bool(args.workqueue)),
            speed=SpeedOptions(inter=args.inter, intra=args.intra, op_fusion=args.op_fusion, xla=args.xla,
                               bf16=args.bf16, bf16_mode=getattr(args, "bf16_mode", "casts"),
                               emb_fusion=args.emb_fusion, tf=args.tf, micro_batch=args.micro_batch),
            checkpoint=CheckpointOptions(folder=args.checkpoint or os.path.join(args.output_dir, model_name),
                                         save_steps=args.save_steps,
                                         save_secs=0 if args.save_steps else args.save_secs,
                                         keep_checkpoint_max=args.keep_checkpoint_max,
                                         log_steps=args.log_steps, timeline=args.timeline,
                                         warm_start_from=args.warm_start_from),
            train=TrainOptions(steps=args.steps, epochs=getattr(args, "epochs", None),
                               eval_steps=getattr(args, "eval_steps", None),
                               early_stop_patience=getattr(args, "early_stop_patience", None),
                               early_stop_metric=getattr(args, "early_stop_metric", "auc"), optimizer=args.optimizer,
                               learning_rate=args.learning_rate,
                               no_eval=args.no_eval, evaluate=args.evaluate, predict=args.predict,
                               export_only=args.export_only, benchmark=getattr(args, "benchmark", False),
                               output_dir=args.output_dir,
                               emb_l2=args.emb_l2, dropout=args.dropout),
            distributed=DistributedOptions(hvd=args.hvd, global_batch_size=args.global_batch_size,
                                           lr_scaling=args.lr_scaling, protocol=args.protocol,
                                           workqueue=bool(args.workqueue),
                                           input_layer_partitioner=args.input_layer_partitioner,
                                           dense_layer_partitioner=args.dense_layer_partitioner,
                                           eval_throttle_secs=args.eval_throttle_secs),
            ev=EVOptions.from_args(args) if args.ev else None)

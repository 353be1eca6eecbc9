"""PLE (Tang et al. 2020, "Progressive Layered Extraction") on an Ali-CCP-shaped log with the shared runner.

Extraction levels (2, as the paper's) of CGC (customized gate control): each task has its own experts and
shares others; a task's gate mixes its own and the shared experts, a shared gate mixes every expert into the
next level's shared input (dropped after the last level). Each task's last mixture feeds its tower and logit.
Experts are MLPs (256-128 at every level, bfloat16 with --bf16), gates float32 softmaxes. Tasks, loss
weights and towers as MMoE's: ctr (click, the main one) and ctcvr (buy over every impression, weighing 10).
The experts, gates and towers are modelzoo.layers' (MMoE's code); everything not specific to PLE lives in
modelzoo/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.datasets.aliccp import MIXTURE_TASKS, MODEL_SETTINGS  # noqa: E402
from modelzoo.flags import add_task_tower_flags, positive_int  # noqa: E402
from modelzoo.runner import ModelSpec, main  # noqa: E402

TASKS = MIXTURE_TASKS  # click, and purchase weighing 10 (modelzoo/datasets/aliccp.py says why)


def add_flags(group):
    group.add_argument("--levels", type=positive_int, default=2, help="extraction levels (CGC layers)")
    group.add_argument("--task_experts", type=positive_int, default=2, help="experts of each task, at every level")
    group.add_argument("--shared_experts", type=positive_int, default=2, help="shared experts, at every level")
    group.add_argument("--expert_units", type=positive_int, nargs="+", default=[256, 128],
                       help="hidden units of each expert")
    add_task_tower_flags(group)


def build_heads(inputs, args, training):
    from modelzoo.layers import embedded_inputs, ple, task_towers_by_flags
    x = embedded_inputs(inputs)
    levels = ple(x, [task.name for task in TASKS], args.levels, args.task_experts, args.shared_experts,
                 args.expert_units)
    return task_towers_by_flags(levels, x, args)


SPEC = ModelSpec(
    name="ple",
    tasks=TASKS,
    build_heads=build_heads,
    add_flags=add_flags,
    shape_flags=("levels", "task_experts", "shared_experts", "expert_units", "tower_units", "tower_input"),
    **MODEL_SETTINGS,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

"""MMoE (Ma et al. 2018, "Multi-gate Mixture-of-Experts") on an Ali-CCP-shaped log with the shared runner.

Shared experts (MLPs 256-128, bfloat16 with --bf16) over the embeddings; one gate per task (a float32
dense layer and a softmax over the experts, from the same input) mixes them for that task's tower (MLP
64, reading the experts' input beside the mixture: --tower_input) and logit. Tasks: ctr (click, the main
one) and ctcvr (buy over every impression; buy <= click), each with its BCE over all impressions, ctcvr's
weighing 10 (--task_weights). The experts, gates and towers are modelzoo.layers' (PLE shares them);
everything not specific to MMoE lives in modelzoo/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modelzoo.datasets.aliccp import MIXTURE_TASKS, MODEL_SETTINGS  # noqa: E402
from modelzoo.flags import add_task_tower_flags  # noqa: E402
from modelzoo.runner import ModelSpec, main  # noqa: E402

TASKS = MIXTURE_TASKS  # click, and purchase weighing 10 (modelzoo/datasets/aliccp.py says why)


def add_flags(group):
    group.add_argument("--experts", type=int, default=4, help="shared experts")
    group.add_argument("--expert_units", type=int, nargs="+", default=[256, 128], help="hidden units of each expert")
    add_task_tower_flags(group)


def build_heads(inputs, args, training):
    from modelzoo.layers import embedded_inputs, mmoe, task_towers_by_flags
    x = embedded_inputs(inputs)
    mixed = mmoe(x, [task.name for task in TASKS], args.experts, args.expert_units)
    return task_towers_by_flags(mixed, x, args)


SPEC = ModelSpec(
    name="mmoe",
    tasks=TASKS,
    build_heads=build_heads,
    add_flags=add_flags,
    shape_flags=("experts", "expert_units", "tower_units", "tower_input"),
    **MODEL_SETTINGS,
)

if __name__ == "__main__":
    sys.exit(main(SPEC))

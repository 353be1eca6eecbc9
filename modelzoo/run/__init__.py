"""The Estimator run that every model's train.py shares (modelzoo/runner.py's main), by job:

- context.py: the run context (spec, flags and option groups, schema, processes, data) every step takes
- graph.py: the session settings, the model_fn (tables, micro-batches, optimizer groups), the input and export
- checkpoints.py: what a checkpoint must match to resume, its checks, the steps and rows it holds
- report.py: the start-up lines, result.json and the summary
- local.py: one process or a Horovod job: train, evaluate, predict, export, benchmark
- cluster.py: a task of a parameter-server job, from local.py's steps

These modules import TensorFlow: modelzoo.runner imports them once the environment is set.
"""

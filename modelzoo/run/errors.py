"""The run's own errors, each one line for main (no TensorFlow: main catches them before it starts)."""


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

"""Runs a model's train.py with a fault injected at a chosen moment (a SIGKILL in the middle of a
write), for the reliability tests: `python tests/fault_injection.py FAULT MODEL/train.py ARGS...`.

FAULT is one of
  checkpoint:N  SIGKILL during the N-th checkpoint save (1 is the save at step 0), after the
                variables were written to the shards and before TensorFlow merges them into place;
  export        SIGKILL while the SavedModel is written (variables in the temporary folder, before
                the Estimator renames it to its timestamp);
  result        SIGKILL while result.json is written (half of it in the temporary file);
  gdmix_move:N  SIGKILL before gdmix_lr moves its N-th finished coordinate folder into place.
"""
import os
import runpy
import signal
import sys

import numpy as np


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_checkpoint_save(n):
    import tensorflow as tf
    from tensorflow.python.ops import gen_io_ops
    merge, saves = gen_io_ops.merge_v2_checkpoints, [0]

    def count_and_maybe_die():
        saves[0] += 1
        if saves[0] == n:
            print(f"fault_injection: SIGKILL during checkpoint save {n}", flush=True)
            die()
        return np.int32(0)

    def merge_after_fault(*args, **kwargs):  # built under the shards' control dependencies
        fault = tf.compat.v1.numpy_function(count_and_maybe_die, [], tf.int32, stateful=True)
        with tf.control_dependencies([fault]):
            return merge(*args, **kwargs)
    gen_io_ops.merge_v2_checkpoints = merge_after_fault


def kill_in_export():
    from tensorflow.python.saved_model import builder_impl

    def save(self, as_text=False):
        print("fault_injection: SIGKILL while the SavedModel is written", flush=True)
        die()
    builder_impl.SavedModelBuilder.save = save


def kill_in_result():
    from modelzoo import io_utils
    from modelzoo.run import report

    def write(path, obj):
        with io_utils.atomic_writer(path) as f:
            f.write('{"half": ')
            f.flush()
            print("fault_injection: SIGKILL while result.json is written", flush=True)
            die()
    report.atomic_write_json = write


def kill_in_gdmix_move(n):
    replace, moves = os.replace, [0]

    def counting_replace(src, dst, *args, **kwargs):
        if "/.staging-" in str(src) and os.path.isdir(src) and ".previous-" not in str(dst):
            moves[0] += 1
            if moves[0] == n:
                print(f"fault_injection: SIGKILL before moving {src} to {dst}", flush=True)
                die()
        return replace(src, dst, *args, **kwargs)
    os.replace = counting_replace


def main():
    fault, script, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, repo)
    kind, _, value = fault.partition(":")
    {"checkpoint": lambda: kill_in_checkpoint_save(int(value)), "export": kill_in_export,
     "result": kill_in_result, "gdmix_move": lambda: kill_in_gdmix_move(int(value))}[kind]()
    sys.argv = [script, *args]
    runpy.run_path(os.path.join(repo, script), run_name="__main__")


if __name__ == "__main__":
    main()

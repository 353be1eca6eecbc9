"""The checkpoint identity (modelzoo/run/checkpoints.py: checkpoint_identity, check_checkpoint): a resume with a flag that changes
the variables (--optimizer, the embedding-variable options, the model's shape flags, --emb_fusion's per-column
filters) is refused in one line naming the flag, the checkpoint's value and this run's; a record written
before a key existed is refused by name when its value is known, else the restore's own failure is."""
import json

import pytest

from conftest import read_result, run_train
from modelzoo import runner
from modelzoo.run import checkpoints


def identity(**flags):
    """The identity DLRM would record for these flags (the defaults of flags.py otherwise)."""
    from modelzoo import flags as flaglib
    from conftest import load_train_module
    spec = load_train_module("dlrm").SPEC
    args = flaglib.parse(spec.name, [a for k, v in flags.items() for a in (f"--{k}", str(v))], spec.defaults,
                         spec.speed_defaults, spec.add_flags)
    return checkpoints.checkpoint_identity(spec, args, runner.model_schema(spec, args))


def refusal(tmp_path, theirs, ours):
    (tmp_path / "run_config.json").write_text(json.dumps(theirs))
    with pytest.raises(runner.CheckpointMismatch) as err:
        checkpoints.check_checkpoint(str(tmp_path), ours)
    return str(err.value)


def test_each_flag_that_changes_the_variables_is_refused_by_name(tmp_path):
    cases = [({"optimizer": "adagrad"}, {"optimizer": "adam"}, "--optimizer: checkpoint has 'adagrad', this run 'adam'"),
             ({"interaction_op": "dot"}, {"interaction_op": "cat"}, "--interaction_op: checkpoint has 'dot', this run 'cat'"),
             ({"ev": True}, {}, "--ev: checkpoint has on, this run off"),
             ({"ev": True}, {"ev": True, "ev_filter": "counter"}, "--ev_filter: checkpoint has None, this run 'counter'"),
             ({"ev": True, "adaptive_emb": True}, {"ev": True, "adaptive_emb": True, "adaptive_emb_buckets": 50},
              "--adaptive_emb/--adaptive_emb_buckets: checkpoint has 10000, this run 50"),
             ({"ev": True}, {"ev": True, "incremental_ckpt": 5}, "--ev_elimination gstep or --incremental_ckpt"),
             ({"emb_fusion": "false"}, {"emb_fusion": "true"}, "--emb_fusion: checkpoint has False, this run True")]
    for theirs, ours, words in cases:
        line = refusal(tmp_path, identity(**theirs), identity(**ours))
        assert words in line and "\n" not in line, (theirs, ours, line)
        assert line.startswith(f"--checkpoint {tmp_path} cannot be resumed by this run (")


def test_evaluate_and_predict_ignore_the_optimizer(tmp_path):
    (tmp_path / "run_config.json").write_text(json.dumps(identity(optimizer="adagrad")))
    # accepted: DLRM's default optimizer (adamasync) is not the checkpoint's, and --evaluate/--predict take the
    # checkpoint's (flags.py refuses --optimizer there)
    checkpoints.check_checkpoint(str(tmp_path), identity(evaluate="true"))
    checkpoints.check_checkpoint(str(tmp_path), identity(predict="true"))
    with pytest.raises(runner.CheckpointMismatch):
        checkpoints.check_checkpoint(str(tmp_path), identity(optimizer="adam"))


def older(record):
    """A record as the model zoo wrote it before the optimizer, the shards and the per-column filters."""
    old = {k: v for k, v in record.items() if k != "optimizer"}
    if old["embedding_variables"]:
        old["embedding_variables"] = {k: v for k, v in old["embedding_variables"].items()
                                      if k not in ("shards", "fused_filters")}
    return old


def test_older_records_without_the_new_keys(tmp_path):
    # an --ev --emb_fusion --ev_filter cbf checkpoint from before per-column filters: its filter has another
    # shape; refused by name
    line = refusal(tmp_path, older(identity(ev=True, ev_filter="cbf")), identity(ev=True, ev_filter="cbf"))
    assert "--emb_fusion's counting Bloom filter and hash buckets (per column since this version): checkpoint " \
           "has 'one for all its columns', this run 'one per column'" in line
    # the same record without cbf (and one without --ev): nothing of theirs differs; optimizer not recorded
    for flags in ({"ev": True}, {}):
        (tmp_path / "run_config.json").write_text(json.dumps(older(identity(**flags))))
        checkpoints.check_checkpoint(str(tmp_path), identity(optimizer="adam", **flags))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, generated_criteo):
    """DLRM trained 2 steps with --optimizer adagrad."""
    from conftest import small_schema_file
    root = tmp_path_factory.mktemp("identity")
    schema = small_schema_file(root / "schema.json")
    flags = ["--train_files", generated_criteo, "--schema", schema, "--batch_size", 64, "--no_eval"]
    run_train("dlrm", [*flags, "--checkpoint", root / "ckpt", "--steps", 2, "--optimizer", "adagrad"])
    return root / "ckpt", flags


def one_line_refusal(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def test_resume_with_another_optimizer_is_refused_in_one_line(trained):
    ckpt, flags = trained
    proc = run_train("dlrm", [*flags, "--checkpoint", ckpt, "--steps", 4, "--optimizer", "adam"], check=False)
    line = one_line_refusal(proc)
    assert "--optimizer: checkpoint has 'adagrad', this run 'adam'" in line
    assert "train:" not in proc.stdout  # refused before any work


def test_an_older_record_is_refused_by_the_restore_in_one_line_or_resumes(trained, tmp_path):
    """A run_config.json written before the optimizer was recorded: another --optimizer fails the restore (its
    slots are missing), refused in one line; the same optimizer resumes."""
    import shutil
    ckpt, flags = trained
    old = tmp_path / "old"
    shutil.copytree(ckpt, old)
    (old / "run_config.json").write_text(json.dumps(older(json.loads((old / "run_config.json").read_text()))))
    proc = run_train("dlrm", [*flags, "--checkpoint", old, "--steps", 4, "--optimizer", "adam"], check=False)
    line = one_line_refusal(proc)
    assert "the --checkpoint has no variable" in line and "another --optimizer" in line, line
    proc = run_train("dlrm", [*flags, "--checkpoint", old, "--steps", 4, "--optimizer", "adagrad"])
    assert "resuming from step 2" in proc.stdout and read_result(old)["steps"] == 4


def test_a_resume_on_other_data_is_refused_in_one_line_naming_warm_start_from(tmp_path):
    """The checkpoint records the data it was trained on (each file's name, size, first-row fingerprint): the
    default folder trained on the generated sample, resumed after the real train.txt was copied in, used to
    continue the synthetic model and skip as many real rows. Refused in one line; --warm_start_from into a new
    --checkpoint fine-tunes deliberately; the same data still resumes."""
    from conftest import small_schema_file
    from modelzoo.synthetic import generate_criteo
    schema, data, ckpt = small_schema_file(tmp_path / "schema.json"), tmp_path / "data", tmp_path / "ckpt"
    flags = ["--data_location", data, "--schema", schema, "--batch_size", 64, "--no_eval", "--generate_rows", 2000]
    run_train("dlrm", [*flags, "--checkpoint", ckpt, "--steps", 2])
    assert json.loads((ckpt / "run_config.json").read_text())["data"]["generated"] is True
    run_train("dlrm", [*flags, "--checkpoint", ckpt, "--steps", 3])  # the same data: resumes
    generate_criteo(str(tmp_path / "real.txt"), 3000, seed=9)
    (tmp_path / "real.txt").replace(data / "train.txt")  # "the real data", copied over the generated sample
    proc = run_train("dlrm", [*flags, "--checkpoint", ckpt, "--steps", 6], check=False)
    line = one_line_refusal(proc)
    assert f"--checkpoint {ckpt} was trained on generated train.txt (" in line, line
    assert "not on this run's train.txt (" in line and f"--warm_start_from {ckpt}" in line, line
    assert checkpoints.global_step_of(str(ckpt)) == 3  # untouched
    run_train("dlrm", [*flags, "--checkpoint", tmp_path / "tuned", "--steps", 2, "--warm_start_from", ckpt])
    assert read_result(tmp_path / "tuned")["generated_data"] is False  # the marker no longer describes train.txt

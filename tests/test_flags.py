"""The shared flag parser: DeepRec's names, boolean forms, refusals with clear messages."""
import argparse
import os

import pytest

from modelzoo import flags
from modelzoo.flags import FlagError

pytestmark = pytest.mark.fast  # the fast tier (make test-fast)

SPEED = {"smartstaged": True, "op_fusion": False, "emb_fusion": True, "xla": False}


def parse(*argv):
    return flags.parse("dlrm", list(argv), speed_defaults=SPEED)


@pytest.mark.parametrize("argv,expected", [
    (["--bf16"], True), (["--bf16", "True"], True), (["--bf16=false"], False), (["--bf16", "0"], False),
    ([], False)])
def test_boolean_flags_accept_deeprec_forms(argv, expected):
    assert parse(*argv).bf16 is expected


def test_bare_boolean_does_not_swallow_the_next_flag():
    args = parse("--no_eval", "--bf16", "--steps", "5")
    assert args.no_eval and args.bf16 and args.steps == 5


@pytest.mark.parametrize("flag,words", [
    (["--workqueue"], "deals the input files out to the workers"),
    (["--input_layer_partitioner", "8"], "slices embedding tables across the PS tasks"),
    (["--dense_layer_partitioner", "8"], "slices dense-layer variables across the PS tasks")])
def test_parameter_server_flags_are_refused_outside_a_ps_job(flag, words, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(FlagError) as err:
        parse(*flag)
    assert err.value.code == 2
    assert f"{flag[0]} needs a parameter-server job" in err.value.message and words in err.value.message
    assert "TF_CONFIG" in capsys.readouterr().err


PS_JOB = '{"cluster": {"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3"]}, "task": {"type": "worker", "index": 0}}'


@pytest.mark.parametrize("flag", [["--workqueue"], ["--input_layer_partitioner", "8"],
                                  ["--dense_layer_partitioner", "16"]])
def test_parameter_server_flags_are_accepted_in_a_ps_job(flag, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", PS_JOB)
    value, expected = getattr(parse(*flag), flag[0][2:]), int(flag[-1]) if len(flag) > 1 else True
    assert value == expected and type(value) is type(expected), value  # (True == 1: the type tells them apart)


@pytest.mark.parametrize("flags,words", [
    (["--hvd"], "--hvd is refused: TF_CONFIG names a parameter-server job (worker:0)"),
    (["--evaluate"], "--evaluate is refused: TF_CONFIG names a parameter-server job"),
    # accepted, it left the evaluator waiting for a checkpoint forever and the chief waiting for the evaluator
    (["--benchmark", "--steps", "10"], "--benchmark is refused: TF_CONFIG names a parameter-server job (worker:0); "
                                       "it times one process and writes no checkpoint"),
    (["--ev", "--input_layer_partitioner", "8"], "embedding variables are always sharded over every PS task")])
def test_what_cannot_run_in_a_ps_job_is_refused(flags, words, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", PS_JOB)
    with pytest.raises(FlagError) as err:
        parse(*flags)
    assert words in err.value.message


def test_switched_off_refused_flags_are_accepted():
    assert parse("--workqueue=false").workqueue is False


@pytest.mark.parametrize("flags,words", [
    (["--ev_filter", "counter"], "--ev_filter acts on embedding variables; add --ev"),
    (["--incremental_ckpt", "100"], "--incremental_ckpt acts on embedding variables"),
    (["--adaptive_emb", "--dynamic_ev"], "--adaptive_emb --dynamic_ev act on embedding variables"),
    (["--ev_elimination", "gstep"], "--ev_elimination acts on embedding variables"),
    (["--ev", "--hvd"], "--ev with --hvd is refused"),
    (["--ev", "--micro_batch", "4"], "--ev with --micro_batch is refused"),
    (["--ev", "--adaptive_emb", "--ev_filter", "cbf"], "drop --ev_filter"),
    (["--ev", "--dynamic_ev", "--ev_filter", "counter"], "does not combine with --ev_filter"),
    (["--ev", "--dynamic_ev_dims", "4,16"], "--dynamic_ev_dims needs --ev --dynamic_ev"),
    (["--ev", "--dynamic_ev", "--dynamic_ev_dims", "16,4"], "increasing widths"),
    (["--ev", "--dynamic_ev", "--dynamic_ev_dims", "4,8,16", "--dynamic_ev_freqs", "5"], "needs 2 count(s)"),
])
def test_embedding_variable_flags_refuse_what_cannot_work(flags, words):
    with pytest.raises(FlagError) as err:
        parse(*flags)
    assert words in err.value.message


@pytest.mark.parametrize("flag,value", [("--ev_cbf_fpr", "1.5"), ("--ev_filter", "bloom"),
                                        ("--ev_elimination", "lru"), ("--dynamic_ev_dims", "4,x")])
def test_embedding_variable_flag_values_are_checked(flag, value, capsys):
    with pytest.raises(SystemExit):
        parse("--ev", flag, value)
    assert flag in capsys.readouterr().err


def test_embedding_variable_flags_parse():
    args = parse("--ev", "--ev_filter", "cbf", "--ev_cbf_fpr", "0.001", "--ev_elimination", "l2",
                 "--ev_l2_threshold", "0.2", "--incremental_ckpt", "60")
    assert (args.ev, args.ev_filter, args.ev_cbf_fpr, args.ev_elimination, args.ev_l2_threshold,
            args.incremental_ckpt) == (True, "cbf", 0.001, "l2", 0.2, 60)
    dyn = parse("--ev", "--dynamic_ev", "--dynamic_ev_dims", "4,8,16", "--dynamic_ev_freqs", "5,20")
    assert dyn.dynamic_ev_dims == [4, 8, 16] and dyn.dynamic_ev_freqs == [5, 20]


def test_deeprec_only_protocol_is_refused():
    with pytest.raises(FlagError, match="DeepRec-only"):
        parse("--protocol", "grpc++")
    assert parse("--protocol", "grpc").protocol == "grpc"


def test_tf_baseline_turns_every_speed_switch_off():
    args = parse("--tf")
    assert not (args.smartstaged or args.op_fusion or args.emb_fusion or args.xla)
    default = parse()
    assert (default.smartstaged, default.op_fusion, default.emb_fusion, default.xla) == (True, False, True, False)


def test_tf_with_a_speed_switch_is_a_conflict():
    with pytest.raises(FlagError, match="conflicts with --op_fusion"):
        parse("--tf", "--op_fusion")


@pytest.mark.parametrize("argv", [["--batch_size", "-5"], ["--batch_size", "0"], ["--optimizer", "sgdx"],
                                  ["--learning_rate", "-1"], ["--steps", "-1"], ["--bf16", "maybe"]])
def test_invalid_values_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as err:
        parse(*argv)
    assert err.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_unknown_optimizer_message_lists_accepted_names(capsys):
    with pytest.raises(SystemExit):
        parse("--optimizer", "lamb")
    err = capsys.readouterr().err
    assert "adamasync" in err and "adagraddecay" in err


def test_micro_batch_larger_than_batch_is_refused():
    with pytest.raises(FlagError, match="larger than --batch_size"):
        parse("--batch_size", "4", "--micro_batch", "8")


def test_a_model_can_measure_another_speed_default_for_embedding_variables():
    speed = dict(SPEED, emb_fusion=False, emb_fusion_ev=True)
    assert flags.parse("dlrm", ["--ev"], speed_defaults=speed).emb_fusion is True
    assert flags.parse("dlrm", [], speed_defaults=speed).emb_fusion is False
    assert flags.parse("dlrm", ["--ev", "--emb_fusion=false"], speed_defaults=speed).emb_fusion is False


@pytest.mark.parametrize("feature", [["--ev"], ["--micro_batch", "4"]])
def test_tf_baseline_refuses_the_model_zoos_own_features(feature):
    """--tf is stock TensorFlow's feature columns: no embedding variables, no micro-batches."""
    with pytest.raises(FlagError, match=f"conflicts with {feature[0]}"):
        parse("--tf", *feature)


@pytest.mark.parametrize("argv,needs", [
    (["--ev_filter_freq", "5"], "--ev --ev_filter counter or cbf"),
    (["--ev", "--ev_filter_freq", "5"], "--ev --ev_filter counter or cbf"),
    (["--ev_evict_steps", "10"], "--ev with --ev_elimination or --dynamic_ev"),
    (["--ev", "--ev_evict_steps", "10"], "--ev with --ev_elimination or --dynamic_ev"),
    (["--adaptive_emb_threshold", "2"], "--ev --adaptive_emb"),
    (["--ev", "--adaptive_emb_buckets", "100"], "--ev --adaptive_emb"),
    (["--ev", "--ev_elimination", "l2", "--ev_steps_to_live", "10"], "--ev --ev_elimination gstep"),
    (["--ev", "--ev_elimination", "gstep", "--ev_l2_threshold", "0.1"], "--ev --ev_elimination l2"),
    (["--ev", "--ev_filter", "counter", "--ev_cbf_fpr", "0.001"], "--ev --ev_filter cbf"),
    (["--ev", "--ev_filter", "counter", "--ev_cbf_max_elements", "10"], "--ev --ev_filter cbf"),
    (["--dynamic_ev_freqs", "5"], "--ev --dynamic_ev"),
    (["--dynamic_ev_dims", "4,16"], "--ev --dynamic_ev"),
    (["--train_files", "x.txt", "--generate_rows", "10"], "--data_location"),
])
def test_a_sub_flag_without_the_flag_it_refines_is_refused(argv, needs, capsys):
    """Given explicitly (even at its default value) where it would do nothing: one line naming it."""
    name = next(a for a in argv if a.startswith("--") and a not in ("--ev", "--ev_filter", "--ev_elimination",
                                                                   "--train_files"))
    with pytest.raises(FlagError) as err:
        parse(*argv)
    assert err.value.code == 2
    assert err.value.message.startswith(f"{name} needs {needs}"), err.value.message
    assert f"drop {name}" in err.value.message
    assert err.value.message in capsys.readouterr().err


def test_a_sub_flag_at_its_default_value_is_refused_too_and_the_defaults_still_apply():
    with pytest.raises(FlagError, match="--ev_filter_freq needs"):
        parse("--ev_filter_freq", "3")
    args = parse()
    assert (args.ev_filter_freq, args.ev_cbf_fpr, args.ev_steps_to_live, args.eval_throttle_secs, args.steps,
            args.seed, args.dynamic_ev_dims) == (3, 0.01, 4000, 60, 0, 2021, None)


@pytest.mark.parametrize("argv", [
    ["--ev", "--ev_filter", "cbf", "--ev_filter_freq", "2", "--ev_cbf_fpr", "0.001", "--ev_cbf_max_elements", "50"],
    ["--ev", "--ev_filter", "counter", "--ev_filter_freq", "2"],
    ["--ev", "--ev_elimination", "gstep", "--ev_steps_to_live", "10", "--ev_evict_steps", "5"],
    ["--ev", "--ev_elimination", "l2", "--ev_l2_threshold", "0.1"],
    ["--ev", "--dynamic_ev", "--ev_evict_steps", "5", "--dynamic_ev_freqs", "7"],
    ["--ev", "--adaptive_emb", "--adaptive_emb_threshold", "2", "--adaptive_emb_buckets", "100"]])
def test_a_sub_flag_with_the_flag_it_refines_is_accepted(argv):
    args = parse(*argv)
    for flag, value in zip(argv, argv[1:]):
        if flag.startswith("--") and not value.startswith("--") and flag not in ("--ev_filter", "--ev_elimination"):
            assert str(getattr(args, flag[2:])).replace("[", "").replace("]", "") == value


def test_dynamic_ev_freqs_with_more_counts_than_the_default_widths_take_is_refused():
    with pytest.raises(FlagError, match="the default widths .* take 1 count"):
        parse("--ev", "--dynamic_ev", "--dynamic_ev_freqs", "5,20")


@pytest.mark.parametrize("only", ["--predict", "--evaluate"])
@pytest.mark.parametrize("flag", [["--steps", "10"], ["--save_steps", "5"], ["--save_secs", "60"], ["--micro_batch", "2"],
                                  ["--timeline", "5"], ["--log_steps", "5"], ["--keep_checkpoint_max", "3"]])
def test_training_flags_with_evaluate_or_predict_are_refused(only, flag):
    with pytest.raises(FlagError) as err:
        parse(only, *flag)
    assert err.value.message == f"{flag[0]} acts on training, and {only} does not train; drop {flag[0]}"


def test_no_eval_with_predict_is_refused():
    with pytest.raises(FlagError, match="--no_eval acts on training, and --predict does not train; drop --no_eval"):
        parse("--predict", "--no_eval")
    assert parse("--predict", "--batch_size", "64").predict  # what scoring uses is accepted


def test_eval_throttle_secs_is_refused_outside_a_ps_job_and_accepted_in_one(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(FlagError, match="--eval_throttle_secs needs a parameter-server job: it spaces"):
        parse("--eval_throttle_secs", "5")
    monkeypatch.setenv("TF_CONFIG", PS_JOB)
    assert parse("--eval_throttle_secs", "5").eval_throttle_secs == 5
    with pytest.raises(FlagError, match="--no_eval turns them off"):
        parse("--eval_throttle_secs", "5", "--no_eval")


def test_global_batch_size_in_a_ps_job_is_refused(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", PS_JOB)
    with pytest.raises(FlagError, match="--global_batch_size is refused: TF_CONFIG names a parameter-server job"):
        parse("--global_batch_size", "512")
    monkeypatch.delenv("TF_CONFIG")
    assert parse("--global_batch_size", "512").batch_size == 512  # one process: its batch


@pytest.mark.parametrize("seed", ["-1", str(2 ** 63)])
def test_a_seed_out_of_range_is_refused(seed, capsys):
    with pytest.raises(SystemExit) as err:
        parse("--seed", seed)
    assert err.value.code == 2
    assert f"--seed: expected an integer from 0 to 2**63-1, got {seed}" in capsys.readouterr().err
    assert parse("--seed", "0").seed == 0


def test_help_shows_the_real_defaults(capsys):
    with pytest.raises(SystemExit):
        parse("--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 4000)" in out and "(default: 60)" in out and "Default" not in out


@pytest.mark.parametrize("argv,words", [
    (["--export_only", "--predict"], "--predict and --export_only are separate runs"),
    (["--export_only", "--hvd"], "--hvd acts on training, and --export_only does not train"),
    (["--warm_start_from", "x", "--evaluate"], "--warm_start_from acts on training, and --evaluate does not train"),
    (["--warm_start_from", "x", "--export_only"], "--warm_start_from acts on training, and --export_only does not"),
    (["--warm_start_from", ""], "--warm_start_from needs a checkpoint or SavedModel path")])
def test_export_and_warm_start_flags_refuse_what_cannot_work(argv, words):
    with pytest.raises(FlagError) as err:
        parse(*argv)
    assert words in err.value.message


@pytest.mark.parametrize("extra", [["--evaluate"], ["--predict"], ["--export_only"], ["--checkpoint", "x"],
                                   ["--save_steps", "5"], ["--save_secs", "60"], ["--timeline", "2"], ["--hvd"]])
def test_benchmark_refuses_the_flags_it_contradicts(extra, capsys):
    with pytest.raises(FlagError):
        flags.parse("dlrm", ["--benchmark", "--steps", "10", *extra])
    err = capsys.readouterr().err
    assert "--benchmark" in err and extra[0] in err


def test_benchmark_needs_steps_and_parses_with_them(capsys):
    with pytest.raises(FlagError):
        flags.parse("dlrm", ["--benchmark"])
    assert "--steps" in capsys.readouterr().err
    args = flags.parse("dlrm", ["--benchmark", "--steps", "10", "--bf16"])
    assert args.benchmark and args.steps == 10


def test_bf16_mode_needs_bf16(capsys):
    with pytest.raises(FlagError):
        flags.parse("dlrm", ["--bf16_mode", "grappler"])
    assert "--bf16_mode needs --bf16" in capsys.readouterr().err
    assert flags.parse("dlrm", ["--bf16", "--bf16_mode", "grappler"]).bf16_mode == "grappler"
    assert flags.parse("dlrm", ["--bf16"]).bf16_mode == "casts"


def test_bf16_mode_grappler_turns_the_onednn_pass_on_and_the_model_builds_float32():
    from tensorflow.core.protobuf import rewriter_config_pb2
    from modelzoo.options import Options
    from modelzoo.run.graph import session_config
    on = rewriter_config_pb2.RewriterConfig.ON
    grappler = flags.parse("dlrm", ["--bf16", "--bf16_mode", "grappler"])
    casts = flags.parse("dlrm", ["--bf16"])
    grappler, casts = (Options.from_args(args, "dlrm").speed for args in (grappler, casts))
    assert session_config(grappler).graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 == on
    assert session_config(casts).graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 != on


@pytest.mark.parametrize("value", [True, False])
def test_op_fusion_and_xla_set_the_remapper_and_the_jit_level_of_the_session(value, monkeypatch):
    """--op_fusion is Grappler's remapper (stock TensorFlow runs it unless told OFF); --xla is the session's
    global jit level ON_1 and, before TensorFlow starts, --tf_xla_cpu_global_jit (CPU auto-clustering is off
    without it). Each flag, given either way against a default of the other value, reaches the session."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from modelzoo import runner
    from modelzoo.options import Options
    from modelzoo.run.graph import session_config
    defaults = {**SPEED, "op_fusion": not value, "xla": not value}
    args = flags.parse("dlrm", [f"--op_fusion={value}", f"--xla={value}"], speed_defaults=defaults)
    config = session_config(Options.from_args(args, "dlrm").speed)
    remapping = config.graph_options.rewrite_options.remapping
    assert remapping == (rewriter_config_pb2.RewriterConfig.ON if value else rewriter_config_pb2.RewriterConfig.OFF)
    jit = config.graph_options.optimizer_options.global_jit_level
    assert jit == (config_pb2.OptimizerOptions.ON_1 if value else config_pb2.OptimizerOptions.DEFAULT)
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    runner.set_environment(args)
    assert ("--tf_xla_cpu_global_jit" in os.environ["TF_XLA_FLAGS"]) is value
    assert "--tf_xla_auto_jit=0" in os.environ["TF_XLA_FLAGS"]  # a user's own XLA flags are kept

def test_benchmark_run_trains_in_a_temporary_folder_and_writes_samples_per_sec(tmp_path):
    """--benchmark with --bf16_mode grappler end to end: generated data, samples/s in result.json, no checkpoint."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    data, out = tmp_path / "data", tmp_path / "out"
    proc = subprocess.run([sys.executable, str(repo / "dlrm" / "train.py"), "--benchmark", "--steps", "8",
                           "--batch_size", "256", "--generate_rows", "3000", "--data_location", str(data),
                           "--output_dir", str(out), "--bf16", "--bf16_mode", "grappler", "--log_steps", "100"],
                          capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "benchmark:" in proc.stdout and "samples/s" in proc.stdout
    result = json.loads((out / "dlrm_benchmark" / "result.json").read_text())
    assert result["benchmark"] and result["steps"] == 8 and result["samples_per_sec"] > 0
    assert "enabled" in result["onednn"]
    assert sorted(p.name for p in out.iterdir()) == ["dlrm_benchmark"]  # no checkpoint folder, no export
    assert sorted(p.name for p in (out / "dlrm_benchmark").iterdir()) == ["result.json"]


def test_checkpoints_are_saved_by_time_unless_save_steps_is_given():
    """One timer: every 600 s by default (as Estimator), --save_steps N instead, both given is refused."""
    from modelzoo.options import Options
    by_time = Options.from_args(parse(), "dlrm").checkpoint
    by_steps = Options.from_args(parse("--save_steps", "100"), "dlrm").checkpoint
    at_ends = Options.from_args(parse("--save_secs", "0"), "dlrm").checkpoint
    assert (by_time.save_steps, by_time.save_secs) == (0, 600)
    assert (by_steps.save_steps, by_steps.save_secs) == (100, 0)
    assert (at_ends.save_steps, at_ends.save_secs) == (0, 0)
    assert Options.from_args(parse("--save_steps", "100", "--save_secs", "0"), "dlrm").checkpoint.save_steps == 100
    with pytest.raises(FlagError) as err:
        parse("--save_steps", "100", "--save_secs", "60")
    assert err.value.message == ("--save_steps 100 and --save_secs 60: checkpoints are saved on one timer, by steps "
                                 "or by seconds; give one of them")


# -- the refusal table (flags.ACTS_IN) walked against every mode of every registered model ---------------------

MODE_ARGV = {flags.TRAIN: [], flags.EVALUATE: ["--evaluate"], flags.PREDICT: ["--predict"],
             flags.EXPORT: ["--export_only"], flags.BENCHMARK: ["--benchmark", "--steps", "10"]}
# what a flag needs beside it to act (the flag it refines, modelzoo/flags.py's REFINES), and values for the flags
# whose type takes no "2"
NEEDS = {"ev_filter": ["--ev"], "ev_elimination": ["--ev"], "adaptive_emb": ["--ev"], "dynamic_ev": ["--ev"],
         "incremental_ckpt": ["--ev"], "ev_filter_freq": ["--ev", "--ev_filter", "counter"],
         "ev_cbf_max_elements": ["--ev", "--ev_filter", "cbf"], "ev_cbf_fpr": ["--ev", "--ev_filter", "cbf"],
         "ev_steps_to_live": ["--ev", "--ev_elimination", "gstep"], "ev_l2_threshold": ["--ev", "--ev_elimination", "l2"],
         "ev_evict_steps": ["--ev", "--ev_elimination", "gstep"], "adaptive_emb_threshold": ["--ev", "--adaptive_emb"],
         "adaptive_emb_buckets": ["--ev", "--adaptive_emb"], "dynamic_ev_dims": ["--ev", "--dynamic_ev"],
         "dynamic_ev_freqs": ["--ev", "--dynamic_ev"], "bf16_mode": ["--bf16"], "lr_scaling": ["--hvd"],
         "eval_files": ["--train_files", "t.txt"]}
VALUES = {"dynamic_ev_dims": "4,16", "dynamic_ev_freqs": "10", "ev_cbf_fpr": "0.1", "protocol": "grpc",
          "dropout": "0.1", "lr_scaling": "linear", "task_weights": "ctr=2"}
NEEDS_PS = tuple(flags.NEEDS_PS)  # (acting only in a parameter-server job: given there, under its TF_CONFIG)


def example(action):
    """A value for the flag, and whether its own type accepts it (not: a removed flag, refused whatever its value)."""
    if action.nargs == "?" and action.const is True:
        return "true", True
    value = VALUES.get(action.dest) or (action.choices[-1] if action.choices else "2")
    try:
        action.type(value) if action.type else value
    except argparse.ArgumentTypeError:
        return value, False
    return value, True


def walk():
    from modelzoo.models import ESTIMATOR_MODELS, load_spec
    for model in ESTIMATOR_MODELS:
        spec = load_spec(model)
        for action in flags.spec_parser(spec)._actions:
            if action.option_strings and action.dest != "help" and action.dest not in flags.MODE_FLAGS:
                yield pytest.param(spec, action.option_strings[0], id=f"{model}-{action.option_strings[0]}")


def parse_spec(spec, argv):
    return flags.parse(spec.name, argv, spec.defaults, spec.speed_defaults, spec.add_flags, spec.has_mlp,
                       spec.shape_flags)


@pytest.mark.parametrize("spec,option", list(walk()))
def test_every_flag_of_every_model_acts_or_is_refused_in_every_mode(spec, option, monkeypatch, capsys):
    """A flag given where it does nothing is refused in one line naming it and the mode; where it acts, it parses
    (with the flag it refines), whatever the model."""
    parser = flags.spec_parser(spec)
    action = parser._option_string_actions[option]
    modes, name, (value, accepted) = parser.modes_of(action), option[2:], example(action)
    for mode in flags.MODES:
        argv = MODE_ARGV[mode] + [option, value]
        if not accepted:  # a removed flag (W&D's --deep_dropout): its type refuses it, naming what replaces it
            with pytest.raises(SystemExit) as err:
                parse_spec(spec, argv)
            assert err.value.code == 2 and f"{option} is now" in capsys.readouterr().err
        elif mode not in modes:
            with pytest.raises(FlagError) as err:
                parse_spec(spec, argv)
            assert err.value.message == flags.refusal(name, mode, modes)
            assert name in err.value.message and mode in err.value.message
        elif not spec.has_mlp and action.dest in (*flags.NEEDS_MLP, "bf16_mode"):
            with pytest.raises(FlagError, match=f"acts on a model's MLP layers, and {spec.name} has none"):
                parse_spec(spec, argv + NEEDS.get(action.dest, []))
        else:
            with monkeypatch.context() as env:
                if action.dest in NEEDS_PS:
                    env.setenv("TF_CONFIG", PS_JOB)
                args = parse_spec(spec, argv + NEEDS.get(action.dest, []))
            assert flags.run_mode(args) == mode, (option, mode)


def test_the_refusal_table_lists_every_shared_flag():
    """A shared flag added without saying where it acts fails here (ACTS_IN is what refuses it elsewhere)."""
    dests = {a.dest for a in flags.build_parser("dlrm", {})._actions if a.option_strings and a.dest != "help"}
    assert dests == set(flags.ACTS_IN), (dests ^ set(flags.ACTS_IN))


def test_the_flags_of_a_checkpoints_identity_act_wherever_a_checkpoint_is_read():
    """The flags a checkpoint's run_config.json must match (modelzoo/run/checkpoints.py) are given again to
    evaluate, predict or export it, so the table must let them act there; the model's shape flags likewise."""
    import re
    from modelzoo.models import ESTIMATOR_MODELS, load_spec
    from modelzoo.run import checkpoints
    named = " ".join([*checkpoints.IDENTITY_FLAGS.values(), *checkpoints.EV_IDENTITY_FLAGS.values()])
    identity = set(re.findall(r"--(\w+)", named)) - {"optimizer"}  # (not compared when nothing trains)
    assert {"ev_filter", "emb_fusion", "tf", "incremental_ckpt"} <= identity
    for name in identity:
        assert flags.ACTS_IN[name] >= flags.KEEPS_CHECKPOINT, name
    for model in ESTIMATOR_MODELS:
        spec = load_spec(model)
        parser = flags.spec_parser(spec)
        for action in parser._actions:
            shaping = action.dest in spec.shape_flags
            if action.dest not in flags.ACTS_IN and action.option_strings:
                # a model flag that acts outside training shapes the variables (or says so with flags.acts_in)
                assert (parser.modes_of(action) == flags.EVERY) == shaping or hasattr(action, "modes"), action.dest


@pytest.mark.parametrize("first", list(flags.MODE_FLAGS))
@pytest.mark.parametrize("second", list(flags.MODE_FLAGS))
def test_two_modes_are_refused_together(first, second):
    if first == second:
        return
    with pytest.raises(FlagError, match="are separate runs; give one of them") as err:
        parse(f"--{first}", f"--{second}", "--steps", "10")
    assert f"--{first}" in err.value.message and f"--{second}" in err.value.message


@pytest.mark.parametrize("argv,words", [
    (["--checkpoint", "x", "--output_dir", "y"], "--output_dir is the parent of the default checkpoint folder "
                                                 "OUTPUT_DIR/MODEL, and --checkpoint replaces it; drop --output_dir"),
    (["--train_files", "a", "--data_location", "b"], "--data_location is the folder read (or generated into) when "
                                                     "no --train_files are given, and --train_files replaces it"),
])
def test_a_flag_that_another_replaces_is_refused_with_it(argv, words):
    with pytest.raises(FlagError) as err:
        parse(*argv)
    assert err.value.message.startswith(words)
    assert parse(*argv[:2]) and parse(*argv[2:])


def test_two_names_of_one_flag_are_refused_together(capsys):
    """W&D's --deep_learning_rate is --learning_rate: given both, the last one won silently."""
    from modelzoo.models import load_spec
    spec = load_spec("wide_and_deep")
    with pytest.raises(SystemExit) as err:
        parse_spec(spec, ["--deep_learning_rate", "0.1", "--learning_rate", "0.2"])
    assert err.value.code == 2
    assert "--deep_learning_rate and --learning_rate set the same value (learning_rate); give one of them" in \
        capsys.readouterr().err
    assert parse_spec(spec, ["--deep_learning_rate", "0.1"]).learning_rate == 0.1
    with pytest.raises(FlagError) as refused:
        parse_spec(spec, ["--deep_learning_rate", "0.1", "--predict"])
    assert refused.value.message.startswith("--deep_learning_rate acts on training, and --predict does not train")

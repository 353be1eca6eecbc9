"""The run's length and evaluations (modelzoo/run/schedule.py): --epochs, --eval_steps, early stopping on the
held-out metric with the best checkpoint kept and exported, and the length a run picks from its data when
neither --steps nor --epochs is given."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import CRITEO_SAMPLE, for_mode, raw_columns, read_result, run_train, score_in_fresh_process
from modelzoo.flags import PREDICT

from modelzoo import flags as flaglib
from modelzoo.options import Options
from modelzoo.run import schedule as S


def train_opts(*argv):
    args = flaglib.parse("dlrm", [*argv], {"batch_size": 2048}, {n: False for n in flaglib.SPEED_SWITCHES})
    return Options.from_args(args, "dlrm").train


@pytest.mark.fast
def test_small_data_default_trains_to_early_stopping_with_at_least_100_steps():
    plan = S.plan(train_opts(), 8_999, 2048, evaluates=True)
    assert plan.steps_per_epoch == 5
    assert plan.max_steps == flaglib.DEFAULT_MAX_EPOCHS * 5
    assert (plan.eval_every, plan.patience, plan.metric, plan.min_steps) == (5, flaglib.DEFAULT_PATIENCE, "auc", 100)
    assert plan.keeps_best
    assert plan.description.startswith("8,999 rows = 5 steps an epoch at batch 2,048: training up to 100 epochs, "
                                       "evaluating the held-out rows at the end of each epoch, with early stopping "
                                       "on the held-out AUC (patience 2, not before step 100;")


@pytest.mark.fast
def test_large_data_default_is_one_epoch_evaluated_at_its_end():
    plan = S.plan(train_opts(), 41_256_000, 2048, evaluates=True)
    assert plan.max_steps == 20_145 and plan.eval_every == 0 and not plan.keeps_best
    assert "training one epoch" in plan.description


@pytest.mark.fast
def test_the_one_epoch_rule_starts_at_100_steps_an_epoch():
    """benchmarks/results/epochs_by_size_dlrm.md: a second epoch helps below ~100 steps an epoch, and hurts above."""
    large = S.plan(train_opts(), 100 * 2048, 2048, evaluates=True)
    assert large.max_steps == 100 and not large.keeps_best
    small = S.plan(train_opts(), 99 * 2048, 2048, evaluates=True)
    assert small.steps_per_epoch == 99 and small.keeps_best and small.max_steps == 99 * flaglib.DEFAULT_MAX_EPOCHS


@pytest.mark.fast
def test_without_held_out_rows_the_default_still_trains_100_steps():
    # (--no_eval, or a parameter-server job, whose evaluator does not stop the job)
    plan = S.plan(train_opts("--no_eval"), 4_000, 2048, evaluates=False)
    assert plan.max_steps == 100 and plan.patience == 0 and plan.eval_every == 0
    ps = S.plan(train_opts(), 4_000, 2048, evaluates=True, evaluator_task=True)
    assert ps.max_steps == 100 and ps.patience == 0 and ps.eval_every == 0
    assert "a parameter-server job stops early only with --early_stop_patience" in ps.description
    patient = S.plan(train_opts("--early_stop_patience", "2"), 4_000, 2048, evaluates=True, evaluator_task=True)
    assert patient.keeps_best and patient.eval_every == 0 and "by the evaluator task" in patient.description


def small_data_context(argv, train_rows):
    """A RunContext of a model whose ModelSpec has small_data_defaults, planned for `train_rows` rows."""
    from modelzoo.run.context import RunContext
    from modelzoo.run.spec import ModelSpec
    spec = ModelSpec(name="dlrm", schema="criteo", build_logits=lambda *a: None, defaults={"batch_size": 2048},
                     speed_defaults={n: False for n in flaglib.SPEED_SWITCHES},
                     small_data_defaults={"learning_rate": 0.0002, "dropout": 0.3})
    args = flaglib.parse("dlrm", [*argv], spec.defaults, spec.speed_defaults)
    ctx = RunContext.create(spec, args)
    ctx.schedule = S.plan(ctx.opts.train, train_rows, 2048, evaluates=True)
    return ctx, ctx.use_small_data_defaults()


@pytest.mark.fast
def test_small_data_defaults_apply_only_when_the_run_picks_its_length_on_small_data_and_never_over_a_given_flag():
    ctx, changed = small_data_context([], 8_999)
    assert changed == {"learning_rate": 0.0002, "dropout": 0.3}
    assert (ctx.args.learning_rate, ctx.opts.train.learning_rate, ctx.opts.train.dropout) == (0.0002, 0.0002, 0.3)
    assert "_given_flags" not in ctx.result_flags()
    ctx, changed = small_data_context(["--learning_rate", "0.001"], 8_999)  # the command line wins
    assert changed == {"dropout": 0.3} and ctx.opts.train.learning_rate == 0.001
    for argv, rows in (([], 100 * 2048), (["--steps", "50"], 8_999), (["--epochs", "3"], 8_999)):
        ctx, changed = small_data_context(argv, rows)  # large data, or a length the user chose: as before
        assert changed == {} and ctx.opts.train.learning_rate == 0.01 and ctx.opts.train.dropout == 0.0


@pytest.mark.fast
def test_given_lengths_and_evaluation_intervals():
    steps = S.plan(train_opts("--steps", "30"), 8_999, 2048, evaluates=True)
    assert (steps.max_steps, steps.eval_every, steps.patience, steps.min_steps) == (30, 0, 0, 0)
    epochs = S.plan(train_opts("--epochs", "3"), 8_999, 2048, evaluates=True)
    assert (epochs.max_steps, epochs.eval_every, epochs.patience) == (15, 5, 0)
    assert [epochs.next_stop(s) for s in (0, 4, 5, 14)] == [5, 5, 10, 15]
    every = S.plan(train_opts("--steps", "30", "--eval_steps", "7"), 8_999, 2048, evaluates=True)
    assert [every.next_stop(s) for s in (0, 7, 28)] == [7, 14, 30]
    patient = S.plan(train_opts("--steps", "30", "--early_stop_patience", "3", "--early_stop_metric", "logloss"),
                     8_999, 2048, evaluates=True)
    assert (patient.eval_every, patient.patience, patient.metric, patient.min_steps) == (5, 3, "logloss", 0)


@pytest.mark.fast
@pytest.mark.parametrize("argv, message", [
    (["--steps", "10", "--epochs", "2"], "--steps 10 and --epochs 2 both set the run's length; give one of them"),
    (["--no_eval", "--early_stop_patience", "2"], "--early_stop_patience acts on the held-out evaluations, and "
                                                  "--no_eval turns them off"),
    (["--no_eval", "--eval_steps", "5"], "--eval_steps acts on the held-out evaluations"),
    (["--steps", "10", "--early_stop_metric", "logloss"], "--early_stop_metric needs early stopping"),
    (["--evaluate", "--epochs", "2"], "--epochs acts on training, and --evaluate does not train"),
    (["--benchmark", "--steps", "5", "--early_stop_patience", "1"], "contradicts --early_stop_patience"),
])
def test_length_flags_that_would_do_nothing_are_refused(argv, message, capsys):
    with pytest.raises(flaglib.FlagError):
        flaglib.parse("dlrm", argv, {}, {n: False for n in flaglib.SPEED_SWITCHES})
    assert message in capsys.readouterr().err


@pytest.mark.fast
def test_record_picks_the_best_by_the_metric_and_counts_patience(tmp_path):
    plan = S.plan(train_opts("--epochs", "10", "--early_stop_patience", "2"), 1000, 100, evaluates=True)
    record = S.EvaluationRecord(str(tmp_path), plan)
    assert record.add(10, {"auc": 0.70, "logloss": 0.50}) and not record.should_stop(10)
    assert record.add(20, {"auc": 0.72, "logloss": 0.52})
    assert not record.add(30, {"auc": 0.71, "logloss": 0.49}) and not record.should_stop(30)
    assert not record.add(40, {"auc": 0.72, "logloss": 0.48})  # a tie is no improvement
    assert record.should_stop(40) and record.stopped_early == 40 and record.best["step"] == 20
    record.save()
    again = S.EvaluationRecord.load(str(tmp_path), plan)  # a resumed run continues the record
    assert again.stopped_early == 40 and again.best["step"] == 20 and again.evaluated(30)
    by_logloss = S.EvaluationRecord.load(str(tmp_path), S.plan(
        train_opts("--epochs", "10", "--early_stop_patience", "2", "--early_stop_metric", "logloss"), 1000, 100, True))
    assert by_logloss.best["step"] == 40


@pytest.mark.fast
def test_default_length_does_not_stop_before_100_steps(tmp_path):
    plan = S.plan(train_opts(), 1000, 100, evaluates=True)  # 10 steps an epoch
    record = S.EvaluationRecord(str(tmp_path), plan)
    record.add(10, {"auc": 0.8})
    for step in (20, 30, 40):
        record.add(step, {"auc": 0.7})
        assert not record.should_stop(step)  # patience is spent, but the run is under 100 steps
    record.add(100, {"auc": 0.7})
    assert record.should_stop(100) and record.best["step"] == 10


@pytest.mark.fast
def test_keep_best_copies_a_whole_checkpoint_folder(tmp_path):
    for step in (5, 10):
        for suffix in (".index", ".data-00000-of-00001", ".meta"):
            (tmp_path / f"model.ckpt-{step}{suffix}").write_text(f"{step}{suffix}")
    (tmp_path / "run_config.json").write_text("{}")
    S.keep_best(str(tmp_path), str(tmp_path / "model.ckpt-5"))
    S.keep_best(str(tmp_path), str(tmp_path / "model.ckpt-10"))
    best = tmp_path / "best"
    assert sorted(p.name for p in best.iterdir()) == ["checkpoint", "model.ckpt-10.data-00000-of-00001",
                                                      "model.ckpt-10.index", "model.ckpt-10.meta", "run_config.json"]
    assert S.best_checkpoint(str(tmp_path)) == str(best / "model.ckpt-10")
    best.rename(tmp_path / "best.old")  # killed between keep_best's two renames: the previous best is found
    assert S.best_checkpoint(str(tmp_path)) == str(tmp_path / "best.old" / "model.ckpt-10")


def test_early_stopping_exports_the_best_evaluation(tmp_path, small_schema):
    """A learning rate that overfits the 9,000 real rows within a few epochs: the held-out AUC rises, then
    falls; training stops after 2 evaluations without improvement, the SavedModel and result.json are the
    best step's, and the export scores the held-out rows as --predict on CHECKPOINT/best does."""
    if not CRITEO_SAMPLE.is_file():
        pytest.skip(f"real Criteo sample not found at {CRITEO_SAMPLE}")
    ckpt = tmp_path / "ckpt"
    common = ["--train_files", CRITEO_SAMPLE, "--schema", small_schema, "--batch_size", 1000, "--seed", 3,
              "--emb_fusion=false", "--smartstaged=false"]
    proc = run_train("dlrm", [*common, "--checkpoint", ckpt, "--learning_rate", 0.01, "--epochs", 8,
                              "--early_stop_patience", 2])
    result = read_result(ckpt)
    evaluations = result["evaluations"]
    aucs = [e["auc"] for e in evaluations]
    best = max(range(len(aucs)), key=aucs.__getitem__)
    # measured (seed 3, Zen 4): AUC 0.70, 0.73, 0.67, 0.65 at steps 9, 18, 27, 36
    assert 0 < best < len(aucs) - 1, aucs  # it rose, then fell
    assert len(aucs) - 1 - best == 2 and result["stopped_early_at_step"] == evaluations[-1]["step"] < 72
    assert result["best_step"] == evaluations[best]["step"] == result["best"]["step"]
    assert result["auc"] == pytest.approx(aucs[best]) and result["steps"] == evaluations[-1]["step"]
    assert f"early stopping; the model of step {result['best_step']} is kept" in proc.stdout
    assert [e["epoch"] for e in evaluations] == list(range(1, len(aucs) + 1))
    record = json.loads((ckpt / "evaluations.json").read_text())
    assert record["best"]["step"] == result["best_step"]
    assert list((ckpt / "eval").glob("events.out.tfevents.*"))  # each evaluation in TensorBoard

    best_dir = ckpt / "best"
    assert (best_dir / f"model.ckpt-{result['best_step']}.index").is_file()
    run_train("dlrm", [*for_mode("dlrm", common, PREDICT), "--checkpoint", best_dir, "--predict"])
    predicted = np.array([float(line.split(",")[1])
                          for line in (best_dir / "predictions.csv").read_text().splitlines()[1:]])
    from modelzoo.schema import load_schema
    lines = Path(CRITEO_SAMPLE).read_text().splitlines()[-len(predicted):]
    scores = score_in_fresh_process({"best": result["export_dir"]}, raw_columns(load_schema("criteo"), lines),
                                    tmp_path)["best"]
    np.testing.assert_allclose(scores, predicted, rtol=0, atol=1e-5)
    # a rerun trains nothing more: early stopping ended the run
    again = run_train("dlrm", [*common, "--checkpoint", ckpt, "--learning_rate", 0.01, "--epochs", 8,
                               "--early_stop_patience", 2])
    assert "where early stopping ended its training" in again.stdout
    assert read_result(ckpt)["best_step"] == result["best_step"]


def test_epochs_train_exact_passes_and_evaluate_each(tmp_path, generated_criteo, small_schema):
    """--epochs 3 over 1,800 training rows at batch 200: 27 steps, 5,400 rows read (the input's own count,
    the checkpoint's input_progress), one evaluation per epoch."""
    lines = Path(generated_criteo).read_text().splitlines()[:2000]  # 1,800 train + 200 held out
    data = tmp_path / "train.txt"
    data.write_text("\n".join(lines) + "\n")
    ckpt = tmp_path / "ckpt"
    run_train("dlrm", ["--train_files", data, "--schema", small_schema, "--checkpoint", ckpt, "--batch_size", 200,
                       "--epochs", 3])
    result = read_result(ckpt)
    assert result["train_rows"] == 1800 and result["steps"] == 27
    assert [e["step"] for e in result["evaluations"]] == [9, 18, 27] and result["best"] is None
    import tensorflow as tf
    progress = tf.train.load_variable(tf.train.latest_checkpoint(str(ckpt)), "input_progress")
    assert int(progress[0]) == 3 * 1800
    # one Estimator.train for the 3 evaluations: the training graph goes into the events file once per run, not
    # once per evaluation (a session per evaluation added it each time: 47 MB after 20 evaluations of DLRM). Stock
    # TensorFlow writes it twice in a session (with its meta graph): when the summary writer opens, and when the
    # checkpoint saver starts.
    events = [event for path in ckpt.glob("events.out.tfevents.*")
              for event in tf.compat.v1.train.summary_iterator(str(path))]
    assert sum(1 for e in events if e.graph_def) == 2 and sum(1 for e in events if e.meta_graph_def) == 2


def test_evaluation_in_the_training_session_with_ev_inserts_no_key_and_scores_as_evaluate(tmp_path, generated_criteo):
    """--ev with an admission filter (FM: its linear part is a second set of dynamic tables): evaluating the held-out
    rows inside the training session neither inserts their ids nor counts their sightings (the tables' rows and
    filtered counts equal a --no_eval run's), and its metrics equal --evaluate's on the same checkpoint."""
    lines = Path(generated_criteo).read_text().splitlines()[:2000]  # 1,800 train + 200 held out
    data = tmp_path / "train.txt"
    data.write_text("\n".join(lines) + "\n")
    common = ["--train_files", data, "--batch_size", 300, "--ev", "--ev_filter", "counter",
              "--smartstaged=false"]  # (in order: both runs train on the same batches)
    run_train("fm", [*common, "--checkpoint", tmp_path / "eval", "--epochs", 2])
    run_train("fm", [*common, "--checkpoint", tmp_path / "no_eval", "--epochs", 2, "--no_eval"])
    evaluating, silent = read_result(tmp_path / "eval"), read_result(tmp_path / "no_eval")
    assert [e["step"] for e in evaluating["evaluations"]] == [6, 12]
    assert evaluating["ev_tables"] == silent["ev_tables"]
    assert any(t["filtered"] for t in silent["ev_tables"].values())  # (the filter did count sightings)
    run_train("fm", [*common, "--checkpoint", tmp_path / "no_eval", "--evaluate"])
    evaluated = read_result(tmp_path / "no_eval")
    assert evaluating["auc"] == pytest.approx(evaluated["auc"], abs=1e-6)
    assert evaluating["logloss"] == pytest.approx(evaluated["logloss"], abs=1e-6)

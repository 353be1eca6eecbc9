#!/usr/bin/env python
"""Write docs/flags.md from the parsers themselves (modelzoo/flags.py's shared flags and refusal table, each
registered model's add_flags, gdmix_lr/train.py's own flags), so the flags reference has one source.

    python docs/generate_flags.py           # rewrite docs/flags.md
    python docs/generate_flags.py --check   # exit 1 if docs/flags.md differs (tests/test_docs.py runs this)
"""
import argparse
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modelzoo import flags  # noqa: E402
from modelzoo.models import ESTIMATOR_MODELS, OTHER_MODELS, load_spec, train_py  # noqa: E402
from modelzoo.run.spec import MODEL_DEFAULT_KEYS  # noqa: E402

PAGE = REPO / "docs" / "flags.md"
HEADER = """# Flags

Generated from the parsers by `python docs/generate_flags.py` (`tests/test_docs.py` fails when this page
differs from its output): edit the flags' help in `modelzoo/flags.py`, a model's `add_flags` or
`gdmix_lr/train.py`, then run it.

Every Estimator model's `train.py` ({models}) takes the shared flags below and its own. Boolean flags accept
`--bf16`, `--bf16 True` and `--bf16=false`. A flag given where it would do nothing is refused before any work,
in one line naming it, even at its default value: the **acts in** column is `modelzoo/flags.py`'s refusal table
(`ACTS_IN`) over the modes of a run: training, `--evaluate`, `--predict`, `--export_only` and `--benchmark`. A
model's own flags act in every mode when they shape its variables (its `ModelSpec.shape_flags`), else in training
only. Besides the table, a sub-flag without the flag it refines is refused (`--ev_filter_freq` without
`--ev_filter`), as are the flags of a parameter-server job outside one. What the flags do in practice, with the
details `--help` leaves out: [running.md](running.md).
"""


def markdown_text(text):
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def help_text(action):
    """The flag's help as --help prints it, without the default (a column of its own)."""
    if not action.help:
        return ""
    return markdown_text(argparse.HelpFormatter("x")._expand_help(action))


def default_text(action, per_model=()):
    if action.dest in per_model:
        return "model's"
    value = action.default
    if value is argparse.SUPPRESS or value is None:
        return ""
    if isinstance(value, list):
        value = " ".join(map(str, value))
    return f"`{value}`"


def modes_text(modes):
    if modes == flags.EVERY:
        return "every mode"
    return ", ".join(f"`{m}`" if m.startswith("--") else m for m in flags.MODES if m in modes)


def option_text(action):
    return ", ".join(f"`{name}`" for name in action.option_strings)


def table(rows, modes=True):
    head = "| flag | default | acts in | meaning |\n|---|---|---|---|\n" if modes else \
        "| flag | default | meaning |\n|---|---|---|\n"
    return head + "".join(f"| {' | '.join(row)} |\n" for row in rows)


def shared_section():
    parser = flags.build_parser("MODEL", {})
    out = ["## Shared flags\n"]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.option_strings and a.dest != "help"]
        if not actions:
            continue
        out.append(f"### {group.title}\n")
        out.append(table([(option_text(a), default_text(a, MODEL_DEFAULT_KEYS + flags.SPEED_SWITCHES),
                           modes_text(parser.modes_of(a)), help_text(a)) for a in actions]))
    return "\n".join(out)


def model_section(model):
    spec = load_spec(model)
    parser = flags.spec_parser(spec)
    shared = {name for a in flags.build_parser(model, {})._actions for name in a.option_strings}
    own = [a for a in parser._actions if a.option_strings and a.option_strings[0] not in shared]
    out = [f"### {model}\n", f"`{model}/train.py`; its README: [{model}/README.md](../{model}/README.md).\n"]
    defaults = {**spec.defaults, **{f"--{k}": v for k, v in spec.speed_defaults.items()}}
    listed = ", ".join(f"`{k if k.startswith('--') else '--' + k}` {markdown_text(v)}" for k, v in defaults.items())
    out.append(f"Its defaults of the shared flags: {listed}." + ("" if spec.has_mlp else
               " It has no MLP: `--bf16` and `--dropout` are refused.") + "\n")
    if own:
        out.append(table([(option_text(a), default_text(a), modes_text(parser.modes_of(a)), help_text(a))
                          for a in own]))
    else:
        out.append("No flags of its own.\n")
    return "\n".join(out)


def other_section(model):
    path = train_py(model)
    spec = importlib.util.spec_from_file_location(f"docs_flags_{model}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = module.build_parser()
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]

    def acts(action):
        modes = parser.modes_of(action)
        parts = [f"{axis}: {', '.join(m for m in values if m in modes)}" for axis, values in module.AXES.items()
                 if not set(values) <= modes]
        return "; ".join(parts) or "every mode"
    out = [f"### {model}\n",
           f"`{model}/train.py` is not an Estimator job and has only these flags (the shared ones are refused as "
           f"unrecognized); its README: [{model}/README.md](../{model}/README.md). Its modes are what "
           "`--data_location` holds (a prepared folder, the ml-100k files, nothing: generated data) and one process "
           "or several (a TF_CONFIG job); a flag given where it does nothing is refused in one line (its "
           "`ACTS_IN`).\n"]
    out.append(table([(option_text(a), default_text(a), acts(a), help_text(a)) for a in actions]))
    return "\n".join(out)


def page():
    parts = [HEADER.format(models=", ".join(f"`{m}`" for m in ESTIMATOR_MODELS)), shared_section(),
             "## Model flags\n", *map(model_section, ESTIMATOR_MODELS), *map(other_section, OTHER_MODELS)]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/flags.md differs from the parsers")
    args = p.parse_args(argv)
    text = page()
    if args.check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.relative_to(REPO)} is stale: run python docs/generate_flags.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

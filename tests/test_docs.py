"""The documentation's promises: the flags page is the parsers' own output, every relative link in README.md
and docs/ reaches a file (and heading) that exists, and every registered model has a row in the README's
models table."""
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.fast

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading):
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    return {slug(line.lstrip("#")) for line in path.read_text(encoding="utf-8").splitlines()
            if re.match(r"#{1,6} ", line)}


def pages():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_flags_page_is_what_the_parsers_generate():
    """docs/flags.md is written by docs/generate_flags.py from modelzoo/flags.py, each model's add_flags and
    gdmix_lr/train.py: a flag added or changed without rerunning it fails here."""
    proc = subprocess.run([sys.executable, str(REPO / "docs" / "generate_flags.py"), "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_flags_page_lists_every_flag_of_every_model():
    from modelzoo import flags
    from modelzoo.models import ESTIMATOR_MODELS, load_spec
    text = (REPO / "docs" / "flags.md").read_text(encoding="utf-8")
    for model in ESTIMATOR_MODELS:
        assert f"### {model}\n" in text, model
        for action in flags.spec_parser(load_spec(model))._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    assert f"`{option}`" in text, (model, option)


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_its_heading(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, broken


def test_every_registered_model_has_a_row_in_the_readme_models_table():
    """The README's models table is the readers' one list: a model added to modelzoo/models.py without a row
    (and a measured line) fails here."""
    from modelzoo.models import MODELS
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Models", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| model ")]
    folders = [re.search(r"\[`(\w+)/`\]\((\w+)/README\.md\)", row) for row in rows]
    assert all(folders), rows
    assert sorted(m.group(1) for m in folders) == sorted(MODELS)
    for row in rows:
        measured = row.rstrip(" |").rsplit("|", 1)[1]
        assert re.search(r"\d\.\d{3}", measured) and "](" in measured, row  # a figure and where it comes from


def test_the_readme_stays_a_newcomers_page():
    """Issue 28: what this is, the two commands, the models, where to go next; the reference lives in docs/."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 80, len(readme.splitlines())
    assert [h for h in re.findall(r"^## (.+)$", readme, flags=re.M)] == ["Quick start", "Models", "Where to go next"]

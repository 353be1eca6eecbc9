"""Repository-level promises: CI runs the README's test command; the Dockerfile passes hadolint and its
default image's command trains DLRM in bfloat16."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import REPO, bf16_matmuls, dockerfile_stages


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quick, flags=re.M)
    assert commands == ["make train", "make test"], commands
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


def test_make_test_installs_jemalloc_where_it_can_and_pytest_prints_skip_reasons():
    """CI's `make test` runs the launcher's jemalloc tests: its jemalloc step leaves Debian's libjemalloc2
    installed (apt-get, as root), or says why it cannot; pytest's -rs names each skipped test and why."""
    venv = Path(sys.executable).parent.parent
    if not shutil.which("make") or not (venv / ".installed").exists():
        pytest.skip(f"needs make and a venv set up by `make setup` ({venv}/.installed)")
    never_setup = ["-o", f"{venv}/.installed", "-o", f"{venv}/.horovod", f"VENV={venv}"]  # (no pip here)
    dry = subprocess.run(["make", "-n", "test", *never_setup], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"python -m pytest -q -rs tests", dry.stdout) and "apt-get install -y" in dry.stdout
    proc = subprocess.run(["make", "--no-print-directory", "jemalloc", *never_setup], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from distribute_k8s.launch import find_jemalloc
    if find_jemalloc():
        assert "libjemalloc2: installed (the jemalloc tests run)" in proc.stdout, proc.stdout
    else:
        assert "the jemalloc tests will be skipped" in proc.stdout, proc.stdout


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install -r requirements-dev.txt)")
    proc = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_installs_the_pinned_requirements_and_runs_bf16_dlrm(tmp_path):
    """No Docker daemon here, so the image is rebuilt as far as it matters: a folder (its WORKDIR) holding
    only what the base and default stages COPY, and this environment's Python, which holds exactly the
    versions requirements.txt pins (what the image's pip installs). Its ENTRYPOINT + CMD run there, with
    a short run's flags after them (as `docker run IMAGE dlrm/train.py --bf16 --steps 3` passes them):
    DLRM trains with bfloat16 MLP matmuls, and says whether this CPU runs them in hardware."""
    stages = dockerfile_stages()
    image = stages["base"] + list(stages.values())[-1]
    assert any(line.startswith("RUN pip install --no-cache-dir -r requirements.txt") for line in stages["base"])
    pins = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    for pin in filter(None, pins):
        name, _, version = pin.partition("==")
        assert version, f"requirements.txt: {pin!r} is not pinned with =="
        assert metadata.version(name) == version, (name, metadata.version(name), version)
    workdir = tmp_path / "opt_modelzoo"
    workdir.mkdir()
    for line in image:
        if line.startswith("COPY ") and "--from" not in line:
            src, dst = shlex.split(line)[1:]
            (shutil.copytree if (REPO / src).is_dir() else shutil.copy)(REPO / src, workdir / dst)
    (entrypoint,) = [json.loads(line.split(None, 1)[1]) for line in image if line.startswith("ENTRYPOINT")]
    cmd = json.loads([line for line in image if line.startswith("CMD")][-1].split(None, 1)[1])
    assert entrypoint == ["python"] and cmd == ["dlrm/train.py", "--bf16"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, *cmd, "--generate_rows", "3000", "--batch_size", "256", "--steps", "3"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((workdir / "result" / "dlrm" / "result.json").read_text())
    assert result["model"] == "dlrm" and result["flags"]["bf16"] is True and result["steps"] == 3
    assert (workdir / "data" / "criteo" / "train.txt").is_file()  # the default data folder, generated there
    from modelzoo.system import bf16_message, cpu_info
    assert bf16_message(cpu_info()) in proc.stdout
    matmuls = bf16_matmuls(workdir / "result" / "dlrm")
    assert any(n.startswith("bottom_mlp") for n in matmuls) and any(n.startswith("top_mlp") for n in matmuls)


def modelzoo_import_graph():
    """modelzoo module -> the modelzoo modules it imports anywhere in its file (module level and inside
    functions alike: a function-local import still ties the two modules together)."""
    import ast
    package = REPO / "modelzoo"
    modules = {p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
               for p in package.rglob("*.py")}
    graph = {}
    for path in package.rglob("*.py"):
        name = path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)  # from modelzoo import x
        graph[name] = {t for t in targets if t in modules and t != name and t != "modelzoo"}
    return graph


def test_modelzoo_has_no_import_cycle():
    graph = modelzoo_import_graph()
    assert graph["modelzoo.embedding_variables"] >= {"modelzoo.features"}  # the graph sees real edges
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle in modelzoo: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])

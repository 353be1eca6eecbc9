# The README's two commands: `make train` and `make test`. Each sets up .venv first if needed;
# `make test` also builds the optional Horovod extra (its tests run 2-process jobs) and installs Debian's
# libjemalloc2 where it can (the launcher's jemalloc tests); pytest -rs prints why any test was skipped.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup horovod jemalloc train test test-fast bench lint lint-py clean-venv

HOROVOD_BUILD := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else \
		"Python 3.11 is required (tensorflow 2.15.1 has wheels for 3.9-3.11; this project pins 3.11), got %d.%d: " \
		"run make PYTHON=python3.11 ..." % v)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

$(VENV)/.horovod: $(VENV)/.installed requirements-horovod.txt
	$(HOROVOD_BUILD) $(PY) -m pip install --quiet --no-build-isolation -r requirements-horovod.txt
	$(VENV)/bin/horovodrun --check-build
	touch $@

horovod: $(VENV)/.horovod

# The launcher's jemalloc tests (tests/test_launch.py) need Debian's libjemalloc2: it is installed here when
# missing and this runs as root with apt-get; otherwise this says so, and pytest -rs lists the skipped tests.
FIND_JEMALLOC := $(PY) -c 'import sys; from distribute_k8s.launch import find_jemalloc; sys.exit(find_jemalloc() is None)'

jemalloc: setup
	@if $(FIND_JEMALLOC); then \
		echo "libjemalloc2: installed (the jemalloc tests run)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "libjemalloc2: not installed; installing it (apt-get) for the jemalloc tests"; \
		out=$$( (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2) 2>&1 ) \
			|| { echo "libjemalloc2: apt-get could not install it, the jemalloc tests will be skipped:"; \
				echo "$$out" | tail -n 3; }; \
	else \
		echo "libjemalloc2: not installed, and installing it needs root and apt-get: the jemalloc tests will be skipped"; \
	fi

train: setup
	$(PY) dlrm/train.py $(ARGS)

test: setup horovod jemalloc lint-py
	$(PY) -m pytest -q -rs tests $(ARGS)

# The fast tier: the tests marked `fast` (pyproject.toml), in-process, under 3 minutes; CI runs `make test`.
test-fast: setup
	$(PY) -m pytest -q -m fast tests $(ARGS)

bench: setup
	$(PY) benchmarks/matrix.py $(ARGS)

# ruff (pinned in requirements-dev.txt, configured in pyproject.toml); `make test` runs it first.
lint-py: setup
	$(VENV)/bin/ruff check .

lint: lint-py
	$(VENV)/bin/hadolint Dockerfile

clean-venv:
	rm -rf $(VENV)

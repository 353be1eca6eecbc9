# The README's two commands: `make train` and `make test`. Each sets up .venv first if needed;
# `make test` also builds the optional Horovod extra (its tests run 2-process jobs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup horovod train test bench lint clean-venv

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

train: setup
	$(PY) dlrm/train.py $(ARGS)

test: setup horovod
	$(PY) -m pytest -q tests $(ARGS)

bench: setup
	$(PY) benchmarks/matrix.py $(ARGS)

lint: setup
	$(VENV)/bin/hadolint Dockerfile

clean-venv:
	rm -rf $(VENV)

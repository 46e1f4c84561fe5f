# Set-up and the two everyday commands. `make up` and `make test` each install what they need first.
#   make up    — install, then start the API + a worker on the embedded default (SQLite, no services)
#   make test  — install, then lint and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel by default. With your own CUDA torch already in $(VENV), nothing is replaced.
TORCH ?= torch==2.13.0
TORCHATTACKS ?= torchattacks==3.5.1

.PHONY: install up test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# torchattacks' metadata pulls a CUDA torch, torchvision and requests==2.25.1: install it alone.
	$(PY) -m pip install --quiet --no-deps "$(TORCHATTACKS)"
	$(PY) -c "import torch, torchattacks, celery, fastapi; print('robustlab: installed with torch', torch.__version__)"
	touch $@

up: install
	$(VENV)/bin/robustlab up

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

# The benchmarks measure against peers installed only for them: MLflow's tracking server and torchdeq
# (--no-deps: its metadata pins an old torch). Each script prints its ratios; see benchmarks/*.py.
bench: install
	$(PY) -c "import mlflow" 2>/dev/null || $(PY) -m pip install --quiet mlflow
	$(PY) -c "import torchdeq" 2>/dev/null || $(PY) -m pip install --quiet --no-deps torchdeq
	$(PY) benchmarks/bench_implicit.py
	$(PY) benchmarks/bench_evaluation.py
	$(PY) benchmarks/bench_leaderboard.py
	$(PY) benchmarks/gate_false_alarms.py

clean:
	rm -rf $(VENV) robustlab.db* robustlab-broker.db* artifacts .pytest_cache

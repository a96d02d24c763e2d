# Two commands on a fresh machine: `make run` (default experiment) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
CONFIG ?= config/config.yaml
SNAKEMAKE_ARGS ?=
UI_PORT ?= 5000
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test test-slow lint dry-run ui report bench bench-encode reference check-reference lock clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv from requirements.lock and install the package

run: $(STAMP)  ## run the default experiment end to end (embedded scifact-mini)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --profile profiles/default $(SNAKEMAKE_ARGS)
	@echo "Summary table: results/tables/summary.md (CSV: results/tables/summary.csv)"
	@$(BIN)/python -m pipeline.mlflow_ui --config $(CONFIG) --port $(UI_PORT) 2>/dev/null | sed 's/$$/ (after `make ui`)/' || true
	@if [ -f results/tables/headline.md ]; then echo; echo "Headline (results/tables/headline.md):"; \
	  cat results/tables/headline.md; fi

test: $(STAMP)  ## run the test suite without the slow checks (what CI runs)
	$(BIN)/python -m pytest -q -m "not slow" tests

test-slow: $(STAMP)  ## only the slow checks (full-SciFact anchor, gradient-norm stability)
	$(BIN)/python -m pytest -q -s -m slow tests

lint: $(STAMP)  ## snakemake --lint and a dry run
	$(BIN)/snakemake --lint --configfile $(CONFIG)
	$(BIN)/snakemake -n --configfile $(CONFIG) --quiet

# One uvicorn worker and no background job runner (MLflow's huey consumer serves GenAI jobs this
# project never submits): a single process instead of a process tree, so it starts faster and
# holds less memory on a small machine.
ui: $(STAMP)  ## MLflow UI on 127.0.0.1 against results/mlflow.db (one worker, no job runner); prints the runs table's URL
	@$(BIN)/python -m pipeline.mlflow_ui --config $(CONFIG) --port $(UI_PORT) || true
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --workers 1 \
	  --backend-store-uri sqlite:///$(abspath results/mlflow.db) --host 127.0.0.1 --port $(UI_PORT)

report: $(STAMP)  ## Snakemake report of the last run (headline, summary, DN and index tables, every plot) -> results/report.html
	$(BIN)/snakemake --configfile $(CONFIG) --profile profiles/default --report results/report.html $(SNAKEMAKE_ARGS)
	@echo "Report: results/report.html"

bench: $(STAMP)  ## memory/time benchmark of the training methods
	$(BIN)/python -m pipeline.bench

BENCH_DATASET ?= ../shared/data/scifact
BENCH_MAX_LENGTH ?= 256

bench-encode: $(STAMP)  ## corpus-encoding throughput: ours vs sentence-transformers (BENCH_DATASET=..., BENCH_MAX_LENGTH=...)
	$(BIN)/python -m pipeline.bench_encode --dataset $(BENCH_DATASET) --max-length $(BENCH_MAX_LENGTH)

REFERENCE_CONFIG ?= config/scifact.yaml
REFERENCE_DIR ?= results/reference/scifact
RUN ?= contaccum-8x8
SEED ?= 13

reference: $(STAMP)  ## run the full SciFact grid (~2 h on 2 cores) and publish its tables to results/reference/scifact
	$(BIN)/snakemake --cores $(CORES) --configfile $(REFERENCE_CONFIG) --profile profiles/default $(SNAKEMAKE_ARGS)
	$(BIN)/python -m pipeline.reference publish --config $(REFERENCE_CONFIG) --to $(REFERENCE_DIR)

check-reference: $(STAMP)  ## re-run one row of the reference grid (RUN=contaccum-8x8 SEED=13) and compare it with the committed table
	$(BIN)/snakemake --cores $(CORES) --configfile $(REFERENCE_CONFIG) --profile profiles/default \
	  --config 'only_runs=[$(RUN)]' 'seeds=[$(SEED)]' $(SNAKEMAKE_ARGS)
	$(BIN)/python -m pipeline.reference check --reference $(REFERENCE_DIR)/summary.csv \
	  --metric ndcg@10 --metric recall@100

lock:  ## re-resolve requirements.lock from pyproject.toml (needs a registry)
	rm -rf /tmp/lock-venv && $(PYTHON) -m venv /tmp/lock-venv && /tmp/lock-venv/bin/pip install -q . && \
	  /tmp/lock-venv/bin/pip freeze --exclude infonce-bench | sed -e 's/+cpu$$//' > requirements.lock

clean:  ## remove results (keeps results/reference) and the venv
	rm -rf results/data results/models results/index results/eval results/tables results/mlflow.db $(VENV)

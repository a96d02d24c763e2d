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
# results/<experiment>/ of a config (its `experiment` key): evaluated only by the recipes that use it.
experiment_dir = results/$(shell $(BIN)/python -c "import sys; from pipeline.core import config; print(config.load(sys.argv[1])['experiment'])" $(1))
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test test-slow docs lint lint-imports dry-run ui report bench bench-encode reference check-reference pilot pilot-time lock clean help export gpu-check bench-train

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
	@tables=$(call experiment_dir,$(CONFIG))/tables; \
	  echo "Summary table: $$tables/summary.md (CSV: $$tables/summary.csv)"
	@$(BIN)/python -m pipeline.results.mlflow_ui --config $(CONFIG) --port $(UI_PORT) 2>/dev/null | sed 's/$$/ (after `make ui`)/' || true
	@tables=$(call experiment_dir,$(CONFIG))/tables; \
	  if [ -f $$tables/headline.md ]; then echo; echo "Headline ($$tables/headline.md):"; cat $$tables/headline.md; fi

test: $(STAMP)  ## run the test suite without the slow checks (what CI runs)
	$(BIN)/python -m pytest -q -m "not slow" --durations=30 tests

test-slow: $(STAMP)  ## only the slow checks (full-SciFact anchor and shards, gradient-norm stability, a published row re-run from scratch)
	$(BIN)/python -m pytest -q -s -m slow tests

docs: $(STAMP)  ## build the manual (MkDocs, --strict: a broken link or missing reference table fails) -> site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
	@echo "Docs: site/index.html"

lint: lint-imports  ## snakemake --lint, a dry run and the import layering
	$(BIN)/snakemake --lint --configfile $(CONFIG)
	$(BIN)/snakemake -n --configfile $(CONFIG) --quiet

lint-imports: $(STAMP)  ## the stages' import layering (pyproject [tool.importlinter]; docs/architecture.md)
	PYTHONPATH=$(CURDIR) $(BIN)/lint-imports

# One uvicorn worker and no background job runner (MLflow's huey consumer serves GenAI jobs this
# project never submits): a single process instead of a process tree, so it starts faster and
# holds less memory on a small machine.
ui: $(STAMP)  ## MLflow UI on 127.0.0.1 against results/mlflow.db (one worker, no job runner); prints the runs table's URL
	@$(BIN)/python -m pipeline.results.mlflow_ui --config $(CONFIG) --port $(UI_PORT) || true
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --workers 1 \
	  --backend-store-uri sqlite:///$(abspath results/mlflow.db) --host 127.0.0.1 --port $(UI_PORT)

report: $(STAMP)  ## Snakemake report of the last run (headline, summary, DN and index tables, every plot) -> results/<experiment>/report.html
	$(BIN)/snakemake --configfile $(CONFIG) --profile profiles/default --report $(call experiment_dir,$(CONFIG))/report.html $(SNAKEMAKE_ARGS)
	@echo "Report: $(call experiment_dir,$(CONFIG))/report.html"

bench: $(STAMP)  ## memory/time benchmark of the training methods
	$(BIN)/python -m pipeline.bench.memory

GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)  ## one-GPU check: every method x fp32/bf16/fp16 x checkpointing, a memory cap, encoding (DRY_RUN=1: on the CPU)
	$(BIN)/python -m pipeline.bench.gpu_check $(if $(DRY_RUN),--dry-run) $(GPU_CHECK_ARGS)

BENCH_DATASET ?= ../shared/data/scifact
BENCH_MAX_LENGTH ?= 256

bench-encode: $(STAMP)  ## corpus-encoding throughput: ours vs sentence-transformers (BENCH_DATASET=..., BENCH_MAX_LENGTH=...)
	$(BIN)/python -m pipeline.bench.bench_encode --dataset $(BENCH_DATASET) --max-length $(BENCH_MAX_LENGTH)

BENCH_TRAIN_ARGS ?= --batch-size 16 --chunk 4 --max-length 128 --updates 8 --repeats 2 --threads 1

bench-train: $(STAMP)  ## training throughput and peak RSS: ours vs SentenceTransformerTrainer (BENCH_TRAIN_ARGS=...)
	$(BIN)/python -m pipeline.bench.bench_train $(BENCH_TRAIN_ARGS)

REFERENCE_CONFIG ?= config/scifact.yaml
REFERENCE_DIR ?= results/reference/scifact
RUN ?= contaccum-8x8
SEED ?= 13
# NUMERICS=avx2 runs reference/check-reference with every library's float kernels pinned to AVX2
# (pipeline/core/numerics.py), so that a grid made pinned can be re-made with the same kernels on another
# x86 machine (an AVX-512 one included); published references record the kernels they were made with.
NUMERICS ?=
PINNED = $(if $(NUMERICS),$(BIN)/python -m pipeline.core.numerics run $(NUMERICS) --)

reference: $(STAMP)  ## run the full SciFact grid (~1.5 h on 2 cores) and publish its tables to results/reference/scifact
	$(PINNED) $(BIN)/snakemake --cores $(CORES) --configfile $(REFERENCE_CONFIG) --profile profiles/default $(SNAKEMAKE_ARGS)
	$(PINNED) $(BIN)/python -m pipeline.results.reference publish --config $(REFERENCE_CONFIG) --to $(REFERENCE_DIR)

check-reference: $(STAMP)  ## re-run one row of the reference grid (RUN=contaccum-8x8 SEED=13; NUMERICS=avx2 pins float kernels) and compare it with the committed table
	$(PINNED) $(BIN)/snakemake --cores $(CORES) --configfile $(REFERENCE_CONFIG) --profile profiles/default \
	  --config 'only_runs=[$(RUN)]' 'seeds=[$(SEED)]' $(SNAKEMAKE_ARGS)
	$(PINNED) $(BIN)/python -m pipeline.results.reference check --config $(REFERENCE_CONFIG) --reference $(REFERENCE_DIR)/summary.csv \
	  --metric ndcg@10 --metric recall@100

PILOT_CONFIG ?= config/separation-pilot.yaml
PILOT_DATASET ?= scifact

pilot: $(STAMP)  ## run a pilot grid on its dev split (PILOT_CONFIG=config/separation-pilot.yaml) and tabulate each regime's effect and MDD -> results/<experiment>/tables/pilot.md
	$(BIN)/snakemake --cores $(CORES) --configfile $(PILOT_CONFIG) --profile profiles/default $(SNAKEMAKE_ARGS)
	$(BIN)/python -m pipeline.results.pilot table --config $(PILOT_CONFIG)

pilot-time: $(STAMP)  ## CPU seconds of one update of every run of PILOT_CONFIG, and the grid's training time
	$(BIN)/snakemake --cores 1 --configfile $(PILOT_CONFIG) --profile profiles/default results/data/$(PILOT_DATASET)/manifest.json
	OMP_NUM_THREADS=1 $(BIN)/python -m pipeline.results.pilot time --config $(PILOT_CONFIG) --data results/data/$(PILOT_DATASET)
EXPORT_DATASET ?=

export: $(STAMP)  ## export a finished run as a sentence-transformers folder + model card (CONFIG=... RUN=... SEED=...) -> results/<experiment>/export/<dataset>/<run>/<seed tag> (SEED may be left out for zeroshot)
	$(BIN)/python -m pipeline.export.export --config $(CONFIG) --run $(RUN) $(if $(SEED),--seed $(SEED)) \
	  $(if $(EXPORT_DATASET),--dataset $(EXPORT_DATASET))

lock:  ## re-resolve requirements.lock from pyproject.toml (needs a registry)
	rm -rf /tmp/lock-venv && $(PYTHON) -m venv /tmp/lock-venv && /tmp/lock-venv/bin/pip install -q . && \
	  /tmp/lock-venv/bin/pip freeze --exclude infonce-bench | sed -e 's/+cpu$$//' > requirements.lock

clean:  ## remove results (every experiment's folder and the shared data; keeps results/reference) and the venv
	find results -mindepth 1 -maxdepth 1 ! -name reference -exec rm -rf {} +
	rm -rf $(VENV)

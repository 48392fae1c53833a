# cdflow — make targets. Users need only `make train` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= experiments/configs/digits.yaml
SOLVER ?=
ARGS ?=
QUICK ?=
FULL ?=
WORKERS ?=
DEVICE ?=

# Two cores: torch's OpenMP threads must not spin against other processes.
export OMP_WAIT_POLICY := PASSIVE
export CDFLOW_DATA ?= $(abspath ../shared/data)
export WANDB_MODE ?= $(if $(WANDB_API_KEY),online,offline)
export WANDB_SILENT := true

.PHONY: help install test test-all lint train bench reproduce-graph reproduce-covid reproduce-toys \
        reproduce-images reproduce-mnist reproduce-rnode reproduce-robustness clean docs docs-serve

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*##' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[dev]' '$(TORCH)'
	touch $(STAMP)

install: $(STAMP)  ## create .venv, install torch (pinned) then cdflow[dev]; idempotent

test: install  ## fast tests (slow ones: make test-all)
	$(BIN)/pytest -q

test-all: install  ## every test, slow protocol runs included
	$(BIN)/pytest -q -m ''

lint: install  ## ruff
	$(BIN)/ruff check src tests experiments benchmarks

train: install  ## train the default config (digits); CONFIG=, SOLVER=, ARGS= pass through
	$(BIN)/cdflow fit --config $(CONFIG) $(if $(SOLVER),--model.solver.method $(SOLVER)) $(ARGS)

docs: install  ## documentation site → site/ (strict; runs every tutorial in docs/tutorials: a few minutes)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install  ## serve the documentation at http://127.0.0.1:8000 (rebuilds on edits)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:  ## remove run outputs (keeps .venv)
	rm -rf runs wandb lightning_logs

bench: install  ## benchmark suite → benchmarks/results/latest.{md,json}; QUICK=1 for the one-minute smoke
	$(BIN)/python -m benchmarks.run $(if $(QUICK),--quick)

reproduce-toys: install  ## 2-D toys ± diffusion, XOR distance–diameter ratio, Feynman–Kac check (FULL=1: paper protocol)
	$(BIN)/python -m experiments.toys.run $(if $(FULL),--full)
	$(BIN)/python -m experiments.feynman_kac.run $(if $(FULL),--full)

reproduce-graph: install  ## Cora/Citeseer node classification (reduced 10×3; FULL=1: 100 splits × 20 inits; WORKERS=2: two processes)
	$(BIN)/python -m experiments.graph.run $(if $(FULL),--full) $(if $(WORKERS),--workers $(WORKERS))

reproduce-covid: install  ## England COVID forecasting with 90% missing targets (FULL=1: 10 maskings × 10 inits)
	$(BIN)/python -m experiments.covid.run $(if $(FULL),--full)

reproduce-images: install  ## semi-supervised digits and MNIST, 1/5/10 labels per class (FULL=1: all of MNIST)
	$(BIN)/python -m experiments.images.run $(if $(FULL),--full)

reproduce-mnist: install  ## the MNIST ODE-Net of experiments/configs/mnist.yaml → experiments/results/mnist.{json,md} (~30 min on 2 cores)
	$(BIN)/python -m experiments.mnist.run

reproduce-rnode: install  ## RNODE vs none on digits, λ chosen on validation → experiments/results/rnode.{json,md} (~50 min on 2 shared cores; MNIST=1 adds the ODE-Net, λ chosen on its validation: hours)
	$(BIN)/python -m experiments.rnode.run $(if $(MNIST),--mnist)

reproduce-robustness: install  ## MNIST neural ODE vs Feynman–Kac SDE under noise and PGD (FULL=1: whole test set)
	$(BIN)/python -m experiments.robustness.run $(if $(FULL),--full)

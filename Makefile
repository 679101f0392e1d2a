# Every target runs in the project's own virtual environment, made by `make setup`.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
DATA_DIR := /usr/share/datasets/fashion-mnist
SWEEP := -m 'model=glob(*)' 'data=glob(*)' 'seed=range(5)'
SHUFFLE ?= labels

.DEFAULT_GOAL := help
.PHONY: help setup data test test-full lint format train sweep task-switch report bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed data ## Create .venv, install the package with its dev tools, fetch the data

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

data: ## Install Fashion-MNIST from Debian's package when possible (else downloaded at first use)
	@if [ -f $(DATA_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST found in $(DATA_DIR)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "dataset-fashion-mnist not installable here; torchvision downloads it at first use"; \
	fi

test: setup ## Run the test suite (a few minutes on 2 cores)
	$(PYTHON) -m pytest -m "not slow"

test-full: setup ## Run every test, the slow ones included
	$(PYTHON) -m pytest

lint: setup ## Check style with ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## Format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: setup ## One run; pass overrides as ARGS="model=split_ep data=shuffled"
	$(PYTHON) -m ei_lightning.train $(ARGS)

sweep: setup ## The main job: 5 circuits x 2 tasks x 5 seeds; extra overrides in ARGS
	$(PYTHON) -m ei_lightning.train $(SWEEP) $(ARGS)

task-switch: setup ## The two-part experiment: fmnist, then the shuffled task (SHUFFLE=labels|pixels)
	$(PYTHON) -m ei_lightning.train -m 'model=glob(*)' 'seed=range(5)' protocol=task_switch \
		data=shuffled data.shuffle=$(SHUFFLE) $(ARGS)

report: setup ## Rebuild a sweep's report: make report DIR=multirun/<date>/<time>
	@test -n "$(DIR)" || { echo "usage: make report DIR=multirun/<date>/<time>"; exit 2; }
	$(PYTHON) -m ei_lightning.report $(DIR)

bench: setup ## Seconds per epoch: product vs bare loop vs DataLoader loop
	$(PYTHON) benchmarks/bench_epoch.py $(ARGS)

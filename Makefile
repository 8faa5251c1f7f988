# Two commands on a fresh clone: `make run` (install + dvc repro) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Plot scripts for `dvc plots show`, installed from the npm registry so pages draw offline
# (the versions dvc-render loads from a CDN; vega 5.21 is what vega-lite 5.2 requires).
VEGA := vega@5.21.0 vega-lite@5.2.0 vega-embed@6.18.2

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install install-browser run docs test test-loop test-scale test-fault test-zoo test-train test-grid test-cluster lint bench clean
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help:
	@echo "make run    install into .venv, then dvc repro on the default dataset (digits)"
	@echo "make test   install if needed, then the test suite"
	@echo "make docs   build the documentation into docs/site (strict)"
	@echo "make bench  run the benchmarks under bench/"

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock models/common/offline_plots.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -rf $(VENV)/vega && npm install -s --no-audit --no-fund --prefix $(VENV)/vega $(VEGA)
	$(BIN)/python -m models.common.offline_plots $(VENV)/vega/node_modules .dvc/plots/offline.html
	touch $@

# dvc repro --quiet --keep-going, then the leaderboard (models/run.py)
run: install
	@reprovision run

# Debian's chromium and its driver, for tests/test_page.py (the web page in a real browser).
install-browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver)

test: install install-browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n 2 --dist loadfile  # the fast suite: pyproject addopts leave out the slow marks

test-scale: install  # the photo pipeline end to end (minutes); .ci/run runs it after make test
	$(BIN)/python -m pytest -q -m scale

test-fault: install  # fault injection and the wrk soak (minutes); .ci/run runs it after make test
	command -v wrk >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk)
	$(BIN)/python -m pytest -q -m fault

test-loop: install  # the daily loop on two datasets, and the README's commands (after make run; minutes)
	$(BIN)/python -m pytest -q -m loop -n 2 --dist loadfile

# The documentation (docs/pages) into docs/site: mkdocs-material, strict (a broken link fails;
# not --quiet, which hides the warnings strict counts).
docs: install
	cd docs && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test-zoo: install  # every model trained on small photo sets (minutes); .ci/run runs it
	$(BIN)/python -m pytest -q -m zoo

test-train: install  # data-parallel training over two devices and calibrated bundles, through the real stages (about 2 minutes)
	$(BIN)/python -m pytest -q -m train

test-cluster: install  # the grid on a two-node Ray cluster, an emitted Job's cell, a fresh clone: git and S3 (moto) remotes, all on 127.0.0.1 (about 7 minutes)
	$(BIN)/python -m pytest -q -m cluster

test-grid: install  # the full sweep grid: 2 datasets x 3 models x 2 sets, about 6 minutes
	$(BIN)/python -m pytest -q -m grid

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports --no-cache

bench: install  # bench/README.md; bench.serve loads its servers with wrk
	command -v wrk >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.shard
	$(BIN)/python -m bench.train_input
	$(BIN)/python -m bench.serve

clean:
	rm -rf dvc_plots tests/artifacts

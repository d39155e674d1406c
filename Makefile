# splatflow — `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# CPU build of torch (on disk on developer machines and CI); images install a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install viewer-assets test test-all lint bench run-local clean

help: ## list every target
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml package.json
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[all,dev]"
	npm install --no-audit --no-fund --loglevel=error
	$(PY) -m splatflow.viewer install-assets
	touch $(STAMP)

install: $(STAMP) ## create .venv with splatflow and every extra (CPU torch), and the npm reference tools

viewer-assets: $(STAMP) ## copy the viewer page's files (npm @playcanvas/supersplat-viewer) into src/splatflow/viewer/assets
	npm install --no-audit --no-fund --loglevel=error
	$(PY) -m splatflow.viewer install-assets

test: $(STAMP) ## run the test suite (CI subset: slow/gpu/cluster tests skip with a reason)
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(STAMP) ## run every test, the slow ones included
	SPLATFLOW_SLOW=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff on src and tests, mypy on src
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

clean: ## remove build outputs (keeps .venv)
	rm -rf build .pytest_cache .ruff_cache .mypy_cache bench/work

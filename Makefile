# rvc-lora developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch is installed first, so the package's torch range is already met and
# pip never pulls a multi-GB CUDA build on a CPU machine.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
JOBS ?= 2

.PHONY: help install test test-fast bench demo format lint clean readme-tables

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## create .venv and install the package (editable) with dev tools

test: install ## run the whole test suite, slow tests included
	$(PY) -m pytest -n $(JOBS) $(PYTEST_ARGS)

test-fast: install ## run the tests without the `slow` marker
	$(PY) -m pytest -n $(JOBS) -m "not slow" $(PYTEST_ARGS)

demo: install ## train a tiny adapter, convert a file and export it (CPU, a few minutes)
	$(PY) scripts/demo.py

bench: install ## print benchmark figures (CPU)
	@for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

readme-tables: install ## regenerate the generated tables in README.md
	$(PY) scripts/lora_size_table.py --readme README.md

format: install ## format and lint-fix the code
	$(PY) -m ruff format src tests bench
	$(PY) -m ruff check --fix src tests bench

lint: install ## lint without changing files
	$(PY) -m ruff check src tests bench

clean: ## remove caches and build outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info

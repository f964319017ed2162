# tkmia: two commands on a fresh machine, `make book` and `make test`.
# Both create .venv with pip when it is missing and install the package with everything it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tkmia-installed
# Book parameters: PROFILE names a file in tkmia/profiles/, DATA_ROOT the real dataset's folder.
PROFILE ?= default
DATA_ROOT ?=

.PHONY: help install test lint book notebooks assignments bench clean

help:
	@echo "make book         build the Jupyter Book into _build/html (PROFILE=default DATA_ROOT=)"
	@echo "make test         run the test suite (lint, unit tests, notebooks with tiny parameters)"
	@echo "make bench        run the benchmarks in benchmarks/ and print their tables"
	@echo "make assignments  write student versions of the exercise notebooks to assignments/"
	@echo "make clean        remove build products (keeps .venv and data/)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[dev,book]"
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check tkmia tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_attack.py

notebooks: $(STAMP)
	$(BIN)/python -m tkmia.book execute --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

book: notebooks
	$(BIN)/jupyter-book build . --path-output _build/book-src >/dev/null || $(BIN)/jupyter-book build .
	@echo "The book is at $(CURDIR)/_build/html/index.html"

assignments: $(STAMP)
	$(BIN)/python -m tkmia.book assignments --out assignments

clean:
	rm -rf _build assignments .pytest_cache .ruff_cache

# tkmia: two commands on a fresh machine, `make book` and `make test`.
# Both create .venv with pip when it is missing and install the package with everything it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tkmia-installed
# Book parameters: PROFILE is passed to notebooks with a `profile` parameter (a file of
# tkmia/profiles/), DATA_ROOT (a real dataset's folder) to notebooks with a `data_root` parameter.
PROFILE ?= default
DATA_ROOT ?=

# The rerun that `make report` renders (the browser check looks at it): one chapter, tiny parameters.
REPORT_RUN ?= notebooks/02_measures.ipynb -p k 2 -p num_classes 6 -p seed 1

.PHONY: help install test lint book notebooks bench clean browser-check assignments lab report photos-data sandbox

help:
	@echo "make book         execute the notebooks (when changed) and build the book into _build/html"
	@echo "                  (gets the photos chapter's Debian files first: make photos-data)"
	@echo "                  (PROFILE=$(PROFILE) DATA_ROOT=$(DATA_ROOT))"
	@echo "make test         run the test suite (ruff, the layer contracts, unit tests, notebooks with tiny parameters)"
	@echo "make lab          JupyterLab on 127.0.0.1 with the tkmia kernel, opened on notebooks/"
	@echo "make report       rerun one chapter with tiny parameters (tkmia run): page + notebook in _build/runs"
	@echo "make bench        run the benchmarks in benchmarks/ and print their tables"
	@echo "make browser-check open every page of the built book in headless Chromium"
	@echo "make assignments  write student versions of the exercise notebooks to assignments/ (nbgrader)"
	@echo "make photos-data  download and unpack the photos profile's Debian files into data/sources"
	@echo "make sandbox      install bubblewrap (grading's sandbox) when missing (apt-get, as root)"
	@echo "make clean        remove build products (keeps .venv and data/)"

# The install: a venv from $(PYTHON) (>= 3.11), then the package with its book and dev extras.
# Redone when pyproject.toml changes; the stamp is written only after a complete install.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tkmia needs Python >= 3.11; run make PYTHON=python3.11 ...")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev,classroom,coco]"
	@touch $(STAMP)

install: $(STAMP)

# ruff, then the layer contracts of pyproject.toml (import-linter: the core never imports the book
# layer, no layer imports a higher one, no cycle, private modules stay in their package).
lint: $(STAMP)
	$(BIN)/ruff check tkmia tests benchmarks book/_ext .ci/browser_check.py
	$(BIN)/lint-imports --no-cache

test: $(STAMP) lint photos-data sandbox
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_attack.py
	$(BIN)/python benchmarks/bench_experiment.py
	$(BIN)/python benchmarks/bench_runner.py

# Execute notebooks/*.ipynb with papermill into book/chapters/ (only those whose notebook, tkmia
# sources or parameters changed since the last run), then render them with Jupyter Book,
# warnings as errors.
notebooks: $(STAMP) photos-data
	$(BIN)/python -m tkmia.book execute --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

book: notebooks
	$(BIN)/jupyter-book build -W --keep-going --quiet .
	@echo "The book is at $(CURDIR)/_build/html/index.html"

# Grading runs each submission in a bubblewrap sandbox (tkmia/book/sandbox.py): Debian's
# bubblewrap, installed here when missing and we are root (CI); `make test` grades fake submissions.
sandbox:
	@command -v bwrap >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null \
	    && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null \
	         || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; }; }; } \
	  || { echo "grading (and make test) needs bubblewrap: apt-get install bubblewrap (as root)"; exit 2; }

# The photos profile's files (tkmia/data/photos.py): Debian's tuxpaint-stamps-default (photo
# stamps, GPL-2) and scratch (background photos, CC-BY-SA-3.0), about 185 MB, unpacked, not
# installed, into data/sources/; `make book` (the chapter "Real photographs") and `make test` need
# them. `apt-get update` runs first only when the download fails and we are root (CI). Without apt:
# put the two packages' files in their upstream layout under data/sources/ and touch the marker.
PHOTOS_SOURCES := data/sources/.photos-sources
photos-data: $(PHOTOS_SOURCES)
$(PHOTOS_SOURCES):
	@command -v apt-get >/dev/null || { echo "make photos-data needs apt-get (Debian/Ubuntu); elsewhere put \
	the files of tuxpaint-stamps-default and scratch (usr/share/tuxpaint/stamps/..., \
	usr/share/scratch/Media/Backgrounds/...) under data/sources/ and run: touch $@"; exit 2; }
	@mkdir -p data/debs data/sources
	cd data/debs && { apt-get download tuxpaint-stamps-default scratch || { test "$$(id -u)" = 0 \
	    && apt-get update -qq && apt-get download tuxpaint-stamps-default scratch; }; }
	for deb in data/debs/tuxpaint-stamps-default_*.deb data/debs/scratch_*.deb; do dpkg -x $$deb data/sources; done
	rm -rf data/debs
	@touch $@

# JupyterLab on 127.0.0.1 (never another interface), opened on notebooks/; new notebooks get the
# tkmia kernel (this .venv's Python; the notebooks' own "python3" is the same interpreter here).
# Kernels talk over local IPC sockets, so no "running over TCP without encryption" warning.
lab: $(STAMP)
	$(BIN)/python -c "from tkmia.book.runner import ensure_kernel; ensure_kernel()"
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks \
	    --MappingKernelManager.default_kernel_name=tkmia --KernelManager.transport=ipc \
	    $(if $(filter 0,$(shell id -u)),--allow-root)

# One chapter rerun with tiny parameters, as a reader would: the rendered page and the executed
# notebook in _build/runs/<notebook>--<parameters>/ (tkmia run prints both paths).
report: $(STAMP)
	$(BIN)/tkmia run $(REPORT_RUN)

# Open every page of the built book, and the rerun report, in headless Chromium (Debian's
# /usr/bin/chromium): console, raw roles, figure legibility, links; screenshots in _build/screenshots.
browser-check: $(STAMP) report
	@test -f _build/html/index.html || { echo "no book in _build/html: run make book first"; exit 2; }
	@test -x /usr/bin/chromium || { echo "needs /usr/bin/chromium: apt-get install chromium"; exit 2; }
	$(BIN)/python .ci/browser_check.py --html _build/html --runs _build/runs --screenshots _build/screenshots

# Student versions of the exercise notebooks in assignments/: nbgrader generate_assignment in a
# temporary course (solutions and hidden tests removed, MyST as plain Markdown). To grade:
# tkmia classroom grade SUBMISSIONS --out DIR, or nbgrader itself in classroom/ (book/exercises.md).
assignments: $(STAMP)
	$(BIN)/tkmia classroom assign --out assignments

clean:
	rm -rf _build book/chapters assignments .pytest_cache .ruff_cache
	rm -rf classroom/release classroom/submitted classroom/autograded classroom/feedback classroom/gradebook.db

# Two commands on a fresh machine:  `make run`  and  `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
# Material for MkDocs prints a banner about MkDocs 2 at every build; the docs extra pins MkDocs 1.
export NO_MKDOCS_2_WARNING := 1

.PHONY: run test setup setup-run system lint docs e2e bench clean

# Stamp files: each install runs again only when what it installs from changed, so a second
# `make run` starts at once. The run-only install is the package and its runtime dependencies;
# the full one adds the test, bench and docs extras (Playwright, the Helm SDK, MkDocs ...).
INSTALL_FROM := pyproject.toml setup.py exporter/_tally.c

$(BIN)/.installed-run: $(INSTALL_FROM)
	PYTHON=$(PYTHON) scripts/install-system-packages --build
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed: $(INSTALL_FROM)
	PYTHON=$(PYTHON) scripts/install-system-packages --build
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench,docs]'
	touch $@ $(BIN)/.installed-run

## Only what running needs.
setup-run: $(BIN)/.installed-run

## Everything: tests, benchmarks, docs.
setup: $(BIN)/.installed

system:
	PYTHON=$(PYTHON) scripts/install-system-packages

## Sets up (run-only) and runs the pipeline on embedded defaults: the exporter tails ./logs/*.log
## and serves :9852/metrics; the receiver listens on :9097 with SQLite in ./var and a console channel.
run: setup-run
	scripts/run-local

## Sets up (Debian programs + virtualenv) and runs the linter, the docs build and every test suite.
test: system setup
	$(BIN)/ruff check .
	$(BIN)/mkdocs build --strict
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

## The documentation site, into site/; any warning (a broken link or anchor) fails it.
docs: setup
	$(BIN)/mkdocs build --strict

e2e: system setup
	$(BIN)/pytest tests/e2e -v

bench: system setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var build site *.egg-info

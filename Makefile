# Two commands on a fresh machine:  `make run`  and  `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: run test setup system lint e2e bench clean

$(BIN)/.installed: pyproject.toml setup.py exporter/_tally.c
	PYTHON=$(PYTHON) scripts/install-system-packages --build
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

setup: $(BIN)/.installed

system:
	PYTHON=$(PYTHON) scripts/install-system-packages

## Sets up and runs the pipeline on embedded defaults: the exporter tails ./logs/*.log and serves
## :9852/metrics; the receiver listens on :9097 with SQLite in ./var and a console channel.
run: setup
	scripts/run-local

## Sets up (Debian programs + virtualenv) and runs the linter and every test suite.
test: system setup
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

e2e: system setup
	$(BIN)/pytest tests/e2e -v

bench: system setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var build *.egg-info

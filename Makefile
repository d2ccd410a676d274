# The README's first two commands: `make demo` and `make test`. Both install what is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all setup system-deps demo test test-fast lint bench clean distclean

all: setup

system-deps:
	@PYTHON=$(PYTHON) WITH_BROWSER=$(WITH_BROWSER) scripts/install-system-deps.sh

$(STAMP): requirements.txt setup.py $(wildcard */__init__.py)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

setup: system-deps $(STAMP)

demo: setup
	$(BIN)/testbed demo

test: WITH_BROWSER=1
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not network"

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m bench

clean: setup
	$(BIN)/testbed clean

distclean:
	rm -rf $(VENV) *.egg-info

# The two commands a newcomer needs: `make demo` and `make test`.
# Each sets everything up on a fresh Debian machine by itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps demo test lint typecheck unit bench sim-results clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	bash scripts/install-system-deps.sh venv $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[triton,dev]'
	touch $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

demo: setup
	$(BIN)/triton-autoscaler demo

lint: setup
	$(BIN)/ruff check autoscaler tests bench scripts

typecheck: setup
	$(BIN)/mypy

# Two phases (tests/conftest.py says why): everything but the timings of the real
# server on three workers, then those alone.
PYTEST_ARGS ?=

unit: setup system-deps
	$(BIN)/pytest -n 3 --dist loadgroup -m "not timing" $(PYTEST_ARGS)
	$(BIN)/pytest -m timing $(PYTEST_ARGS)

test: setup system-deps lint typecheck unit

bench: setup system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

sim-results: setup
	$(BIN)/python -m autoscaler.sim.regenerate

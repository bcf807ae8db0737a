# Two commands for a fresh machine (see README.md):
#   make demo   set up, start the real server on the offline default, place a simulated call, report
#   make test   set up, lint, run the test suite
#   make cluster N=2   Redis, N instances and HAProxy on this machine (needs redis-server, haproxy)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup lint serve cluster clean

N ?= 2

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[offline,dev]"
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -n 3 --dist loadgroup

demo: $(STAMP)
	$(BIN)/python -m bot demo

serve: $(STAMP)
	$(BIN)/python -m bot serve

cluster: $(STAMP)
	$(BIN)/python -m bot cluster --instances $(N)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

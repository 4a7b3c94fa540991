# The README's commands. `make run` serves; `make test` installs everything, lints and runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-lowest test-newest check install install-test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .

# The versions of constraints.txt (the lock), so a release made since cannot change a clean run; bench's
# peers too: mypy checks bench/ against their types.
install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,dev,bench]'

run: install
	$(BIN)/python -m tornado_rate_limiter

test: check
	scripts/ensure-redis-server
	scripts/ensure-nginx
	scripts/ensure-traefik $(VENV)
	scripts/ensure-prometheus
	$(BIN)/python -m pytest -q

check: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The suite against the lowest dependency versions setup.py allows (constraints-lowest.txt).
test-lowest:
	$(PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install --quiet --upgrade pip
	.venv-lowest/bin/python -m pip install --quiet -c constraints-lowest.txt -e '.[test,bench]'
	scripts/ensure-redis-server
	scripts/ensure-nginx
	scripts/ensure-traefik .venv-lowest
	scripts/ensure-prometheus
	.venv-lowest/bin/python -m pytest -q

# The suite against the newest releases setup.py allows, ignoring constraints.txt: how a release is tried on
# purpose before the lock (or a bound in setup.py) moves to it.
test-newest:
	$(PYTHON) -m venv .venv-newest
	.venv-newest/bin/python -m pip install --quiet --upgrade pip
	.venv-newest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[test,bench]'
	scripts/ensure-redis-server
	scripts/ensure-nginx
	scripts/ensure-traefik .venv-newest
	scripts/ensure-prometheus
	.venv-newest/bin/python -m pytest -q

# Benchmarks (bench/): installs the peers, runs every measurement once and writes docs/BENCHMARKS.md.
bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	scripts/ensure-redis-server
	scripts/ensure-nginx
	scripts/ensure-wrk
	$(BIN)/python -m bench

# swarmgate: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Lab size: the default is the smallest cluster that shows the mission (1 manager, 2 LB workers,
# 1 plain worker); `make lab-up MANAGERS=3 WORKERS=5 LB=2` gives the seed's cluster.
MANAGERS ?= 1
WORKERS ?= 3
LB ?= 2

.PHONY: deps lint unit test lab-up lab-down lab-images demo demo-down bench faults rolls dataplane clean

.stamps/apt: scripts/install-deps.sh
	@mkdir -p .stamps
	./scripts/install-deps.sh
	@touch $@

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

deps: .stamps/apt $(BIN)/.installed

lint: deps
	$(BIN)/ruff check swarmgate tests lab
	$(BIN)/mypy swarmgate tests

unit: deps
	$(BIN)/pytest -q tests/unit tests/property

lab-up: deps
	$(BIN)/python lab/lab.py up --managers $(MANAGERS) --workers $(WORKERS) --lb $(LB)

lab-down:
	$(PYTHON) lab/lab.py down

lab-images: deps
	$(BIN)/python lab/lab.py images

# The suite runs on the seed's cluster (3 managers, 5 workers of which 2 are LB nodes): one pytest
# run, pure tests first, then everything on the real Swarm, and the lab's own life-cycle test last
# (it proves `lab-down` leaves nothing, and that `lab-up` recovers from a killed lab).
test: lint
	$(BIN)/python lab/lab.py up --managers 3 --workers 5 --lb 2
	$(BIN)/pytest -q --durations=25 tests/unit tests/property tests/lab tests/lifecycle

demo: deps
	$(BIN)/python lab/lab.py up --managers $(MANAGERS) --workers $(WORKERS) --lb $(LB)
	./scripts/demo.sh up

demo-down:
	./scripts/demo.sh down

bench: deps
	$(BIN)/python lab/lab.py up --managers $(MANAGERS) --workers $(WORKERS) --lb $(LB)
	$(BIN)/python bench/run.py

# Issue 9's fault scenarios under load on the seed's cluster: bench/faults.md and bench/faults.json
# (about 16 min). On a shared lab: `flock /tmp/swarmgate-lab.lock make faults`. FAULTS_ARGS passes
# options to bench/faults.py, e.g. FAULTS_ARGS="--only manager-loss --short --out /tmp/faults".
FAULTS_ARGS ?=
faults: deps
	$(BIN)/python lab/lab.py up --managers 3 --workers 5 --lb 2
	$(BIN)/python bench/faults.py $(FAULTS_ARGS)

# Issue 11 goal 4: a routed backend rolled (stop-first, start-first), scaled 3 -> 1 -> 3 and its node
# drained under load through every LB node, host mode and overlay, plus one task rolled both ways:
# bench/rolls.md and bench/rolls.json (about 3 min). On a shared lab:
# `flock /tmp/swarmgate-lab.lock make rolls`. ROLLS_ARGS passes options, e.g. ROLLS_ARGS="--only drain".
ROLLS_ARGS ?=
rolls: deps
	$(BIN)/python lab/lab.py up --managers 3 --workers 5 --lb 2
	$(BIN)/python bench/rolls.py $(ROLLS_ARGS)

# Issue 11 goal 6, the data plane: requests/s and p50/p99 latency with wrk, straight to the demo task
# and through each LB node's proxy, side by side, on the seed's cluster: bench/dataplane.md and
# bench/dataplane.json (about 5 min; 5 more with DATAPLANE_ARGS=--variants, which also tries config
# changes on one proxy). On a shared lab: `flock /tmp/swarmgate-lab.lock make dataplane`.
DATAPLANE_ARGS ?=
dataplane: deps
	$(BIN)/python lab/lab.py up --managers 3 --workers 5 --lb 2
	$(BIN)/python bench/dataplane.py $(DATAPLANE_ARGS)

clean: lab-down
	rm -rf $(VENV) .stamps .mypy_cache .ruff_cache .pytest_cache

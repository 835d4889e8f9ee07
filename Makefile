# swarmgate. The two commands to start with: `make demo` (the seed scenario on a local lab) and
# `make test` (every test). Each target installs what it needs first (`deps`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Lab size: the default is the smallest cluster that shows the mission (1 manager, 2 LB workers,
# 1 plain worker); `make lab-up MANAGERS=3 WORKERS=5 LB=2` gives the seed's cluster.
MANAGERS ?= 1
WORKERS ?= 3
LB ?= 2

.PHONY: deps lint unit docs test lab-up lab-down lab-images demo demo-down bench faults rolls dataplane clean

.stamps/apt: scripts/install-deps.sh
	@mkdir -p .stamps
	./scripts/install-deps.sh
	@touch $@

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# The apt packages (scripts/install-deps.sh, once) and the venv with the package and its dev extras.
deps: .stamps/apt $(BIN)/.installed

# ruff on the code and tests, mypy --strict on the package.
lint: deps
	$(BIN)/ruff check swarmgate tests lab
	$(BIN)/mypy swarmgate tests

# The pure tests (unit and property), the documentation's build and commands included; no lab needed.
unit: deps
	$(BIN)/pytest -q tests/unit tests/property

# The documentation site (mkdocs.yml, docs/) into site/, strictly: a broken link or anchor fails.
docs: deps
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Bring up the local real-Swarm lab (lab/README.md) at the size MANAGERS, WORKERS and LB give.
lab-up: deps
	$(BIN)/python lab/lab.py up --managers $(MANAGERS) --workers $(WORKERS) --lb $(LB)

# Stop the lab and remove everything lab-up made.
lab-down:
	$(PYTHON) lab/lab.py down

# Rebuild the lab's images and load them on the nodes where they are out of date.
lab-images: deps
	$(BIN)/python lab/lab.py images

# The suite runs on the seed's cluster (3 managers, 5 workers of which 2 are LB nodes): one pytest
# run, pure tests first, then everything on the real Swarm, and the lab's own life-cycle test last
# (it proves `lab-down` leaves nothing, and that `lab-up` recovers from a killed lab).
# The lab comes up while lint runs (one waits on engines, the other on a core); both must succeed.
test: deps
	@mkdir -p .stamps
	$(BIN)/python lab/lab.py up --managers 3 --workers 5 --lb 2 > .stamps/lab-up.log 2>&1 & lab=$$!; \
	$(MAKE) --no-print-directory lint; linted=$$?; \
	wait $$lab; up=$$?; cat .stamps/lab-up.log; \
	test $$linted -eq 0 && test $$up -eq 0
	$(BIN)/pytest -q --durations=25 tests/unit tests/property tests/lab tests/lifecycle

# The seed scenario on the lab (scripts/demo.sh up), ending with the seed's curl and its 200.
demo: deps
	$(BIN)/python lab/lab.py up --managers $(MANAGERS) --workers $(WORKERS) --lb $(LB)
	./scripts/demo.sh up

# Remove what `make demo` deployed; the lab keeps running.
demo-down:
	./scripts/demo.sh down

# An operator pass and nginx -t at 1,000 and 10,000 services, a reload at the proxy, then convergence on
# the lab: bench/results.md and bench/results.json.
bench: deps
	$(BIN)/python lab/lab.py up --managers $(MANAGERS) --workers $(WORKERS) --lb $(LB)
	$(BIN)/python bench/run.py

# Every fault scenario (operator restarts and losses, rival operators, bad configs, proxy and node
# faults) under load on the seed's cluster: bench/faults.md and bench/faults.json
# (about 16 min). On a shared lab: `flock /tmp/swarmgate-lab.lock make faults`. FAULTS_ARGS passes
# options to bench/faults.py, e.g. FAULTS_ARGS="--only manager-loss --short --out /tmp/faults".
FAULTS_ARGS ?=
faults: deps
	$(BIN)/python lab/lab.py up --managers 3 --workers 5 --lb 2
	$(BIN)/python bench/faults.py $(FAULTS_ARGS)

# A routed backend rolled (stop-first, start-first), scaled 3 -> 1 -> 3 and its node
# drained under load through every LB node, host mode and overlay, plus one task rolled both ways:
# bench/rolls.md and bench/rolls.json (about 3 min). On a shared lab:
# `flock /tmp/swarmgate-lab.lock make rolls`. ROLLS_ARGS passes options, e.g. ROLLS_ARGS="--only drain".
ROLLS_ARGS ?=
rolls: deps
	$(BIN)/python lab/lab.py up --managers 3 --workers 5 --lb 2
	$(BIN)/python bench/rolls.py $(ROLLS_ARGS)

# The data plane: requests/s and p50/p99 latency with wrk. First the peers on loopback (no lab):
# swarmgate's rendered nginx beside a minimal nginx proxy, HAProxy and Caddy, in front of one backend,
# and the data-plane goals checked (bench/peers.py, about 2 min). Then, on the seed's cluster, straight
# to the demo task and through each LB node's proxy, side by side (about 5 min; 5 more with
# DATAPLANE_ARGS=--variants, which also tries config changes on one proxy). Both go to
# bench/dataplane.md and bench/dataplane.json. DATAPLANE_ARGS=--no-lab runs only the peers (and brings
# up no lab), --no-peers only the lab part. On a shared lab: `flock /tmp/swarmgate-lab.lock make dataplane`.
# Then, on loopback: upstream keep-alive against backends that close idle connections (bench/keepalive_race.py,
# 3 min), old workers under reloads and websockets (bench/old_workers.py, 2 min), `swarmgate render` at
# 10,000 services beside `json.load` (bench/offline_render.py, 2 min), the stock-nginx layouts by exact counts
# (bench/stock_layouts.py, 3 min), a task replaced with and without LuaBalancer at 10,000 services
# (bench/peer_changes.py, 1 min); each to its own bench/*.md and .json;
# old workers and memory on an LB node of the lab under route changes and websockets (bench/old_workers_lab.py,
# 5 min, not with --no-lab); last, each of issue 17's goals with its verdict (bench/issue17-goals.md).
DATAPLANE_ARGS ?=
dataplane: deps
	$(if $(findstring --no-lab,$(DATAPLANE_ARGS)),,$(BIN)/python lab/lab.py up --managers 3 --workers 5 --lb 2)
	$(BIN)/python bench/dataplane.py $(DATAPLANE_ARGS)
	$(BIN)/python bench/keepalive_race.py
	$(BIN)/python bench/old_workers.py
	$(BIN)/python bench/offline_render.py
	$(BIN)/python bench/stock_layouts.py
	$(BIN)/python bench/peer_changes.py
	$(if $(findstring --no-lab,$(DATAPLANE_ARGS)),,$(BIN)/python bench/old_workers_lab.py)
	$(BIN)/python bench/issue17_goals.py

# Stop the lab and remove the venv and the tools' caches.
clean: lab-down
	rm -rf $(VENV) .stamps .mypy_cache .ruff_cache .pytest_cache

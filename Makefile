# The two commands of the README:
#   make demo   - the embedded demo: N simulated pods, no servers
#   make test   - lint, types, import contracts, real servers, the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test soak check lint typecheck contracts jscheck hooks unit coverage pytest infra-install browser-install infra-up infra-down infra-status cluster cluster-down bench clean

$(STAMP): pyproject.toml hatch_build.py aggregator/core/_native.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/aggregator demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

# The dashboard's JavaScript, type-checked by TypeScript (tsconfig.json: checkJs,
# strict, no output); scripts/install-node puts it in node_modules/.
NODE_STAMP := node_modules/.installed

$(NODE_STAMP): package.json package-lock.json scripts/install-node
	sh scripts/install-node

jscheck: $(NODE_STAMP)
	node_modules/.bin/tsc -p tsconfig.json

check: lint typecheck contracts jscheck

# Once per clone: the checks of `make check` run before each commit, by the tools
# in $(VENV) (.pre-commit-config.yaml).
hooks: $(STAMP)
	$(BIN)/pre-commit install

# The fast lane: the tests that need no server (tests/unit, and the in-memory
# half of tests/contract), less the slow ones (the AddressSanitizer build): about
# 30 s of CPU, under a minute on 2 cores.  `make test` runs them again, with the rest.
UNIT_TESTS := tests/unit tests/contract
UNIT_MARKS := not (kafka or hazelcast or kube or node or browser or slow)

unit: $(STAMP)
	$(BIN)/pytest -q -ra -m "$(UNIT_MARKS)" $(UNIT_TESTS)

# The fast lane under coverage of aggregator/: fails below the floor, fail_under
# in pyproject.toml ([tool.coverage.report]).
coverage: $(STAMP)
	$(BIN)/pytest -q -ra -m "$(UNIT_MARKS)" --cov --cov-report=term $(UNIT_TESTS)

infra-install: $(STAMP)
	$(BIN)/python -m infra install

browser-install:
	sh scripts/install-browser

infra-up: $(STAMP)
	$(BIN)/python -m infra up

infra-down: $(STAMP)
	$(BIN)/python -m infra down

infra-status: $(STAMP)
	$(BIN)/python -m infra status

# The project deployed on the local Kubernetes node as an operator deploys it
# (root; docs/deployment.md): prints the kubeconfig, namespace and dashboard URL.
cluster: $(STAMP)
	$(BIN)/python -m infra install kafka hazelcast kube node
	$(BIN)/python -m infra.cluster up

cluster-down: $(STAMP)
	$(BIN)/python -m infra.cluster down

# The browser tests run in their own process: Playwright's sync API keeps an
# event loop running in the main thread, which asyncio tests cannot share.
pytest: $(STAMP)
	$(BIN)/pytest -q -ra --ignore=tests/browser
	$(BIN)/pytest -q -ra tests/browser

# The whole suite: static checks and the coverage floor, then install the real
# servers (cached after the first run) and run every test; tests start the
# servers they need.
test: check coverage infra-install browser-install pytest

# The core benchmarks, then the end-to-end suite on the local servers (started
# here), against the raw aiokafka ceiling and three peers: Quix Streams, Pathway
# and Bytewax.  Each peer has its own environment .venv-NAME, built from
# bench/NAME-requirements.txt: quixstreams pins pydantic < 2.14, kubernetes
# needs >= 2.14.2, and Pathway and Bytewax pin their own dependencies.
BENCH_STAMP := $(VENV)/.bench-installed
PEER_VENVS  := .venv-peer .venv-pathway .venv-bytewax

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

.venv-%/.installed: bench/%-requirements.txt
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/pip install --quiet --upgrade pip
	.venv-$*/bin/pip install --quiet -r $<
	touch $@

bench: $(BENCH_STAMP) $(PEER_VENVS:%=%/.installed) infra-install infra-up
	$(BIN)/python -m bench
	$(BIN)/python -m bench.map_phases
	$(BIN)/python -m bench.ws_clients
	$(BIN)/python -m bench.suite

# The soak (docs/reliability.md, "The soak"): three pods on the local node for
# 30 minutes at 3,000 events/s; in the first half the leader is SIGKILLed every
# 5 minutes, then one Hazelcast member restarted; the second half is judged.  It
# writes the table and docs/soak.png.  The tests run the same soak for 3 minutes.
# AGG_SOAK_MINUTES / AGG_SOAK_RATE change it.
SOAK_MINUTES ?= 30

soak: $(BENCH_STAMP) infra-install
	AGG_SOAK_MINUTES=$(SOAK_MINUTES) AGG_SOAK_WRITE=1 $(BIN)/pytest -s -q -ra tests/node/test_soak.py

clean:
	rm -rf $(VENV) $(PEER_VENVS) node_modules .mypy_cache .ruff_cache .pytest_cache .import_linter_cache

# CAN Swarm. `make install` then `make test`; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DIR    ?= .testnet

.PHONY: install test lint typecheck bench testnet testnet-down testnet-challenge sim soak clean \
	policy policy-check

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The whole suite: lint, types, unit, property and CLI tests.
test: install lint typecheck
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

# mypy reads the `swarm` namespace through a tree of symlinks (the repository keeps
# one folder per layer at its top; packaging maps them under `swarm.`).
TYPECHECK_TREE := build/typecheck/swarm
typecheck: install
	@mkdir -p $(TYPECHECK_TREE)
	@for d in protocol node cli policy_wasm testnet agent jobs; do ln -sfn ../../../$$d $(TYPECHECK_TREE)/$$d; done
	@ln -sfn ../../../swarm/__init__.py $(TYPECHECK_TREE)/__init__.py
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p swarm

# The WebAssembly policy: policy_wasm/policy.wat -> policy_wasm/policy.wasm (committed).
# The test suite (tests/policy/test_build.py) fails if the two ever disagree.
policy: install
	$(BIN)/python -m swarm.policy_wasm.build

policy-check: install
	$(BIN)/python -m swarm.policy_wasm.build --check

# Micro-benchmarks, then DECIDE on a 5-node testnet side by side with a 5-member etcd
# (Debian's etcd-server; installed here if missing and apt can, else that half is skipped),
# then whole task lifecycles on a 5-node testnet whose roles do the work.
# Each prints its figures as Markdown rows for docs/BENCHMARKS.md.
bench: install
	$(BIN)/swarm-testnet bench --markdown
	@command -v etcd >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null 2>&1) || \
		echo "etcd-server not installed: the etcd comparison is skipped"
	$(BIN)/swarm-testnet raftbench --markdown
	$(BIN)/swarm-testnet marketbench --markdown

# Five real nodes on loopback running their built-in roles; a smoke flow (NEEDs posted
# on different nodes, every node converges on one plan root, one DECIDE each), then the
# market demo (jobs posted, worked, verified and paid to the end); the nodes keep
# running for you to explore.
testnet: install
	-@$(BIN)/swarm-testnet down --dir $(DIR) >/dev/null 2>&1 || true
	$(BIN)/swarm-testnet up -n 5 --dir $(DIR)
	$(BIN)/swarm-testnet smoke --dir $(DIR)
	$(BIN)/swarm-testnet demo --dir $(DIR)

testnet-down: install
	$(BIN)/swarm-testnet down --dir $(DIR)

# A wrong result challenged, upheld, slashed and redone, on a testnet of its own with
# faults injected; `make testnet-down DIR=.testnet-challenge` stops it.
testnet-challenge: install
	-@$(BIN)/swarm-testnet down --dir .testnet-challenge >/dev/null 2>&1 || true
	$(BIN)/swarm-testnet up -n 5 --faulty --dir .testnet-challenge
	$(BIN)/swarm-testnet challenge-demo --dir .testnet-challenge

# The deterministic simulations: 500 seeded fault schedules of a Raft group deciding
# NEEDs (SEEDS=N START=S to change), 500 of the multi-raft shell (SHELL_SEEDS=N), 100
# of the task market on the shell (MARKET_SEEDS=N), then plan replicas over a lossy
# gossip network.
SEEDS ?= 500
SHELL_SEEDS ?= 500
MARKET_SEEDS ?= 100
START ?= 0
sim: install
	$(BIN)/swarm-testnet sim --seeds $(SEEDS) --start $(START)
	$(BIN)/swarm-testnet sim --shell --seeds $(SHELL_SEEDS) --start $(START)
	$(BIN)/swarm-testnet sim --market --seeds $(MARKET_SEEDS) --start $(START)
	$(BIN)/swarm-testnet gossip-sim -n 5 --dir $(DIR)/sim

# The chaos soak (not part of `make test`): 5 real nodes, agents' workload, a seeded
# nemesis (kill -9 + restart, SIGSTOP + SIGCONT) for MINUTES, then heal and check
# (docs/SOAK.md). SOAK_SEED=S to change the nemesis' schedule.
MINUTES ?= 5
SOAK_SEED ?= 1
soak: install
	$(BIN)/swarm-testnet soak --minutes $(MINUTES) --nodes 5 --seed $(SOAK_SEED) --market

clean:
	rm -rf $(VENV) $(DIR) build .pytest_cache .mypy_cache .ruff_cache .hypothesis

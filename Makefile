# The project's commands. Every target sets up what it needs on a fresh machine first:
# Debian packages (apt-get, only when missing), a venv in .venv with the project installed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup deps run demo-cluster demo-environments test test-faults test-fast lint fmt gen check-gen bench clean proto-lint

setup: deps $(STAMP)

deps:
	@hack/ensure-debian-packages.sh

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the project and its Python packages into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/pip install --upgrade pip >$(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@$(BIN)/pip install -e '.[dev]' >>$(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@touch $(STAMP)

## run: start etcd, tke-apiserver, tke-ipamd and tke-controller locally; Ctrl-C stops them
run: setup
	@hack/run-local.sh

## demo-cluster: the platform installs a 3-master, 2-worker cluster on five simulated machines
## (network namespaces with their own sshd, stand-in kubeadm; root), prints what happened and
## stops everything. DEMO_KEEP=1 keeps it running until Ctrl-C.
demo-cluster: setup
	@$(BIN)/python -m tests.support.demo

## demo-environments: one platform, three environments: a baremetal cluster (simulated machine),
## an aws cluster (moto's EC2) and a hosted cluster (control plane in a meta cluster) with a
## baremetal worker, in two tenants (root: sshd). DEMO_KEEP=1 keeps it running until Ctrl-C.
demo-environments: setup
	@$(BIN)/python -m tests.support.demo.environments

## test: the whole test suite, against real servers the tests start
test: setup check-gen lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## test-faults: only the fault tests (etcd members killed, hung, quorum lost; servers restarted; fuzzing)
test-faults: setup
	$(BIN)/python -m pytest -q tests/faults tests/ipamd/test_etcd_faults.py $(PYTEST_ARGS)

## test-fast: the tests only, without the generated-code and lint checks
test-fast: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## lint: ruff, strict mypy, the import contracts (pyproject.toml), what the wheel ships, buf lint
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python hack/typecheck.py
	$(BIN)/lint-imports --no-cache
	$(BIN)/python hack/check-package.py
	@$(MAKE) --no-print-directory proto-lint

## fmt: format the code and apply ruff's safe fixes (import order, ...)
fmt: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## proto-lint: buf lint of proto/ and breaking changes against the last release (proto/released.binpb)
proto-lint: setup
	hack/proto-lint.sh

## gen: regenerate gen/ from proto/
gen: setup
	hack/gen.sh gen

## check-gen: fail when gen/ is not what proto/ generates
check-gen: setup
	hack/gen.sh --check

## bench: every figure against its baselines (loopback, under 15 minutes on 2 cores; root
## for the CNI figure); a table on stdout, bench-results/latest.json and the profile beside it.
## Installs Debian's nghttp2-client (h2load) when missing. BENCH_ARGS=... passes options (--quick, --only 1,3).
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .run .build

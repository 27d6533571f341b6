# Two commands do everything on a fresh machine:
#   make run   - create .venv, install, run the whole pipeline on the embedded default, print the mixture
#   make test  - create .venv, install with dev extras, run the tests (including a real
#                `dagster asset materialize` of the whole graph on the smoke config)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MERGEMIX_HOME ?= $(CURDIR)/.mergemix
export DAGSTER_HOME ?= $(MERGEMIX_HOME)/dagster
# Hugging Face offline mode is the `model.offline` setting (default true): the definitions set HF_HUB_OFFLINE
# and friends when they load, so nothing reaches a model or dataset hub unless a config says otherwise.

.PHONY: install run validate stages report test smoke ui bench clean explorer-check

# pip byte-compiles the dependencies at install (~25,000 .py files); not skipped with --no-compile, because where
# PYTHONDONTWRITEBYTECODE is set (this machine, many container images) nothing would ever cache the bytecode and every
# process would compile torch, transformers and dagster from source again.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/mergemix run

# Proxy fidelity study of s0 (reference runs on real mixtures vs merged proxies); runs `run` first if needed.
validate: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/mergemix validate

# A second stage: mid-train s0's base on its chosen mixture, re-optimize from that checkpoint, compare.
stages: install
	$(BIN)/mergemix midtrain --from-stage s0 --name s1
	$(BIN)/mergemix run --stage s1
	$(BIN)/mergemix compare

# lint-imports: the layer contracts of pyproject.toml (core < resources < steps < assets < runner < defs < cli)
# Two pytest-xdist workers, a test file per worker at a time (module fixtures build once), and the files that
# share the session's smoke stage together on one worker (tests/conftest.py); PYTEST_WORKERS=0 runs the tests
# in this process.
PYTEST_WORKERS ?= 2
test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

smoke: install
	bash scripts/smoke_materialize.sh

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev

# One self-contained markdown report of s0 (mixture, trade-offs, plots, checks, cost); prints its path.
report: install
	$(BIN)/mergemix report --stage s0

# The explorer page's predictions equal the Python surrogates' to 1e-6 in a real headless Chromium (Debian's
# chromium, driven by playwright-core from npm, no browser download); writes docs/screenshots/explorer.png.
# Installs chromium with apt-get when missing (here only: never in `make test`). About 40 s.
EXPLORER_NODE ?= $(HOME)/.cache/mergemix-explorer-check
explorer-check: install
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium chromium-driver)
	test -d $(EXPLORER_NODE)/node_modules/playwright-core || \
		npm install --prefix $(EXPLORER_NODE) --no-audit --no-fund playwright-core
	NODE_PATH=$(EXPLORER_NODE)/node_modules $(BIN)/python scripts/explorer_check.py

bench: install
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(MERGEMIX_HOME)

# Hierarchical search on the embedded default split into 9 sub-domains (docs/hierarchy.md), in its own home,
# then the trained <MergeMix,MergeMix> vs <MergeMix,uniform> vs <uniform,uniform> study (2 seeds). About 1 hour on 2 CPU cores (36 min measured when the base already existed).
HIERARCHY_HOME ?= $(CURDIR)/.mergemix-hierarchy
.PHONY: hierarchy
hierarchy: install
	MERGEMIX_HOME=$(HIERARCHY_HOME) DAGSTER_HOME=$(HIERARCHY_HOME)/dagster \
		$(BIN)/mergemix run --config hierarchy --study

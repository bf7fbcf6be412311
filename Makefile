# The one task runner. Every target bootstraps .venv on first use; nothing is installed globally.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
N      ?= 1000

.PHONY: demo test lint fmt bench chaos soak clean k8s-config ts-sdk

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/batchd demo --requests $(N)

test: $(STAMP)
	$(BIN)/pytest

# The official TypeScript SDK that tests/sdk drives with node, exactly as package-lock.json pins it.
ts-sdk:
	npm ci --prefix tests/sdk/ts --no-audit --no-fund

lint: $(STAMP)
	$(BIN)/ruff check batchd tests bench
	$(BIN)/ruff format --check batchd tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format batchd tests bench
	$(BIN)/ruff check --fix batchd tests bench

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

DURATION ?= 600
soak: $(STAMP)
	$(BIN)/python -m tests.chaos.soak --duration $(DURATION)

# deploy/k8s/batchd.toml (the ConfigMap's file) from config.example.toml.
k8s-config: $(STAMP)
	$(BIN)/python deploy/k8s/render_config.py > deploy/k8s/batchd.toml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache batchd-data tests/sdk/ts/node_modules

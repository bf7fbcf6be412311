# The one task runner. Every target bootstraps .venv on first use; nothing is installed globally.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# What the demo and the dev loop need alone (`.[demo]`); the full install (`.[dev]`) covers it.
DEMO_STAMP := $(VENV)/.demo-stamp
N      ?= 1000

.PHONY: demo dev docs test lint fmt bench chaos soak clean k8s-config ts-sdk

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	@touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/batchd demo --requests $(N)

# Redis on TCP, the emulator and a daemon with short windows; prints the exports for a producer.
dev: $(DEMO_STAMP)
	$(BIN)/batchd dev

# The documentation site at http://127.0.0.1:8000/ while it is edited.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# The suite in JOBS processes (a test file stays in one, sharing its fixtures): most of its time
# is spent waiting on real processes (Redis, the emulator, daemons), not on the CPU.
JOBS ?= 3
test: $(STAMP)
	$(BIN)/pytest -n $(JOBS) --dist loadfile

# The official TypeScript SDK that tests/sdk drives with node, exactly as package-lock.json pins it.
ts-sdk:
	npm ci --prefix tests/sdk/ts --no-audit --no-fund

lint: $(STAMP)
	$(BIN)/ruff check batchd tests bench scripts
	$(BIN)/ruff format --check batchd tests bench scripts
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

fmt: $(STAMP)
	$(BIN)/ruff format batchd tests bench scripts
	$(BIN)/ruff check --fix batchd tests bench scripts

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The full chaos run (20,000 requests, 3 replicas, every fault kind), its table printed; exit 1 if
# anything was lost, repeated or paid twice. CHAOS_ARGS=--cluster runs it on a Redis Cluster of
# 3 masters with a replica each: master kills with failover and live slot migrations among the
# faults. Also --seed, --requests, --replicas, --rate, --reduced, --dir (keep logs there).
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

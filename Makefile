# disksnap developer commands. Every target creates the virtualenv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup sysdeps test lint protos demo run bench clean image validate-deploy

TAG ?= dev

setup: sysdeps $(STAMP)

sysdeps:
	@scripts/ensure-system-deps

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

## Run the whole test suite (needs PostgreSQL: see scripts/ensure-postgres).
test: setup
	@PYTHON=$(PY) scripts/ensure-postgres
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy storage_agent engine_svc disksnap tests bench scripts
	cd protos && ../$(BIN)/buf lint

## Regenerate the committed stubs from protos/.
protos: $(STAMP)
	$(PY) scripts/gen_protos.py

## The product's main job on the embedded default, narrated step by step.
demo: setup
	$(BIN)/disksnap demo

## The embedded server (engine on SQLite + one local agent) on 127.0.0.1:7700.
run: setup
	$(BIN)/disksnap server

## Every benchmark, each printing ratios against raw qemu-img in the same run (PostgreSQL as
## for the tests).
bench: setup
	$(PY) bench/agent_bench.py
	$(PY) bench/engine_bench.py
	$(PY) bench/merge_bench.py

## Render every deploy/overlays/* with kubectl kustomize and validate it offline (strict schemas).
validate-deploy: setup
	$(PY) scripts/validate-deploy

## Build disksnap/engine:$(TAG) and disksnap/agent:$(TAG); prints "skipped" without a container engine.
image:
	@TAG=$(TAG) scripts/build-image

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

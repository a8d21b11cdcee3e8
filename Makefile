# docpipe: `make demo` runs the stack on real documents; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install services up demo test test-fast test-reliability bench lint docs clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install_system_deps.sh scripts/install_model_server.sh
	bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	bash scripts/install_model_server.sh $(PY)
	touch $(STAMP)

services:
	bash scripts/ensure_services.sh

up: install services
	$(PY) -m scripts.stack

demo: install services
	$(PY) -m scripts.demo

# The whole suite: unit, integration (real RabbitMQ + PostgreSQL), corpus, browser and reliability.
test: install services
	-$(PY) -m scripts.clean_test_state
	$(PY) -m pytest -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -p no:cacheprovider tests/unit

test-reliability: install services
	$(PY) -m pytest -p no:cacheprovider -m reliability

# Benchmarks (issue: fast at every scale) against a private live stack; not part of `make test`.
# Writes benchmarks/results/latest.json and latest.md. Reads the corpus (DOCPIPE_CORPUS, default
# ../shared/corpus) and stops at once, saying so, without it; BENCH_ARGS='--only push,bus' runs
# the benchmarks that need none.
bench: install services
	$(PY) -m benchmarks.run $(BENCH_ARGS)

# ruff (with the complexity checks) and mypy (strict on shared/, services/ and docpipe_cli/); CI runs it.
lint: install
	$(VENV)/bin/ruff check shared services docpipe_cli scripts tests benchmarks
	$(VENV)/bin/ruff format --check shared services docpipe_cli scripts tests benchmarks
	$(VENV)/bin/mypy

# Regenerate docs/openapi-ingest.json, docs/openapi-progress.json and docs/asyncapi.json from code.
docs: install
	$(PY) -m scripts.gen_docs

clean:
	rm -rf var test-artifacts .pytest_cache

# docpipe: `make demo` runs the stack on real documents; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install services up demo test test-fast test-reliability bench fuzz lint docs image clean

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
test: install services image
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

# Fuzzing (issue 10), not part of `make test`: the byte sniffer, the multipart parser, chunking
# and the per-format extractors, FUZZ_SECONDS each (default 60). Coverage-guided with atheris
# when it installs (the `fuzz` extra in pyproject.toml), else on random mutations of the
# seeds (FUZZ_ENGINE=random forces that). Stops at the first finding, non-zero, with the
# input in test-artifacts/fuzz/ (replay: $(PY) -m tests.fuzz.fuzz_<harness> <file>).
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES := sniff multipart chunking extractors
fuzz: install
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q 'atheris>=2.3' \
		|| echo "atheris did not install: fuzzing on random mutations"
	@for harness in $(FUZZ_HARNESSES); do \
		FUZZ_SECONDS=$(FUZZ_SECONDS) timeout $$(( $(FUZZ_SECONDS) + 120 )) \
			$(PY) -m tests.fuzz.fuzz_$$harness || exit 1; \
	done

# ruff (with the complexity checks) and mypy (strict on shared/, services/ and docpipe_cli/); CI runs it.
lint: install
	$(VENV)/bin/ruff check shared services docpipe_cli scripts tests benchmarks
	$(VENV)/bin/ruff format --check shared services docpipe_cli scripts tests benchmarks
	$(VENV)/bin/mypy

# Regenerate docs/openapi-ingest.json, docs/openapi-progress.json and docs/asyncapi.json from code.
docs: install
	$(PY) -m scripts.gen_docs

# The one image of every service (Dockerfile, runtime stage), on the local debootstrap base
# (scripts/build_base_image.sh; no registry here): DOCPIPE_BASE=python:3.11-slim-bookworm where
# one is reachable. Both are cached in the Docker daemon: an unchanged tree rebuilds in seconds,
# a code change only the last layers. tests/deploy/test_image.py runs it.
DOCPIPE_BASE  ?= docpipe-base:bookworm
DOCPIPE_IMAGE ?= docpipe:latest
image:
	bash scripts/ensure_docker.sh
	case "$(DOCPIPE_BASE)" in docpipe-base:*) \
		DOCPIPE_BASE_IMAGE=$(DOCPIPE_BASE) bash scripts/build_base_image.sh;; esac
	docker build -q --target runtime --build-arg BASE=$(DOCPIPE_BASE) -t $(DOCPIPE_IMAGE) . >/dev/null
	@echo "image: $(DOCPIPE_IMAGE) on $(DOCPIPE_BASE)"

clean:
	rm -rf var test-artifacts .pytest_cache

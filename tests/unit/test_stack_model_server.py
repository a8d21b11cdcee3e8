"""The stack runs the local model server as one more supervised process, on a port of its
own, and points the analyzer at it, unless DOCPIPE_LLM_BASE_URL names another server."""

from __future__ import annotations

import sys

from scripts.stack import (
    MODEL_SERVER,
    PORT_SETTINGS,
    SERVICES,
    Stack,
    command,
    default_services,
    stack_ports,
)


def test_the_model_server_is_in_the_stack_and_the_analyzer_finds_it() -> None:
    ports = stack_ports()
    assert PORT_SETTINGS[MODEL_SERVER] in ports
    assert len(set(ports.values())) == len(ports)  # a port of its own
    stack = Stack({**ports, "DOCPIPE_LLM_BASE_URL": ""})
    assert list(stack.services) == [*SERVICES, MODEL_SERVER]
    port = ports["DOCPIPE_MODEL_SERVER_PORT"]
    assert stack.env["DOCPIPE_LLM_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
    assert command(MODEL_SERVER, int(port)) == [
        sys.executable,
        "-m",
        "scripts.model_server",
        "--port",
        port,
    ]
    assert command("ocr", 1) == [sys.executable, "-m", "services.ocr"]


def test_another_model_server_leaves_the_local_one_out() -> None:
    elsewhere = {"DOCPIPE_LLM_BASE_URL": "https://api.example.com/v1"}
    assert default_services(elsewhere) == SERVICES
    stack = Stack(elsewhere)
    assert MODEL_SERVER not in stack.services
    assert stack.env["DOCPIPE_LLM_BASE_URL"] == "https://api.example.com/v1"
    # Named explicitly, it runs, and the URL given is kept.
    both = Stack(elsewhere, services=(*SERVICES, MODEL_SERVER))
    assert both.env["DOCPIPE_LLM_BASE_URL"] == "https://api.example.com/v1"

"""The stack the tests, `make up` and the demo run includes the local model server: a process
of its own on its own port, ready with the other services, answering the OpenAI protocol with
usage figures at the URL the analyzer is given (DOCPIPE_LLM_BASE_URL)."""

from __future__ import annotations

import httpx
import pytest

from scripts.stack import MODEL_SERVER
from services.analyzer.llm.settings import LOCAL_MODEL
from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration


async def test_the_stack_serves_the_local_model(stack: StackClient) -> None:
    running = stack.stack
    assert MODEL_SERVER in running.services
    base_url = running.env["DOCPIPE_LLM_BASE_URL"]
    assert base_url == f"{running.url(MODEL_SERVER)}/v1"
    ports = {running.port(name) for name in running.services}
    assert len(ports) == len(running.services)  # a port of its own
    async with httpx.AsyncClient(timeout=120) as client:
        health = (await client.get(f"{running.url(MODEL_SERVER)}/healthz")).json()
        assert health["service"] == MODEL_SERVER and health["model"] == LOCAL_MODEL
        answer = await client.post(
            f"{base_url}/chat/completions",
            json={
                "model": LOCAL_MODEL,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 5,
                "temperature": 0,
            },
        )
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 5

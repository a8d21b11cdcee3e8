"""Which PostgreSQL role a stack's processes get (docs/decisions/0980): a development stack
uses the development roles, migrates as the owner itself and hands its services only the
runtime URL; a stack given one URL keeps the single-URL behaviour."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from scripts.stack import Stack
from shared.db import DEV_OWNER_ROLE, DEV_RUNTIME_ROLE, with_role


def test_with_role_swaps_the_user_and_password_and_keeps_the_rest() -> None:
    url = "postgresql://postgres:secret@db.example:6543/docpipe_test_1?sslmode=require"
    assert with_role(url, "docpipe_app", "p@ss:/word") == (
        "postgresql://docpipe_app:p%40ss%3A%2Fword@db.example:6543/docpipe_test_1?sslmode=require"
    )
    assert with_role("postgresql://127.0.0.1/x", "owner") == "postgresql://owner@127.0.0.1/x"
    ipv6 = with_role("postgresql://u@[::1]:5432/x", "app", "pw")
    assert ipv6 == "postgresql://app:pw@[::1]:5432/x"
    parts = urlsplit(with_role(url, "docpipe_app", "p@ss:/word"))
    assert (parts.username, parts.password, parts.port) == ("docpipe_app", "p%40ss%3A%2Fword", 6543)


def test_a_development_stack_migrates_as_the_owner_and_runs_services_as_the_runtime_role(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOCPIPE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DOCPIPE_MIGRATE_DATABASE_URL", raising=False)
    stack = Stack({}, services=())
    runtime = urlsplit(stack.env["DOCPIPE_DATABASE_URL"])
    assert (runtime.username, runtime.password) == DEV_RUNTIME_ROLE
    assert stack.migrate_url is not None
    owner = urlsplit(stack.migrate_url)
    assert (owner.username, owner.password) == DEV_OWNER_ROLE
    assert runtime.path == owner.path == "/docpipe"
    # The services' environment never carries the owner's URL.
    assert "DOCPIPE_MIGRATE_DATABASE_URL" not in stack.env


def test_a_stack_given_urls_keeps_them_and_one_url_alone_migrates_nothing_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOCPIPE_MIGRATE_DATABASE_URL", raising=False)
    runtime = with_role("postgresql://127.0.0.1:5432/mine", *DEV_RUNTIME_ROLE)
    owner = with_role("postgresql://127.0.0.1:5432/mine", *DEV_OWNER_ROLE)
    both = Stack(
        {"DOCPIPE_DATABASE_URL": runtime, "DOCPIPE_MIGRATE_DATABASE_URL": owner}, services=()
    )
    assert (both.env["DOCPIPE_DATABASE_URL"], both.migrate_url) == (runtime, owner)
    one = Stack({"DOCPIPE_DATABASE_URL": "postgresql://postgres@127.0.0.1/mine"}, services=())
    assert one.migrate_url is None  # its services migrate with that URL, as before the split

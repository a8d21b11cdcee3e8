"""Integration tests share the session stack registered in tests/conftest.py; these names are
re-exported for tests that start stacks of their own."""

from __future__ import annotations

from scripts.stack import free_port
from tests.stack_fixture import ARTIFACTS, stack_env

__all__ = ["ARTIFACTS", "free_port", "stack_env"]

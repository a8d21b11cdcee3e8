"""A service's start with DOCPIPE_SANDBOX_USER set: can it really start its children as
that user? Asked at start-up, so that a deployment that cannot refuses to start with the
reason, instead of failing every document later."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from shared.sandbox.handoff import HandoffRefused, handoff_root
from shared.sandbox.identity import SandboxUser, SandboxUserError, check_sandbox_user
from shared.sandbox.process import ChildLimits
from shared.sandbox.runner import run_sandboxed

# What a child imports first: the interpreter, its standard library and docpipe's code must
# all be readable by the sandbox user.
PROBE = (sys.executable, "-c", "import shared.sandbox.protocol")


async def require_sandbox_user(spec: str, handoff_dir: Path | None = None) -> SandboxUser | None:
    """The sandbox user the setting names (None: unset), once its handoff folder is safe and
    a child has really started as that user; SandboxUserError with the sentence otherwise."""
    user = await asyncio.to_thread(check_sandbox_user, spec)
    if user is None:
        return None
    try:
        await asyncio.to_thread(handoff_root, handoff_dir)
    except (HandoffRefused, OSError) as exc:
        raise SandboxUserError(str(exc)) from exc
    problem = None
    try:
        result = await run_sandboxed(
            PROBE,
            job_id=None,
            timeout=60,
            cpu_seconds=30,
            memory_mb=1024,
            child_limits=ChildLimits(run_as=user),
        )
    except OSError as exc:  # exec refused: the interpreter is out of the user's reach
        problem = f"{exc.strerror or exc}"
    else:
        if not result.ok:
            problem = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
            problem = problem or result.failure or "it failed"
    if problem is not None:
        raise SandboxUserError(
            f"DOCPIPE_SANDBOX_USER is {user.name!r}, but a child started as that user could not "
            f"run this service's Python ({sys.executable}): {problem}. Install docpipe where "
            "that user can read it."
        )
    return user

"""Who a sandboxed child is: a user of its own (DOCPIPE_SANDBOX_USER), and what it inherits.

A child parses hostile input. Run as the service's user, a parser exploit could read whatever
the service can: every tenant's blobs, the service's configuration, its credentials. Run as a
user of its own, it can read only what is handed to it (shared.sandbox.handoff) and what every
user may read, and it writes only into its own folders. Its environment never carries the
service's secrets in either case: a child gets an allow-list of variables, not os.environ.

Starting a child as another user takes privileges: root, or the capabilities named below.
A service asked for a sandbox user that it cannot switch to refuses to start, with a sentence,
rather than run the children as itself unnoticed.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass

# CAP_CHOWN (0): give the child its folders; CAP_DAC_OVERRIDE (1): read and remove what the
# child wrote; CAP_KILL (5): stop a child of another user; CAP_SETGID (6), CAP_SETUID (7):
# start it as that user.
REQUIRED_CAPABILITIES = {0: "CHOWN", 1: "DAC_OVERRIDE", 5: "KILL", 6: "SETGID", 7: "SETUID"}


class SandboxUserError(RuntimeError):
    """DOCPIPE_SANDBOX_USER names a user this service cannot run its children as."""


@dataclass(frozen=True)
class SandboxUser:
    uid: int
    gid: int
    name: str


@functools.cache
def resolve_sandbox_user(spec: str) -> SandboxUser | None:
    """The user a setting names ("" or unset: None, children run as the service's user). A
    name or a number; a number need not be in /etc/passwd (its group is then the same
    number, as in a container image that only sets runAsUser)."""
    spec = spec.strip()
    if not spec:
        return None
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except KeyError:
        if spec.isdigit():
            return SandboxUser(uid=int(spec), gid=int(spec), name=spec)
        raise SandboxUserError(
            f"DOCPIPE_SANDBOX_USER names the user {spec!r}, who does not exist on this machine."
        ) from None
    if entry.pw_uid == 0:
        raise SandboxUserError("DOCPIPE_SANDBOX_USER may not be root: that is no sandbox.")
    return SandboxUser(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name)


def _effective_capabilities() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def missing_capabilities() -> list[str]:
    """The capabilities this process lacks to run children as another user ([] = none)."""
    effective = _effective_capabilities()
    return [name for bit, name in REQUIRED_CAPABILITIES.items() if not effective >> bit & 1]


def check_sandbox_user(spec: str) -> SandboxUser | None:
    """The sandbox user, once this process is known able to start children as that user;
    raises SandboxUserError with the sentence otherwise."""
    user = resolve_sandbox_user(spec)
    if user is None:
        return None
    if user.uid == os.geteuid():
        raise SandboxUserError(
            f"DOCPIPE_SANDBOX_USER is {user.name!r}, the service's own user: name another one."
        )
    if missing := missing_capabilities():
        raise SandboxUserError(
            f"DOCPIPE_SANDBOX_USER is {user.name!r}, but this service cannot start processes "
            f"as another user: it lacks the capabilities {', '.join(missing)}. Run it as root "
            "with those capabilities, or leave DOCPIPE_SANDBOX_USER unset."
        )
    return user


# What a child may inherit from the service's environment: the locale, the search paths, the
# thread caps of numeric libraries, and the sandbox's and OCR's own variables. Everything else
# (database and broker URLs, API and secret keys, cloud credentials) stays with the service.
_INHERITED = re.compile(
    r"PATH|LANG|LANGUAGE|LC_[A-Z]+|TZ|HOME|VIRTUAL_ENV|LD_LIBRARY_PATH"
    r"|PYTHON(PATH|HOME|HASHSEED|DONTWRITEBYTECODE|UNBUFFERED|WARNINGS|FAULTHANDLER)"
    r"|OMP_[A-Z_]+|OPENBLAS_[A-Z_]+|MKL_[A-Z_]+|TESSDATA_PREFIX"
    r"|DOCPIPE_SANDBOX_[A-Z_]+|DOCPIPE_OCR_TESSDATA_DIR|COVERAGE_[A-Z_]+"
)


def child_environment(
    service_env: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A child's environment: the allowed part of the service's, then `extra` (the caller's
    own variables for the child, which it chose to pass)."""
    env = {name: value for name, value in service_env.items() if _INHERITED.fullmatch(name)}
    env.update(extra or {})
    return env

"""Document passwords sealed for the bus (and the outbox row until it is published): Fernet
(AES-128-CBC with an HMAC-SHA256, from `cryptography`) under the keys of DOCPIPE_SECRET_KEYS,
through MultiFernet so keys rotate: the first key encrypts, every key decrypts.

Ingest seals a password into `DocumentUploaded.password_token`; the extractor opens it just
before it hands the password to its sandboxed child. An upstream app that publishes onto the
bus itself seals with the same key: `Fernet(key).encrypt(password.encode()).decode()`.
Tokens carry no expiry (docs/decisions/0950-document-passwords-sealed.md says why).
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.settings import Settings

log = structlog.get_logger(__name__)


class SecretKeysMissing(RuntimeError):
    """Outside dev, a service that seals or opens passwords has no key to do it with."""


class SecretKeyInvalid(ValueError):
    """A configured key is not a Fernet key; the message names its position, never its value."""


class UnreadableSecret(ValueError):
    """A token this deployment's keys cannot open: another key, altered, or not a token."""


NO_SECRET_KEYS = (
    "Refusing to start: no key to encrypt document passwords with. Set DOCPIPE_SECRET_KEYS to "
    "a Fernet key (python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'); the development key exists only with "
    "DOCPIPE_ENV=dev."
)
UNREADABLE_PASSWORD = (
    "The document's password could not be decrypted: it was not encrypted with a key in "
    "DOCPIPE_SECRET_KEYS. Submit the document again with its password."
)


class SecretBox:
    """Seals and opens short secrets (document passwords) under the configured keys."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretKeysMissing(NO_SECRET_KEYS)
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, binascii.Error):
                raise SecretKeyInvalid(
                    f"Key {position} of DOCPIPE_SECRET_KEYS is not a Fernet key "
                    "(32 bytes in url-safe base64, as Fernet.generate_key() makes)."
                ) from None
        self._fernet = MultiFernet(fernets)

    def seal(self, secret: str) -> str:
        """The secret as a Fernet token under the first key (ASCII, url-safe)."""
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, token: str) -> str:
        """The secret inside a token sealed under any of the keys; UnreadableSecret else."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeError):
            raise UnreadableSecret(UNREADABLE_PASSWORD) from None


@lru_cache(maxsize=8)
def _box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(list(keys))


def secret_box(settings: Settings) -> SecretBox:
    """The box for the settings' keys (the development key with DOCPIPE_ENV=dev and none set);
    SecretKeysMissing or SecretKeyInvalid, each with a sentence, when there is no usable key."""
    return _box(tuple(key.get_secret_value() for key in settings.secret_keys))


def seal_password(settings: Settings, password: str | None) -> str | None:
    """What a DocumentUploaded carries for a submitted password: its token, or None."""
    return None if password is None else secret_box(settings).seal(password)


Setup = Callable[[Any], Awaitable[None] | None]


def requiring_secret_keys(setup: Setup) -> Callable[[Any], Awaitable[None]]:
    """`setup`, run only once the service has a usable key to seal or open passwords with."""

    async def checked(ctx: Any) -> None:
        try:
            secret_box(ctx.settings)
        except (SecretKeysMissing, SecretKeyInvalid) as exc:
            log.error("refusing to start", reason=str(exc))
            raise
        result = setup(ctx)
        if asyncio.iscoroutine(result):
            await result

    return checked

"""Document passwords sealed for the bus (shared.secret_box): round trip, key rotation, a
token under another key, the keys from the settings, and the event field that carries one."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError

from services.extractor.service import document_password
from shared.bounds import PASSWORD_MAX, PASSWORD_TOKEN_MAX
from shared.errors import PermanentError
from shared.events import DocumentUploaded, parse_event
from shared.logging import REDACTED, redact_secrets
from shared.secret_box import (
    NO_SECRET_KEYS,
    UNREADABLE_PASSWORD,
    SecretBox,
    SecretKeyInvalid,
    SecretKeysMissing,
    UnreadableSecret,
    requiring_secret_keys,
    seal_password,
    secret_box,
)
from shared.settings import DEV_SECRET_KEY, Settings


def new_key() -> str:
    return Fernet.generate_key().decode()


def settings_with(*keys: str, env: str = "production") -> Settings:
    return Settings(env=env, secret_keys=[SecretStr(k) for k in keys])


def test_a_sealed_password_opens_to_itself_and_shows_nothing_of_it() -> None:
    box = SecretBox([new_key()])
    for password in ("asdfzxcv", "", "pässwörd ✓ 密码", "x" * PASSWORD_MAX):
        token = box.seal(password)
        assert password not in token or password == ""
        assert box.open(token) == password
    # Each seal has its own IV: two tokens of one password differ.
    assert box.seal("same") != box.seal("same")


def test_the_first_key_seals_and_every_key_opens() -> None:
    old, new = new_key(), new_key()
    before = SecretBox([old]).seal("kept through the rotation")
    rotating = SecretBox([new, old])
    assert rotating.open(before) == "kept through the rotation"
    after = rotating.seal("sealed after the rotation")
    assert SecretBox([new]).open(after) == "sealed after the rotation"
    with pytest.raises(UnreadableSecret):
        SecretBox([old]).open(after)  # the retired key never sealed it


def test_a_token_under_another_key_or_no_token_at_all_is_refused_with_a_sentence() -> None:
    box = SecretBox([new_key()])
    sealed_elsewhere = SecretBox([new_key()]).seal("asdfzxcv")
    tampered = box.seal("asdfzxcv")[:-4] + "AAAA"
    for token in (sealed_elsewhere, tampered, "not-a-token", "", "gAAAAA"):
        with pytest.raises(UnreadableSecret) as caught:
            box.open(token)
        assert str(caught.value) == UNREADABLE_PASSWORD
    assert "DOCPIPE_SECRET_KEYS" in UNREADABLE_PASSWORD


def test_a_key_that_is_not_a_fernet_key_is_named_by_position_never_by_value() -> None:
    bad = "not-a-fernet-key-at-all"
    with pytest.raises(SecretKeyInvalid) as caught:
        SecretBox([new_key(), bad])
    assert "Key 2 of DOCPIPE_SECRET_KEYS is not a Fernet key" in str(caught.value)
    assert bad not in str(caught.value)


def test_keys_come_from_a_comma_list_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = new_key(), new_key()
    monkeypatch.setenv("DOCPIPE_ENV", "production")
    monkeypatch.setenv("DOCPIPE_SECRET_KEYS", f" {first} , {second},")
    settings = Settings()
    assert [k.get_secret_value() for k in settings.secret_keys] == [first, second]
    assert first not in repr(settings) and second not in repr(settings)
    token = secret_box(settings).seal("pw")
    assert SecretBox([first]).open(token) == "pw"  # the first key seals


def test_outside_dev_there_is_no_key_unless_configured() -> None:
    with pytest.raises(SecretKeysMissing) as caught:
        secret_box(settings_with())
    assert str(caught.value) == NO_SECRET_KEYS
    assert "DOCPIPE_SECRET_KEYS" in NO_SECRET_KEYS and "DOCPIPE_ENV=dev" in NO_SECRET_KEYS


def test_dev_has_the_development_key_unless_one_is_configured() -> None:
    dev = settings_with(env="dev")
    assert [k.get_secret_value() for k in dev.secret_keys] == [DEV_SECRET_KEY]
    own = new_key()
    assert [k.get_secret_value() for k in settings_with(own, env="dev").secret_keys] == [own]


async def test_a_service_needing_the_key_does_not_set_up_without_one() -> None:
    ran: list[str] = []

    class Ctx:
        def __init__(self, settings: Settings) -> None:
            self.settings = settings

    def setup(ctx: Any) -> None:
        ran.append("setup")

    with pytest.raises(SecretKeysMissing):
        await requiring_secret_keys(setup)(Ctx(settings_with()))
    with pytest.raises(SecretKeyInvalid):
        await requiring_secret_keys(setup)(Ctx(settings_with("short")))
    assert ran == []
    await requiring_secret_keys(setup)(Ctx(settings_with(new_key())))
    assert ran == ["setup"]


def test_the_event_carries_only_the_token_and_bounds_it() -> None:
    settings = settings_with(new_key())
    job = uuid.uuid4()
    # The longest password a client may send, in characters of 4 UTF-8 bytes each, fits.
    longest = "\U0001f511" * PASSWORD_MAX
    token = seal_password(settings, longest)
    assert token is not None and len(token) == PASSWORD_TOKEN_MAX
    event = DocumentUploaded(job_id=job, document_uri="blob://x", password_token=token)
    assert secret_box(settings).open(event.password_token or "") == longest
    assert seal_password(settings, None) is None
    # The contract has no clear password field any more; a token is url-safe base64.
    with pytest.raises(ValidationError, match="password"):
        parse_event(
            "document.uploaded", f'{{"job_id": "{job}", "document_uri": "x", "password": "p"}}'
        )
    with pytest.raises(ValidationError, match="password_token"):
        DocumentUploaded(job_id=job, document_uri="x", password_token="not a token!")


def test_the_extractor_opens_the_token_or_fails_the_job_with_a_sentence() -> None:
    settings = settings_with(new_key())
    job = uuid.uuid4()
    sealed = DocumentUploaded(
        job_id=job, document_uri="x", password_token=seal_password(settings, "asdfzxcv")
    )
    assert document_password(sealed, settings) == "asdfzxcv"
    assert document_password(DocumentUploaded(job_id=job, document_uri="x"), settings) is None
    foreign = DocumentUploaded(
        job_id=job,
        document_uri="x",
        password_token=SecretBox([new_key()]).seal("asdfzxcv"),
    )
    with pytest.raises(PermanentError) as caught:
        document_password(foreign, settings)
    assert str(caught.value) == UNREADABLE_PASSWORD


def test_tokens_and_keys_are_redacted_from_log_lines() -> None:
    line = redact_secrets(
        None,
        "info",
        {"event": "x", "password_token": "gAAAA-sealed", "secret_keys": ["k"], "other": 1},
    )
    assert line["password_token"] == REDACTED and line["secret_keys"] == REDACTED
    assert line["other"] == 1

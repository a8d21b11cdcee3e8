"""Keys, scopes and tickets without a database: the settings' keys, the dev-only defaults, the
scope check's sentence, the ticket's signature and expiry, and that no key or ticket is logged."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import HTTPException
from pydantic import SecretStr

from shared import tickets
from shared.auth import (
    NO_KEYS,
    TOKEN_REFUSED,
    WS_NOT_EVERY_TENANT,
    KeyResolver,
    Principal,
    issue_ticket,
    missing_scope,
    require_scope,
    visible_tenant,
)
from shared.keys import (
    ALL_SCOPES,
    KEY_PREFIX,
    KeyChangeRefused,
    Scope,
    fingerprint,
    key_digest,
    new_key,
    parse_scopes,
)
from shared.logging import redact_text
from shared.settings import DEV_ADMIN_KEYS, DEV_API_KEYS, Settings

SECRET = b"s" * 32


def test_no_default_keys_outside_dev() -> None:
    production = Settings(env="production")
    assert production.api_keys == "" and production.admin_keys == ""
    assert production.tenants_by_key == {} and production.admin_key_set == set()
    dev = Settings(env="dev")
    assert (dev.api_keys, dev.admin_keys) == (DEV_API_KEYS, DEV_ADMIN_KEYS)
    assert Settings(env="dev", api_keys="mine=t").tenants_by_key == {"mine": "t"}


def test_default_env_is_not_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCPIPE_ENV", raising=False)
    assert not Settings().is_dev and Settings().tenants_by_key == {}


def _resolve(settings: Settings, key: str | None) -> Principal | None:
    return asyncio.run(KeyResolver(settings).resolve(key, None))


def test_settings_keys_resolve_with_their_scopes() -> None:
    settings = Settings(env="production", api_keys="tk=acme", admin_keys="ak")
    tenant = _resolve(settings, "tk")
    assert tenant is not None and tenant.tenant == "acme" and not tenant.all_tenants
    assert tenant.scopes == {Scope.SUBMIT, Scope.READ, Scope.CANCEL} and not tenant.admin
    admin = _resolve(settings, "ak")
    assert admin is not None and admin.all_tenants and admin.scopes == ALL_SCOPES
    assert visible_tenant(admin) is None and visible_tenant(tenant) == "acme"
    for wrong in ("", None, "tk ", "TK", "a" * 10_000, f"{KEY_PREFIX}unknown"):
        assert _resolve(settings, wrong) is None
    # The principal names its key by a fingerprint, never by the key.
    assert tenant.key_id == fingerprint("tk") != fingerprint("ak") == admin.key_id


def test_a_tenant_scoped_admin_sees_only_its_tenant() -> None:
    scoped = Principal("k1", "acme", ALL_SCOPES, all_tenants=False)
    assert scoped.admin and visible_tenant(scoped) == "acme"


def test_new_keys_are_long_random_and_only_hashed() -> None:
    key_id, key = new_key()
    assert key.startswith(f"{KEY_PREFIX}{key_id}_") and len(key) > 50
    assert new_key()[1] != key
    assert len(key_digest(key)) == 32 and key.encode() not in key_digest(key)


def test_scopes_parse_and_name_what_is_wrong() -> None:
    assert parse_scopes("submit, READ") == {Scope.SUBMIT, Scope.READ}
    with pytest.raises(KeyChangeRefused, match="Unknown scope 'write'"):
        parse_scopes("read,write")
    with pytest.raises(KeyChangeRefused, match="at least one"):
        parse_scopes(" , ")


@pytest.mark.parametrize("scope", list(Scope))
def test_a_key_without_the_scope_gets_403_naming_it(scope: Scope) -> None:
    check = require_scope(scope)
    assert check.scope is scope  # type: ignore[attr-defined]
    lacking = Principal("k", "t", ALL_SCOPES - {scope})
    with pytest.raises(HTTPException) as refused:
        asyncio.run(check(lacking))
    assert refused.value.status_code == 403
    assert refused.value.detail == missing_scope(scope) and f"'{scope}'" in missing_scope(scope)
    holder = Principal("k", "t", frozenset({scope}))
    assert asyncio.run(check(holder)) is holder


def test_fleet_admin_routes_refuse_a_tenant_scoped_admin_key() -> None:
    check = require_scope(Scope.ADMIN, every_tenant=True)
    with pytest.raises(HTTPException) as refused:
        asyncio.run(check(Principal("k", "acme", ALL_SCOPES)))
    assert refused.value.status_code == 403 and "one tenant" in str(refused.value.detail)


# --- tickets -----------------------------------------------------------------------------


def _ticket(**kw: object) -> tickets.Ticket:
    values: dict[str, object] = {
        "kind": tickets.SubjectKind.JOB,
        "subject": "job-1",
        "key_id": "k1",
        "tenant": "acme",
        "all_tenants": False,
        "scopes": ("read",),
        "expires_at": 2_000.0,
    }
    values.update(kw)
    return tickets.Ticket(**values)  # type: ignore[arg-type]


def test_a_ticket_opens_its_subject_until_it_expires() -> None:
    text = tickets.issue(SECRET, _ticket())
    claims = tickets.verify(SECRET, text, kind=tickets.SubjectKind.JOB, subject="job-1", now=1_999)
    assert claims == _ticket()
    with pytest.raises(tickets.TicketRefused, match="expired"):
        tickets.verify(SECRET, text, kind=tickets.SubjectKind.JOB, subject="job-1", now=2_001)
    with pytest.raises(tickets.TicketRefused, match="another job"):
        tickets.verify(SECRET, text, kind=tickets.SubjectKind.JOB, subject="job-2", now=1)
    with pytest.raises(tickets.TicketRefused):
        tickets.verify(SECRET, text, kind=tickets.SubjectKind.BATCH, subject="job-1", now=1)


def test_a_forged_or_mangled_ticket_is_refused() -> None:
    text = tickets.issue(SECRET, _ticket())
    with pytest.raises(tickets.TicketRefused, match="signature"):
        tickets.verify(b"x" * 32, text, kind=tickets.SubjectKind.JOB, subject="job-1", now=1)
    # Widen the payload to every tenant, keep the signature: refused.
    version, _payload, signature = text.split(".")
    forged = tickets.issue(SECRET, _ticket(all_tenants=True)).split(".")[1]
    with pytest.raises(tickets.TicketRefused, match="signature"):
        tickets.verify(
            SECRET,
            f"{version}.{forged}.{signature}",
            kind=tickets.SubjectKind.JOB,
            subject="job-1",
            now=1,
        )
    for junk in ("", "v1", "v1.a.b", "v2.x.y", "v1." + "a" * 5000 + ".b"):
        with pytest.raises(tickets.TicketRefused):
            tickets.verify(SECRET, junk, kind=tickets.SubjectKind.JOB, subject="job-1", now=1)


def test_issued_tickets_carry_the_principals_view_for_a_minute() -> None:
    settings = Settings(env="dev", ticket_secret=SecretStr("configured"))
    principal = Principal("k9", "acme", frozenset({Scope.READ}))
    text, expires_at = issue_ticket(settings, principal, tickets.SubjectKind.JOB, "j")
    claims = tickets.verify(
        tickets.ticket_secret(settings), text, kind=tickets.SubjectKind.JOB, subject="j"
    )
    assert (claims.key_id, claims.tenant, claims.all_tenants) == ("k9", "acme", False)
    assert claims.expires_at == pytest.approx(expires_at, abs=0.01)
    # Without a configured secret, production signs with a per-process random one.
    assert tickets.ticket_secret(Settings(env="production")) != tickets.ticket_secret(
        Settings(env="dev")
    )


# --- logs --------------------------------------------------------------------------------


def test_tickets_and_keys_are_redacted_from_log_lines() -> None:
    _, key = new_key()
    ticket = tickets.issue(SECRET, _ticket())
    line = f'"GET /v1/jobs/j/events?ticket={ticket}&after=3 HTTP/1.1" key={key}'
    redacted = redact_text(line)
    assert ticket not in redacted and key not in redacted and "after=3" in redacted
    assert redact_text(f"/v1/admin/events?token={key}") == "/v1/admin/events?token=[REDACTED]"
    assert key not in redact_text(json.dumps({"authorization": f"Bearer {key}"}))
    assert redact_text(f"revoked {key}!") == "revoked [REDACTED]!"


def test_close_reasons_fit_a_close_frame() -> None:
    reasons = [TOKEN_REFUSED, WS_NOT_EVERY_TENANT, *(missing_scope(s) for s in Scope)]
    reasons += [
        "A valid API key or ticket is required.",
        "The ticket is for another batch, not this one.",
    ]
    assert all(len(reason.encode()) <= 123 for reason in reasons)
    assert "DOCPIPE_ENV=dev" in NO_KEYS and "docpipe keys add" in NO_KEYS

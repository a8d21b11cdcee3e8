"""Who published a bus message, and whether that publisher may name the tenant it names.

Every publish carries the AMQP `user_id` property set to the connection's user, and RabbitMQ
refuses a message whose `user_id` differs from the user that authenticated the connection:
the broker, not the publisher, vouches for it. A `document.uploaded` names its tenant; the
consumer accepts that claim only from a user trusted to carry any tenant (ingest, which
publishes the uploads of HTTP tenants; the services that retry and replay messages) or from an
upstream user mapped to that very tenant (`DOCPIPE_AMQP_TENANTS`).

A retry or a dead letter is published again by the service that failed it, under its own
user; it keeps the user that first published it in the `x-published-by` header, which is
believed only from a trusted user (docs/decisions/0970).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from yarl import URL

from shared.settings import DEFAULT_TRUSTED_USERS, DEV_AMQP_TENANTS, service_user

if TYPE_CHECKING:
    from shared.settings import Settings

    from .message import InboundMessage

__all__ = [
    "DEFAULT_TRUSTED_USERS",
    "DEV_AMQP_TENANTS",
    "H_PUBLISHED_BY",
    "PublisherPolicy",
    "amqp_user_of",
    "dev_password",
    "service_user",
    "url_with_user",
]

# The first publisher of a message that a trusted service publishes again (a retry, a dead
# letter, a replay); "" when that publisher was not known.
H_PUBLISHED_BY = "x-published-by"


def dev_password(user: str) -> str:
    """The development password scripts/rabbitmq_users.sh gives a user without a secret."""
    return f"{user}-dev"


def amqp_user_of(url: str) -> str:
    """The user an AMQP URL authenticates as (aio-pika's default without one: guest)."""
    return URL(url).user or "guest"


def url_with_user(url: str, user: str, password: str) -> str:
    """The same broker address, authenticated as another user."""
    return str(URL(url).with_user(user).with_password(password))


@dataclass(frozen=True)
class PublisherPolicy:
    """Which publishers may name which tenant. Pure: see `refusal`."""

    tenants_by_user: Mapping[str, str]
    trusted_users: frozenset[str]
    # Development only: a message without user_id, or from a user neither trusted nor mapped,
    # is accepted (a development broker may have only guest; the dev keys are public anyway).
    accept_unknown: bool = False
    # The priority an upstream upload may carry, per tenant (decision 1080); above it, capped.
    priority_ceiling_default: int = 9
    priority_ceilings: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> PublisherPolicy:
        return cls(
            dict(settings.amqp_tenants),
            frozenset(settings.amqp_trusted_users),
            accept_unknown=settings.is_dev,
            priority_ceiling_default=settings.priority_ceiling_default,
            priority_ceilings=dict(settings.tenant_priority_ceiling),
        )

    def capped_priority(self, publisher: str | None, tenant: str, priority: int) -> int:
        """The priority an upload keeps: a trusted service's as it is (ingest refused a
        priority above the ceiling at submit, 422), an upstream app's at most its tenant's
        ceiling. Capped, not refused: the bus has no answer to send a refusal back on, and the
        document is the tenant's own work."""
        if publisher in self.trusted_users:
            return priority
        return min(priority, self.priority_ceilings.get(tenant, self.priority_ceiling_default))

    def publisher_of(self, message: InboundMessage) -> str | None:
        """The user that first published the message: its user_id, or, from a trusted user
        that publishes it again, the x-published-by it kept."""
        user = message.user_id
        if user in self.trusted_users and H_PUBLISHED_BY in message.headers:
            return str(message.headers[H_PUBLISHED_BY] or "") or None
        return user

    def refusal(self, publisher: str | None, tenant: str) -> str | None:
        """Why `publisher` may not publish an upload for `tenant`; None when it may."""
        if publisher is None:
            return None if self.accept_unknown else "the message names no publisher (user_id)"
        if publisher in self.trusted_users:
            return None
        mapped = self.tenants_by_user.get(publisher)
        if mapped is None:
            if self.accept_unknown:
                return None
            return f"the publisher {publisher!r} is not mapped to a tenant"
        if mapped != tenant:
            return f"the publisher {publisher!r} publishes for tenant {mapped!r} only"
        return None

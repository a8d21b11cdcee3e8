"""The consumer pipeline, one small step per concern (dramatiq's middleware is the model).

A work queue's message passes, outermost first:

    CountOutcomes   metrics: received, then how it settled (acked, retried, dead_lettered)
    Parse           bytes -> the typed event, and the handler registered for its type;
                    a message that does not parse is dead-lettered as malformed
    LogContext      correlation id and structlog context; one "message handled" line
    FailurePolicy   the failure taxonomy: JobGone, PermanentError, retry ladder, dead letter
    CheckPublisher  an upload's tenant against the AMQP user that published it; refused:
                    recorded, then dropped (a JobGone)
    TimeHandler     how long the handler ran
    -> the handler

Each step is an object called as `await step(ctx, call_next)`; `chain` binds them once per
subscription, so a message costs one call per step and nothing else. Broadcasts and the
dead-letter recorder use other step lists over the same pieces (see BusCore).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from shared.errors import JobGone, PermanentError
from shared.events import DocumentUploaded, Event, JobFailed, event_type_of
from shared.topology import ConsumerGroup

from .identity import PublisherPolicy
from .message import (
    DEAD_LETTERED,
    H_CORRELATION,
    REQUEUED,
    RETRIED,
    Handler,
    InboundMessage,
    MessageContext,
    Next,
    RawHandler,
    correlation_id,
)

log = structlog.get_logger("shared.bus")

# Longest reason text kept from a parse error, and longest body read for a job id.
MALFORMED_DETAIL_CHARS = 400
MALFORMED_BODY_BYTES = 1 << 20


class Transport(Protocol):
    """What the failure policy needs of the bus it runs on (AMQP or in memory)."""

    async def publish(self, event: Event) -> None: ...

    async def retry(
        self,
        message: InboundMessage,
        group: ConsumerGroup,
        attempt: int,
        error: str,
        delay_ms: int,
    ) -> None: ...

    async def dead_letter(
        self,
        message: InboundMessage,
        group: ConsumerGroup,
        reason: str,
        error: str,
        attempt: int,
    ) -> None: ...


class Middleware(Protocol):
    async def __call__(self, ctx: MessageContext, call_next: Next) -> None: ...


Hook = Callable[[str, Any], None]
Probe = Callable[[], Awaitable[bool]]


def chain(steps: Sequence[Middleware], endpoint: Next) -> Next:
    """Bind the steps around the endpoint once: the result takes a context and runs them all."""
    call = endpoint
    for step in reversed(steps):
        call = functools.partial(step, call_next=call)
    return call


async def call_handler(ctx: MessageContext) -> None:
    """The endpoint of a typed subscription: the handler the parse step chose."""
    assert ctx.handler is not None and ctx.event is not None  # set by Parse
    await ctx.handler(ctx.event, ctx.delivery())


def raw_endpoint(handler: RawHandler) -> Next:
    """The endpoint of a raw subscription (dead letters): the handler gets the message."""

    async def call(ctx: MessageContext) -> None:
        await handler(ctx.message)

    return call


def call_hooks(hooks: Sequence[Hook], name: str, value: Any) -> None:
    """Call every metrics hook; a failing hook never fails the message. try/except rather
    than contextlib.suppress: this runs several times per message."""
    for hook in hooks:
        try:  # noqa: SIM105 - cheaper than contextlib.suppress on the hot path
            hook(name, value)
        except Exception:
            pass


class CountOutcomes:
    """Reports "received" and then how the message settled, to the bus's outcome hooks
    (read at call time, so hooks added after subscribing count too)."""

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self.hooks = hooks

    async def __call__(self, ctx: MessageContext, call_next: Next) -> None:
        call_hooks(self.hooks, ctx.queue, "received")
        await call_next(ctx)
        call_hooks(self.hooks, ctx.queue, ctx.settled)


class TimeHandler:
    """Reports how long the handler ran (not the ack, not a retry) to the handled hooks."""

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self.hooks = hooks

    async def __call__(self, ctx: MessageContext, call_next: Next) -> None:
        started = time.perf_counter()
        try:
            await call_next(ctx)
        finally:
            call_hooks(self.hooks, ctx.queue, time.perf_counter() - started)


class UnhandledEventType(KeyError):
    """The queue has no handler for this event type (or the type does not exist)."""


OnMalformed = Callable[[MessageContext, Exception], Awaitable[None]]


class Parse:
    """Validates the body against the model of the handler registered for its event type."""

    def __init__(
        self, handlers: Mapping[str, tuple[type[Event], Handler]], on_malformed: OnMalformed
    ) -> None:
        self.handlers = handlers
        self.on_malformed = on_malformed

    async def __call__(self, ctx: MessageContext, call_next: Next) -> None:
        event_type = ctx.message.event_type
        try:
            entry = self.handlers.get(event_type_of(event_type))
            if entry is None:
                raise UnhandledEventType(f"no handler for {event_type!r} on this queue")
            model, ctx.handler = entry
            ctx.event = model.model_validate_json(ctx.message.body)
        except (UnhandledEventType, ValidationError, ValueError) as exc:
            await self.on_malformed(ctx, exc)
            return
        await call_next(ctx)


def job_id_of(body: bytes) -> uuid.UUID | None:
    """The job a message names, read leniently: a JSON object with a UUID `job_id`."""
    if len(body) > MALFORMED_BODY_BYTES:
        return None
    try:
        payload = json.loads(body)
        return uuid.UUID(str(payload["job_id"])) if isinstance(payload, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def describe_parse_error(exc: Exception) -> str:
    """A short readable account of why a body did not parse."""
    if isinstance(exc, ValidationError):
        problems = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where}: {error['msg']}" if where else error["msg"])
        detail = "; ".join(problems)
    elif isinstance(exc, UnhandledEventType):
        detail = str(exc.args[0])
    else:
        detail = str(exc)
    return detail[:MALFORMED_DETAIL_CHARS]


class DeadLetterMalformed:
    """What a work queue does with a message it cannot read: dead-letter it ("malformed"),
    and when it names a job, fail that job with a sentence, so its publisher sees it end."""

    def __init__(self, transport: Transport, group: ConsumerGroup) -> None:
        self.transport = transport
        self.group = group

    async def __call__(self, ctx: MessageContext, exc: Exception) -> None:
        message = ctx.message
        structlog.contextvars.clear_contextvars()
        # "event_type", not "event": structlog's "event" is the log message.
        structlog.contextvars.bind_contextvars(
            event_type=message.event_type, message_id=message.message_id, queue=ctx.queue
        )
        # The account names fields and rules, never values: pydantic's own str() quotes the
        # input (a document password sent in clear, say), and this text is logged and stored.
        detail = describe_parse_error(exc)
        log.warning("malformed message dead-lettered", error=detail[:500])
        error = f"{type(exc).__name__}: {detail}"
        await self.transport.dead_letter(message, self.group, "malformed", error, ctx.attempt)
        ctx.settled, ctx.outcome = DEAD_LETTERED, "malformed"
        job_id = job_id_of(message.body)
        # A job.failed that cannot be read is not answered with another job.failed: that
        # could go round for ever between two queues.
        if job_id is None or event_type_of(message.event_type) == JobFailed.routing_key:
            return
        reason = f"The message for this job could not be read: {detail}."
        await self.transport.publish(JobFailed(job_id=job_id, stage=self.group.name, reason=reason))


async def drop_malformed(ctx: MessageContext, exc: Exception) -> None:
    """What a broadcast does with a message it cannot read: it is advisory, so only log."""
    log.warning(
        "malformed broadcast dropped",
        event_type=ctx.message.event_type,
        error=describe_parse_error(exc)[:300],
    )


class LogContext:
    """Binds the message's log context and correlation id around the rest of the pipeline,
    and writes one line per message: `grep <job_id>` finds every stage."""

    async def __call__(self, ctx: MessageContext, call_next: Next) -> None:
        message, event = ctx.message, ctx.event
        assert event is not None  # set by Parse
        job_id = str(event.job_id)
        cid = str(message.headers.get(H_CORRELATION) or message.correlation_id or job_id)
        token = correlation_id.set(cid)
        structlog.contextvars.clear_contextvars()
        # One bind for all five (each bind call costs per message, thousands a second).
        structlog.contextvars.bind_contextvars(
            event_type=message.event_type,
            message_id=message.message_id,
            queue=ctx.queue,
            job_id=job_id,
            correlation_id=cid,
        )
        started = time.perf_counter()
        try:
            await call_next(ctx)
        finally:
            log.info(
                "message handled",
                outcome=ctx.outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            correlation_id.reset(token)


class FailurePolicy:
    """The failure taxonomy. Return: ack. JobGone: dropped. PermanentError: the job fails with
    its reason. Anything else: retried through the delay queues (without using up an attempt
    while a dependency is down), then dead-lettered, and the job fails."""

    def __init__(
        self,
        transport: Transport,
        group: ConsumerGroup,
        retry_delays_ms: Sequence[int],
        dependency_down: Probe,
    ) -> None:
        self.transport = transport
        self.group = group
        self.delays = tuple(retry_delays_ms)
        self.dependency_down = dependency_down

    async def __call__(self, ctx: MessageContext, call_next: Next) -> None:
        try:
            await call_next(ctx)
        except JobGone as exc:
            ctx.outcome = "dropped"
            log.info("dropped work for an ended job", why=str(exc))
        except PermanentError as exc:
            ctx.outcome = "job_failed"
            log.warning("job failed permanently", reason=exc.reason)
            assert ctx.event is not None
            if isinstance(ctx.event, JobFailed):
                return  # answering it with another job.failed could go round for ever
            failed = JobFailed(job_id=ctx.event.job_id, stage=self.group.name, reason=exc.reason)
            await self.transport.publish(failed)
        except Exception as exc:  # transient, or a bug: retry, then dead-letter
            ctx.outcome = "error"
            await self.failed(ctx, exc)

    async def failed(self, ctx: MessageContext, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        attempt, delays = ctx.attempt, self.delays
        if delays and await self.probe():
            log.warning(
                "handler failed while a dependency is down; retrying without using an attempt",
                error=error[:500],
                attempt=attempt,
            )
            await self.transport.retry(ctx.message, self.group, attempt, error, delays[0])
            ctx.settled = RETRIED
        elif attempt < len(delays):
            log.warning("handler failed, will retry", error=error[:500], attempt=attempt + 1)
            await self.transport.retry(ctx.message, self.group, attempt + 1, error, delays[attempt])
            ctx.settled = RETRIED
        else:
            log.error("retries exhausted, dead-lettering", error=error[:500], exc_info=exc)
            await self.transport.dead_letter(
                ctx.message, self.group, "retries-exhausted", error, attempt
            )
            ctx.settled = DEAD_LETTERED
            # Every job ends: the dead letter can be replayed, but the job fails now. A job.failed
            # that kept failing is not answered with another: that one (same message id) would
            # fail the same way, and so on for ever, filling the retry queues.
            assert ctx.event is not None
            if isinstance(ctx.event, JobFailed):
                return
            reason = (
                f"The {self.group.name} stage kept failing after {attempt} retries "
                f"({type(exc).__name__}); the message was moved to the dead-letter queue."
            )
            try:
                await self.transport.publish(
                    JobFailed(job_id=ctx.event.job_id, stage=self.group.name, reason=reason)
                )
            except Exception as publish_error:  # the dead letter is kept; the job may stall
                log.warning("could not publish job.failed", error=str(publish_error)[:300])

    async def probe(self) -> bool:
        try:
            return bool(await self.dependency_down())
        except Exception:  # a failing probe proves nothing: count the attempt
            return False


class RefusedPublisher(JobGone):
    """The upload's publisher may not name its tenant: nothing of it reaches a job."""


OnRefused = Callable[[DocumentUploaded, str], Awaitable[None]]


class CheckPublisher:
    """A document.uploaded names its tenant; the AMQP user that published it (validated by
    the broker, shared/bus/identity.py) must be trusted or mapped to that tenant. A refused
    upload goes to `on_refused` (the extractor records it in refused_messages), then is
    dropped. Inside FailurePolicy: a record that fails is retried, and checked again."""

    def __init__(self, policy: PublisherPolicy | None, on_refused: Callable[[], OnRefused | None]):
        self.policy = policy
        self.on_refused = on_refused  # read per message: the service sets it after subscribing

    async def __call__(self, ctx: MessageContext, call_next: Next) -> None:
        event = ctx.event
        if self.policy is not None and isinstance(event, DocumentUploaded):
            publisher = self.policy.publisher_of(ctx.message)
            reason = self.policy.refusal(publisher, event.tenant)
            if reason is not None:
                record = self.on_refused()
                if record is not None:
                    await record(event, reason)
                else:
                    log.warning("bus message refused", publisher=publisher, reason=reason)
                raise RefusedPublisher(f"refused: {reason}")
            capped = self.policy.capped_priority(publisher, event.tenant, event.priority)
            if capped != event.priority:
                log.info("upload priority capped", publisher=publisher, asked=event.priority)
                ctx.event = event.model_copy(update={"priority": capped})
        await call_next(ctx)


class Advisory:
    """A broadcast's policy: a failing handler is logged, never retried or dead-lettered."""

    async def __call__(self, ctx: MessageContext, call_next: Next) -> None:
        try:
            await call_next(ctx)
        except Exception as exc:
            ctx.outcome = "error"
            log.warning("broadcast handler failed", error=str(exc)[:300])


class RequeueAfterPause:
    """The dead-letter recorder's policy: a message that could not be handled (its database
    down) goes back to its queue after a pause, so a broken dependency is no hot loop."""

    def __init__(self, pause_seconds: float) -> None:
        self.pause_seconds = pause_seconds

    async def __call__(self, ctx: MessageContext, call_next: Next) -> None:
        try:
            await call_next(ctx)
        except Exception as exc:
            log.warning(
                "could not handle the message; it goes back to the queue",
                queue=ctx.queue,
                error=repr(exc)[:500],
            )
            await asyncio.sleep(self.pause_seconds)
            ctx.settled, ctx.outcome = REQUEUED, "error"

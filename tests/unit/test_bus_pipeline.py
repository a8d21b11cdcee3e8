"""The consumer pipeline's steps, each on its own (no broker): parse, log context, metrics,
failure policy, and how they chain."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import structlog

from shared.bus import H_CORRELATION, H_EVENT, Delivery, InboundMessage
from shared.bus.message import (
    ACKED,
    DEAD_LETTERED,
    REQUEUED,
    RETRIED,
    MessageContext,
    correlation_id,
)
from shared.bus.middleware import (
    Advisory,
    CountOutcomes,
    DeadLetterMalformed,
    FailurePolicy,
    LogContext,
    Parse,
    RequeueAfterPause,
    TimeHandler,
    UnhandledEventType,
    chain,
    job_id_of,
)
from shared.errors import JobGone, PermanentError
from shared.events import DocumentUploaded, Event, JobFailed, PageExtracted
from shared.topology import EXTRACTOR, ConsumerGroup

DELAYS = (1000, 10000, 60000)


class RecordingTransport:
    """A Transport that only records what the failure policy asked of it."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.retries: list[tuple[str, int, str, int]] = []
        self.dead_letters: list[tuple[str, str, str, int]] = []

    async def publish(self, event: Event, **_: Any) -> None:
        self.published.append(event)

    async def retry(
        self, message: InboundMessage, group: ConsumerGroup, attempt: int, error: str, delay: int
    ) -> None:
        self.retries.append((group.name, attempt, error, delay))

    async def dead_letter(
        self, message: InboundMessage, group: ConsumerGroup, reason: str, error: str, attempt: int
    ) -> None:
        self.dead_letters.append((group.name, reason, error, attempt))


def message(
    event_type: str, body: bytes | dict[str, Any], *, attempt: int | None = None, **kw: Any
) -> InboundMessage:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers: dict[str, Any] = {H_EVENT: event_type}
    if attempt is not None:
        headers["x-attempt"] = attempt
    return InboundMessage(raw, headers, event_type, **kw)


def uploaded(job_id: uuid.UUID | None = None) -> DocumentUploaded:
    return DocumentUploaded(job_id=job_id or uuid.uuid4(), document_uri="blob://sha256/" + "a" * 64)


def parsed_context(event: Event, *, attempt: int = 0) -> MessageContext:
    ctx = MessageContext(
        message(event.routing_key, event.model_dump_json().encode(), attempt=attempt), "extractor"
    )
    ctx.event = event
    return ctx


async def never_called(ctx: MessageContext) -> None:
    raise AssertionError("the pipeline should have stopped before this step")


# --- chain ---------------------------------------------------------------------------------


async def test_chain_runs_the_steps_outermost_first_then_the_endpoint() -> None:
    order: list[str] = []

    class Step:
        def __init__(self, name: str) -> None:
            self.name = name

        async def __call__(self, ctx: MessageContext, call_next: Any) -> None:
            order.append(f"{self.name}>")
            await call_next(ctx)
            order.append(f"<{self.name}")

    async def endpoint(ctx: MessageContext) -> None:
        order.append("handler")

    pipeline = chain([Step("a"), Step("b")], endpoint)
    await pipeline(MessageContext(message("x", b"{}"), "q"))
    assert order == ["a>", "b>", "handler", "<b", "<a"]


# --- metrics -------------------------------------------------------------------------------


async def test_count_outcomes_reports_received_then_the_settlement() -> None:
    seen: list[tuple[str, Any]] = []

    def broken_hook(name: str, value: Any) -> None:
        raise RuntimeError("a metrics backend that fails")

    hooks = [broken_hook, lambda name, value: seen.append((name, value))]

    async def retried(ctx: MessageContext) -> None:
        ctx.settled = RETRIED

    await CountOutcomes(hooks)(MessageContext(message("x", b"{}"), "ocr"), retried)
    assert seen == [("ocr", "received"), ("ocr", RETRIED)]


async def test_time_handler_reports_even_when_the_handler_fails() -> None:
    seen: list[tuple[str, float]] = []

    async def failing(ctx: MessageContext) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        await TimeHandler([lambda n, s: seen.append((n, s))])(
            MessageContext(message("x", b"{}"), "ocr"), failing
        )
    ((name, seconds),) = seen
    assert name == "ocr" and 0 <= seconds < 1


# --- parse ---------------------------------------------------------------------------------


async def test_parse_gives_the_handler_registered_for_the_event_type() -> None:
    async def on_page(event: PageExtracted, delivery: Delivery) -> None:
        pass

    async def on_upload(event: DocumentUploaded, delivery: Delivery) -> None:
        pass

    handlers: dict[str, Any] = {
        "page.extracted": (PageExtracted, on_page),
        "document.uploaded": (DocumentUploaded, on_upload),
    }
    page = PageExtracted(job_id=uuid.uuid4(), page=2, text="hello")
    # The routing key carries a suffix consumers bind on; the header names the type.
    ctx = MessageContext(
        InboundMessage(page.model_dump_json().encode(), {}, "page.extracted.chunks"), "analyzer"
    )
    reached: list[MessageContext] = []

    async def record(c: MessageContext) -> None:
        reached.append(c)

    await Parse(handlers, never_called_malformed)(ctx, record)
    assert reached == [ctx] and ctx.event == page and ctx.handler is on_page


async def never_called_malformed(ctx: MessageContext, exc: Exception) -> None:
    raise AssertionError(f"unexpectedly malformed: {exc!r}")


@pytest.mark.parametrize(
    ("event_type", "body", "error"),
    [
        ("document.uploaded", b"not json", "ValidationError"),
        ("document.uploaded", {"job_id": "x", "document_uri": "y"}, "ValidationError"),
        ("page.extracted", {"job_id": str(uuid.uuid4()), "page": 1}, "UnhandledEventType"),
        ("no.such.event", {}, "UnhandledEventType"),
    ],
)
async def test_parse_hands_what_it_cannot_read_to_the_malformed_policy(
    event_type: str, body: Any, error: str
) -> None:
    failures: list[Exception] = []

    async def on_malformed(ctx: MessageContext, exc: Exception) -> None:
        failures.append(exc)

    async def handler(event: DocumentUploaded, delivery: Delivery) -> None:
        pass

    handlers: dict[str, Any] = {"document.uploaded": (DocumentUploaded, handler)}
    await Parse(handlers, on_malformed)(
        MessageContext(message(event_type, body), "extractor"), never_called
    )
    assert [type(f).__name__ for f in failures] == [error]


def test_job_id_is_read_leniently_from_what_does_not_parse() -> None:
    job = uuid.uuid4()
    assert job_id_of(json.dumps({"job_id": str(job), "junk": 1}).encode()) == job
    assert job_id_of(b"not json") is None
    assert job_id_of(b'["a list"]') is None
    assert job_id_of(b'{"job_id": "not-a-uuid"}') is None
    assert job_id_of(b'{"job_id": 5}') is None


async def test_a_malformed_message_naming_a_job_fails_that_job_with_a_sentence() -> None:
    transport = RecordingTransport()
    job = uuid.uuid4()
    body = {"job_id": str(job), "password": "s3cret", "bogus": 1}
    ctx = MessageContext(message("document.uploaded", body), "extractor")
    handlers: dict[str, Any] = {"document.uploaded": (DocumentUploaded, never_called)}
    await Parse(handlers, DeadLetterMalformed(transport, EXTRACTOR))(ctx, never_called)
    ((group, reason, error, attempt),) = transport.dead_letters
    assert (group, reason, attempt) == ("extractor", "malformed", 0)
    assert error.startswith("ValidationError")
    # pydantic's own str() quotes the input; what is logged and stored names fields only.
    assert "s3cret" not in error
    (failed,) = transport.published
    assert isinstance(failed, JobFailed) and failed.job_id == job and failed.stage == "extractor"
    assert failed.reason.startswith("The message for this job could not be read: ")
    assert "document_uri: Field required" in failed.reason
    assert "bogus: Extra inputs are not permitted" in failed.reason
    assert "s3cret" not in failed.reason
    assert ctx.settled == DEAD_LETTERED


async def test_a_malformed_message_without_a_job_is_only_dead_lettered() -> None:
    transport = RecordingTransport()
    ctx = MessageContext(message("document.uploaded", b"\x00garbage"), "extractor")
    await DeadLetterMalformed(transport, EXTRACTOR)(ctx, ValueError("unreadable"))
    assert len(transport.dead_letters) == 1 and transport.published == []


async def test_an_unreadable_job_failed_is_not_answered_with_another() -> None:
    transport = RecordingTransport()
    body = {"job_id": str(uuid.uuid4()), "stage": "x"}  # no reason: malformed
    ctx = MessageContext(message("job.failed", body), "progress")
    await DeadLetterMalformed(transport, EXTRACTOR)(ctx, ValueError("no reason"))
    assert len(transport.dead_letters) == 1 and transport.published == []


# --- log context ---------------------------------------------------------------------------


async def test_log_context_binds_the_job_and_sets_the_correlation_id_for_the_handler() -> None:
    event = uploaded()
    ctx = parsed_context(event)
    ctx.message.headers[H_CORRELATION] = "req-42"  # type: ignore[index]
    seen: dict[str, Any] = {}

    async def handler(c: MessageContext) -> None:
        seen["cid"] = correlation_id.get()
        seen.update(structlog.contextvars.get_contextvars())

    await LogContext()(ctx, handler)
    assert seen["cid"] == "req-42" and seen["correlation_id"] == "req-42"
    assert seen["job_id"] == str(event.job_id) and seen["queue"] == "extractor"
    assert correlation_id.get() is None  # reset after the message


async def test_log_context_falls_back_to_the_job_id_as_correlation_id() -> None:
    event = uploaded()
    seen: list[str | None] = []

    async def handler(c: MessageContext) -> None:
        seen.append(correlation_id.get())

    await LogContext()(parsed_context(event), handler)
    assert seen == [str(event.job_id)]


# --- failure policy ------------------------------------------------------------------------


def policy(transport: RecordingTransport, *, down: bool | None = False) -> FailurePolicy:
    async def probe() -> bool:
        if down is None:
            raise ConnectionError("the probe itself failed")
        return down

    return FailurePolicy(transport, EXTRACTOR, DELAYS, probe)


def raising(exc: Exception) -> Any:
    async def handler(ctx: MessageContext) -> None:
        raise exc

    return handler


async def test_a_returning_handler_is_acked() -> None:
    transport = RecordingTransport()
    ctx = parsed_context(uploaded())

    async def ok(c: MessageContext) -> None:
        pass

    await policy(transport)(ctx, ok)
    assert (ctx.settled, ctx.outcome) == (ACKED, "ok")
    assert not (transport.published or transport.retries or transport.dead_letters)


async def test_job_gone_drops_the_message_quietly() -> None:
    transport = RecordingTransport()
    ctx = parsed_context(uploaded())
    await policy(transport)(ctx, raising(JobGone("cancelled")))
    assert (ctx.settled, ctx.outcome) == (ACKED, "dropped")
    assert not (transport.published or transport.retries or transport.dead_letters)


async def test_a_permanent_error_fails_the_job_with_its_reason() -> None:
    transport = RecordingTransport()
    event = uploaded()
    ctx = parsed_context(event)
    await policy(transport)(ctx, raising(PermanentError("The PDF is encrypted.")))
    assert (ctx.settled, ctx.outcome) == (ACKED, "job_failed")
    (failed,) = transport.published
    assert isinstance(failed, JobFailed)
    assert (failed.job_id, failed.stage, failed.reason) == (
        event.job_id,
        "extractor",
        "The PDF is encrypted.",
    )
    assert transport.retries == []


@pytest.mark.parametrize("attempt", [0, 1, 2])
async def test_other_errors_climb_the_retry_ladder(attempt: int) -> None:
    transport = RecordingTransport()
    ctx = parsed_context(uploaded(), attempt=attempt)
    await policy(transport)(ctx, raising(ConnectionError("reset")))
    assert ctx.settled == RETRIED and transport.published == []
    assert transport.retries == [
        ("extractor", attempt + 1, "ConnectionError: reset", DELAYS[attempt])
    ]


async def test_after_the_last_retry_the_message_is_dead_lettered_and_the_job_fails() -> None:
    transport = RecordingTransport()
    event = uploaded()
    ctx = parsed_context(event, attempt=len(DELAYS))
    await policy(transport)(ctx, raising(ConnectionError("reset")))
    assert ctx.settled == DEAD_LETTERED and transport.retries == []
    assert transport.dead_letters == [
        ("extractor", "retries-exhausted", "ConnectionError: reset", 3)
    ]
    (failed,) = transport.published
    assert isinstance(failed, JobFailed) and failed.job_id == event.job_id
    assert "kept failing after 3 retries (ConnectionError)" in failed.reason
    assert "dead-letter queue" in failed.reason


async def test_a_job_failed_that_keeps_failing_is_not_answered_with_another() -> None:
    # Another job.failed (same message id) would fail the same way: round and round for ever.
    transport = RecordingTransport()
    event = JobFailed(job_id=uuid.uuid4(), stage="ocr", reason="The image is empty.")
    ctx = parsed_context(event, attempt=len(DELAYS))
    await policy(transport)(ctx, raising(ConnectionError("reset")))
    assert ctx.settled == DEAD_LETTERED and len(transport.dead_letters) == 1
    assert transport.published == []
    ctx = parsed_context(event)
    await policy(transport)(ctx, raising(PermanentError("no such job")))
    assert ctx.outcome == "job_failed" and transport.published == []


async def test_while_a_dependency_is_down_a_retry_uses_no_attempt() -> None:
    transport = RecordingTransport()
    ctx = parsed_context(uploaded(), attempt=len(DELAYS))  # would be dead-lettered otherwise
    await policy(transport, down=True)(ctx, raising(ConnectionError("db gone")))
    assert ctx.settled == RETRIED and transport.dead_letters == []
    assert transport.retries == [("extractor", len(DELAYS), "ConnectionError: db gone", 1000)]


async def test_a_failing_probe_proves_nothing_and_the_attempt_counts() -> None:
    transport = RecordingTransport()
    ctx = parsed_context(uploaded(), attempt=0)
    await policy(transport, down=None)(ctx, raising(ConnectionError("reset")))
    assert transport.retries == [("extractor", 1, "ConnectionError: reset", 1000)]


async def test_without_retry_delays_a_failure_is_dead_lettered_at_once() -> None:
    transport = RecordingTransport()

    async def down() -> bool:
        return True

    ctx = parsed_context(uploaded())
    await FailurePolicy(transport, EXTRACTOR, (), down)(ctx, raising(RuntimeError("bug")))
    assert ctx.settled == DEAD_LETTERED and transport.retries == []


# --- the other policies --------------------------------------------------------------------


async def test_advisory_swallows_a_broadcast_handlers_failure() -> None:
    ctx = parsed_context(uploaded())
    await Advisory()(ctx, raising(RuntimeError("no such process")))
    assert (ctx.settled, ctx.outcome) == (ACKED, "error")


async def test_requeue_after_pause_puts_the_message_back() -> None:
    ctx = MessageContext(message("x", b"{}"), "dp.extractor.dlq")
    await RequeueAfterPause(0)(ctx, raising(ConnectionError("database down")))
    assert ctx.settled == REQUEUED


def test_unhandled_event_type_is_a_key_error() -> None:
    # Callers that treated an unknown routing key as KeyError keep working.
    assert issubclass(UnhandledEventType, KeyError)

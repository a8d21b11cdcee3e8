"""AckCoalescer on the real broker: one basic.ack(multiple) covers only the settled prefix of
a channel's deliveries, so a message still being handled is never acked by a later one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from shared.bus import AckCoalescer
from shared.settings import Settings

pytestmark = pytest.mark.integration

COUNT = 6


@pytest.fixture
async def scratch_queue(
    test_settings: Settings, rabbit_available: None
) -> AsyncIterator[tuple[aio_pika.abc.AbstractRobustConnection, str]]:
    conn = await aio_pika.connect_robust(test_settings.amqp_url)
    name = f"{test_settings.bus_prefix}.acks.{uuid.uuid4().hex[:8]}"
    channel = await conn.channel(publisher_confirms=True)
    await channel.declare_queue(name, durable=True)
    for i in range(COUNT):
        await channel.default_exchange.publish(
            aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=name,
        )
    try:
        yield conn, name
    finally:
        await channel.queue_delete(name)
        await conn.close()


async def receive_all(
    conn: aio_pika.abc.AbstractRobustConnection, name: str, acks: AckCoalescer
) -> tuple[aio_pika.abc.AbstractChannel, list[aio_pika.abc.AbstractIncomingMessage]]:
    channel = await conn.channel()
    await channel.set_qos(prefetch_count=COUNT * 2)
    queue = await channel.get_queue(name)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        acks.delivered(msg)
        got.append(msg)

    await queue.consume(on_message)
    async with asyncio.timeout(10):
        while len(got) < COUNT:
            await asyncio.sleep(0.01)
    return channel, got


async def ready_after_close(
    conn: aio_pika.abc.AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, name: str
) -> int:
    """Close the consuming channel (unacked messages go back to ready) and count them."""
    await asyncio.sleep(0.2)  # let the coalesced ack reach the broker
    await channel.close()
    probe = await conn.channel()
    try:
        async with asyncio.timeout(10):
            while True:  # the broker requeues asynchronously after the close
                queue = await probe.declare_queue(name, passive=True)
                count = queue.declaration_result.message_count
                await asyncio.sleep(0.1)
                again = await probe.declare_queue(name, passive=True)
                if again.declaration_result.message_count == count:
                    return int(count or 0)
    finally:
        await probe.close()


async def test_only_the_settled_prefix_is_acked(
    scratch_queue: tuple[aio_pika.abc.AbstractRobustConnection, str],
) -> None:
    conn, name = scratch_queue
    acks = AckCoalescer()
    channel, got = await receive_all(conn, name, acks)
    assert [m.body for m in got] == [str(i).encode() for i in range(COUNT)]
    # 0 and 1 settled, 2 still being handled, the rest settled: only 0 and 1 may be acked.
    for i in (5, 1, 3, 0, 4):
        acks.settle(got[i])
    await asyncio.sleep(0.05)
    assert acks.pending == COUNT - 2
    assert await ready_after_close(conn, channel, name) == COUNT - 2


async def test_everything_settled_is_acked_in_one_go(
    scratch_queue: tuple[aio_pika.abc.AbstractRobustConnection, str],
) -> None:
    conn, name = scratch_queue
    acks = AckCoalescer()
    channel, got = await receive_all(conn, name, acks)
    for msg in reversed(got):  # settled in reverse: nothing goes out until the first one
        acks.settle(msg)
    await asyncio.sleep(0.05)
    assert acks.pending == 0
    assert await ready_after_close(conn, channel, name) == 0


async def test_settling_after_the_channel_closed_is_dropped(
    scratch_queue: tuple[aio_pika.abc.AbstractRobustConnection, str],
) -> None:
    conn, name = scratch_queue
    acks = AckCoalescer()
    channel, got = await receive_all(conn, name, acks)
    assert await ready_after_close(conn, channel, name) == COUNT
    for msg in got:  # the broker will redeliver these: settling them is a no-op, not an error
        acks.settle(msg)
    await asyncio.sleep(0.05)
    # A new channel starts over.
    channel, again = await receive_all(conn, name, acks)
    assert acks.pending == COUNT
    for msg in again:
        acks.settle(msg)
    assert await ready_after_close(conn, channel, name) == 0

"""Helpers for tests that use the real servers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition") -> None:
    """Wait until `check()` holds, polling; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"{what} not met within {timeout}s"
        await asyncio.sleep(0.2)


async def read_topic(bootstrap: str, topic: str, keys: set[str] | None = None) -> list[Any]:
    """Every record now on the topic (whose key is in `keys`, when given), in order per partition."""
    # A fresh group that reads from the start; a group-less consumer can raise CancelledError
    # from stop() (aio-libs/aiokafka#647).
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        end: dict[TopicPartition, int] = {}
        while not end or [tp for tp, offset in end.items() if await consumer.position(tp) < offset]:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                out += [m for m in msgs if keys is None or (m.key and m.key.decode() in keys)]
            if not end and consumer.assignment():
                end = await consumer.end_offsets(list(consumer.assignment()))
        return sorted(out, key=lambda m: (m.partition, m.offset))
    finally:
        await consumer.stop()


def values(msgs: list[Any]) -> list[Any]:
    return [json.loads(m.value) for m in msgs]

"""Helpers for tests that use the real servers."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from shared.rules import DEFAULT_RULES_PATH, default_rules

# The default ladder's rank of each level id: tests state levels by rank where that reads best.
RANK = {level.id: level.rank for level in default_rules().levels}


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


def ce_type(msg: Any) -> str:
    """A record's CloudEvents type (its `ce_type` header); "" for one without (a tombstone)."""
    return bytes(dict(msg.headers).get("ce_type", b"")).decode()


def of_type(msgs: list[Any], prefix: str) -> list[Any]:
    """The payloads of the records whose CloudEvents type starts with `prefix`: the member-keyed
    topic carries level changes ("community.level."), badge and programme events."""
    return [json.loads(m.value) for m in msgs if m.value is not None and ce_type(m).startswith(prefix)]


def level_changes(msgs: list[Any]) -> list[Any]:
    return of_type(msgs, "community.level.")


@asynccontextmanager
async def in_process(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that calls it in-process."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://app") as client,
    ):
        yield client


def own_topics(settings_kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    """The session's settings with topics and a Redis prefix of their own, so that what a test
    publishes never reaches the session's scorers."""
    return {
        **settings_kwargs,
        **{key: f"{settings_kwargs[key]}-{name}" for key in ("topic_activity", "topic_level_changes", "topic_dlq")},
        "redis_prefix": f"{settings_kwargs['redis_prefix']}{name}:",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rules_file(
    path: Path,
    version: str,
    points: dict[str, int],
    caps: dict[str, int],
    ladder: list[tuple[int, str, int, int, int]],
) -> Path:
    """The default rules file with other points, caps and ladder (as `tests.model.Model` takes
    them), under another version."""
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["version"] = version
    for metric, n in points.items():
        rules["metrics"][metric]["points"] = n
    for metric, cap in caps.items():
        rules["metrics"][metric]["daily_cap"] = cap
    for level in rules["levels"]:
        _, _, active, passive, tenure = next(row for row in ladder if row[1] == level["id"])
        level.update({k: n for k, n in (("active", active), ("passive", passive), ("tenure_days", tenure)) if n})
    path.write_text(json.dumps(rules))
    return path

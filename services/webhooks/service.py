"""The webhook dispatcher (SPEC §12): its own consumer group on level-changes, and a worker per
endpoint that POSTs what was recorded for it.

At least once, and nothing waits on an endpoint:

1. The consumer loop reads a batch of level-changes, records in PostgreSQL one pending
   delivery per record and endpoint that takes it (`webhook_deliveries`, the exact body to
   send), and only then commits the batch's offsets to Kafka. Killed before the commit, the
   batch is read again and recorded once (a delivery is unique by endpoint, partition and
   offset). It never waits on an endpoint, so neither does scoring, nor another endpoint.
2. Each enabled endpoint has a worker (`services.scorer.workers.Supervisor`) that, under a
   lease on the endpoint (one dispatcher at a time sends to it), takes each member's oldest
   pending delivery that is due and POSTs those at once, member by member in order: a
   member's next delivery is taken only once the one before it is delivered or has failed
   for good. A delivery is marked delivered only after the endpoint's 2xx, so a dispatcher
   killed mid-delivery sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from services.common import db
from services.common.failures import retry, transient
from services.common.kafka import client_options
from services.scorer.workers import Supervisor
from services.webhooks import delivery
from services.webhooks import http as dispatcher_http
from services.webhooks.metrics import (
    ATTEMPT_SECONDS,
    ATTEMPTS,
    DELIVERIES,
    DISABLED,
    PENDING,
    PENDING_AGE,
    RECORDS,
)
from services.webhooks.settings import WebhookSettings
from services.write import health
from services.write.webhooks import Endpoint, Head, Webhooks
from shared.events import iso_utc
from shared.webhooks import ERASED, wanted

log = logging.getLogger("webhooks")

BATCH = 1000
RETRY_MAX = timedelta(seconds=5)  # the longest wait for PostgreSQL or Kafka to come back


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    """A record of level-changes as endpoints get it."""

    member_id: str
    event_id: str
    event_type: str
    cause: str | None
    body: bytes  # {"type", "timestamp", "data"}: the Standard Webhooks payload, data the record's value


def event_of(record: ConsumerRecord[bytes, bytes]) -> Event:
    """The event a record carries (ValueError if it carries none). Its type is the record's
    `ce_type`, whatever it is, so a type added later flows through unchanged. An erased member's
    tombstone (no value) becomes a `community.member.erased` event with the member's id, its
    id made from the record's place in the topic, so a redelivery has the same id."""
    if record.key is None:
        raise ValueError("a record without a key (the member)")
    member_id = record.key.decode()
    headers = {name: value.decode() for name, value in record.headers}
    if record.value is None:
        at = iso_utc(datetime.fromtimestamp(record.timestamp / 1000, UTC))
        event_id = f"erased-{record.partition}-{record.offset}"
        return Event(member_id, event_id, ERASED, None, _envelope(ERASED, at, orjson.dumps({"member_id": member_id})))
    change = orjson.loads(record.value)
    if not isinstance(change, dict):
        raise ValueError("a value that is not a JSON object")
    event_type = headers.get("ce_type") or f"community.level.{change['direction']}"
    event_id = headers.get("ce_id") or str(change["event_id"])
    at = headers.get("ce_time") or str(change.get("emitted_at"))
    cause = change.get("cause")
    kind = cause.get("kind") if isinstance(cause, dict) else None
    return Event(member_id, event_id, event_type, kind, _envelope(event_type, at, record.value))


def _envelope(event_type: str, at: str, data: bytes) -> bytes:
    """The payload Standard Webhooks recommends, the event's own JSON as `data`, byte for byte."""
    return b'{"type":' + orjson.dumps(event_type) + b',"timestamp":' + orjson.dumps(at) + b',"data":' + data + b"}"


class Dispatcher:
    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = s = settings
        self.engine = db.engine(s.database_url, f"webhooks-{s.instance}", pool_size=10)
        self.webhooks = Webhooks(self.engine, s.fernet())
        self.consumer = AIOKafkaConsumer(
            s.topic_level_changes,
            bootstrap_servers=s.kafka_bootstrap,
            **client_options(s),
            group_id=s.webhook_group_id,
            client_id=f"webhooks-{s.instance}",
            enable_auto_commit=False,  # committed once the batch's deliveries are recorded
            # A group's first start reads the topic from its start: endpoints get only what is
            # read after they are registered, so nothing older goes out.
            auto_offset_reset="earliest",
        )
        self.client = delivery.client(s.webhook_allow_private, s.webhook_timeout)
        self.stopping = asyncio.Event()
        self.workers = Supervisor(self.stopping, s.webhook_timeout * 6)
        self.wakes: dict[int, asyncio.Event] = {}
        self.consumed_at = time.monotonic()

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        await self._retry("start the consumer", self.consumer.start)
        log.info("webhook dispatcher %s consuming %s", s.instance, s.topic_level_changes)
        server = dispatcher_http.server(self, s.host, s.port)
        serving = asyncio.create_task(server.serve())
        self.workers.start("endpoints", s.webhook_poll, self.endpoints_once)
        self.workers.start("prune", s.webhook_keep / 168, self.prune_once)
        self.workers.start("health", s.webhook_poll * 5, self.measure)
        try:
            await self._consume()
        except Exception as exc:
            if not (self.stopping.is_set() and transient(exc)):
                raise
        finally:
            server.should_exit = True
            await self.workers.stop()
            await asyncio.gather(serving, return_exceptions=True)
            await self.consumer.stop()
            await self.client.aclose()
            with contextlib.suppress(Exception):
                await self.webhooks.release(s.instance)
            await self.engine.dispose()
            log.info("webhook dispatcher %s stopped", s.instance)

    def stop(self) -> None:
        self.stopping.set()

    async def _retry(self, what: str, step: Callable[[], Awaitable[Any]]) -> Any:
        return await retry(what, step, self.stopping, RETRY_MAX)

    async def _consume(self) -> None:
        """Read a batch, record its deliveries, then commit its offsets."""
        while not self.stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=500, max_records=BATCH)
            self.consumed_at = time.monotonic()
            if not batch:
                continue
            records = [record for part in batch.values() for record in part]
            deliveries = await self._retry("record deliveries", partial(self._record, records))
            await self._retry("commit offsets", self.consumer.commit)
            for endpoint_id in {d["endpoint_id"] for d in deliveries}:
                if wake := self.wakes.get(endpoint_id):
                    wake.set()

    async def _record(self, records: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
        subscribers = await self.webhooks.subscribers()
        now, deliveries = utcnow(), []
        for record in records:
            try:
                event = event_of(record)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                RECORDS.labels("undecodable").inc()
                log.warning("record %s:%s not sent to endpoints: %s", record.partition, record.offset, exc)
                continue
            to = [e.id for e in subscribers if wanted(e.events, e.exclude_causes, event.event_type, event.cause)]
            RECORDS.labels("recorded" if to else "unwanted").inc()
            deliveries += [
                {
                    "endpoint_id": endpoint_id,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "member_id": event.member_id,
                    "event_id": event.event_id,
                    "event_type": event.event_type,
                    "body": event.body,
                    "at": now,
                }
                for endpoint_id in to
            ]
        await self.webhooks.record(deliveries)
        DELIVERIES.inc(len(deliveries))
        return deliveries

    # -- the endpoints' workers ---------------------------------------------------------

    async def endpoints_once(self) -> int:
        """A worker for each enabled endpoint; none for one disabled or removed."""
        enabled = {row.id for row in await self.webhooks.subscribers()}
        for endpoint_id in enabled - set(self.wakes):
            self.wakes[endpoint_id] = asyncio.Event()
            self.workers.start(
                f"endpoint-{endpoint_id}",
                self.settings.webhook_poll,
                partial(self.endpoint_once, endpoint_id),
                self.wakes[endpoint_id],
            )
        for endpoint_id in set(self.wakes) - enabled:
            del self.wakes[endpoint_id]
            worker = self.workers.workers.pop(f"endpoint-{endpoint_id}")
            if worker.task:
                worker.task.cancel()
        return 0

    async def endpoint_once(self, endpoint_id: int) -> int:
        """One round for an endpoint: each member's due head, delivered at once; returns how many."""
        s = self.settings
        endpoint = await self.webhooks.lease(endpoint_id, s.instance, s.webhook_lease, utcnow())
        if endpoint is None:  # disabled, removed, or another dispatcher's
            return 0
        heads, _ = await self.webhooks.heads(endpoint_id, utcnow(), s.webhook_concurrency)
        await asyncio.gather(*(self.deliver(endpoint, head) for head in heads))
        return len(heads)

    async def deliver(self, endpoint: Endpoint, head: Head) -> str:
        """POST a delivery once and record the attempt; returns its outcome."""
        s = self.settings
        at = utcnow()
        headers = delivery.signed_headers(endpoint.secrets, head.event_id, at, head.body)
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        wait = None
        try:
            async with self.client.stream("POST", endpoint.url, content=head.body, headers=headers) as response:
                status = response.status_code
                wait = delivery.retry_after(response, at) if status in (429, 503) else None
            outcome = delivery.outcome(status)
            if outcome != "delivered":
                error = f"HTTP {status}" + (" (a redirect: not followed)" if 300 <= status < 400 else "")
        except httpx.HTTPError as exc:
            if isinstance(exc.__cause__, delivery.Refused):
                outcome, error = "failed", f"refused: {exc.__cause__}"
            else:
                outcome = "retry"
                error = "timed out" if isinstance(exc, httpx.TimeoutException) else f"{exc.__class__.__name__}: {exc}"
        duration = time.monotonic() - started
        ATTEMPTS.labels(outcome).inc()
        ATTEMPT_SECONDS.observe(duration)
        next_at = None
        if outcome == "retry":
            next_at = utcnow() + delivery.next_wait(head.attempts + 1, wait, s.webhook_retry_first, s.webhook_retry_max)
        disabled = await self._retry(
            "record an attempt",
            lambda: self.webhooks.settle(
                endpoint.id, head, at, status, error, outcome, int(duration * 1000), next_at, s.webhook_disable_after
            ),
        )
        if disabled:
            DISABLED.inc()
            log.warning(
                "endpoint %s disabled: failing for %s; `cl webhook enable` sends again",
                endpoint.id,
                s.webhook_disable_after,
            )
        return outcome

    async def prune_once(self) -> int:
        await self.webhooks.prune(utcnow() - self.settings.webhook_keep)
        return 0

    async def measure(self) -> int:
        count, oldest = await self.webhooks.pending()
        PENDING.set(count)
        PENDING_AGE.set((utcnow() - oldest).total_seconds() if oldest else 0)
        return 0

    # -- health (`http.Health`) ---------------------------------------------------------

    async def ping_postgres(self) -> None:
        await health.ping(self.engine)

    async def ping_kafka(self) -> None:
        await self.consumer.topics()

    def parts(self) -> list[str]:
        return ["consumer", *self.workers.workers]

    def problems(self) -> dict[str, str]:
        out = {}
        if time.monotonic() - self.consumed_at > 60 and not self.stopping.is_set():
            out["consumer"] = f"stuck: no fetch for {time.monotonic() - self.consumed_at:.0f} s"
        return out | self.workers.problems()


async def main(settings: WebhookSettings | None = None) -> None:
    dispatcher = Dispatcher(settings or WebhookSettings())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, dispatcher.stop)
    await dispatcher.run()

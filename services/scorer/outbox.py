"""Level changes on the wire (SPEC §6): the relay that publishes the outbox (`level_changes`
rows not yet sent, `services.write.outbox`) to Kafka in order, as CloudEvents."""

from __future__ import annotations

import asyncio
from datetime import datetime

import orjson
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings.kafka import KafkaMessage, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer.failpoints import Failpoints
from services.scorer.metrics import PUBLISHED
from services.write.outbox import Outbox

LEASE_S = 30.0
PAGE = 500


def cloud_event(body: bytes, source: str, event_type: str | None = None) -> KafkaMessage:
    """A stored member event as a Kafka record in CloudEvents 1.0 binary mode (SPEC §6): the
    payload unchanged as the value, its attributes as `ce_*` headers read from the payload, so
    a resend carries the same record. `source` is the scorer's configured `ce_source`;
    `event_type` is the stored type of an event other than a level change."""
    change = orjson.loads(body)
    event = CloudEvent(
        {
            "specversion": "1.0",
            "id": change["event_id"],
            "source": source,
            "type": event_type or f"community.level.{change['direction']}",
            "time": datetime.fromisoformat(change["emitted_at"]),
            "subject": change["member_id"],
            "datacontenttype": "application/json",
        },
        body,
    )
    return to_binary(event, JSONFormat(), key_mapper=lambda _: change["member_id"].encode())


class Relay:
    """Publishes the oldest unsent level changes; one relay at a time holds the lease, so a
    member's changes reach Kafka in seq order."""

    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        topic: str,
        source: str,
        owner: str,
        failpoints: Failpoints,
    ) -> None:
        self.outbox = Outbox(engine, owner)
        self.producer, self.topic, self.source, self.failpoints = producer, topic, source, failpoints
        self.wake = asyncio.Event()  # set when a commit recorded level changes

    async def once(self) -> int:
        """Publish a page; returns how many (0 when idle or another relay has the lease).

        No transaction is open while sending: the lease says who may send, and a send is
        bounded well within it."""
        rows = await self.outbox.take(LEASE_S, PAGE)
        if not rows:
            return 0
        async with asyncio.timeout(LEASE_S / 2):
            sent = []
            for _, member_id, event_type, body in rows:
                if body is None:  # an erased member's tombstone: the key, a null value, no headers
                    sent.append(await self.producer.send(self.topic, None, key=member_id.encode()))
                    continue
                record = cloud_event(body.encode(), self.source, event_type)
                headers = list(record.headers.items())
                sent.append(await self.producer.send(self.topic, record.value, key=record.key, headers=headers))
            await asyncio.gather(*sent)
        self.failpoints.hit("relay_after_send")
        await self.outbox.mark_sent([row.id for row in rows])
        PUBLISHED.inc(len(rows))
        return len(rows)

    async def release(self) -> None:
        await self.outbox.release()

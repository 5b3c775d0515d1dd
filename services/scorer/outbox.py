"""Level changes on the wire (SPEC §6): the payload recorded with each change, and the relay
that publishes the outbox (`level_changes` rows not yet sent) to Kafka in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings.kafka import KafkaMessage, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scorer import repository as repo
from services.scorer.failpoints import Failpoints
from services.scorer.metrics import PUBLISHED
from shared.events import iso_utc
from shared.rules import Rules
from shared.scoring import LevelChange

LEASE_S = 30.0
PAGE = 500


def payload(change: LevelChange, rules: Rules, emitted_at: datetime) -> bytes:
    """The level-change event of SPEC §6, as published (and stored, so a resend is identical)."""
    cause: dict[str, Any] = {"kind": change.cause_kind}
    if change.cause_event_id is not None:
        cause |= {"event_id": change.cause_event_id, "type": change.cause_type}
    if change.cause_reason is not None:
        cause["reason"] = change.cause_reason
    return orjson.dumps(
        {
            "event_id": change.event_id,
            "member_id": change.member_id,
            "seq": change.seq,
            "direction": "promoted" if change.promoted else "demoted",
            "from_level": change.from_level and change.from_level.ref(),
            "to_level": change.to_level.ref(),
            "active_score": change.active_score,
            "passive_score": change.passive_score,
            "cause": cause,
            "rules_version": rules.version,
            "occurred_at": iso_utc(change.occurred_at),
            "emitted_at": iso_utc(emitted_at),
        }
    )


def cloud_event(body: bytes, source: str) -> KafkaMessage:
    """A stored level change as a Kafka record in CloudEvents 1.0 binary mode (SPEC §6): the
    payload unchanged as the value, its attributes as `ce_*` headers read from the payload, so
    a resend carries the same record. `source` is the scorer's configured `ce_source`."""
    change = orjson.loads(body)
    event = CloudEvent(
        {
            "specversion": "1.0",
            "id": change["event_id"],
            "source": source,
            "type": f"community.level.{change['direction']}",
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
        self.engine, self.producer, self.topic, self.source = engine, producer, topic, source
        self.owner, self.failpoints = owner, failpoints
        self.wake = asyncio.Event()  # set when a commit recorded level changes

    async def once(self) -> int:
        """Publish a page; returns how many (0 when idle or another relay has the lease).

        No transaction is open while sending: the lease says who may send, and a send is
        bounded well within it."""
        async with self.engine.begin() as conn:
            if not await repo.take_relay_lease(conn, self.owner, LEASE_S):
                return 0
            rows = await repo.unsent_level_changes(conn, PAGE)
        if not rows:
            return 0
        async with asyncio.timeout(LEASE_S / 2):
            sent = []
            for _, member_id, body in rows:
                if body is None:  # an erased member's tombstone: the key, a null value, no headers
                    sent.append(await self.producer.send(self.topic, None, key=member_id.encode()))
                    continue
                record = cloud_event(body.encode(), self.source)
                headers = list(record.headers.items())
                sent.append(await self.producer.send(self.topic, record.value, key=record.key, headers=headers))
            await asyncio.gather(*sent)
        self.failpoints.hit("relay_after_send")
        async with self.engine.begin() as conn:
            await repo.mark_sent(conn, [row_id for row_id, _, _ in rows], datetime.now(UTC))
        PUBLISHED.inc(len(rows))
        return len(rows)

    async def release(self) -> None:
        async with self.engine.begin() as conn:
            await repo.release_relay_lease(conn, self.owner)

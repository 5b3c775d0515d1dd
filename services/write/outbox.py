"""The outbox: level changes are recorded with the transaction that makes them (as the exact
bytes published, SPEC §6), and the relay takes them from here in order, under a lease."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from services.write.sql import outbox
from services.write.sql.outbox import Unsent
from shared.events import iso_utc
from shared.rules import Rules
from shared.scoring import LevelChange


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


class Outbox:
    """The relay's transactions: each short, so no transaction is open while it sends."""

    def __init__(self, engine: AsyncEngine, owner: str) -> None:
        self.engine, self.owner = engine, owner

    async def take(self, lease_s: float, limit: int) -> list[Unsent]:
        """The oldest unsent level changes, if this relay holds (or now takes) the lease; else none."""
        async with self.engine.begin() as conn:
            if not await outbox.take_relay_lease(conn, self.owner, lease_s):
                return []
            return await outbox.unsent_level_changes(conn, limit)

    async def mark_sent(self, ids: list[int]) -> None:
        async with self.engine.begin() as conn:
            await outbox.mark_sent(conn, ids, datetime.now(UTC))

    async def release(self) -> None:
        async with self.engine.begin() as conn:
            await outbox.release_relay_lease(conn, self.owner)

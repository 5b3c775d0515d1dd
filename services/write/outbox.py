"""The outbox: level changes are recorded with the transaction that makes them (as the exact
bytes published, SPEC §6), and the relay takes them from here in order, under a lease."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from services.write.sql import outbox
from services.write.sql.outbox import Unsent
from shared.rules import Rules
from shared.scoring import LevelChange


def payload(change: LevelChange, rules: Rules, emitted_at: datetime) -> bytes:
    """The level-change event of SPEC §6 as published, and stored, so a resend is identical."""
    return orjson.dumps(change.event(rules.version, emitted_at))


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

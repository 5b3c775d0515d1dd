"""What the scorer's health reads of PostgreSQL: whether it answers, and what waits there."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.write.sql import outbox
from services.write.sql.outbox import Backlog


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def backlog(engine: AsyncEngine) -> Backlog:
    """What waits for the relay and for Redis."""
    async with engine.connect() as conn:
        return await outbox.backlog(conn)


async def oldest_unsent_age(engine: AsyncEngine) -> float | None:
    """Seconds since the oldest level change not yet published was recorded; None: none waits."""
    async with engine.connect() as conn:
        return await outbox.oldest_unsent_age(conn)

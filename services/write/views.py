"""The Redis projection of members: the views a commit changed are written right after it,
and repaired from PostgreSQL when that did not happen (Redis down or hung, a crash between
the commit and the write, a flush of Redis, a restore of PostgreSQL).

Each commit records, in its own transaction, which members it changed (one `pending_views`
row); once their views are in Redis the row is deleted by the next commit. The repair loop
writes the members of rows left behind, so the hot path writes no per-member flag.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.failures import transient
from services.common.members import MemberCache, view_of
from services.write.rules import RulesBook
from services.write.sql import members, periods
from services.write.sql import views as repo
from services.write.sql.members import Stored
from services.write.unit_of_work import Committed
from shared.scoring import periods as shared_periods

log = logging.getLogger("scorer")

PAGE = 1000


class Views:
    def __init__(
        self, engine: AsyncEngine, redis: Redis, cache: MemberCache, book: RulesBook, pause: timedelta, grace: timedelta
    ) -> None:
        self.engine, self.redis, self.cache, self.book = engine, redis, cache, book
        self.pause = pause.total_seconds()
        self.grace = grace.total_seconds()  # a pending row this old was not written by its commit
        self.paused_until = 0.0
        self.written: set[int] = set()  # pending rows whose views Redis holds; the next commit deletes them

    def deleted(self, ids: list[int]) -> None:
        """These pending rows are gone from PostgreSQL."""
        self.written.difference_update(ids)

    async def publish(self, done: Committed) -> None:
        """Write the members' views a commit changed; after a Redis failure, leave them to the
        repair loop for a while, so a hung Redis costs one timeout now and then, not one per batch."""
        if done.pending is None or done.rules is None or time.monotonic() < self.paused_until:
            return
        now = datetime.now(UTC)
        views = [view_of(done.states[m], done.rules, v, now) for m, v in done.versions.items()]
        try:
            await self.cache.put(views, done.periods, now)
        except Exception as exc:
            if not transient(exc):
                raise
            self.paused_until = time.monotonic() + self.pause
            log.warning("member views not written to Redis, the repair loop will: %r", exc)
            return
        self.written.add(done.pending)

    async def repair_once(self) -> int:
        """Bring Redis up to PostgreSQL: after a restore of PostgreSQL, forget every view; after
        a flush (or that), rebuild them all page by page; then write the members of pending
        rows left behind."""
        async with self.engine.begin() as conn:
            # The epoch row stays locked while Redis is asked, so scorers compare in turn.
            if await self.cache.advance_epoch(await repo.next_view_epoch(conn)):
                log.warning("Redis holds views newer than PostgreSQL (was it restored?): rebuilding them all")
                await self.cache.forget_views()
        if not await self.redis.exists(self.cache.built_key):
            return await self._rebuild_page()
        written = list(self.written)
        async with self.engine.begin() as conn:
            pending = await repo.left_pending_views(conn, written, self.grace, PAGE)
            changed = sorted({m for _, ids in pending for m in ids})
            rows = await members.member_views(conn, changed)
            await self._put(conn, rows)
            await repo.drop_pending_views(conn, [row_id for row_id, _ in pending])
        self.deleted(written)
        return len(pending) if len(pending) == PAGE else 0

    async def _put(self, conn: AsyncConnection, rows: list[Stored]) -> None:
        """Write these members' views and leaderboard places as PostgreSQL has them."""
        now = datetime.now(UTC)
        ids = [row.state.member_id for row in rows]
        points = await periods.period_points(conn, ids, list(shared_periods(now.date().isoformat())))
        views = [
            view_of(state, await self.book.get(conn, state.rules_version), version, at) for state, version, at in rows
        ]
        await self.cache.put(views, points, now)

    async def _rebuild_page(self) -> int:
        """Write the next page of members (in id order) to Redis; mark Redis built after the last.

        No row is updated: the views carry their versions, so a newer one written meanwhile wins."""
        after = (await self.redis.get(self.cache.rebuild_key) or b"").decode()  # type: ignore[union-attr]
        async with self.engine.connect() as conn:
            rows = await members.views_after(conn, after, PAGE)
            await self._put(conn, rows)
        if len(rows) == PAGE:
            await self.redis.set(self.cache.rebuild_key, rows[-1][0].member_id)
            return len(rows)
        await self.redis.set(self.cache.built_key, datetime.now(UTC).isoformat())
        await self.redis.delete(self.cache.rebuild_key)
        log.info("Redis views rebuilt from PostgreSQL")
        return 0

    async def drop_written(self) -> None:
        """Delete the pending rows whose views Redis now holds (a command's, which no later
        commit of its own would delete)."""
        written = sorted(self.written)
        async with self.engine.begin() as conn:
            await repo.drop_pending_views(conn, written)
        self.deleted(written)

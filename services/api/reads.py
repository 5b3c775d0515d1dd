"""How the API reads members, their level history and the leaderboards: the JSON routes and
the pages share it.

Member views come from Redis (concurrent requests' reads coalesced) and fall back to
PostgreSQL for members Redis lacks or when it is down.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import State

from services.api import repository as repo
from services.api.answers import level_of
from services.common.members import MemberCache, Rebuilding
from shared.scoring import periods

if TYPE_CHECKING:
    from services.api.rules import RulesInForce

log = logging.getLogger("api")

Views = dict[str, dict[str, Any]]
READS = Counter("api_member_reads_total", "Member views read", ["source"])
READS_REDIS, READS_POSTGRES = READS.labels("redis"), READS.labels("postgres")
DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


class Unavailable(Exception):
    """A dependency the answer needs is down."""


async def member_views(state: State, member_ids: list[str]) -> Views:
    """Stored views of these members: Redis first, PostgreSQL for the rest."""
    found: Views = {}
    try:
        found = await state.views.get_many(member_ids)
        READS_REDIS.inc(len(found))
    except RedisError as exc:
        log.warning("Redis unavailable, reading PostgreSQL: %r", exc)
    missing = [m for m in member_ids if m not in found]
    if missing:
        try:
            async with state.engine.connect() as conn:
                found |= await repo.member_views(conn, missing)
            READS_POSTGRES.inc(len(missing))
        except DB_ERRORS as exc:
            raise Unavailable("the member store is unavailable; retry shortly") from exc
    return found


async def level_changes(state: State, member_id: str, before: int | None, limit: int) -> list[dict[str, Any]]:
    """A member's level changes, newest first, below seq `before`."""
    try:
        async with state.engine.connect() as conn:
            payloads = await repo.level_changes(conn, member_id, before, limit)
    except DB_ERRORS as exc:
        raise Unavailable("the level history is unavailable; retry shortly") from exc
    return [orjson.loads(p) for p in payloads]


class CoalescedViews:
    """Reads the views every request of one turn of the event loop wants in one Redis pipeline.

    A round trip through redis-py costs the API more CPU than all the rest of a member read, and
    under load many requests arrive together: they share one. A request alone waits for nothing
    more than its own read.
    """

    def __init__(self, cache: MemberCache) -> None:
        self.cache = cache
        self._wanted: list[str] = []
        self._read: asyncio.Task[Views] | None = None

    async def get_many(self, member_ids: list[str]) -> Views:
        if self._read is None:
            # Its first step runs after those of the requests already scheduled in this turn,
            # which add their ids here before it takes them.
            self._read = asyncio.ensure_future(self._read_wanted())
        self._wanted += member_ids
        found = await asyncio.shield(self._read)  # a request cancelled leaves the read to the others
        return {m: found[m] for m in member_ids if m in found}

    async def _read_wanted(self) -> Views:
        wanted, self._wanted, self._read = list(dict.fromkeys(self._wanted)), [], None
        return await self.cache.get_many(wanted)


BOARDS_DOWN = "the leaderboards are unavailable; retry shortly"


def period_name(period: str) -> str:
    """The board a period means now: "all", or the UTC month or ISO week now running."""
    if period == "all":
        return "all"
    month, week = periods(datetime.now(UTC).date().isoformat())
    return month if period == "month" else week


async def leaderboard_page(
    state: State, in_force: RulesInForce, tier: str, period: str, offset: int, limit: int
) -> dict[str, Any]:
    """A page of a leaderboard as `GET /v1/leaderboard` answers it."""
    name = period_name(period)
    try:
        page, total = await state.cache.board(tier, name, offset, limit)
    except (RedisError, Rebuilding) as exc:
        raise Unavailable(BOARDS_DOWN) from exc
    found = await member_views(state, [member for member, _, _ in page])
    rules, known = in_force.current, in_force.known
    entries = [
        {"rank": rank, "member_id": m, "level": level_of(found[m]["level_id"], rules, known).ref(), "score": points}
        for m, points, rank in page
        if m in found
    ]
    return {"tier": tier, "period": period, "period_name": name, "total": total, "entries": entries}


async def member_place(state: State, tier: str, period: str, member_id: str) -> tuple[str, int | None, int]:
    """A member's board name, rank (none without points) and points, as `GET /v1/members/{id}/rank` answers."""
    name = period_name(period)
    try:
        place, points = await state.cache.place(tier, name, member_id)
    except (RedisError, Rebuilding) as exc:
        raise Unavailable(BOARDS_DOWN) from exc
    return name, place, points

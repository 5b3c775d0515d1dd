"""How the API reads members, their level history and the leaderboards: the JSON routes and
the pages share it.

Member views come from Redis (concurrent requests' reads coalesced) and fall back to
PostgreSQL for members Redis lacks or when it is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import State

from services.api import repository as repo
from services.api.answers import level_of
from services.common.members import MemberCache, Rebuilding
from services.common.settings import KeptPeriods
from shared.scoring import board_period, periods

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


class PeriodRefused(Exception):
    """A board of a period the API cannot answer: 422 for a name of no period or of one not
    begun, 410 for one past its retention (`CL_PERIODS_*_KEPT`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Board:
    """Which board a request names: `board` a tier or a metric, `name` "all" or a period's."""

    board: str
    name: str
    running: bool  # all time or a period now running: Redis holds it; a past one is read from PostgreSQL


def board_of(state: State, board: str, period: str) -> Board:
    """The board `period` names now (`shared.scoring.board_period`), or PeriodRefused."""
    today = datetime.now(UTC).date()
    try:
        name = board_period(period, today)
    except ValueError as exc:
        raise PeriodRefused(422, f"period: {exc}") from None
    if name == "all" or name in periods(today.isoformat()):
        return Board(board, name, True)
    kind = name.split(":", 1)[0]
    kept: KeptPeriods = state.settings
    if name < kept.oldest_kept(today)[kind]:
        n = getattr(kept, f"periods_{kind}s_kept")
        kept_by = f"CL_PERIODS_{kind.upper()}S_KEPT"
        raise PeriodRefused(410, f"period: {name} is no longer kept, only the {n} {kind}s before this one ({kept_by})")
    return Board(board, name, False)


# How long a past period's board size is reused: counting a board of a million members costs
# more than the rest of the read, and a past period changes only by a late record, a rescore or
# an erasure.
SIZE_TTL = 60.0


async def board_size(
    state: State, conn: AsyncConnection, which: Board, excluded: list[str], offset: int, limit: int, listed: int
) -> int:
    """How many members a past period's board lists, given a page of it (`listed` entries from
    `offset`): a page that ends the board says it exactly; otherwise the board is counted at
    most once a `SIZE_TTL` per API process, and again whenever a page shows more members."""
    sizes: dict[tuple[str, str, tuple[str, ...]], tuple[float, int]] = state.board_sizes
    key = (which.board, which.name, tuple(sorted(excluded)))
    now, end = time.monotonic(), offset + listed
    if listed < limit and (listed or not offset):
        size = end  # the last page
    elif (known := sizes.get(key)) is not None and known[0] > now and known[1] >= end:
        return known[1]
    else:
        size = await repo.period_board_size(conn, which.board, which.name, excluded)
    if len(sizes) > 1000:  # past periods asked for are few; forget them all now and then
        sizes.clear()
    sizes[key] = (now + SIZE_TTL, size)
    return size


async def excluded_members(state: State, exclude: str | None) -> list[str]:
    """The members a board leaves out: with `exclude=pinned`, those whose level is pinned."""
    if exclude is None:
        return []
    try:
        async with state.engine.connect() as conn:
            return await repo.pinned_members(conn)
    except DB_ERRORS as exc:
        raise Unavailable(BOARDS_DOWN) from exc


async def leaderboard_page(
    state: State,
    in_force: RulesInForce,
    tier: str,
    period: str,
    offset: int,
    limit: int,
    metric: str | None = None,
    exclude: str | None = None,
) -> dict[str, Any]:
    """A page of a leaderboard as `GET /v1/leaderboard` answers it: by `metric`'s points when
    one is given, else by `tier`'s; a running period from Redis, a past one from PostgreSQL."""
    which = board_of(state, metric or tier, period)
    excluded = await excluded_members(state, exclude)
    if which.running:
        try:
            page, total = await state.cache.board(which.board, which.name, offset, limit, excluded)
        except (RedisError, Rebuilding) as exc:
            raise Unavailable(BOARDS_DOWN) from exc
    else:
        try:
            async with state.engine.connect() as conn:
                page = await repo.period_board(conn, which.board, which.name, offset, limit, excluded)
                total = await board_size(state, conn, which, excluded, offset, limit, len(page))
        except DB_ERRORS as exc:
            raise Unavailable(BOARDS_DOWN) from exc
    found = await member_views(state, [member for member, _, _ in page])
    rules, known = in_force.current, in_force.known
    entries = [
        {"rank": rank, "member_id": m, "level": level_of(found[m]["level_id"], rules, known).ref(), "score": points}
        for m, points, rank in page
        if m in found
    ]
    head = {"tier": tier, "metric": metric, "period": period, "period_name": which.name, "exclude": exclude}
    return head | {"total": total, "entries": entries}


async def member_place(
    state: State, tier: str, period: str, member_id: str, metric: str | None = None, exclude: str | None = None
) -> tuple[str, int | None, int]:
    """A member's board name, rank (none without points, or left out) and points, as
    `GET /v1/members/{id}/rank` answers."""
    which = board_of(state, metric or tier, period)
    excluded = await excluded_members(state, exclude)
    if which.running:
        try:
            place, points = await state.cache.place(which.board, which.name, member_id, excluded)
        except (RedisError, Rebuilding) as exc:
            raise Unavailable(BOARDS_DOWN) from exc
    else:
        try:
            async with state.engine.connect() as conn:
                place, points = await repo.period_place(conn, which.board, which.name, member_id, excluded)
        except DB_ERRORS as exc:
            raise Unavailable(BOARDS_DOWN) from exc
    return which.name, place, points


async def level_members(
    state: State, in_force: RulesInForce, level_id: str, reach: bool, now: datetime, offset: int, limit: int
) -> dict[str, Any] | None:
    """`GET /v1/levels/{id}/members` (who holds the level now, by its tier's score) or, with
    `reach`, `/within-reach` (who is one level below, not pinned, by what they still need to
    reach it: `repository.within_reach`); None for a level the rules in force do not have."""
    rules = in_force.current
    level = rules.find(level_id)
    if level is None:
        return None
    below = rules.levels[level.rank - 2] if level.rank > 1 else None
    try:
        async with state.engine.connect() as conn:
            if not reach:
                rows, total = await repo.level_holders(conn, level.id, level.tier, offset, limit)
            elif below is None:
                rows, total = [], 0
            else:
                rows, total = await repo.within_reach(conn, below.id, level.requirements(), now, offset, limit)
    except DB_ERRORS as exc:
        raise Unavailable("the members of levels are unavailable; retry shortly") from exc
    at = below if reach else level
    members = []
    for row in rows:
        active, passive = row["active_score"], row["passive_score"]
        tenure = max(0, (now - row["joined_at"]).days)
        entry = {"member_id": row["member_id"], "level": at and at.ref(), "active_score": active}
        entry |= {"passive_score": passive, "tenure_days": tenure, "needs": level.unmet(active, passive, tenure)}
        members.append(entry)
    head = {"level": level.ref(), "requires": level.requirements(), "below": below and below.ref()}
    return head | {"total": total, "members": members}

"""The member read model in Redis: each member's view (`shared.views.MemberView`) and the leaderboards.

The scorer writes a member's view (absolute values, tagged with the row's version) after each
commit; the API reads it from Redis, or from PostgreSQL when Redis lacks it or is down.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.rules import Rules
from shared.scoring import BOARD_METRICS, MemberState, period_end
from shared.views import MemberView

Periods = dict[str, dict[tuple[str, str], int]]  # member -> (tier, period) -> points

TOMBSTONE_TTL = timedelta(days=1)
FOREVER = 253402300799  # 9999-12-31T23:59:59Z: the expiry of a board that never ends


def lookup(member_id: str) -> str:
    """How the scorer and Redis recognise an erased id in what comes after its erasure
    (`services.write.erasure`); kept only while that may still come."""
    return hashlib.sha256(member_id.encode()).hexdigest()


# Writes a member only if the version is newer than the one stored, so a slow writer (the
# repair loop, a fenced scorer) never puts an older view over a newer one.
# With the view go the member's places on the leaderboards: [board key, points, expire-at]
# each, a sorted set scored by minus the points (so ties sort by member id, ascending).
# KEYS: the members' keys, then their erasure tombstones' (see `tombstone`): a view at or below
# an erasure's stamp is refused, with its board places.
# A commit carries the boards of the periods it changed only, so each place on a month or
# week board keeps the version it was written at (field `p`: board key -> [version,
# expire-at]) and is written only by a newer one: a commit that reached an emptied Redis
# before the rebuild did leaves the rebuild the places it did not carry. The all-time boards
# go with every view, under its version. ARGV ends with the time, to drop ended periods' versions.
_SET_IF_NEWER = """
local now = tonumber(ARGV[#ARGV])
local n = #KEYS / 2
for i = 1, n do
  local key = KEYS[i]
  local version = tonumber(ARGV[3 * i - 2])
  if tonumber(redis.call('GET', KEYS[n + i]) or '-1') < version then  -- not erased since
    local newer = tonumber(redis.call('HGET', key, 'v') or '-1') < version
    if newer then redis.call('HSET', key, 'v', version, 'd', ARGV[3 * i - 1]) end
    local placed = cjson.decode(redis.call('HGET', key, 'p') or '{}')
    local boards = cjson.decode(ARGV[3 * i])
    for _, b in ipairs(boards[2]) do
      local at = placed[b[1]]
      if (b[3] == 0 and newer) or (b[3] > 0 and (at == nil or at[1] < version)) then
        if b[2] > 0 then redis.call('ZADD', b[1], -b[2], boards[1]) else redis.call('ZREM', b[1], boards[1]) end
        if b[3] > 0 then
          redis.call('EXPIREAT', b[1], b[3])
          placed[b[1]] = {version, b[3]}
        end
      end
    end
    local left = false
    for board, at in pairs(placed) do
      if at[2] <= now then placed[board] = nil else left = true end
    end
    if left then redis.call('HSET', key, 'p', cjson.encode(placed)) else redis.call('HDEL', key, 'p') end
  end
end
return n
"""

# Stores the view epoch PostgreSQL just handed out; answers 1 when Redis had seen a later one.
_ADVANCE_EPOCH = """
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('SET', KEYS[1], ARGV[1])
if stored > tonumber(ARGV[1]) then return 1 end
return 0
"""


# The stored views of many members (nil for one Redis lacks) in one command: a pipeline of an
# HGET each costs redis-py a command's packing and parsing for every member.
_GET_VIEWS = """
local found = {}
for i, key in ipairs(KEYS) do found[i] = redis.call('HGET', key, 'd') end
return found
"""


def view_of(state: MemberState, rules: Rules, version: int, updated_at: datetime) -> dict[str, Any]:
    """The stored view of a member: the same fields as the `members` row the API may read instead."""
    return MemberView.of(state, rules, version, updated_at).stored()


class Rebuilding(Exception):
    """Redis is being rebuilt from PostgreSQL: it does not hold every member yet."""


class MemberCache:
    """Member views in Redis, one hash per member under the configured prefix."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._set_if_newer = redis.register_script(_SET_IF_NEWER)
        self._advance_epoch = redis.register_script(_ADVANCE_EPOCH)
        self._get_views = redis.register_script(_GET_VIEWS)

    def key(self, member_id: str) -> str:
        return f"{self.prefix}member:{member_id}"

    def tombstone_key(self, member_id: str) -> str:
        """Where an erasure's stamp stays (SPEC §9.4): the id's lookup digest, never the id."""
        return f"{self.prefix}erased:{lookup(member_id)}"

    async def tombstone(self, member_id: str, stamp: int) -> None:
        """From now on (for a day: longer than any writer is late), refuse the member's views
        of versions up to `stamp`, those made before its erasure: a later member of the same
        id has higher versions."""
        await self.redis.set(self.tombstone_key(member_id), stamp, ex=TOMBSTONE_TTL)

    @property
    def built_key(self) -> str:
        """Present while Redis holds every member; missing after a flush, which calls for a rebuild.
        ":2" since the year and metric boards (migration 0012): a Redis built before them is
        rebuilt once, which places every member on them."""
        return f"{self.prefix}built:2"

    @property
    def rebuild_key(self) -> str:
        """The last member id a rebuild has written, so a rebuild resumes where it stopped."""
        return f"{self.prefix}rebuild"

    async def advance_epoch(self, epoch: int) -> bool:
        """Record PostgreSQL's view epoch; True when Redis had seen a later one (a restore)."""
        return bool(await self._advance_epoch(keys=[f"{self.prefix}epoch"], args=[epoch]))

    async def forget_views(self) -> None:
        """Delete every member view and leaderboard (and the built flag), so a rebuild writes
        them all anew, and the boards count no member the database does not hold. The boards
        go first: a view written meanwhile is deleted after its places, so the rebuild writes both."""
        await self.redis.delete(self.built_key, self.rebuild_key)
        for kind in ("board", "member"):
            async for keys in _chunks(self.redis.scan_iter(match=f"{self.prefix}{kind}:*", count=1000), 1000):
                await self.redis.unlink(*keys)

    async def forget(self, member_id: str) -> int:
        """Delete a member's view and its places on every leaderboard (an erasure); returns
        how many of those there were."""
        removed = int(await self.redis.delete(self.key(member_id)))
        async for keys in _chunks(self.redis.scan_iter(match=f"{self.prefix}board:*", count=1000), 1000):
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, member_id)
                removed += sum(await pipe.execute())
        return removed

    def board_key(self, board: str, period: str) -> str:
        """A leaderboard: `board` a tier or a metric of `BOARD_METRICS`, `period` "all" or a
        month, week or year as `shared.scoring.periods` names it."""
        return f"{self.prefix}board:{board}:{period}"

    async def put(self, views: list[dict[str, Any]], periods: Periods, now: datetime) -> None:
        """Write views, if newer than those stored, and with each its leaderboard places: the
        all-time scores, and the points of the periods given (members' (tier, period) points)
        that have not ended more than a day ago; a period's board expires a day after it ends."""
        if not views:
            return
        keys = [self.key(v["member_id"]) for v in views] + [self.tombstone_key(v["member_id"]) for v in views]
        args: list[Any] = []
        for v in views:
            boards: list[tuple[str, int, int]] = [
                (self.board_key("active", "all"), v["active_score"], 0),
                (self.board_key("passive", "all"), v["passive_score"], 0),
            ]
            # A metric's all-time place is kept with its version, as a period's is, so that the
            # rebuild after the upgrade that added it writes it though the view is not newer.
            for metric in sorted(BOARD_METRICS):
                points = v["points"].get(metric, 0)
                boards.append((self.board_key(metric, "all"), points, FOREVER if points > 0 else 0))
            for (tier, period), points in periods.get(v["member_id"], {}).items():
                ends = period_end(period)
                if ends > now - timedelta(days=1):
                    boards.append((self.board_key(tier, period), points, int((ends + timedelta(days=1)).timestamp())))
            args += [v["version"], orjson.dumps(v), orjson.dumps([v["member_id"], boards])]
        await self._set_if_newer(keys=keys, args=[*args, int(now.timestamp())])

    async def board(
        self, board: str, period: str, offset: int, limit: int, excluded: Sequence[str] = ()
    ) -> tuple[list[tuple[str, int, int]], int]:
        """A page of a leaderboard, (member, points, rank) each, and how many members it has,
        leaving out the `excluded` members (ranks are counted without them). Ties share a rank:
        one more than the members with more points. Raises Rebuilding when Redis does not hold
        every member (after a flush, until the rebuild is done): a partial board would rank wrongly."""
        key = self.board_key(board, period)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.built_key)
            pipe.zcard(key)
            for member in excluded:
                pipe.zscore(key, member)
                pipe.zrank(key, member)
            built, total, *found = await pipe.execute()
        if not built:
            raise Rebuilding()
        out = [(score, at) for score, at in zip(found[::2], found[1::2], strict=True) if at is not None]
        start = offset
        for at in sorted(at for _, at in out):  # the page starts past the left-out members before it
            if at > start:
                break
            start += 1
        left_out = set(excluded)
        raw: list[tuple[bytes, float]] = await self.redis.zrange(
            key, start, start + limit + len(out) - 1, withscores=True
        )  # type: ignore[assignment]
        page = [(member.decode(), int(-score)) for member, score in raw if member.decode() not in left_out][:limit]
        if not page:
            return [], total - len(out)
        above = await self.redis.zcount(key, "-inf", f"({-page[0][1]}")
        above -= sum(1 for score, _ in out if -score > page[0][1])
        return ranked(page, offset, above), total - len(out)

    async def place(
        self, board: str, period: str, member_id: str, excluded: Sequence[str] = ()
    ) -> tuple[int | None, int]:
        """A member's rank and points on a leaderboard, counted without the `excluded` members;
        no rank with no points, nor for a member left out."""
        key = self.board_key(board, period)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.built_key)
            pipe.zscore(key, member_id)
            for member in excluded:
                pipe.zscore(key, member)
            built, score, *others = await pipe.execute()
        if not built:
            raise Rebuilding()
        if score is None:
            return None, 0
        if member_id in excluded:
            return None, int(-score)
        above = await self.redis.zcount(key, "-inf", f"({score}")
        return above - sum(1 for s in others if s is not None and s < score) + 1, int(-score)

    async def get_many(self, member_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not member_ids:
            return {}
        found = await self._get_views(keys=[self.key(m) for m in member_ids])
        views = (orjson.loads(raw) for raw in found if raw)
        # A view written before levels were stored by id (migration 0008) is read from PostgreSQL.
        return {v["member_id"]: v for v in views if "level_id" in v}


def ranked(page: list[tuple[str, int]], position: int, above: int) -> list[tuple[str, int, int]]:
    """Ranks for a page of a board (member, points each, points down, then member id): the page
    starts at `position` (from 0) and `above` members have more points than its first. Ties
    share a rank, one more than the members with more points."""
    out: list[tuple[str, int, int]] = []
    for i, (member, points) in enumerate(page):
        rank = above + 1 if i == 0 else out[-1][2] if points == page[i - 1][1] else position + i + 1
        out.append((member, points, rank))
    return out


async def _chunks(keys: Any, size: int) -> Any:
    chunk: list[Any] = []
    async for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

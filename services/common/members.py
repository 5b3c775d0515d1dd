"""The member read model: what Redis holds for a member and what the API answers.

The scorer writes a member's view (absolute values, tagged with the row's version) after each
commit; the API reads it from Redis, or from PostgreSQL when Redis lacks it or is down.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.events import iso_utc
from shared.rules import Rules
from shared.scoring import MemberState

# Writes a member only if the version is newer than the one stored, so a slow writer (the
# repair loop, a fenced scorer) never puts an older view over a newer one.
_SET_IF_NEWER = """
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[2 * i - 1])
  local stored = tonumber(redis.call('HGET', key, 'v') or '-1')
  if stored < version then redis.call('HSET', key, 'v', version, 'd', ARGV[2 * i]) end
end
return #KEYS
"""

# Stores the view epoch PostgreSQL just handed out; answers 1 when Redis had seen a later one.
_ADVANCE_EPOCH = """
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('SET', KEYS[1], ARGV[1])
if stored > tonumber(ARGV[1]) then return 1 end
return 0
"""


def view_of(state: MemberState, rules: Rules, version: int, updated_at: datetime) -> dict[str, Any]:
    """The stored view of a member: the same fields as the `members` row the API may read instead."""
    assert state.level is not None and state.joined_at is not None
    active, passive = state.scores(rules)
    return {
        "member_id": state.member_id,
        "level_rank": state.level,
        "active_score": active,
        "passive_score": passive,
        "points": dict(state.points),
        "joined_at": iso_utc(state.joined_at),
        "updated_at": iso_utc(updated_at),
        "version": version,
    }


def render(view: dict[str, Any], rules: Rules, now: datetime) -> dict[str, Any]:
    """The API's answer for one member (SPEC §7), from a stored view."""
    joined_at = datetime.fromisoformat(view["joined_at"])
    tenure_days = max(0, (now - joined_at).days)
    level = rules.level_by_rank(view["level_rank"])
    active, passive = view["active_score"], view["passive_score"]
    following = rules.next_level(level.rank)
    return {
        "member_id": view["member_id"],
        "level": level.ref(),
        "active_score": active,
        "passive_score": passive,
        "tenure_days": tenure_days,
        "joined_at": view["joined_at"],
        "points": {metric: view["points"].get(metric, 0) for metric in rules.metrics},
        "next_level": following and {**following.ref(), "unmet": following.unmet(active, passive, tenure_days)},
        "updated_at": view["updated_at"],
    }


class MemberCache:
    """Member views in Redis, one hash per member under the configured prefix."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._set_if_newer = redis.register_script(_SET_IF_NEWER)
        self._advance_epoch = redis.register_script(_ADVANCE_EPOCH)

    def key(self, member_id: str) -> str:
        return f"{self.prefix}member:{member_id}"

    @property
    def built_key(self) -> str:
        """Present while Redis holds every member; missing after a flush, which calls for a rebuild."""
        return f"{self.prefix}built"

    @property
    def rebuild_key(self) -> str:
        """The last member id a rebuild has written, so a rebuild resumes where it stopped."""
        return f"{self.prefix}rebuild"

    async def advance_epoch(self, epoch: int) -> bool:
        """Record PostgreSQL's view epoch; True when Redis had seen a later one (a restore)."""
        return bool(await self._advance_epoch(keys=[f"{self.prefix}epoch"], args=[epoch]))

    async def forget_views(self) -> None:
        """Delete every member view (and the built flag), so a rebuild writes them all anew."""
        await self.redis.delete(self.built_key, self.rebuild_key)
        async for keys in _chunks(self.redis.scan_iter(match=f"{self.prefix}member:*", count=1000), 1000):
            await self.redis.unlink(*keys)

    async def put(self, views: list[dict[str, Any]]) -> None:
        if not views:
            return
        keys = [self.key(v["member_id"]) for v in views]
        args: list[Any] = []
        for v in views:
            args += [v["version"], orjson.dumps(v)]
        await self._set_if_newer(keys=keys, args=args)

    async def get_many(self, member_ids: list[str]) -> dict[str, dict[str, Any]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for member_id in member_ids:
                pipe.hget(self.key(member_id), "d")
            found = await pipe.execute()
        return {m: orjson.loads(raw) for m, raw in zip(member_ids, found, strict=True) if raw is not None}


async def _chunks(keys: Any, size: int) -> Any:
    chunk: list[Any] = []
    async for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

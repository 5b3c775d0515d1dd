"""Commit lanes: a scorer with several transactions in flight applies every record once, each
member's in order, exactly as the domain applies them one after the other."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import asyncpg
from redis.asyncio import Redis

from services.common.members import MemberCache
from services.scorer.batch import Item
from services.scorer.settings import ScorerSettings
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import default_rules
from shared.scoring import MemberState, apply_batch
from tests.conftest import unique
from tests.integration.test_scorer import NOW, _equals, event, publish, running
from tests.support import eventually


def workload(members: list[str], count: int, seed: int) -> list[dict[str, Any]]:
    """Events whose result depends on their order (content created, liked, unliked, removed),
    likes between members of different partitions."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(count):
        member, other = rng.sample(members, 2)
        at = NOW - timedelta(hours=2) + timedelta(seconds=i)
        content = f"c{rng.randint(0, 5)}"
        kind = rng.choice(["post", "reply", "comment", "content_removed", "like", "unlike"])
        if kind in ("like", "unlike"):
            out.append(event(kind, member, at=at, content_id=f"{other}-{content}", target_member_id=other))
        else:
            out.append(event(kind, member, at=at, content_id=f"{member}-{content}"))
    return out


def expected(events: list[dict[str, Any]]) -> dict[str, MemberState]:
    """The members' states when each member's records are applied in the order published."""
    records = []
    for raw in events:
        parsed = ActivityEvent.model_validate(raw)
        records += [ActivityRecord(subject, parsed) for subject in parsed.subjects()]
    states: dict[str, MemberState] = {}
    apply_batch(states, records, NOW, default_rules())
    return states


async def stored(pg: asyncpg.Connection, members: list[str]) -> dict[str, tuple[int, int, str]]:
    rows = await pg.fetch(
        "SELECT member_id, active_score, passive_score, level_id FROM members WHERE member_id = ANY($1)", members
    )
    return {r["member_id"]: (r["active_score"], r["passive_score"], r["level_id"]) for r in rows}


async def test_lanes_apply_every_record_once_and_each_members_in_order(
    settings_kwargs: dict[str, Any], pg: asyncpg.Connection
) -> None:
    settings = ScorerSettings(
        **{**settings_kwargs, "commit_lanes": 3, "batch_max_records": 40},
        port=0,
        repair_interval=timedelta(milliseconds=300),
    )
    members = [unique(f"lane{i}") for i in range(24)]
    events = workload(members, 1500, seed=15)
    rules = default_rules()
    want = {m: (*s.scores(rules), s.level) for m, s in expected(events).items()}
    records = sum(len(ActivityEvent.model_validate(e).subjects()) for e in events)

    await publish(settings, events[:700])
    async with running(settings) as scorer:
        in_flight, most = 0, 0
        apply = scorer.batches.apply

        async def counted(*args: Any) -> None:  # how many commits run at once
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                await apply(*args)
            finally:
                in_flight -= 1

        scorer.batches.apply = counted  # type: ignore[method-assign,assignment]
        await publish(settings, events[700:] + events[:50])  # the first 50 again: repeats count once
        await eventually(lambda: _equals(stored(pg, members), want), timeout=60)
        assert scorer.settings.commit_lanes == 3
        assert most > 1, "the lanes never committed at once"
    applied = await pg.fetchval("SELECT count(*) FROM activity WHERE member_id = ANY($1)", members)
    assert applied == records
    cache = MemberCache(Redis.from_url(settings.redis_url), settings.redis_prefix)

    async def views() -> dict[str, tuple[int, int, str]]:
        got = await cache.get_many(members)
        return {m: (v["active_score"], v["passive_score"], v["level_id"]) for m, v in got.items()}

    try:
        async with running(settings):  # the views of the last commits: written, or repaired
            await eventually(lambda: _equals(views(), want), timeout=30)
    finally:
        await cache.redis.aclose()


async def test_a_free_lane_is_fed_while_another_lane_commits(
    settings_kwargs: dict[str, Any], pg: asyncpg.Connection
) -> None:
    """aiokafka hands out one partition's buffered records until they run out: the scorer asks
    for the partitions of free lanes only, so a backlog in one lane does not hold up another."""
    settings = ScorerSettings(**{**settings_kwargs, "commit_lanes": 2, "batch_max_records": 40}, port=0)
    busy, other = unique("busy"), unique("other")

    def comments(member: str, count: int) -> list[dict[str, Any]]:
        return [event("comment", member, content_id=f"c{i}") for i in range(count)]

    async def applied(member: str) -> int:
        return int(await pg.fetchval("SELECT count(*) FROM activity WHERE member_id = $1", member))

    await publish(settings, comments(busy, 400), partition=0)  # ten batches for lane 0
    async with running(settings) as scorer:
        apply, slowed_down = scorer.batches.apply, asyncio.Event()

        async def slow(part: list[Item], *args: Any) -> None:  # lane 0's commits take 0.5 s each
            if any(msg.partition == 0 for msg, _ in part):
                slowed_down.set()
                await asyncio.sleep(0.5)
            await apply(part, *args)

        scorer.batches.apply = slow  # type: ignore[method-assign,assignment]
        await asyncio.wait_for(slowed_down.wait(), 30)
        await publish(settings, comments(other, 5), partition=1)
        await eventually(lambda: _equals(applied(other), 5), timeout=30)
        # Lane 1 would otherwise wait until lane 0's backlog is nearly through (360 of 400 when tried).
        assert await applied(busy) <= 200, "lane 1 waited for lane 0's backlog"
        await eventually(lambda: _equals(applied(busy), 400), timeout=30)

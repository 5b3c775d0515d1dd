"""The API's member reads from Redis: concurrent requests share one read, against the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.api.reads import CoalescedViews
from services.api.settings import ApiSettings
from services.common.members import MemberCache
from tests.conftest import unique

NOW = datetime.now(UTC).isoformat()


class CountedCache(MemberCache):
    """The real cache, noting the ids of each read."""

    reads: list[list[str]]

    async def get_many(self, member_ids: list[str]) -> dict[str, dict[str, Any]]:
        self.reads.append(member_ids)
        return await super().get_many(member_ids)


@pytest.fixture
async def redis(settings_kwargs: dict[str, Any]) -> AsyncIterator[Redis]:
    client = Redis.from_url(ApiSettings(**settings_kwargs).redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def cache(redis: Redis, settings_kwargs: dict[str, Any]) -> CountedCache:
    cache = CountedCache(redis, ApiSettings(**settings_kwargs).redis_prefix)
    cache.reads = []
    return cache


def view(member_id: str) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "level_id": "new_member",
        "active_score": 0,
        "passive_score": 1,
        "points": {"view": 1},
        "joined_at": NOW,
        "updated_at": NOW,
        "version": 1,
    }


async def test_concurrent_requests_share_one_read_and_each_gets_its_own_members(cache: CountedCache) -> None:
    ann, bob, cid, nobody = unique("ann"), unique("bob"), unique("cid"), unique("nobody")
    await cache.put([view(ann), view(bob), view(cid)], {}, datetime.now(UTC))
    views = CoalescedViews(cache)
    found = await asyncio.gather(views.get_many([ann]), views.get_many([bob, nobody]), views.get_many([ann, cid]))
    assert found == [{ann: view(ann)}, {bob: view(bob)}, {ann: view(ann), cid: view(cid)}]
    assert cache.reads == [[ann, bob, nobody, cid]]  # once each, in one read


async def test_requests_after_a_read_has_started_get_a_read_of_their_own(cache: CountedCache) -> None:
    ann, bob = unique("ann"), unique("bob")
    await cache.put([view(ann), view(bob)], {}, datetime.now(UTC))
    views = CoalescedViews(cache)
    assert await views.get_many([ann]) == {ann: view(ann)}
    assert await views.get_many([bob]) == {bob: view(bob)}
    assert cache.reads == [[ann], [bob]]


async def test_a_request_cancelled_leaves_the_shared_read_to_the_others(cache: CountedCache) -> None:
    ann, bob = unique("ann"), unique("bob")
    await cache.put([view(ann), view(bob)], {}, datetime.now(UTC))
    views = CoalescedViews(cache)
    gone, kept = asyncio.ensure_future(views.get_many([ann])), asyncio.ensure_future(views.get_many([bob]))
    await asyncio.sleep(0)  # both have joined the read
    gone.cancel()
    assert await kept == {bob: view(bob)}
    assert gone.cancelled()


async def test_a_failed_read_fails_every_request_that_shared_it() -> None:
    down = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)  # nothing listens on port 1
    try:
        views = CoalescedViews(MemberCache(down, "nowhere:"))
        results = await asyncio.gather(views.get_many(["ann"]), views.get_many(["bob"]), return_exceptions=True)
        assert all(isinstance(r, RedisError) for r in results), results
    finally:
        await down.aclose()

"""The read API against real PostgreSQL and Redis, with members written as the scorer writes them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.api import schemas
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common import db
from services.common.members import MemberCache, view_of
from services.write.outbox import payload
from services.write.rules import record
from services.write.sql import members, outbox
from services.write.sql import rules as kept_rules
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import DEFAULT_RULES_PATH, Rules, default_rules
from shared.scoring import apply_batch
from tests.conftest import unique
from tests.support import eventually, in_process

RULES = default_rules()
NOW = datetime.now(UTC)


async def score(settings: ApiSettings, events: list[dict[str, Any]], *, cache: bool) -> None:
    """Apply events and store the result the way the scorer does (PostgreSQL, and Redis if asked)."""
    records = []
    for raw in events:
        event = ActivityEvent.model_validate(raw)
        records += [ActivityRecord(s, event) for s in event.subjects()]
    engine = db.engine(settings.database_url, "test")
    try:
        async with engine.begin() as conn:
            states = await members.lock_states(conn, sorted({r.subject for r in records}))
            changes = apply_batch(states, records, NOW, RULES)
            versions = await members.save_states(conn, list(states.values()), RULES, NOW)
            await outbox.record_level_changes(conn, changes, [payload(c, RULES, NOW) for c in changes])
    finally:
        await engine.dispose()
    if cache:
        redis = Redis.from_url(settings.redis_url)
        try:
            await MemberCache(redis, settings.redis_prefix).put(
                [view_of(states[m], RULES, v, NOW) for m, v in versions.items()], {}, NOW
            )
        finally:
            await redis.aclose()


def ev(kind: str, member: str, days_ago: float = 0, **fields: Any) -> dict[str, Any]:
    at = (NOW - timedelta(days=days_ago, minutes=1)).isoformat()
    return {"event_id": unique("e"), "type": kind, "member_id": member, "occurred_at": at, **fields}


@pytest.fixture
def settings(settings_kwargs: dict[str, Any]) -> ApiSettings:
    return ApiSettings(**settings_kwargs)


@pytest.fixture
async def client(settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(create_app(settings)) as c:
        yield c


async def test_a_member_never_seen_is_404_with_a_message(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/members/{unique('nobody')}")
    assert response.status_code == 404
    assert "has been seen" in response.json()["message"]


async def test_member_shows_level_scores_and_what_the_next_level_needs(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    ann = unique("ann")
    await score(settings, [ev("member_joined", ann, days_ago=3), ev("reply", ann, content_id="r1")], cache=True)
    body = schemas.Member.model_validate((await client.get(f"/v1/members/{ann}")).json()).model_dump(mode="json")
    assert body["level"] == {"id": "new_contributor", "name": "New Contributor", "tier": "active", "rank": 5}
    assert (body["active_score"], body["passive_score"], body["tenure_days"]) == (5, 0, 3)
    assert body["points"]["reply"] == 5 and body["points"]["view"] == 0
    assert body["next_level"]["id"] == "general_contributor"
    assert body["next_level"]["unmet"] == [
        {"requirement": "active_score", "required": 25, "current": 5, "remaining": 20}
    ]


async def test_member_read_answers_304_to_a_matching_etag(client: httpx.AsyncClient, settings: ApiSettings) -> None:
    bob = unique("bob")
    await score(settings, [ev("post", bob, content_id="p1")], cache=True)
    first = await client.get(f"/v1/members/{bob}")
    etag = first.headers["etag"]
    again = await client.get(f"/v1/members/{bob}", headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    await score(settings, [ev("post", bob, content_id="p2")], cache=False)  # a newer version in PostgreSQL
    redis = Redis.from_url(settings.redis_url)
    await redis.delete(f"{settings.redis_prefix}member:{bob}")
    await redis.aclose()
    changed = await client.get(f"/v1/members/{bob}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


async def test_a_member_read_again_after_a_commit_shows_the_new_view(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    # The API keeps answers rendered (`answers.Rendered`): a newer view in Redis is a new answer.
    fay, gil = unique("fay"), unique("gil")
    await score(settings, [ev("post", fay, content_id="p1"), ev("reply", gil, content_id="r1")], cache=True)
    before = (await client.get(f"/v1/members/{fay}")).json()
    await client.get("/v1/members", params={"ids": f"{fay},{gil}"})
    await score(settings, [ev("post", fay, content_id="p2")], cache=True)
    after = await client.get(f"/v1/members/{fay}")
    assert after.json()["active_score"] == before["active_score"] + RULES.metrics["post"].points
    many = (await client.get("/v1/members", params={"ids": f"{fay},{gil}"})).json()
    assert many["members"][0] == after.json()
    assert many == {"members": [after.json(), (await client.get(f"/v1/members/{gil}")).json()], "missing": []}


async def test_many_members_at_once_with_the_missing_named(client: httpx.AsyncClient, settings: ApiSettings) -> None:
    cat, dan, ghost = unique("cat"), unique("dan"), unique("ghost")
    await score(settings, [ev("article", cat, content_id="a1"), ev("view", dan, content_id="c")], cache=False)
    body = (await client.get("/v1/members", params={"ids": f"{cat},{ghost},{dan}"})).json()
    schemas.Members.model_validate(body)
    assert [m["member_id"] for m in body["members"]] == [cat, dan]
    assert body["missing"] == [ghost]
    too_many = await client.get("/v1/members", params={"ids": ",".join(f"m{i}" for i in range(101))})
    assert too_many.status_code == 422
    bad = await client.get("/v1/members", params={"ids": "ok,not ok"})
    assert bad.status_code == 422 and "not ok" in bad.json()["message"]


async def test_level_history_is_newest_first_and_paged(client: httpx.AsyncClient, settings: ApiSettings) -> None:
    eve = unique("eve")
    await score(
        settings,
        [
            ev("post", eve, content_id="p1"),
            ev("content_removed", eve, content_id="p1"),
            ev("post", eve, content_id="p2"),
        ],
        cache=False,
    )
    page = (await client.get(f"/v1/members/{eve}/level-changes", params={"limit": 2})).json()
    schemas.History.model_validate(page)
    assert [c["seq"] for c in page["level_changes"]] == [3, 2]
    assert page["level_changes"][1]["direction"] == "demoted"
    rest = (await client.get(f"/v1/members/{eve}/level-changes", params={"before": page["next_before"]})).json()
    assert [c["seq"] for c in rest["level_changes"]] == [1] and rest["next_before"] is None
    assert (await client.get(f"/v1/members/{unique('x')}/level-changes")).status_code == 404


async def test_ladder_lists_every_level_and_how_points_are_earned(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/levels")).json()
    assert [lv["rank"] for lv in body["levels"]] == list(range(1, 15))
    trusted = next(lv for lv in body["levels"] if lv["id"] == "trusted_contributor")
    assert trusted["requires"] == {"active_score": 500}
    senior = next(lv for lv in body["levels"] if lv["id"] == "senior_member")
    assert senior["requires"] == {"passive_score": 200, "tenure_days": 90}
    comment = next(p for p in body["points"] if p["metric"] == "comment")
    assert (comment["daily_cap"], comment["tier"]) == (20, "active")


async def test_the_ladder_gives_every_number_and_its_texts_follow_the_rules_in_force(
    settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    """SPEC §10.1: points, caps, thresholds and tenure in /v1/levels, each level's look and
    grants, and `how` texts that a rescore to other numbers cannot leave stale."""
    raw = json.loads(DEFAULT_RULES_PATH.read_text())
    raw["version"] = unique("tuned")
    raw["metrics"]["like_received"] |= {"points": 2, "how": "3 points per like your content receives"}
    raw["metrics"]["reply"] |= {"points": 6, "daily_cap": 30}
    raw["levels"][8] |= {"active": 400, "color": "#123456", "icon": "https://forum.example.org/trusted.svg"}
    tuned = Rules.model_validate(raw)
    engine = db.engine(fresh_database, "test")
    try:
        async with engine.begin() as conn:
            await record(conn, tuned)
            await kept_rules.put_rules_in_force(conn, tuned.version)
    finally:
        await engine.dispose()
    async with in_process(create_app(ApiSettings(**{**settings_kwargs, "database_url": fresh_database}))) as client:

        async def in_force() -> bool:
            return bool((await client.get("/v1/levels")).json()["rules_version"] == tuned.version)

        await eventually(in_force, what="the API follows the rules in force")
        body = schemas.Ladder.model_validate((await client.get("/v1/levels")).json()).model_dump()
        points = {p["metric"]: p for p in body["points"]}
        assert {m: (p["points"], p["daily_cap"]) for m, p in points.items()} == {
            m: (metric.points, metric.daily_cap) for m, metric in tuned.metrics.items()
        }
        assert points["browse_time"]["seconds_per_point"] == 600
        assert points["like_received"]["how"] == "2 points per like your content receives"
        assert points["reply"]["how"] == "6 points per reply"
        trusted = next(lv for lv in body["levels"] if lv["id"] == "trusted_contributor")
        assert trusted["requires"] == {"active_score": 400}
        assert (trusted["color"], trusted["icon"]) == ("#123456", "https://forum.example.org/trusted.svg")
        assert (trusted["new_grants"], trusted["grants"]) == (
            ["recategorize_topics", "rename_topics"],
            list(tuned.grants("trusted_contributor")),
        )
        senior = next(lv for lv in body["levels"] if lv["id"] == "senior_member")
        assert senior["requires"] == {"passive_score": 200, "tenure_days": 90}

        page = (await client.get("/levels")).text
        assert "2 points per like your content receives" in page and "3 points per like" not in page
        assert "6 points per reply" in page and "5 points per reply" not in page
        assert '<img src="https://forum.example.org/trusted.svg" alt=""' in page
        assert ">400 active points<" in page and ">500 active points<" not in page


async def test_without_redis_members_are_read_from_postgres(settings: ApiSettings, settings_kwargs: dict) -> None:
    fay = unique("fay")
    await score(settings, [ev("reply", fay, content_id="r")], cache=False)
    async with in_process(
        create_app(ApiSettings(**{**settings_kwargs, "redis_url": "redis://127.0.0.1:1/0"}))
    ) as client:
        assert (await client.get(f"/v1/members/{fay}")).json()["active_score"] == 5
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["redis"].startswith("down")


async def test_without_postgres_members_in_redis_are_still_served(settings: ApiSettings, settings_kwargs: dict) -> None:
    gus = unique("gus")
    await score(settings, [ev("reply", gus, content_id="r")], cache=True)
    broken = "postgresql+asyncpg://cl:cl@127.0.0.1:1/none"
    async with in_process(create_app(ApiSettings(**{**settings_kwargs, "database_url": broken}))) as client:
        assert (await client.get(f"/v1/members/{gus}")).json()["active_score"] == 5
        unknown = await client.get(f"/v1/members/{unique('x')}")
        assert unknown.status_code == 503 and unknown.headers["retry-after"]
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["postgres"].startswith("down")


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).json() == {"ready": True, "checks": {"postgres": "ok", "redis": "ok"}}


async def test_without_either_store_the_api_is_not_ready(settings_kwargs: dict) -> None:
    broken = {"database_url": "postgresql+asyncpg://cl:cl@127.0.0.1:1/none", "redis_url": "redis://127.0.0.1:1/0"}
    async with in_process(create_app(ApiSettings(**{**settings_kwargs, **broken}))) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False

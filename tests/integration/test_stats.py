"""GET /v1/stats against a database of its own, where the scorer's unit of work applied every
record: the counters it keeps must equal what counting the tables finds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common import db
from services.write.unit_of_work import Incoming, UnitOfWork
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import default_rules
from tests.support import in_process

RULES = default_rules()
NOW = datetime.now(UTC)


def incoming(events: list[dict[str, Any]]) -> list[Incoming]:
    out = []
    for i, raw in enumerate(events):
        event = ActivityEvent.model_validate({"event_id": f"e{i}", "occurred_at": NOW.isoformat(), **raw})
        out += [Incoming(ActivityRecord(s, event), event.to_json().decode(), 0, i) for s in event.subjects()]
    return out


async def test_stats_count_what_the_tables_hold(fresh_database: str, settings_kwargs: dict[str, Any]) -> None:
    database = fresh_database
    records = incoming(
        [
            {"type": "reply", "member_id": "ann", "content_id": "r1"},  # ann: New Contributor
            {"type": "view", "member_id": "bob", "content_id": "t1"},  # bob: New Member…
            {"type": "article", "member_id": "cat", "content_id": "a1"},  # cat: General Contributor…
            {"type": "content_removed", "member_id": "cat", "content_id": "a1"},  # …then New Member again
            {"type": "like", "member_id": "bob", "content_id": "r1", "target_member_id": "ann"},  # …New Contributor
        ]
    )
    engine = db.engine(database, "test")
    work = UnitOfWork(engine, RULES, "stats", "activity")
    try:
        await work.commit([], records[:3], NOW, [])
        await work.commit([], records[3:], NOW, [])
        await work.commit([], records[:2], NOW, [])  # repeats: applied once only
        # An hour-old change falls in both windows; one of 8 days ago in neither.
        await work.commit(
            [], incoming([{"type": "post", "member_id": "dan", "content_id": "p"}]), NOW - timedelta(hours=1), []
        )
        await work.commit(
            [], incoming([{"type": "post", "member_id": "eve", "content_id": "p"}]), NOW - timedelta(days=8), []
        )
    finally:
        await engine.dispose()

    api = ApiSettings(**{**settings_kwargs, "database_url": database})
    async with in_process(create_app(api)) as client:
        response = await client.get("/v1/stats")
    assert response.status_code == 200
    stats = response.json()

    pg = await asyncpg.connect(database.replace("+asyncpg", ""))
    try:
        per_level = dict(await pg.fetch("SELECT level_id, count(*) FROM members GROUP BY level_id"))
        recent = await pg.fetch(
            "SELECT payload::jsonb->>'direction' AS direction, recorded_at FROM level_changes WHERE seq IS NOT NULL"
        )
        applied = await pg.fetchval("SELECT count(*) FROM activity")
    finally:
        await pg.close()
    assert {c["id"]: c["members"] for c in stats["by_level"] if c["members"]} == per_level
    assert per_level == {"new_contributor": 4, "new_member": 1}  # ann, bob, dan and eve; cat
    assert stats["members"] == 5 and stats["by_tier"] == {"passive": 1, "active": 4}
    assert len(recent) == 7  # ann 1, bob 2, cat 2 (one a demotion), dan 1, eve 1 (8 days ago)
    assert stats["level_changes"]["last_24h"] == stats["level_changes"]["last_7d"] == {"promoted": 5, "demoted": 1}
    assert stats["records_applied_last_24h"] == applied - 1  # eve's post was applied "8 days ago"

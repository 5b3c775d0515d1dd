"""Migration 0004 moves members' whole-state documents into fact rows, and back on downgrade,
without losing a fact."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from services.common import db
from services.scorer import repository as repo
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import default_rules
from shared.scoring import MemberState, apply_batch
from tests.conftest import ADMIN, ROLES, _create_database, _drop_database, database_url, migrate, unique

RULES = default_rules()
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def _history() -> dict[str, MemberState]:
    events: list[dict[str, Any]] = [
        {"type": "member_joined", "member_id": "ann", "occurred_at": "2026-10-01T08:00:00Z"},
        {"type": "visit", "member_id": "ann", "duration_s": 700, "occurred_at": "2026-10-02T08:00:00Z"},
        *(
            {"type": "view", "member_id": "ann", "content_id": f"t|{i}", "occurred_at": "2026-10-02T09:00:00Z"}
            for i in range(3)
        ),
        {"type": "group_joined", "member_id": "ann", "content_id": "g1", "occurred_at": "2026-10-02T09:00:00Z"},
        {"type": "event_attended", "member_id": "ann", "content_id": "m1", "occurred_at": "2026-10-02T09:00:00Z"},
        {"type": "post", "member_id": "ann", "content_id": "p1", "occurred_at": "2026-10-03T09:00:00Z"},
        {"type": "comment", "member_id": "ann", "content_id": "c1", "occurred_at": "2026-10-03T09:00:00Z"},
        {"type": "content_removed", "member_id": "ann", "content_id": "c1", "occurred_at": "2026-10-04T09:00:00Z"},
        {
            "type": "like",
            "member_id": "bob",
            "content_id": "p1",
            "target_member_id": "ann",
            "occurred_at": "2026-10-05T09:00:00Z",
        },
        {
            "type": "solution_accepted",
            "member_id": "bob",
            "content_id": "p1",
            "target_member_id": "ann",
            "occurred_at": "2026-10-05T09:00:00Z",
        },
    ]
    parsed = [ActivityEvent.model_validate({"event_id": f"e{i}", **e}) for i, e in enumerate(events)]
    states: dict[str, MemberState] = {}
    apply_batch(states, [ActivityRecord(s, e) for e in parsed for s in e.subjects()], NOW, RULES)
    return states


async def test_facts_survive_a_downgrade_to_whole_states_and_back() -> None:
    admin, name = database_url(ADMIN, "postgres").replace("+asyncpg", ""), unique("cl_migrate").replace("-", "_")
    url = database_url(ROLES["owner"], name)
    await _create_database(admin, name)
    try:
        await asyncio.to_thread(migrate, url, "upgrade", "head")
        states = _history()
        engine = db.engine(url, "test")
        async with engine.begin() as conn:
            await repo.save_states(conn, list(states.values()), RULES, NOW)
            await repo.save_facts(conn, list(states.values()), {})
        await engine.dispose()

        await asyncio.to_thread(migrate, url, "downgrade", "0003")
        pg = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            old = orjson.loads(await pg.fetchval("SELECT state::text FROM members WHERE member_id = 'ann'"))
            assert sorted(old["views"]["2026-10-02"]) == ["t|0", "t|1", "t|2"]
            assert old["created"]["c1"] == ["comment", "2026-10-03", 2, True]
            assert old["likes_received"] == {"bob|p1": ["2026-10-05", 3]}
            assert old["groups"] == ["g1"] and old["events"] == ["m1"] and old["solutions"] == ["p1"]
            assert old["points"] == states["ann"].points

            await asyncio.to_thread(migrate, url, "upgrade", "head")
            for member, state in states.items():
                rows = await pg.fetch("SELECT fact, value::text FROM member_facts WHERE member_id = $1", member)
                assert {r["fact"]: orjson.loads(r["value"]) for r in rows} == state.facts
                row = await pg.fetchrow("SELECT joined_declared, first_seen FROM members WHERE member_id = $1", member)
                assert (row["joined_declared"], row["first_seen"]) == (state.joined_declared, state.first_seen)
        finally:
            await pg.close()
    finally:
        await _drop_database(admin, name)

"""Migration 0004 moves members' whole-state documents into fact rows, and back on downgrade,
without losing a fact; migration 0008 turns ranks into level ids, each in its member's ladder."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from services.common import db
from services.write.rules import body_of
from services.write.sql import members
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import Rules, default_rules
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
            await members.save_states(conn, list(states.values()), RULES, NOW)
            await members.save_facts(conn, list(states.values()), {})
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


async def test_ranks_become_the_ids_of_each_members_own_ladder_and_back() -> None:
    admin, name = database_url(ADMIN, "postgres").replace("+asyncpg", ""), unique("cl_migrate").replace("-", "_")
    url = database_url(ROLES["owner"], name)
    await _create_database(admin, name)
    raw = RULES.model_dump(mode="json")
    # Another version whose ladder lists the boss levels the other way round.
    other = Rules.model_validate({**raw, "version": "reversed", "levels": raw["levels"][:9] + raw["levels"][:8:-1]})
    try:
        await asyncio.to_thread(migrate, url, "upgrade", "0007")
        pg = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            for rules in (RULES, other):
                await pg.execute("INSERT INTO rules (version, body) VALUES ($1, $2)", rules.version, body_of(rules))
            await pg.execute("INSERT INTO rules_in_force (id, version) VALUES (1, $1)", other.version)
            rows = [("ann", 14, RULES.version, 10), ("bob", 14, other.version, None), ("cat", 10, None, 11)]
            for member, rank, version, pinned in rows:
                await pg.execute(
                    "INSERT INTO members (member_id, level_rank, level_seq, active_score, passive_score, points,"
                    " joined_at, version, updated_at, rules_version, pinned_rank)"
                    " VALUES ($1, $2, 1, 0, 0, '{}', now(), 1, now(), $3, $4)",
                    member,
                    rank,
                    version,
                    pinned,
                )
            await pg.execute("INSERT INTO level_counts VALUES (14, 2), (10, 1)")
            await pg.execute(
                "INSERT INTO pin_audit (member_id, action, level_rank, reason, operator, at)"
                " VALUES ('ann', 'pin', 10, 'staff', 'mod', now())"
            )

            await asyncio.to_thread(migrate, url, "upgrade", "head")
            got = await pg.fetch("SELECT member_id, level_id, pinned_level FROM members ORDER BY member_id")
            # ann under the default ladder; bob under his own, reversed at the top; cat (no version)
            # under the ladder in force, the reversed one.
            assert [tuple(r) for r in got] == [
                ("ann", "hyper_boss", "community_boss"),
                ("bob", "community_boss", None),
                ("cat", "hyper_boss", "exceptional_boss"),
            ]
            assert dict(await pg.fetch("SELECT level_id, members FROM level_counts")) == {
                "hyper_boss": 2,
                "community_boss": 1,
            }
            assert await pg.fetchval("SELECT level_id FROM pin_audit") == "community_boss"

            await asyncio.to_thread(migrate, url, "downgrade", "0007")
            got = await pg.fetch("SELECT member_id, level_rank, pinned_rank FROM members ORDER BY member_id")
            assert [tuple(r) for r in got] == [(m, rank, pinned) for m, rank, _, pinned in rows]
            assert await pg.fetchval("SELECT level_rank FROM pin_audit") == 10
        finally:
            await pg.close()
    finally:
        await _drop_database(admin, name)

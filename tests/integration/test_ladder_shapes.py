"""A ladder may change shape (SPEC §9.1, §9.3): levels are known by id across rules versions,
so a rescore to a shorter ladder moves every member onto it, a pin on a level it drops holds
the rescore back, and no read answers 500 for a member under any rules in force, even before a
rescore reaches the member."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common import db
from services.common.kafka import ensure_topics
from services.write.rules import record
from services.write.sql import rules as kept_rules
from shared.rules import DEFAULT_RULES_PATH, Rules
from tests.conftest import unique
from tests.integration.test_cli import cl
from tests.integration.test_pins import cl_env, history, seed
from tests.integration.test_scorer import running
from tests.integration.test_scorer_failures import scorer_settings
from tests.support import eventually, in_process, own_topics

DEFAULT = json.loads(DEFAULT_RULES_PATH.read_text())
IDS = [level["id"] for level in DEFAULT["levels"]]


def ladder(path: Path, version: str, ids: list[str], **active: int) -> Path:
    """The default rules with the levels `ids`, in that order, and other active thresholds (and
    the programmes whose level they keep)."""
    by_id = {level["id"]: level for level in DEFAULT["levels"]}
    levels = [{**by_id[i], **({"active": active[i]} if i in active else {})} for i in ids]
    programs = [p for p in DEFAULT["programs"] if p["min_level"] in ids]
    badges = [b for b in DEFAULT["badges"] if b.get("level", ids[0]) in ids]
    path.write_text(
        json.dumps({**DEFAULT, "version": version, "levels": levels, "programs": programs, "badges": badges})
    )
    return path


async def test_a_shorter_ladder_moves_everyone_onto_it_and_waits_for_pins_on_the_levels_it_drops(
    tmp_path: Path, run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("shape")), "database_url": fresh_database}
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    ann, bob = unique("ann"), unique("bob")
    for member in (ann, bob):
        await seed(fresh_database, {"type": "reply", "member_id": member, "content_id": f"r-{member}"})
    env = cl_env(run_env, kwargs, CL_OPERATOR="mod")
    easy = ladder(tmp_path / "easy.json", "easy", IDS, **{i: 5 for i in IDS[4:]})  # 5 points: Hyper Boss
    short = ladder(tmp_path / "short.json", "short", IDS[:12])  # no Exceptional or Hyper Boss

    code, out = await cl(env, "rescore", "--apply", str(easy))
    assert code == 0 and "2 members rescored, 2 of them changed level" in out, out
    code, out = await cl(env, "member", "pin", ann, "hyper_boss", "--reason", "staff")
    assert code == 0, out

    # The dry run names the pin the short ladder drops; the apply refuses and changes nothing.
    code, out = await cl(env, "rescore", "--dry-run", "--json", str(short))
    assert code == 0, out
    report = json.loads(out.splitlines()[-1])
    assert report["pins_dropped"] == [{"member_id": ann, "level": "hyper_boss"}]
    code, out = await cl(env, "rescore", "--apply", str(short))
    assert code == 1 and f"{ann} (hyper_boss)" in out and "cl member unpin" in " ".join(out.split()), out
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        assert await pg.fetchval("SELECT version FROM rules_in_force") == "easy"
        assert await pg.fetchval("SELECT count(*) FROM rules WHERE version = 'short'") == 0

        code, out = await cl(env, "member", "unpin", ann, "--reason", "no longer staff")
        assert code == 0 and "Hyper Boss" in out, out
        code, out = await cl(env, "rescore", "--apply", str(short))
        assert code == 0 and "2 members rescored, 2 of them changed level" in out, out
        rows = await pg.fetch("SELECT member_id, level_id, rules_version FROM members ORDER BY member_id")
        assert {(r["level_id"], r["rules_version"]) for r in rows} == {("new_contributor", "short")}
        assert dict(await pg.fetch("SELECT level_id, members FROM level_counts WHERE members <> 0")) == {
            "new_contributor": 2
        }
        for member in (ann, bob):
            last = (await history(pg, member))[-1]
            assert last["cause"]["kind"] == "rescore" and last["direction"] == "demoted"
            assert (last["from_level"]["id"], last["from_level"]["rank"]) == ("hyper_boss", 14)
            assert last["to_level"] == {"id": "new_contributor", "name": "New Contributor", "tier": "active", "rank": 5}
            assert last["rules_version"] == "short"

        code, out = await cl(env, "member", "pin", ann, "hyper_boss", "--reason", "staff")
        assert code == 2 and "no level 'hyper_boss'" in out, out
        code, out = await cl(env, "member", "pin", ann, "12", "--reason", "staff")  # a rank of the short ladder
        assert code == 0 and "Insightful Boss" in out, out
        assert await pg.fetchval("SELECT pinned_level FROM members WHERE member_id = $1", ann) == "insightful_boss"

        async with running(settings), in_process(create_app(ApiSettings(**kwargs))) as client:
            await eventually(lambda: _board_ready(client), what="the boards rebuilt")
            answer = (await client.get(f"/v1/members/{ann}")).json()
            assert answer["level"]["id"] == "insightful_boss" and answer["next_level"] is None
            assert (await client.get(f"/members/{ann}")).status_code == 200
            board = (await client.get("/v1/leaderboard?tier=active")).json()
            assert {e["member_id"]: e["level"]["id"] for e in board["entries"]} == {
                ann: "insightful_boss",
                bob: "new_contributor",
            }
    finally:
        await pg.close()


async def test_every_read_answers_for_a_member_no_rescore_has_reached_yet(
    tmp_path: Path, settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    """Rules in force whose ladder lacks a member's level, before the rescore reaches the member
    (or the scorer meets them): reads show the level as its own rules name it, and the scorer
    moves the member onto the new ladder with its next record."""
    kwargs = {**own_topics(settings_kwargs, unique("behind")), "database_url": fresh_database}
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    ann = unique("ann")
    await seed(fresh_database, *({"type": "article", "member_id": ann, "content_id": f"a{i}"} for i in range(4)))
    tiny = Rules.model_validate_json(ladder(tmp_path / "tiny.json", "tiny", IDS[:5]).read_text())
    engine = db.engine(fresh_database, "test")
    try:
        async with engine.begin() as conn:  # in force, and no member rescored
            await record(conn, tiny)
            await kept_rules.put_rules_in_force(conn, tiny.version)
    finally:
        await engine.dispose()
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    redis = Redis.from_url(settings.redis_url)
    try:
        assert await pg.fetchval("SELECT level_id FROM members") == "reliable_contributor"
        async with in_process(create_app(ApiSettings(**kwargs))) as client:
            await eventually(lambda: _in_force(client, "tiny"), what="the API follows the rules in force")
            answer = await client.get(f"/v1/members/{ann}")
            assert answer.status_code == 200, answer.text
            level = answer.json()["level"]
            assert (level["id"], level["name"], level["rank"]) == ("reliable_contributor", "Reliable Contributor", 7)
            assert answer.json()["next_level"] is None
            assert answer.json()["grants"][-3:] == ["upload_attachments", "edit_wiki", "create_group_messages"]
            assert (await client.get(f"/members/{ann}")).status_code == 200
            assert (await client.get(f"/v1/members?ids={ann}")).status_code == 200
            assert (await client.get(f"/v1/members/{ann}/level-changes")).status_code == 200

            # The scorer's next record for the member rescores it onto the tiny ladder first.
            await seed(fresh_database, {"event_id": "later", "type": "reply", "member_id": ann, "content_id": "r1"})
            row = await pg.fetchrow("SELECT level_id, rules_version FROM members")
            assert tuple(row) == ("new_contributor", "tiny")
            last = orjson.loads(
                await pg.fetchval("SELECT payload FROM level_changes WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1")
            )
            assert (last["from_level"]["id"], last["to_level"]["id"], last["cause"]["kind"]) == (
                "reliable_contributor",
                "new_contributor",
                "rescore",
            )
            # What the member held under the rules it reached Reliable Contributor under goes.
            assert (last["grants_added"], last["grants_removed"]) == (
                [],
                ["upload_attachments", "edit_wiki", "create_group_messages"],
            )
            await redis.delete(f"{settings.redis_prefix}member:{ann}")  # read from PostgreSQL
            assert (await client.get(f"/v1/members/{ann}")).json()["level"]["id"] == "new_contributor"
    finally:
        await redis.aclose()
        await pg.close()


async def _board_ready(client: Any) -> bool:
    return bool((await client.get("/v1/leaderboard?tier=active")).status_code == 200)


async def _in_force(client: Any, version: str) -> bool:
    return bool((await client.get("/v1/levels")).json().get("rules_version") == version)

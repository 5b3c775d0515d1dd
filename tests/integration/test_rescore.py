"""`cl rescore --apply` (SPEC §9.1) against a running scorer on a database of its own: new
rules put in force while activity goes on, the command killed with SIGKILL half-way and run
again; afterwards every member equals the test model under the new rules, and every member's
level changes form one chain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.cli.rescore import apply_everywhere
from services.common.kafka import ensure_topics
from services.common.settings import Settings
from services.scorer.settings import ScorerSettings
from shared.events import ActivityEvent
from shared.rules import default_rules, load_rules
from tests.conftest import ROOT, env_with, unique
from tests.integration.test_cli import cl
from tests.integration.test_pins import cl_env, seed
from tests.integration.test_scorer import publish, running
from tests.integration.test_scorer_failures import scorer_settings
from tests.model import LADDER, Model
from tests.streams import mixed_stream
from tests.support import eventually, in_process, own_topics, rules_file

# The tuned rules: replies worth more, views capped lower, a contributor level moved.
POINTS = {"reply": 30, "like_received": 4}
CAPS = {"view": 5}
THRESHOLD = ("general_contributor", 40)
DEFAULT_VERSION = default_rules().version


LADDER_TUNED = [(r, i, THRESHOLD[1] if i == THRESHOLD[0] else a, p, t) for r, i, a, p, t in LADDER]


def tuned_rules(path: Path) -> Path:
    return rules_file(path, "tuned", POINTS, CAPS, LADDER_TUNED)


def tuned_model() -> Model:
    return Model(datetime.now(UTC), points=POINTS, caps=CAPS, ladder=LADDER_TUNED)


async def members_under(pg: asyncpg.Connection, version: str) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM members WHERE rules_version = $1", version))


async def test_rescore_apply_is_exact_with_live_activity_and_a_kill_half_way(
    tmp_path: Path, run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    tag = unique("rs")
    kwargs = {**own_topics(settings_kwargs, tag), "database_url": fresh_database}
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    events = mixed_stream(tag, seed=11, members=240, count=2400)
    before, during = events[:1600], events[1600:]
    model = tuned_model()
    for event in events:
        model.apply(event)
    expected = model.expected()
    want = _figures(expected)
    tuned = tuned_rules(tmp_path / "tuned.json")
    env = env_with(run_env, CL_DATABASE_URL=fresh_database, CL_REDIS_PREFIX=settings.redis_prefix)
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        async with running(settings):
            await publish(settings, before)
            await eventually(lambda: _applied(pg, _records(before)), timeout=60, what="the first part applied")

            # Applying, in chunks of 5 members, while the rest of the activity arrives; killed half-way.
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "services.cli", "rescore", "--apply", "--chunk", "5", str(tuned)),
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await eventually(lambda: _in_force(pg, "tuned"), timeout=30, what="the new rules in force")
            live = asyncio.create_task(_trickle(settings, during))
            await eventually(lambda: _more_than(pg, 40), timeout=60, what="some members rescored")
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            assert await members_under(pg, "tuned") < len(expected), "the kill came too late to test anything"
            await live  # the scorer rescores the members it meets, the command being dead

            # Meanwhile each member is exactly one set of rules' result: its own version's.
            await eventually(lambda: _applied(pg, _records(events)), timeout=60, what="all activity applied")
            old = Model(model.now)
            for event in events:
                old.apply(event)
            under = {"tuned": want, DEFAULT_VERSION: _figures(old.expected())}
            half_way = await _members(pg, old.ladder)
            assert {m: under[version][m] for m, (version, _) in half_way.items()} == {
                m: figures for m, (_, figures) in half_way.items()
            }
            assert {version for version, _ in half_way.values()} == set(under)

            code, out = await cl(env, "rescore", "--apply", "--chunk", "7", str(tuned))
            assert code == 0, out
            assert "rules tuned in force" in out
            assert await members_under(pg, "tuned") == len(expected)

            await eventually(lambda: _applied(pg, _records(events)), timeout=60, what="all activity applied")
            assert await pg.fetchval("SELECT version FROM rules_in_force") == "tuned"
            rows = await pg.fetch("SELECT member_id, active_score, passive_score, points, level_id FROM members")
            got = {
                r["member_id"]: {
                    "active_score": r["active_score"],
                    "passive_score": r["passive_score"],
                    "points": {m: n for m, n in orjson.loads(r["points"]).items() if n},
                    "level": r["level_id"],
                }
                for r in rows
            }
            want = {
                m: {k: w[k] for k in ("active_score", "passive_score", "points", "level")} for m, w in expected.items()
            }
            assert got == want

            changes = await pg.fetch(
                "SELECT member_id, seq, payload FROM level_changes WHERE seq IS NOT NULL ORDER BY member_id, seq"
            )
            chains: dict[str, list[dict[str, Any]]] = {}
            for row in changes:
                chains.setdefault(row["member_id"], []).append(orjson.loads(row["payload"]))
            rescored = [c for chain in chains.values() for c in chain if c["cause"]["kind"] == "rescore"]
            assert rescored and all(c["rules_version"] == "tuned" for c in rescored)
            levels = dict(await pg.fetch("SELECT member_id, level_id FROM members"))
            for member, chain in chains.items():
                assert [c["seq"] for c in chain] == list(range(1, len(chain) + 1)), member
                assert chain[0]["from_level"] is None
                for earlier, later in zip(chain, chain[1:], strict=False):
                    assert later["from_level"]["id"] == earlier["to_level"]["id"], member
                assert chain[-1]["to_level"]["id"] == levels[member], member

            # Badges (SPEC §10.2): each held one was granted by one event, whichever of the scorer
            # and the rescore met it first; the new rules' history earns every one of them, or the
            # rules in force before did (a badge once granted stays).
            held = {tuple(r) for r in await pg.fetch("SELECT member_id, badge_id FROM member_badges")}
            granted = Counter(
                (r["member_id"], r["badge"])
                for r in await pg.fetch(
                    "SELECT member_id, payload::jsonb->'badge'->>'id' AS badge FROM level_changes"
                    " WHERE event_type = 'community.badge.granted'"
                )
            )
            assert set(granted) == held and set(granted.values()) == {1}
            earned = {(m, b) for m, badges in model.badges().items() for b in badges}
            earned_before = {(m, b) for m, badges in old.badges().items() for b in badges}
            assert earned and earned <= held <= earned | earned_before

            # The API follows without a restart: the ladder and what members still need are the new rules'.
            async with in_process(create_app(ApiSettings(**kwargs))) as api:
                await eventually(lambda: _ladder_is(api, "tuned"), timeout=10, what="the API on the new rules")
                levels = (await api.get("/v1/levels")).json()["levels"]
                assert next(lv for lv in levels if lv["id"] == THRESHOLD[0])["requires"] == {"active_score": 40}

            code, out = await cl(env, "rules", "check", str(tuned))
            assert code == 0 and "the same as the rules in force (version tuned)" in out, out

            # Run again: nothing is left to do, and nothing changes.
            count = await pg.fetchval("SELECT count(*) FROM level_changes")
            code, out = await cl(env, "rescore", "--apply", str(tuned))
            assert code == 0 and "0 members rescored" in out, out
            assert await pg.fetchval("SELECT count(*) FROM level_changes") == count

            # A version names one set of rules: other rules under a version already kept are refused.
            other = json.loads(tuned.read_text())
            other["metrics"]["post"]["points"] = 99
            (tmp_path / "other.json").write_text(json.dumps(other))
            code, out = await cl(env, "rescore", "--apply", str(tmp_path / "other.json"))
            assert code == 1 and "already recorded with other rules" in out, out
    finally:
        await pg.close()


def _figures(expected: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m: {k: w[k] for k in ("active_score", "passive_score", "points", "level")} for m, w in expected.items()}


async def _members(pg: asyncpg.Connection, ladder: list[tuple[int, str, int, int, int]]) -> dict[str, Any]:
    """Each member's rules version and figures, as the model gives them."""
    rows = await pg.fetch("SELECT member_id, rules_version, active_score, passive_score, points, level_id FROM members")
    return {
        r["member_id"]: (
            r["rules_version"],
            {
                "active_score": r["active_score"],
                "passive_score": r["passive_score"],
                "points": {m: n for m, n in orjson.loads(r["points"]).items() if n},
                "level": r["level_id"],
            },
        )
        for r in rows
    }


async def _ladder_is(api: httpx.AsyncClient, version: str) -> bool:
    return bool((await api.get("/v1/levels")).json()["rules_version"] == version)


async def _trickle(settings: ScorerSettings, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 20):
        await publish(settings, events[start : start + 20])
        await asyncio.sleep(0.05)


async def _in_force(pg: asyncpg.Connection, version: str) -> bool:
    return bool(await pg.fetchval("SELECT version FROM rules_in_force") == version)


def _records(events: list[dict[str, Any]]) -> int:
    """Records as published: one per member an event changes."""
    return sum(len(ActivityEvent.model_validate(e).subjects()) for e in events)


async def _applied(pg: asyncpg.Connection, records: int) -> bool:
    stored = await pg.fetchval("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets")
    return bool(stored >= records)


async def _more_than(pg: asyncpg.Connection, n: int) -> bool:
    return await members_under(pg, "tuned") > n


async def test_a_pinned_level_stays_through_a_rescore_dry_run_and_apply(
    tmp_path: Path, run_env: dict[str, str], settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("rs-pin")), "database_url": fresh_database}
    await seed(fresh_database, {"type": "reply", "member_id": "ann", "content_id": "r1"})  # 5 points: rank 5
    env = cl_env(run_env, kwargs, CL_OPERATOR="mod")
    code, out = await cl(env, "member", "pin", "ann", "new_member", "--reason", "held")
    assert code == 0, out
    tuned = tuned_rules(tmp_path / "tuned.json")  # replies 30: rank 6, were ann not pinned

    code, out = await cl(env, "rescore", "--dry-run", "--json", str(tuned))
    assert code == 0, out
    report = json.loads(out.splitlines()[-1])
    assert (report["moves"], report["level_changes"]) == (1, 0)

    code, out = await cl(env, "rescore", "--apply", str(tuned))
    assert code == 0 and "1 members rescored, 0 of them changed level" in out, out
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        row = await pg.fetchrow("SELECT level_id, active_score, pinned_level, level_seq FROM members")
        assert tuple(row) == ("new_member", 30, "new_member", 2)  # first level, then the pin
    finally:
        await pg.close()


async def test_rescore_apply_goes_through_the_members_in_chunks_and_keeps_only_counts(
    tmp_path: Path, settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    """Five members in chunks of two: each rescored once, exactly, and what the command keeps
    to report is counts by level pair, not a list that grows with the members."""
    kwargs = {**own_topics(settings_kwargs, unique("rs-chunk")), "database_url": fresh_database}
    members = [f"m{i}" for i in range(5)]
    await seed(fresh_database, *({"type": "post", "member_id": m, "content_id": f"p-{m}"} for m in members))
    lower = [(r, i, 5 if i == "general_contributor" else a, p, t) for r, i, a, p, t in LADDER]
    rules = load_rules(rules_file(tmp_path / "lower.json", "lower", {}, {}, lower))  # 10 points: rank 6, not 5

    done = await apply_everywhere(Settings(**kwargs), rules, chunk=2)

    assert (done.rescored, done.changed, done.pairs) == (5, 5, {("new_contributor", "general_contributor"): 5})
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        rows = await pg.fetch("SELECT member_id, level_id, active_score, rules_version FROM members")
        assert sorted(tuple(r) for r in rows) == [(m, "general_contributor", 10, "lower") for m in members]
    finally:
        await pg.close()

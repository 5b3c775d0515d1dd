"""The operators' command line, run as a process against the real servers."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.common import db
from services.common.kafka import ensure_topics
from services.write.unit_of_work import Incoming, UnitOfWork
from shared.events import ActivityEvent, ActivityRecord
from shared.rules import DEFAULT_RULES_PATH, default_rules
from tests.conftest import ROOT, env_with, unique
from tests.integration.test_scorer import event, running
from tests.integration.test_scorer_failures import scorer_settings
from tests.integration.test_stats import incoming
from tests.model import LADDER, Model
from tests.streams import mixed_stream
from tests.support import eventually, own_topics, read_topic, rules_file


async def cl(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_rules_check_validates_and_names_what_a_file_changes(tmp_path: Path, run_env: dict[str, str]) -> None:
    env = env_with(run_env)
    code, out = await cl(env, "rules", "check", str(DEFAULT_RULES_PATH))
    assert code == 0 and "the same as the rules in force" in out

    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["version"] = "tuned"
    rules["metrics"]["view"]["points"] = 2
    next(lv for lv in rules["levels"] if lv["id"] == "trusted_contributor")["active"] = 400
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps(rules))
    code, out = await cl(env, "rules", "check", str(tuned))
    assert code == 0
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert "view.points 1 2" in lines and "level trusted_contributor.active 500 400" in lines
    assert any(line.startswith("version ") and line.endswith(" tuned") for line in lines)

    del rules["metrics"]["view"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(rules))
    code, out = await cl(env, "rules", "check", str(broken))
    assert code == 1 and "missing ['view']" in out


async def test_rules_check_names_a_bad_look_and_shows_a_changed_one(tmp_path: Path, run_env: dict[str, str]) -> None:
    env = env_with(run_env)
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    trusted = next(lv for lv in rules["levels"] if lv["id"] == "trusted_contributor")
    trusted |= {"color": "#ff8800", "icon": "shield", "grants": [*trusted["grants"], "moderate_group"]}
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps(rules))
    code, out = await cl(env, "rules", "check", str(twice))
    assert code == 1 and "grant 'moderate_group' is given by both trusted_contributor and hyper_boss" in out

    trusted["grants"] = trusted["grants"][:-1]
    rules["version"] = "looks"
    rules["metrics"]["reply"]["how"] = "5 points per reply"
    looks = tmp_path / "looks.json"
    looks.write_text(json.dumps(rules))
    code, out = await cl(env, "rules", "check", str(looks))
    assert code == 0, out
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert "level trusted_contributor.color #5b3fa8 #ff8800" in lines
    assert "level trusted_contributor.icon unset shield" in lines
    assert "reply.how unset 5 points per reply" in lines
    assert any("`how` texts of reply are not shown" in line for line in lines)

    trusted["color"] = "orange"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rules))
    code, out = await cl(env, "rules", "check", str(bad))
    assert code == 1 and "levels.8.color" in out and "'orange' is not a colour: write it as #rrggbb" in out


async def test_backfill_refuses_an_invalid_file_then_imports_once(
    tmp_path: Path, run_env: dict[str, str], settings_kwargs: dict[str, Any], pg: asyncpg.Connection
) -> None:
    kwargs = own_topics(settings_kwargs, unique("backfill"))
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    env = env_with(run_env, CL_TOPIC_ACTIVITY=settings.topic_activity)
    ann, bob = unique("ann"), unique("bob")
    lines = [
        json.dumps(event("post", ann, content_id="p1")),
        json.dumps(event("reply", bob, content_id="r1")),
        '{"type": "post", "member_id": "' + ann + '"}',  # no event_id, no occurred_at, no content_id
        "",
        json.dumps(event("like", bob, content_id="p1", target_member_id=ann)),
        "not json",
    ]
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(lines) + "\n")

    code, out = await cl(env, "backfill", str(history))
    assert code == 1
    assert "line 3: " in out and "event_id" in out and "line 6: not JSON" in out and "nothing was published" in out
    assert "line 1:" not in out and "line 5:" not in out
    assert await read_topic(settings.kafka_bootstrap, settings.topic_activity) == []

    code, out = await cl(env, "backfill", "--skip-invalid", str(history))
    assert code == 0 and "3 events published as 4 records; 2 lines skipped" in out
    assert len(await read_topic(settings.kafka_bootstrap, settings.topic_activity)) == 4

    async def scores() -> list[tuple[str, int, int]]:
        rows = await pg.fetch(
            "SELECT member_id, active_score, (SELECT count(*) FROM activity a WHERE a.member_id = m.member_id)"
            " FROM members m WHERE member_id = ANY($1) ORDER BY member_id",
            [ann, bob],
        )
        return [tuple(r) for r in rows]

    expected = sorted([(ann, 13, 2), (bob, 6, 2)])  # post 10 + like received 3; reply 5 + like given 1
    async with running(settings):
        await eventually(lambda: _equals(scores(), expected), what="the history applied")
        code, _ = await cl(env, "backfill", "--skip-invalid", str(history))  # again: nothing changes
        assert code == 0
        assert len(await read_topic(settings.kafka_bootstrap, settings.topic_activity)) == 8
        await eventually(lambda: _offsets_at(pg, settings.group_id, settings.topic_activity, 8), what="all read")
        assert await scores() == expected


async def _equals(value: Any, expected: Any) -> bool:
    return await value == expected


async def _offsets_at(pg: asyncpg.Connection, group: str, topic: str, total: int) -> bool:
    stored = await pg.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1 AND topic = $2", group, topic
    )
    return bool(stored == total)


async def test_rescore_dry_run_reports_what_new_rules_would_change_and_writes_nothing(
    tmp_path: Path, run_env: dict[str, str], fresh_database: str
) -> None:
    engine = db.engine(fresh_database, "test")
    try:
        await UnitOfWork(engine, default_rules(), "g", "t").commit(
            [],
            incoming(
                [
                    # 5 now, 30 under the new rules; attributes are never scored (nor read by a rescore)
                    {"type": "reply", "member_id": "ann", "content_id": "r1", "attributes": {"n": 10**20}},
                    {"type": "view", "member_id": "bob", "content_id": "t1"},
                    {"type": "post", "member_id": "cat", "content_id": "p1"},
                ]
            ),
            datetime.now(UTC),
            [],
        )
    finally:
        await engine.dispose()
    rules = json.loads(DEFAULT_RULES_PATH.read_text())
    rules["version"] = "replies-30"
    rules["metrics"]["reply"]["points"] = 30
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps(rules))
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        before = await pg.fetch("SELECT *, xmin::text AS x FROM members ORDER BY member_id")
        outbox = await pg.fetchval("SELECT count(*) FROM level_changes")  # 3 level changes, and badges granted
        code, out = await cl(env_with(run_env, CL_DATABASE_URL=fresh_database), "rescore", "--dry-run", str(tuned))
        assert code == 0, out
        lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
        assert (
            "3 members replayed under rules replies-30; 1 would change level, 1 would change level or scores" in lines
        )
        assert "New Contributor General Contributor 1" in lines
        assert "ann 5 → 30 0 → 0" in lines
        assert "Sample: ann" in lines
        assert await pg.fetch("SELECT *, xmin::text AS x FROM members ORDER BY member_id") == before
        assert await pg.fetchval("SELECT count(*) FROM level_changes WHERE seq IS NOT NULL") == 3
        assert await pg.fetchval("SELECT count(*) FROM level_changes") == outbox
    finally:
        await pg.close()
    code, out = await cl(env_with(run_env, CL_DATABASE_URL=fresh_database), "rescore", str(tuned))
    assert code == 2 and "give one of --dry-run and --apply" in out


# Tuned rules for the generated dry run: other points, a cap where there was none and a tighter
# one, and other thresholds for three levels (promotions and demotions); each as the rules
# file and as the model takes it.
TUNED_POINTS = {"reply": 7, "view": 2, "comment": 1}
TUNED_CAPS = {"post": 20, "like_received": 30}
TUNED_LADDER = [
    (
        rank,
        level,
        {"general_contributor": 30, "reliable_contributor": 80}.get(level, a),
        {"community_member": 8}.get(level, p),
        t,
    )
    for rank, level, a, p, t in LADDER
]


def tuned_rules_file(path: Path) -> Path:
    return rules_file(path, "tuned", TUNED_POINTS, TUNED_CAPS, TUNED_LADDER)


async def store_through_the_scorer(database: str, events: list[dict[str, Any]], now: datetime) -> None:
    """Apply the events as the scorer does, in batches of its size, records in publish order."""
    records = []
    for offset, raw in enumerate(events):
        parsed = ActivityEvent.model_validate(raw)
        records += [
            Incoming(ActivityRecord(s, parsed), parsed.to_json().decode(), 0, offset) for s in parsed.subjects()
        ]
    engine = db.engine(database, "test")
    try:
        work = UnitOfWork(engine, default_rules(), "g", "t")
        for start in range(0, len(records), 500):
            await work.commit([], records[start : start + 500], now, [])
    finally:
        await engine.dispose()


async def snapshot(pg: asyncpg.Connection) -> dict[str, str]:
    """Every table's rows and their row versions (xmin), as a digest per table."""
    tables = await pg.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    digest = "md5(coalesce(string_agg(r::text || r.xmin::text, '|' ORDER BY r::text), ''))"
    return {t["tablename"]: await pg.fetchval(f'SELECT {digest} FROM "{t["tablename"]}" r') for t in tables}


def _badges_gained(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, int]:
    gained: dict[str, int] = {}
    for member, held in new.items():
        for badge in held:
            if badge not in old.get(member, {}):
                gained[badge] = gained.get(badge, 0) + 1
    return dict(sorted(gained.items()))


def expected_report(before: Model, after: Model, sample: int) -> dict[str, Any]:
    """What the dry run should report, from the model under the rules in force and the new ones."""
    old, new = before.expected(), after.expected()
    moved = []
    for member in sorted(old):
        was, now = old[member], new[member]
        figures = [(w["level"], w["active_score"], w["passive_score"]) for w in (was, now)]
        if figures[0] != figures[1]:
            moved.append((member, figures[0], figures[1]))
    pairs: dict[tuple[str, str], int] = {}
    for _, (was_level, *_), (now_level, *_) in moved:
        if was_level != now_level:
            pairs[(was_level, now_level)] = pairs.get((was_level, now_level), 0) + 1
    rank = {level: r for r, level, *_ in LADDER}
    largest = sorted(moved, key=lambda m: (-(abs(m[2][1] - m[1][1]) + abs(m[2][2] - m[1][2])), m[0]))[:sample]
    return {
        "rules_version": "tuned",
        "members": len(old),
        "level_changes": sum(pairs.values()),
        "moves": len(moved),
        "from_to": [
            {"from": w, "to": n, "members": count}
            for (w, n), count in sorted(pairs.items(), key=lambda p: (rank[p[0][0]], rank[p[0][1]]))
        ],
        "pins_dropped": [],
        "enrolled_below": [],  # no member of the stream is enrolled
        # Same catalogue: badges the new rules' history earns that members have not had.
        "badges": {"granted": _badges_gained(before.badges(), after.badges()), "revoked": {}},
        "largest_moves": [
            {"member_id": m, "active": [was[1], now[1]], "passive": [was[2], now[2]]} for m, was, now in largest
        ],
    }


async def test_rescore_dry_run_of_a_generated_history_reports_what_the_model_computes(
    tmp_path: Path, run_env: dict[str, str], fresh_database: str
) -> None:
    events = mixed_stream("dry", seed=11, members=240, count=3000)
    now = datetime.now(UTC)
    await store_through_the_scorer(fresh_database, events, now)
    before, after = Model(now), Model(now, points=TUNED_POINTS, caps=TUNED_CAPS, ladder=TUNED_LADDER)
    for raw in events:
        before.apply(raw)
        after.apply(raw)
    want = expected_report(before, after, sample=12)
    assert want["level_changes"] >= 10 and len(want["from_to"]) >= 3, "the tuned rules should move levels"

    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        stored = {
            r["member_id"]: (r["level_id"], r["active_score"], r["passive_score"])
            for r in await pg.fetch("SELECT member_id, level_id, active_score, passive_score FROM members")
        }
        assert stored == {m: (w["level"], w["active_score"], w["passive_score"]) for m, w in before.expected().items()}
        tables = await snapshot(pg)
        env = env_with(run_env, CL_DATABASE_URL=fresh_database)
        code, out = await cl(
            env, "rescore", "--dry-run", "--json", "--sample", "12", str(tuned_rules_file(tmp_path / "t.json"))
        )
        assert code == 0, out
        got = json.loads(out.strip().splitlines()[-1])
        sample = got.pop("sample")
        assert got == want
        changed = {m for m, w in after.expected().items() if w["level"] != stored[m][0]}
        assert sample == sorted(changed)[:12]
        assert await snapshot(pg) == tables, "a dry run wrote something"
    finally:
        await pg.close()


async def test_backfill_of_a_generated_history_equals_the_model_and_a_second_run_changes_nothing(
    tmp_path: Path, run_env: dict[str, str], settings_kwargs: dict[str, Any], pg: asyncpg.Connection
) -> None:
    tag = unique("bf")
    kwargs = own_topics(settings_kwargs, tag)
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    env = env_with(run_env, CL_TOPIC_ACTIVITY=settings.topic_activity)
    events = mixed_stream(tag, seed=5, members=80, count=500)
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(e) + "\n" for e in events))
    model = Model(datetime.now(UTC))
    for raw in events:
        model.apply(raw)
    expected = model.expected()
    assert sum(w["points"].get("like_received", 0) > 0 for w in expected.values()) >= 10
    assert any(e["type"] == "unlike" for e in events) and any(e["type"] == "content_removed" for e in events)
    members = sorted(expected)

    async def stored() -> dict[str, dict[str, Any]]:
        rows = await pg.fetch(
            "SELECT m.member_id, m.active_score, m.passive_score, m.level_id, m.points::text,"
            " (SELECT array_agg(c.payload ORDER BY c.seq) FROM level_changes c"
            " WHERE c.member_id = m.member_id AND c.seq IS NOT NULL),"
            " (SELECT count(*) FROM activity a WHERE a.member_id = m.member_id)"
            " FROM members m WHERE m.member_id = ANY($1)",
            members,
        )
        out = {}
        for member, active, passive, level, points, payloads, _ in rows:
            changes = [json.loads(p) for p in payloads or []]
            out[member] = {
                "active_score": active,
                "passive_score": passive,
                "level": level,
                "points": {m: n for m, n in json.loads(points).items() if n},
                "level_changes": [[(c["from_level"] or {}).get("rank"), c["to_level"]["rank"]] for c in changes],
            }
        return out

    async def as_modelled() -> bool:
        return await stored() == expected

    async with running(settings):
        code, out = await cl(env, "backfill", str(history))
        assert code == 0, out
        published = int(out.split(" records")[0].split()[-1].replace(",", ""))
        await eventually(as_modelled, timeout=90, what="every member as the model has it")
        activity = await pg.fetchval("SELECT count(*) FROM activity WHERE member_id = ANY($1)", members)
        changes = await pg.fetchval(
            "SELECT count(*) FROM level_changes WHERE member_id = ANY($1) AND seq IS NOT NULL", members
        )
        assert changes == sum(len(w["level_changes"]) for w in expected.values())

        granted = await pg.fetchval("SELECT count(*) FROM member_badges WHERE member_id = ANY($1)", members)
        assert granted == sum(len(b) for b in model.badges().values())  # backfill grants what history earned
        outboxed = await pg.fetchval("SELECT count(*) FROM level_changes WHERE member_id = ANY($1)", members)
        code, out = await cl(env, "backfill", str(history))  # again: nothing changes
        assert code == 0, out
        topic = settings.topic_activity
        await eventually(lambda: _offsets_at(pg, settings.group_id, topic, 2 * published), what="the rerun read")
        assert await stored() == expected
        assert await pg.fetchval("SELECT count(*) FROM activity WHERE member_id = ANY($1)", members) == activity
        rerun = "SELECT count(*) FROM level_changes WHERE member_id = ANY($1) AND seq IS NOT NULL"
        assert await pg.fetchval(rerun, members) == changes
        assert await pg.fetchval("SELECT count(*) FROM level_changes WHERE member_id = ANY($1)", members) == outboxed

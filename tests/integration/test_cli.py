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
from services.scorer.unit_of_work import UnitOfWork
from shared.rules import DEFAULT_RULES_PATH, default_rules
from tests.conftest import ROOT, env_with, unique
from tests.integration.test_scorer import event, running
from tests.integration.test_scorer_failures import scorer_settings
from tests.integration.test_stats import incoming
from tests.support import eventually, own_topics, read_topic


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
                    {"type": "reply", "member_id": "ann", "content_id": "r1"},  # 5 now, 30 under the new rules
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
        assert await pg.fetchval("SELECT count(*) FROM level_changes") == 3
    finally:
        await pg.close()
    code, out = await cl(env_with(run_env, CL_DATABASE_URL=fresh_database), "rescore", str(tuned))
    assert code == 2 and "give one of --dry-run and --apply" in out

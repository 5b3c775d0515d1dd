"""A member's events other than level changes (badges, programmes) share the level changes'
outbox: published on the member-keyed topic in the order recorded, with their own CloudEvents
type, and never counted as level changes (SPEC §6, §10.2, §11)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import orjson

from services.common import db
from services.scorer.settings import ScorerSettings
from services.write.outbox import payload
from services.write.sql.outbox import MemberEvent, record_events
from tests.conftest import unique
from tests.integration.test_scorer import _equals, running
from tests.integration.test_scorer_failures import settings  # noqa: F401 (fixture)
from tests.support import eventually, read_topic
from tests.unit.test_scoring import NOW, RULES, ev, play


async def test_other_events_go_out_between_level_changes_in_the_order_recorded(
    settings: ScorerSettings,  # noqa: F811
    pg: asyncpg.Connection,
) -> None:
    _, changes = play(ev("article", content_id="a"), ev("content_removed", content_id="a"))
    member = unique("ivy")
    changes = [c.__class__(**{**c.__dict__, "member_id": member}) for c in changes]
    badge = orjson.dumps({"event_id": unique("badge"), "member_id": member, "emitted_at": "2026-11-29T12:00:00Z"})
    engine = db.engine(settings.database_url, "test")
    try:
        async with engine.begin() as conn:
            await record_events(
                conn,
                [
                    (changes[0], payload(changes[0], RULES, NOW)),
                    MemberEvent(member, "community.badge.granted", badge, datetime.now(UTC)),
                    (changes[1], payload(changes[1], RULES, NOW)),
                ],
            )
    finally:
        await engine.dispose()
    async with running(settings):
        unsent = "SELECT count(*) FROM level_changes WHERE member_id = $1 AND sent_at IS NULL"
        await eventually(lambda: _equals(pg.fetchval(unsent, member), 0), timeout=10, what="all published")
    records = await read_topic(settings.kafka_bootstrap, settings.topic_level_changes, {member})
    types = [dict(r.headers)["ce_type"].decode() for r in records]
    assert types == ["community.level.promoted", "community.badge.granted", "community.level.demoted"]
    assert records[1].value == badge
    # The level history counts level changes only: seq 1, 2, with no gap for the badge.
    seqs = await pg.fetch("SELECT seq FROM level_changes WHERE member_id = $1 AND seq IS NOT NULL ORDER BY id", member)
    assert [r["seq"] for r in seqs] == [1, 2]

"""`member_periods` keeps the periods docs/PERFORMANCE.md names and the scorer prunes the
rest, a batch at a time, while members score."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from services.common.kafka import ensure_topics
from services.scorer.service import PRUNE_PAGE
from shared.scoring import oldest_kept, periods
from tests.conftest import unique
from tests.integration.test_scorer import event, publish, running
from tests.integration.test_scorer_failures import scorer_settings
from tests.support import eventually, own_topics


def _before(name: str) -> str:
    """The period of the same kind just before `name` ("week:2025-W48", "month:2024-11", "year:2021")."""
    kind, rest = name.split(":")
    if kind == "year":
        return f"year:{int(rest) - 1}"
    if kind == "month":
        year, month = map(int, rest.split("-"))
        return f"month:{year - (month == 1)}-{(month - 2) % 12 + 1:02d}"
    iso_year, week = map(int, rest.split("-W"))
    return periods((date.fromisocalendar(iso_year, week, 1) - timedelta(days=7)).isoformat())[1]


async def test_periods_past_their_retention_are_pruned_and_the_others_kept(
    settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("prune")), "database_url": fresh_database}
    settings = scorer_settings(
        kwargs,
        prune_interval=timedelta(milliseconds=300),
        periods_weeks_kept=4,
        periods_months_kept=3,
        periods_years_kept=3,
    )
    await ensure_topics(settings)
    now = datetime.now(UTC)
    oldest = oldest_kept(now.date(), 4, 3, 3)
    expired = [_before(name) for name in oldest.values()]
    kept = [*oldest.values(), f"year:{now.year - 1}"]
    ann = unique("ann")
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        # More expired rows than one transaction deletes, and the kept ones, for many members.
        await pg.execute(
            "INSERT INTO member_periods (member_id, tier, period, points)"
            " SELECT 'm' || i, tier, period, 3 FROM generate_series(1, $1) AS i,"
            " unnest(ARRAY['active', 'passive']) AS tier, unnest($2::text[]) AS period",
            PRUNE_PAGE,
            expired + kept,
        )
        await publish(settings, [event("post", ann, content_id="p1", at=now)])
        async with running(settings):
            await eventually(lambda: _count(pg, "member_id = $1", ann), what="ann's running periods")
            await eventually(
                lambda: _none(pg, "period = ANY($1::text[])", expired), timeout=20, what="the expired periods pruned"
            )
        rows = await pg.fetch("SELECT period, count(*) AS n FROM member_periods GROUP BY period")
        assert dict((r["period"], r["n"]) for r in rows) == {
            **{name: 2 * PRUNE_PAGE for name in kept},
            **{name: 1 for name in periods(now.date().isoformat())},  # ann's post: active points only
        }
    finally:
        await pg.close()


async def _count(pg: asyncpg.Connection, where: str, *args: Any) -> bool:
    return bool(await pg.fetchval(f"SELECT count(*) FROM member_periods WHERE {where}", *args))


async def _none(pg: asyncpg.Connection, where: str, *args: Any) -> bool:
    return not await _count(pg, where, *args)

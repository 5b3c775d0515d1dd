"""Boards over any period (SPEC §7, §11) against a scorer and an API of their own database,
topics and Redis prefix: the running year from Redis, past years, months and weeks from
PostgreSQL, with pinned members left out and by accepted solutions, each equal to the model's
(tests/model.py); and who holds a level, who is within reach of it, and the promotions per level."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from services.api.app import create_app
from services.api.settings import ApiSettings
from services.common.kafka import ensure_topics
from tests.conftest import unique
from tests.integration.test_pins import seed
from tests.integration.test_scorer import event, publish, running
from tests.integration.test_scorer_failures import scorer_settings
from tests.model import Model, board
from tests.support import eventually, in_process, own_topics

NOW = datetime.now(UTC)
LAST_YEAR = NOW.year - 1
NEW_YEAR = datetime(NOW.year, 1, 1, tzinfo=UTC)


def shown(entries: list[dict[str, Any]]) -> list[tuple[int, str, int]]:
    return [(e["rank"], e["member_id"], e["score"]) for e in entries]


async def whole_board(client: httpx.AsyncClient, params: dict[str, str], page: int) -> tuple[list[Any], int] | None:
    """A board read a page of `page` at a time (ranks must hold across pages); None on an error."""
    got: list[tuple[int, str, int]] = []
    while True:
        response = await client.get("/v1/leaderboard", params={**params, "limit": page, "offset": len(got)})
        if response.status_code != 200:
            return None
        body = response.json()
        got += shown(body["entries"])
        if len(body["entries"]) < page:
            return got, body["total"]


async def test_year_and_past_period_boards_rank_as_the_model_with_and_without_pinned_members(
    settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    kwargs = {**own_topics(settings_kwargs, unique("yb")), "database_url": fresh_database}
    settings = scorer_settings(kwargs)
    await ensure_topics(settings)
    ann, bob, cat, dan, eve, staff = (unique(n) for n in ("ann", "bob", "cat", "dan", "eve", "staff"))
    eve_, recent = NEW_YEAR - timedelta(hours=12), NOW - timedelta(minutes=1)
    events = [
        # A like on 31 December reversed on 2 January counts against the old year.
        event("post", bob, content_id="p1", at=eve_),
        event("like", ann, content_id="p1", target_member_id=bob, at=eve_ + timedelta(hours=1)),
        event("unlike", ann, content_id="p1", target_member_id=bob, at=NEW_YEAR + timedelta(days=1)),
        event("reply", cat, content_id="c1", at=datetime(LAST_YEAR, 6, 1, tzinfo=UTC)),
        event(
            "solution_accepted", dan, content_id="c1", target_member_id=cat, at=datetime(LAST_YEAR, 6, 1, tzinfo=UTC)
        ),
        event("article", staff, content_id="s1", at=eve_),  # staff: top of last year, pinned
        event("comment", dan, content_id="d1", at=eve_),
        event("comment", eve, content_id="e0", at=eve_),  # dan and eve tie on last year's points too
        event("post", eve, content_id="e1", at=recent),
        event("reply", staff, content_id="s2", at=recent),
        event("reply", ann, content_id="a1", at=recent),
        event("visit", ann, duration_s=700, at=recent),
        event("solution_accepted", ann, content_id="e1", target_member_id=eve, at=recent),
        event("post", dan, content_id="d2", at=recent),  # dan and eve tie on this year's active points
        event("reply", dan, content_id="d3", at=recent),
        event("comment", dan, content_id="d4", at=recent),
    ]
    model = Model(NOW)
    for e in events:
        model.apply(e)
    await publish(settings, events)
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        async with running(settings), in_process(create_app(ApiSettings(**kwargs))) as client:
            year = {"period": "year"}
            await eventually(
                lambda: _board_is(client, year, board(model, "active", f"year:{NOW.year}")), what="this year's board"
            )
            await pg.execute(
                "UPDATE members SET pinned_level = level_id, pinned_reason = 'staff' WHERE member_id = $1", staff
            )
            pinned = frozenset({staff})
            cases: list[tuple[dict[str, str], str, str]] = []
            for period, name in [("year", f"year:{NOW.year}"), (f"year:{LAST_YEAR}", f"year:{LAST_YEAR}")] + [
                (f"month:{LAST_YEAR}-12", f"month:{LAST_YEAR}-12"),
                (f"year:{NOW.year}", f"year:{NOW.year}"),  # the running year by name: its Redis board
                ("all", "all"),
            ]:
                for tier in ("active", "passive"):
                    cases.append(({"tier": tier, "period": period}, tier, name))
                cases.append(({"metric": "solution_accepted", "period": period}, "solution_accepted", name))
            for params, which, name in cases:
                for exclude, left_out in ((None, frozenset[str]()), ("pinned", pinned)):
                    asked = params | ({"exclude": exclude} if exclude else {})
                    want = board(model, which, name, left_out)
                    for page in (1, 2, 100):
                        assert await whole_board(client, asked, page) == (want, len(want)), (asked, page)
                    for member in (ann, bob, cat, dan, eve, staff):
                        place = (await client.get(f"/v1/members/{member}/rank", params=asked)).json()
                        expected = next(((r, n) for r, m, n in want if m == member), (None, None))
                        assert (place["rank"], place["period_name"]) == (expected[0], name), (asked, member)
                        if expected[1] is not None:
                            assert place["score"] == expected[1]

            # The old year as PostgreSQL keeps it: the like bob received taken back, staff at the top.
            last = (await client.get("/v1/leaderboard", params={"period": f"year:{LAST_YEAR}"})).json()
            assert shown(last["entries"]) == [(1, staff, 25), (2, cat, 20), (3, bob, 10), (4, dan, 2), (4, eve, 2)]
            without = await client.get("/v1/leaderboard", params={"period": f"year:{LAST_YEAR}", "exclude": "pinned"})
            assert shown(without.json()["entries"]) == [(1, cat, 20), (2, bob, 10), (3, dan, 2), (3, eve, 2)]
    finally:
        await pg.close()


async def _board_is(client: httpx.AsyncClient, params: dict[str, str], want: list[tuple[int, str, int]]) -> bool:
    got = await whole_board(client, params, 100)
    return got == (want, len(want))


async def test_who_holds_a_level_who_is_within_reach_and_the_promotions_into_each(
    settings_kwargs: dict[str, Any], fresh_database: str
) -> None:
    ann, bob, cat, dan, eve, fay = (unique(n) for n in ("ann", "bob", "cat", "dan", "eve", "fay"))
    await seed(
        fresh_database,
        {"type": "article", "member_id": ann, "content_id": "a1"},  # 25: General Contributor
        {"type": "post", "member_id": ann, "content_id": "a2"},  # 35
        {"type": "article", "member_id": bob, "content_id": "b1"},  # 25: General Contributor
        {"type": "post", "member_id": cat, "content_id": "c1"},  # 10: New Contributor
        {"type": "post", "member_id": dan, "content_id": "d1"},  # 20: New Contributor, pinned below
        {"type": "post", "member_id": dan, "content_id": "d2"},
        {"type": "reply", "member_id": eve, "content_id": "e1"},  # 5: New Contributor
        {"type": "post", "member_id": fay, "content_id": "f1"},  # 10, tied with cat
        {"type": "view", "member_id": unique("gus"), "content_id": "t1"},  # New Member
    )
    pg = await asyncpg.connect(fresh_database.replace("+asyncpg", ""))
    try:
        await pg.execute("UPDATE members SET pinned_level = level_id WHERE member_id = $1", dan)
    finally:
        await pg.close()
    api = ApiSettings(**{**settings_kwargs, "database_url": fresh_database})
    async with in_process(create_app(api)) as client:
        held = (await client.get("/v1/levels/general_contributor/members")).json()
        assert [(m["member_id"], m["active_score"], m["needs"]) for m in held["members"]] == [
            (ann, 35, []),
            (bob, 25, []),
        ]
        assert held["total"] == 2 and held["below"]["id"] == "new_contributor"
        page = (await client.get("/v1/levels/general_contributor/members", params={"offset": 1, "limit": 1})).json()
        assert [m["member_id"] for m in page["members"]] == [bob]

        near = (await client.get("/v1/levels/general_contributor/within-reach")).json()
        # cat and fay both need 15 (member id decides), eve 20; dan is pinned: no score moves him.
        assert [(m["member_id"], [n["remaining"] for n in m["needs"]]) for m in near["members"]] == sorted(
            [(cat, [15]), (fay, [15])]
        ) + [(eve, [20])]
        assert near["total"] == 3 and near["members"][0]["level"]["id"] == "new_contributor"
        first = (await client.get("/v1/levels/new_member/within-reach")).json()
        assert first["below"] is None and first["members"] == [] and first["total"] == 0

        for path in ("/v1/levels/grand_wizard/members", "/v1/levels/grand_wizard/within-reach"):
            missing = await client.get(path)
            assert missing.status_code == 404 and "grand_wizard" in missing.json()["message"]

        stats = (await client.get("/v1/stats")).json()
        promoted = {level["id"]: level["promoted_last_30d"] for level in stats["by_level"]}
        # Each member's first level is a promotion into it (ann and bob went straight to General Contributor).
        assert promoted["general_contributor"] == 2 and promoted["new_contributor"] == 4 and promoted["new_member"] == 1
        assert sum(promoted.values()) == stats["level_changes"]["last_7d"]["promoted"]

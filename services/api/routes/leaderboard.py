"""The leaderboards: a page of one, and one member's place on one (SPEC §7)."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from services.api import schemas
from services.api.answers import DOWN, GONE, INVALID, NOT_FOUND, not_found, ok
from services.api.reads import leaderboard_page, member_place, member_views
from services.api.rules import RulesInForce
from services.api.schemas import DIGITS, ONCE
from shared.events import MEMBER_ID
from shared.scoring import PERIOD_PATTERN, BoardMetric

PERIOD = Annotated[
    str,
    Query(
        pattern=PERIOD_PATTERN,
        description="all; the running week, month or year; or a past one: week:2026-W49, month:2026-11, year:2025",
    ),
]
METRIC = Annotated[BoardMetric | None, Query(description="rank by this metric's points instead of the tier's")]
EXCLUDE = Annotated[Literal["pinned"] | None, Query(description="leave out members whose level is pinned")]


def router(in_force: RulesInForce) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/v1/leaderboard",
        dependencies=[ONCE],
        summary="Members ranked by score or by one metric, all time, this year, month or week, or a past one",
        responses={200: ok(schemas.Leaderboard), 410: GONE, 422: INVALID, 503: DOWN},
    )
    async def leaderboard(
        request: Request,
        tier: Annotated[Literal["active", "passive"], Query()] = "active",
        period: PERIOD = "all",
        limit: Annotated[int, Query(ge=1, le=100), DIGITS] = 25,
        offset: Annotated[int, Query(ge=0, le=1_000_000), DIGITS] = 0,
        metric: METRIC = None,
        exclude: EXCLUDE = None,
    ) -> Response:
        body = await leaderboard_page(request.app.state, in_force, tier, period, offset, limit, metric, exclude)
        return Response(orjson.dumps(body), media_type="application/json")

    @api.get(
        "/v1/members/{member_id}/rank",
        dependencies=[ONCE],
        summary="One member's rank and score on a leaderboard",
        responses={200: ok(schemas.Rank), 404: NOT_FOUND, 410: GONE, 422: INVALID, 503: DOWN},
    )
    async def rank(
        request: Request,
        member_id: Annotated[str, Path(pattern=MEMBER_ID)],
        tier: Annotated[Literal["active", "passive"], Query()] = "active",
        period: PERIOD = "all",
        metric: METRIC = None,
        exclude: EXCLUDE = None,
    ) -> Response:
        if member_id not in await member_views(request.app.state, [member_id]):
            return not_found(member_id)
        name, place, points = await member_place(request.app.state, tier, period, member_id, metric, exclude)
        body: dict[str, object] = {"member_id": member_id, "tier": tier, "metric": metric, "period": period}
        body |= {"period_name": name, "exclude": exclude, "rank": place}
        return Response(orjson.dumps(body | {"score": points}), media_type="application/json")

    return api

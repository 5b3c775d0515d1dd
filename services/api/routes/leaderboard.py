"""The leaderboards: a page of one, and one member's place on one (SPEC §7)."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from services.api import schemas
from services.api.answers import DOWN, INVALID, NOT_FOUND, not_found, ok
from services.api.reads import leaderboard_page, member_place, member_views
from services.api.rules import RulesInForce
from services.api.schemas import DIGITS, ONCE
from shared.events import MEMBER_ID


def router(in_force: RulesInForce) -> APIRouter:
    api = APIRouter()

    @api.get(
        "/v1/leaderboard",
        dependencies=[ONCE],
        summary="Members ranked by score, all time or this month or week",
        responses={200: ok(schemas.Leaderboard), 422: INVALID, 503: DOWN},
    )
    async def leaderboard(
        request: Request,
        tier: Annotated[Literal["active", "passive"], Query()] = "active",
        period: Annotated[Literal["all", "month", "week"], Query()] = "all",
        limit: Annotated[int, Query(ge=1, le=100), DIGITS] = 25,
        offset: Annotated[int, Query(ge=0, le=1_000_000), DIGITS] = 0,
    ) -> Response:
        body = await leaderboard_page(request.app.state, in_force, tier, period, offset, limit)
        return Response(orjson.dumps(body), media_type="application/json")

    @api.get(
        "/v1/members/{member_id}/rank",
        dependencies=[ONCE],
        summary="One member's rank and score on a leaderboard",
        responses={200: ok(schemas.Rank), 404: NOT_FOUND, 422: INVALID, 503: DOWN},
    )
    async def rank(
        request: Request,
        member_id: Annotated[str, Path(pattern=MEMBER_ID)],
        tier: Annotated[Literal["active", "passive"], Query()] = "active",
        period: Annotated[Literal["all", "month", "week"], Query()] = "all",
    ) -> Response:
        if member_id not in await member_views(request.app.state, [member_id]):
            return not_found(member_id)
        name, place, points = await member_place(request.app.state, tier, period, member_id)
        body = {"member_id": member_id, "tier": tier, "period": period, "period_name": name, "rank": place}
        return Response(orjson.dumps(body | {"score": points}), media_type="application/json")

    return api

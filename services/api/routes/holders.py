"""Who holds a level now, and who is within reach of it (SPEC §7, §11): for community managers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from services.api import schemas
from services.api.answers import DOWN, INVALID, ok
from services.api.reads import level_members
from services.api.rules import RulesInForce
from services.api.schemas import DIGITS, ONCE
from services.common.http import error, error_doc

NO_LEVEL = error_doc("the rules in force have no level of this id")
LIMIT = Annotated[int, Query(ge=1, le=100), DIGITS]
OFFSET = Annotated[int, Query(ge=0, le=1_000_000), DIGITS]
LEVEL_ID = Annotated[str, Path(min_length=1, max_length=128)]


# Both lists page the same way; `within-reach` lists the members one level below.
ROUTES = [
    ("/v1/levels/{level_id}/members", "The members at a level now, by the score of its tier", False),
    ("/v1/levels/{level_id}/within-reach", "The members one level below a level, by what they still need", True),
]


def router(in_force: RulesInForce) -> APIRouter:
    api = APIRouter()

    def route(reach: bool) -> Callable[..., Awaitable[Response]]:
        async def members(request: Request, level_id: LEVEL_ID, limit: LIMIT = 25, offset: OFFSET = 0) -> Response:
            now = datetime.now(UTC)
            body = await level_members(request.app.state, in_force, level_id, reach, now, offset, limit)
            if body is None:
                return error(404, "not_found", f"the rules in force have no level {level_id!r}")
            return Response(orjson.dumps(body), media_type="application/json")

        return members

    for path, summary, reach in ROUTES:
        api.add_api_route(
            path,
            route(reach),
            methods=["GET"],
            dependencies=[ONCE],
            summary=summary,
            responses={200: ok(schemas.LevelMembers), 404: NO_LEVEL, 422: INVALID, 503: DOWN},
        )
    return api

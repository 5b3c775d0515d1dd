"""Members: one (with its ETag), many at once, and a member's level history (SPEC §7)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from services.api import schemas
from services.api.answers import DOWN, INVALID, NOT_FOUND, NOT_MODIFIED, Rendered, not_found, ok
from services.api.reads import level_changes, member_views
from services.api.rules import RulesInForce
from services.api.schemas import DIGITS, ONCE
from services.common.http import error_doc
from shared.events import MEMBER_ID, MEMBER_ID_PATTERN

MANY_MAX = 100
# The document says all of what ids may be, so a request valid by the schema is one we answer.
IDS = f"^{MEMBER_ID_PATTERN}(,{MEMBER_ID_PATTERN}){{0,{MANY_MAX - 1}}}$"
IDS_RULE = f"1 to {MANY_MAX} member ids, comma-separated, each 1 to 128 of A-Z a-z 0-9 . _ : @ -"


def explain(e: dict[str, Any]) -> str | None:
    """A query's `ids` refused, in words rather than its pattern, which is long."""
    if e["loc"] != ("query", "ids") or e["type"] != "string_pattern_mismatch":
        return None
    wanted = e["input"].split(",")
    bad = [i for i in wanted if not re.fullmatch(MEMBER_ID, i)]
    if bad:
        return f"not member ids: {json.dumps(bad[:5])}; ids must be {IDS_RULE}"
    return f"names {len(wanted)} members; ids must be {IDS_RULE}"


def router(in_force: RulesInForce) -> APIRouter:
    api = APIRouter()
    rendered = Rendered(in_force)

    @api.get(
        "/v1/members/{member_id}",
        summary="One member's level, scores and progress to the next level",
        responses={200: ok(schemas.Member), 304: NOT_MODIFIED, 404: NOT_FOUND, 422: INVALID, 503: DOWN},
    )
    async def member(request: Request, member_id: Annotated[str, Path(pattern=MEMBER_ID)]) -> Response:
        found = (await member_views(request.app.state, [member_id])).get(member_id)
        if found is None:
            return not_found(member_id)
        answer = rendered.answer(found, datetime.now(UTC))
        headers = {"ETag": answer.etag, "Cache-Control": "no-cache"}
        if answer.etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
            return Response(status_code=304, headers=headers)
        return Response(answer.body, media_type="application/json", headers=headers)

    @api.get(
        "/v1/members",
        dependencies=[ONCE],
        summary="Many members at once (a thread page)",
        responses={
            200: ok(schemas.Members),
            422: error_doc(f"ids is missing, or not {IDS_RULE}"),
            503: DOWN,
        },
    )
    async def members(
        request: Request,
        ids: Annotated[str, Query(description=IDS_RULE, pattern=IDS)],
    ) -> Response:
        wanted = list(dict.fromkeys(ids.split(",")))  # a repeated id is answered once
        found = await member_views(request.app.state, wanted)
        now = datetime.now(UTC)
        # As orjson.dumps({"members": [...], "missing": [...]}) would write it, from the answers kept.
        listed = b",".join(rendered.answer(found[m], now).body for m in wanted if m in found)
        missing = orjson.dumps([m for m in wanted if m not in found])
        return Response(b'{"members":[' + listed + b'],"missing":' + missing + b"}", media_type="application/json")

    @api.get(
        "/v1/members/{member_id}/level-changes",
        dependencies=[ONCE],
        summary="A member's level history, newest first",
        responses={200: ok(schemas.History), 404: NOT_FOUND, 422: INVALID, 503: DOWN},
    )
    async def history(
        request: Request,
        member_id: Annotated[str, Path(pattern=MEMBER_ID)],
        limit: Annotated[int, Query(ge=1, le=100), DIGITS] = 20,
        before: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="seq to page below"), DIGITS] = None,
    ) -> Response:
        changes = await level_changes(request.app.state, member_id, before, limit)
        if not changes and before is None:
            return not_found(member_id)
        more = len(changes) == limit and changes[-1]["seq"] > 1
        body = {"member_id": member_id, "level_changes": changes, "next_before": changes[-1]["seq"] if more else None}
        return Response(orjson.dumps(body), media_type="application/json")

    return api

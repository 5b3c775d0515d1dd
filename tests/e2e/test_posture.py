"""The services of the e2e system run under their own database roles, so every e2e test also
shows that least privilege is enough for them."""

from __future__ import annotations

import asyncpg
import httpx

from tests.conftest import unique
from tests.e2e.conftest import System, post_events
from tests.support import eventually


async def test_the_scorer_and_the_api_connect_as_their_own_roles(
    system: System, ingest: httpx.AsyncClient, api: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    member = unique("posture")
    event = {"event_id": unique("e"), "type": "post", "member_id": member, "occurred_at": "2026-11-20T09:00:00Z"}
    await post_events(ingest, [event | {"content_id": unique("c")}])

    async def scored() -> bool:
        return (await api.get(f"/v1/members/{member}")).status_code == 200

    await eventually(scored, what=f"{member} scored and readable")
    assert (await api.get("/readyz")).json()["checks"]["postgres"] == "ok"  # the api's pool holds a connection
    rows = await pg.fetch(
        "SELECT DISTINCT usename, split_part(application_name, ':', 1) AS service FROM pg_stat_activity"
        " WHERE datname = current_database() AND (application_name = 'api' OR application_name LIKE 'scorer:%')"
    )
    assert {(row["service"], row["usename"]) for row in rows} >= {("scorer", "cl_scorer"), ("api", "cl_api")}
    assert {row["usename"] for row in rows} <= {"cl_scorer", "cl_api"}

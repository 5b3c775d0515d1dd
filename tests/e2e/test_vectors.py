"""Every scenario of the spec's vectors, through ingest, Kafka, the scorer and the API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests import vectors
from tests.e2e.conftest import System, post_events
from tests.model import Model
from tests.support import eventually, level_changes, of_type, read_topic


def relocated(scenario: dict[str, Any], tag: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scenario with members and event ids made unique to this run, and its days moved to
    today by whole days, so tenure and daily caps keep the meaning the vector gives them."""
    shift = timedelta(days=(datetime.now(UTC).date() - vectors.now().date()).days)
    events = []
    for raw in scenario["events"]:
        event = dict(raw, event_id=f"{tag}-{raw['event_id']}", member_id=f"{tag}-{raw['member_id']}")
        if "target_member_id" in raw:
            event["target_member_id"] = f"{tag}-{raw['target_member_id']}"
        at = datetime.fromisoformat(raw["occurred_at"].replace("Z", "+00:00")) + shift
        event["occurred_at"] = at.isoformat().replace("+00:00", "Z")
        events.append(event)
    return events, {f"{tag}-{member}": want for member, want in scenario["expected"].items()}


async def observed(api: httpx.AsyncClient, member: str) -> dict[str, Any] | None:
    response = await api.get(f"/v1/members/{member}")
    if response.status_code == 404:
        return None
    body = response.json()
    history = (await api.get(f"/v1/members/{member}/level-changes", params={"limit": 100})).json()
    chain = [
        [c["from_level"]["rank"] if c["from_level"] else None, c["to_level"]["rank"]]
        for c in reversed(history["level_changes"])
    ]
    return {
        "active_score": body["active_score"],
        "passive_score": body["passive_score"],
        "level": body["level"]["id"],
        "points": {metric: n for metric, n in body["points"].items() if n},
        "level_changes": chain,
    }


@pytest.mark.parametrize("scenario", vectors.scenarios(), ids=lambda s: s["name"])
async def test_scenario_through_the_whole_system(
    scenario: dict[str, Any], system: System, ingest: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    events, expected = relocated(scenario, tag)
    await post_events(ingest, events)

    async def matches() -> bool:
        got = await asyncio.gather(*(observed(api, m) for m in expected))
        return dict(zip(expected, got, strict=True)) == expected

    await eventually(matches, timeout=30, what=f"API state for {scenario['name']}")

    published = level_changes(await read_topic(system.bootstrap, system.env["CL_TOPIC_LEVEL_CHANGES"], set(expected)))
    by_member: dict[str, list[list[int | None]]] = {}
    for change in sorted(published, key=lambda c: (c["member_id"], c["seq"])):
        by_member.setdefault(change["member_id"], []).append(
            [change["from_level"]["rank"] if change["from_level"] else None, change["to_level"]["rank"]]
        )
    assert by_member == {m: want["level_changes"] for m, want in expected.items()}

    # SPEC §10.1: grants in the member read and on each level change, as the tests' model reads the ladder.
    model = Model(vectors.now())
    for event in scenario["events"]:
        model.apply(event)
    grants = {f"{tag}-{member}": want for member, want in model.grants().items()}
    moves: dict[str, list[list[list[str]]]] = {}
    for change in sorted(published, key=lambda c: (c["member_id"], c["seq"])):
        moves.setdefault(change["member_id"], []).append([change["grants_added"], change["grants_removed"]])
    assert moves == {m: g["grant_changes"] for m, g in grants.items() if g["grant_changes"]}
    reads = (await api.get("/v1/members", params={"ids": ",".join(expected)})).json()["members"]
    assert {r["member_id"]: r["grants"] for r in reads} == {m: grants[m]["grants"] for m in expected}

    # SPEC §10.2: the badges each member holds, granted when the model says (the days moved as
    # the events were), each announced once on the member-keyed topic.
    shift = timedelta(days=(datetime.now(UTC).date() - vectors.now().date()).days)
    earned = {f"{tag}-{m}": {b: at + shift for b, at in held.items()} for m, held in model.badges().items()}
    held = {r["member_id"]: {b["id"]: _ts(b["granted_at"]) for b in r["badges"]} for r in reads if r["badges"]}
    assert held == earned
    records = await read_topic(system.bootstrap, system.env["CL_TOPIC_LEVEL_CHANGES"], set(expected))
    announced = sorted((e["member_id"], e["badge"]["id"]) for e in of_type(records, "community.badge.granted"))
    assert announced == sorted((m, b) for m, badges in earned.items() for b in badges)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))

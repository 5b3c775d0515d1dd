"""A realistic mixed stream through the whole system, with the scorer killed mid-stream."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.e2e.conftest import System, post_events
from tests.model import Model
from tests.streams import mixed_stream
from tests.support import eventually, level_changes, read_topic


async def expected_matches(api: httpx.AsyncClient, expected: dict[str, dict[str, Any]]) -> bool:
    members = list(expected)
    for start in range(0, len(members), 100):
        chunk = members[start : start + 100]
        body = (await api.get("/v1/members", params={"ids": ",".join(chunk)})).json()
        if body["missing"]:
            return False
        for got in body["members"]:
            want = expected[got["member_id"]]
            points = {metric: n for metric, n in got["points"].items() if n}
            if (got["active_score"], got["passive_score"], got["level"]["id"], points) != (
                want["active_score"],
                want["passive_score"],
                want["level"],
                want["points"],
            ):
                return False
    return True


async def test_mixed_stream_is_exact_across_a_scorer_killed_mid_stream(
    system: System, ingest: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    events = mixed_stream(tag, seed=7, members=300, count=4000)
    model = Model(datetime.now(UTC))
    for event in events:
        model.apply(event)
    expected, grants = model.expected(), model.grants()
    assert any(w["points"].get("comment") == 20 for w in expected.values()), "the stream should exceed a cap"

    # Half is posted; the rest is posted while the scorer is killed with SIGKILL and restarted.
    half = len(events) // 2
    await post_events(ingest, events[:half], batch=250)
    posting = asyncio.create_task(post_events(ingest, events[half:], batch=100))
    await asyncio.sleep(0.5)
    system.kill("scorer")  # whatever it had in hand was not committed
    await asyncio.sleep(0.5)
    system.start("scorer")
    await posting

    await eventually(lambda: expected_matches(api, expected), timeout=180, what="every member as expected")

    changes: list[dict[str, Any]] = []

    async def all_published() -> bool:
        nonlocal changes
        changes = level_changes(await read_topic(system.bootstrap, system.env["CL_TOPIC_LEVEL_CHANGES"], set(expected)))
        return len({(c["member_id"], c["seq"]) for c in changes}) >= sum(
            len(w["level_changes"]) for w in expected.values()
        )

    await eventually(all_published, timeout=60, what="every level change on the topic")
    by_seq: dict[tuple[str, int], dict[str, Any]] = {}
    for change in changes:
        earlier = by_seq.setdefault((change["member_id"], change["seq"]), change)
        assert earlier == change, "two different level changes for one seq"
    for member, want in expected.items():
        seqs = sorted(seq for m, seq in by_seq if m == member)
        assert seqs == list(range(1, len(seqs) + 1)), f"{member}: seq has gaps: {seqs}"
        chain = [by_seq[(member, s)] for s in seqs]
        for before, after in zip(chain, chain[1:], strict=False):
            assert after["from_level"] == before["to_level"]
        got = [[c["from_level"]["rank"] if c["from_level"] else None, c["to_level"]["rank"]] for c in chain]
        assert got == want["level_changes"], member
        moves = [[c["grants_added"], c["grants_removed"]] for c in chain]
        assert moves == grants[member]["grant_changes"], member
    assert await read_grants(api, list(expected)) == {m: g["grants"] for m, g in grants.items()}


async def read_grants(api: httpx.AsyncClient, members: list[str]) -> dict[str, list[str]]:
    """Each member's grants, as the batch read answers them."""
    out: dict[str, list[str]] = {}
    for start in range(0, len(members), 100):
        body = (await api.get("/v1/members", params={"ids": ",".join(members[start : start + 100])})).json()
        out |= {got["member_id"]: got["grants"] for got in body["members"]}
    return out

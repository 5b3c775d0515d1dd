"""A realistic mixed stream through the whole system, with the scorer killed mid-stream."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.conftest import System, post_events
from tests.model import Model
from tests.support import eventually, read_topic, values

MEMBERS = 300
EVENTS = 4000
# Days since joining, kept away from the 7/30/90-day tenure gates so the test's clock and the
# scorer's agree on every level.
JOINED_DAYS = [(1, 5), (9, 25), (33, 80), (95, 400)]


def mixed_stream(tag: str, seed: int) -> list[dict[str, Any]]:
    """Members joining, reading and contributing; likes and unlikes, caps exceeded, removals,
    self-likes, and about 5% of events posted twice (client retries)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    members = [f"{tag}-m{i}" for i in range(MEMBERS)]
    contributors = members[: MEMBERS // 3]
    events: list[dict[str, Any]] = []
    content: list[tuple[str, str]] = []  # (author, content id)
    likes: list[dict[str, Any]] = []

    def add(kind: str, member: str, at: datetime, **fields: Any) -> dict[str, Any]:
        event = {
            "event_id": f"{tag}-e{len(events)}",
            "type": kind,
            "member_id": member,
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            **fields,
        }
        events.append(event)
        return event

    for member in members:
        low, high = rng.choice(JOINED_DAYS)
        add("member_joined", member, now - timedelta(days=rng.uniform(low, high)))
    while len(events) < EVENTS:
        at = now - timedelta(days=rng.randint(0, 2), hours=rng.uniform(0.2, 10))
        member = rng.choice(contributors if rng.random() < 0.6 else members)
        roll = rng.random()
        if roll < 0.25:
            add("view", member, at, content_id=f"c{rng.randint(0, 60)}")
        elif roll < 0.37:
            add("visit", member, at, duration_s=rng.choice([30, 599, 600, 1800, 7200]))
        elif roll < 0.40:
            add(rng.choice(["group_joined", "event_attended"]), member, at, content_id=f"g{rng.randint(0, 9)}")
        elif roll < 0.58:
            kind = rng.choice(["post", "reply", "reply", "comment", "comment", "comment", "article"])
            cid = f"{tag}-{kind}{len(events)}" if rng.random() < 0.9 else rng.choice(content or [("", "x")])[1]
            add(kind, member, at, content_id=cid)
            content.append((member, cid))
        elif roll < 0.60 and content:  # a burst of comments past the daily cap
            for _ in range(12):
                add("comment", member, at, content_id=f"{tag}-burst{len(events)}")
        elif roll < 0.78 and content:
            author, cid = rng.choice(content)
            liker = author if rng.random() < 0.03 else member
            likes.append(add("like", liker, at, content_id=cid, target_member_id=author))
        elif roll < 0.84 and likes:
            like = rng.choice(likes)
            add(
                "unlike",
                like["member_id"],
                at,
                content_id=like["content_id"],
                target_member_id=like["target_member_id"],
            )
        elif roll < 0.88 and content:
            author, cid = rng.choice(content)
            add("solution_accepted", member, at, content_id=cid, target_member_id=author)
        elif roll < 0.90 and content:
            author, cid = rng.choice(content)
            add("content_removed", author, at, content_id=cid)
        if rng.random() < 0.05:
            events.append(dict(rng.choice(events)))  # a retry of an event already posted
    return events


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
    events = mixed_stream(tag, seed=7)
    model = Model(datetime.now(UTC))
    for event in events:
        model.apply(event)
    expected = model.expected()
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
        changes = values(await read_topic(system.bootstrap, system.env["CL_TOPIC_LEVEL_CHANGES"], set(expected)))
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

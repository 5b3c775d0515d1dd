"""Generated activity streams for the tests that run the whole system."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

# Days since joining, kept away from the 7/30/90-day tenure gates so the test's clock and the
# scorer's agree on every level.
JOINED_DAYS = [(1, 5), (9, 25), (33, 80), (95, 400)]


def mixed_stream(tag: str, seed: int, members: int, count: int) -> list[dict[str, Any]]:
    """Members joining, reading and contributing; likes and unlikes, caps exceeded, removals,
    self-likes, and about 5% of events posted twice (client retries)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    ids = [f"{tag}-m{i}" for i in range(members)]
    contributors = ids[: members // 3]
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

    for member in ids:
        low, high = rng.choice(JOINED_DAYS)
        add("member_joined", member, now - timedelta(days=rng.uniform(low, high)))
    while len(events) < count:
        at = now - timedelta(days=rng.randint(0, 2), hours=rng.uniform(0.2, 10))
        member = rng.choice(contributors if rng.random() < 0.6 else ids)
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

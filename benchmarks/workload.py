"""Synthetic forum activity for the benchmark: events as ingest takes them, and the Kafka
records ingest would publish for them (one per member an event changes, keyed by member)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

Event = dict[str, Any]
Record = tuple[bytes, bytes]  # (key, value)

# A forum day: mostly reading, some visits, likes and writing.
MIX = [("view", 50), ("visit", 10), ("like", 15), ("reply", 10), ("comment", 10), ("post", 5)]
_TYPES, _WEIGHTS = zip(*MIX, strict=True)


def _event(kind: str, event_id: str, member: str, at: datetime, rng: random.Random, target: str) -> Event:
    event: Event = {"event_id": event_id, "type": kind, "member_id": member, "occurred_at": at.isoformat()}
    if kind == "visit":
        event["duration_s"] = rng.randint(30, 1800)
    elif kind == "like":
        event["content_id"] = f"c-{target}-{rng.randint(0, 50)}"
        event["target_member_id"] = target
    elif kind != "member_joined":
        event["content_id"] = (
            f"c-{member}-{event_id}" if kind in ("post", "reply", "comment") else f"c-{rng.randint(0, 10**6)}"
        )
    return event


def events(
    members: list[str], count: int, *, end: datetime | None = None, days: float = 7, seed: int = 7, tag: str = "e"
) -> list[Event]:
    """`count` events: each member joins first, then the mix above in time order over `days`."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC) - timedelta(minutes=1)
    start = end - timedelta(days=days)
    out = [_event("member_joined", f"{tag}-j-{m}", m, start, rng, m) for m in members[:count]]
    rest = count - len(out)
    step = (end - start) / max(rest, 1)
    kinds = rng.choices(_TYPES, _WEIGHTS, k=rest)
    for i, kind in enumerate(kinds):
        member, target = rng.choice(members), rng.choice(members)
        if kind == "like" and target == member:
            kind = "view"
        out.append(_event(kind, f"{tag}-{i}", member, start + step * i, rng, target))
    return out


def records(batch: list[Event]) -> list[Record]:
    """What ingest publishes for these events: one record per member the event changes."""
    out = []
    for event in batch:
        value = json.dumps(event, separators=(",", ":")).encode()
        out.append((event["member_id"].encode(), value))
        target = event.get("target_member_id")
        if target and target != event["member_id"]:
            out.append((target.encode(), value))
    return out


def heavy_year(
    member: str, end: datetime, days: int = 365, views: int = 60, posts: int = 1, likes: int = 5
) -> list[tuple[str, Event]]:
    """A member's year, as (subject, event): each day `views` views, `posts` posts and `likes`
    likes received on them (issue 7 measured 60, 1, 5; its "heavy member" is 200, 20, 200)."""
    out: list[tuple[str, Event]] = []
    for d in range(days):
        day = end - timedelta(days=days - d)
        for v in range(views):
            out.append((member, _view(f"h-{d}-v{v}", member, day + timedelta(seconds=10 * v), f"c-{d}-{v}")))
        for p in range(posts):
            out.append((member, {**_view(f"h-{d}-p{p}", member, day, f"p-{d}-{p}"), "type": "post"}))
        for k in range(likes if posts else 0):
            liker = f"fan-{k // posts}"
            out.append(
                (
                    member,
                    {
                        "event_id": f"h-{d}-l{k}",
                        "type": "like",
                        "member_id": liker,
                        "occurred_at": (day + timedelta(hours=2, seconds=10 * k)).isoformat(),
                        "content_id": f"p-{d}-{k % posts}",
                        "target_member_id": member,
                    },
                )
            )
    return out


def _view(event_id: str, member: str, at: datetime, content: str) -> Event:
    return {
        "event_id": event_id,
        "type": "view",
        "member_id": member,
        "occurred_at": at.isoformat(),
        "content_id": content,
    }

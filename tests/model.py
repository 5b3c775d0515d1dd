"""An independent reading of SPEC §4–§5, written for the tests, to check the system against.

It shares no code with `shared/`: the numbers are copied from the spec's tables, and the
bookkeeping is done differently (a ledger of what each event earned), so a mistake in the
project's scoring does not repeat here unnoticed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

POINTS = {
    "visit_day": 2,
    "view": 1,
    "group_joined": 5,
    "event_attended": 10,
    "post": 10,
    "reply": 5,
    "comment": 2,
    "article": 25,
    "like_given": 1,
    "like_received": 3,
    "solution_accepted": 15,
}
CAPS = {"browse_time": 12, "view": 25, "comment": 20, "like_given": 20, "like_received": 60}
PASSIVE = {"visit_day", "browse_time", "view", "group_joined", "event_attended"}
# (rank, id, active needed, passive needed, tenure days needed)
LADDER: list[tuple[int, str, int, int, int]] = [
    (1, "new_member", 0, 0, 0),
    (2, "community_member", 0, 10, 7),
    (3, "established_member", 0, 50, 30),
    (4, "senior_member", 0, 200, 90),
    (5, "new_contributor", 1, 0, 0),
    (6, "general_contributor", 25, 0, 0),
    (7, "reliable_contributor", 100, 0, 0),
    (8, "respected_contributor", 250, 0, 0),
    (9, "trusted_contributor", 500, 0, 0),
    (10, "community_boss", 1000, 0, 0),
    (11, "certified_boss", 2500, 0, 0),
    (12, "insightful_boss", 5000, 0, 0),
    (13, "exceptional_boss", 10000, 0, 0),
    (14, "hyper_boss", 25000, 0, 0),
]

# The privileges each level adds (SPEC §10.1), copied from the default rules file; a level holds
# those of its tier up to it, and an active level those of every passive level too.
GRANTS: dict[str, tuple[str, ...]] = {
    "community_member": ("send_messages",),
    "established_member": ("upload_images",),
    "senior_member": ("invite_members",),
    "new_contributor": ("flag_posts", "post_links"),
    "general_contributor": ("upload_attachments", "edit_wiki"),
    "reliable_contributor": ("create_group_messages",),
    "respected_contributor": ("followed_links",),
    "trusted_contributor": ("recategorize_topics", "rename_topics"),
    "community_boss": ("access_lounge", "make_posts_wiki"),
    "certified_boss": ("flags_hide_spam",),
    "insightful_boss": ("edit_posts",),
    "exceptional_boss": ("pin_topics", "close_topics"),
    "hyper_boss": ("split_merge_topics", "moderate_group"),
}
PASSIVE_LEVELS = {"new_member", "community_member", "established_member", "senior_member"}

# The default badge catalogue (SPEC §10.2), copied from the rules file: a badge for so many
# scored actions of a metric (an action counts while what it earned stands, if it earned any),
# for reaching a level (by rank: the ladder puts the passive levels below the active ones, so
# a rank at or above the badge's is that level or one holding its grants), or given by hand.
BADGE_COUNTS: dict[str, tuple[str, int]] = {
    "first_post": ("post", 1),
    "first_reply": ("reply", 1),
    "first_article": ("article", 1),
    "first_solution": ("solution_accepted", 1),
    "solutions_10": ("solution_accepted", 10),
    "solutions_50": ("solution_accepted", 50),
    "likes_received_100": ("like_received", 100),
    "reader_30_days": ("visit_day", 30),
    "events_5": ("event_attended", 5),
    "groups_3": ("group_joined", 3),
}
BADGE_LEVELS: dict[str, int] = {"trusted": 9, "boss": 10}  # by rank in LADDER
MANUAL_BADGES = frozenset({"academy_certified"})


def held(rank: int | None, ladder: list[tuple[int, str, int, int, int]]) -> list[str]:
    """The privileges a member at the level of this rank holds, in the order the ladder grants them."""
    if rank is None:
        return []
    level = ladder[rank - 1][1]
    out: list[str] = []
    for r, other, *_ in ladder:
        same_tier = (other in PASSIVE_LEVELS) == (level in PASSIVE_LEVELS)
        if (same_tier and r <= rank) or (level not in PASSIVE_LEVELS and other in PASSIVE_LEVELS):
            out += GRANTS.get(other, ())
    return out


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Member:
    ledger: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (metric, day) -> pts
    seen_ids: set[str] = field(default_factory=set)
    facts: set[tuple[Any, ...]] = field(default_factory=set)  # things that happen once
    reversible: dict[tuple[Any, ...], tuple[str, str, int]] = field(default_factory=dict)  # -> (metric, day, pts)
    browse_seconds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    declared: datetime | None = None
    earliest: datetime | None = None
    rank: int | None = None
    chain: list[tuple[int | None, int]] = field(default_factory=list)
    # Each level the member reached, with when the event that moved it occurred (SPEC §11).
    reached: list[tuple[datetime, int]] = field(default_factory=list)
    caps: dict[str, int] = field(default_factory=lambda: CAPS)
    actions: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # scored actions standing
    badges: dict[str, datetime] = field(default_factory=dict)  # held: when first earned
    ladder: list[tuple[int, str, int, int, int]] = field(default_factory=lambda: LADDER)

    def total(self, metric: str) -> int:
        return sum(pts for (m, _), pts in self.ledger.items() if m == metric)

    def points(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (metric, _), pts in self.ledger.items():
            out[metric] += pts
        return {m: n for m, n in out.items() if n}

    def scores(self) -> tuple[int, int]:
        pts = self.points()
        return sum(n for m, n in pts.items() if m not in PASSIVE), sum(n for m, n in pts.items() if m in PASSIVE)

    def grant(self, metric: str, day: str, pts: int) -> int:
        if metric in self.caps:
            pts = max(0, min(pts, self.caps[metric] - self.ledger[(metric, day)]))
        self.ledger[(metric, day)] += pts
        self.actions[metric] += pts > 0
        return pts

    def level(self, now: datetime) -> int:
        joined = self.declared or self.earliest
        tenure = max(0, (now - joined).days) if joined else 0
        active, passive = self.scores()
        return max(rank for rank, _, a, p, t in self.ladder if active >= a and passive >= p and tenure >= t)


class Model:
    """Members' expected state after the events, applied in the order given; other rules are
    given as the numbers that differ from the spec's (points, caps, ladder)."""

    def __init__(
        self,
        now: datetime,
        points: dict[str, int] | None = None,
        caps: dict[str, int] | None = None,
        ladder: list[tuple[int, str, int, int, int]] | None = None,
        badge_counts: dict[str, tuple[str, int]] | None = None,
        badge_levels: dict[str, int] | None = None,
    ) -> None:
        self.now = now
        self.badge_counts = BADGE_COUNTS if badge_counts is None else badge_counts
        self.badge_levels = BADGE_LEVELS if badge_levels is None else badge_levels
        self.points = {**POINTS, **(points or {})}
        self.ladder = ladder or LADDER
        caps = {**CAPS, **(caps or {})}
        self.members: dict[str, Member] = defaultdict(lambda: Member(caps=caps, ladder=self.ladder))

    def apply(self, event: dict[str, Any]) -> None:
        actor, target = event["member_id"], event.get("target_member_id")
        for who in dict.fromkeys([actor] + ([target] if target else [])):
            member = self.members[who]
            if event["event_id"] in member.seen_ids:
                continue
            member.seen_ids.add(event["event_id"])
            self._apply(member, who, event)
            rank = member.level(self.now)
            if rank != member.rank:
                member.chain.append((member.rank, rank))
                member.reached.append((_ts(event["occurred_at"]), rank))
                member.rank = rank
            self._badges(member, who, event)

    def _badges(self, m: Member, who: str, e: dict[str, Any]) -> None:
        """The badges the member meets now and did not hold: earned at this event."""
        at = _ts(e["occurred_at"])
        met = [b for b, (metric, n) in self.badge_counts.items() if m.actions[metric] >= n]
        met += [b for b, rank in self.badge_levels.items() if m.rank is not None and m.rank >= rank]
        if e["type"] == "badge_awarded" and e["content_id"] in MANUAL_BADGES:
            met.append(e["content_id"])
        for badge in met:
            m.badges.setdefault(badge, at)

    def _apply(self, m: Member, who: str, e: dict[str, Any]) -> None:
        at = _ts(e["occurred_at"])
        day = at.date().isoformat()
        m.earliest = at if m.earliest is None else min(m.earliest, at)
        kind, content = e["type"], e.get("content_id")
        self_directed = e.get("target_member_id") == e["member_id"]
        is_actor = who == e["member_id"]
        if kind == "member_joined":
            m.declared = at if m.declared is None else min(m.declared, at)
        elif kind == "visit":
            if ("visit", day) not in m.facts:
                m.facts.add(("visit", day))
                m.grant("visit_day", day, self.points["visit_day"])
            before = m.browse_seconds[day] // 600
            m.browse_seconds[day] += e["duration_s"]
            m.grant("browse_time", day, m.browse_seconds[day] // 600 - before)
        elif kind in ("view", "group_joined", "event_attended"):
            fact = (kind, content, day if kind == "view" else None)
            if fact not in m.facts:
                m.facts.add(fact)
                m.grant(kind, day, self.points[kind])
        elif kind in ("post", "reply", "comment", "article"):
            if ("created", content) not in m.facts:
                m.facts.add(("created", content))
                m.reversible[("created", content)] = (kind, day, m.grant(kind, day, self.points[kind]))
        elif kind == "content_removed":
            self._take_back(m, ("created", content))
        elif kind == "like" and not self_directed:
            key = ("like", content) if is_actor else ("liked", e["member_id"], content)
            metric = "like_given" if is_actor else "like_received"
            if key not in m.reversible:
                m.reversible[key] = (metric, day, m.grant(metric, day, self.points[metric]))
        elif kind == "unlike" and not self_directed:
            key = ("like", content) if is_actor else ("liked", e["member_id"], content)
            self._take_back(m, key)
        elif kind == "solution_accepted" and not is_actor and not self_directed:
            if ("solution", content) not in m.facts:
                m.facts.add(("solution", content))
                m.grant("solution_accepted", day, self.points["solution_accepted"])

    @staticmethod
    def _take_back(m: Member, key: tuple[Any, ...]) -> None:
        if key in m.reversible:
            metric, day, pts = m.reversible.pop(key)
            m.ledger[(metric, day)] -= pts
            m.actions[metric] -= pts > 0

    def grants(self) -> dict[str, dict[str, Any]]:
        """Each member's privileges now, and what each of its level changes added and removed."""
        out = {}
        for who, m in self.members.items():
            moves = [(held(old, self.ladder), held(new, self.ladder)) for old, new in m.chain]
            out[who] = {
                "grants": held(m.rank, self.ladder),
                "grant_changes": [
                    [[g for g in now if g not in was], [g for g in was if g not in now]] for was, now in moves
                ],
            }
        return out

    def eligible(self, day: date, least: int) -> set[str]:
        """Members whose level at the end of `day` (UTC) ranks `least` or above: the level the
        latest move that occurred before the next midnight reached (of moves at one instant,
        the later one applied). No pins here: they are the operators', not the events'."""
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        out = set()
        for who, m in self.members.items():
            before = [(at, order, rank) for order, (at, rank) in enumerate(m.reached) if at < end]
            if before and max(before)[2] >= least:
                out.add(who)
        return out

    def expected(self) -> dict[str, dict[str, Any]]:
        out = {}
        for who, m in self.members.items():
            active, passive = m.scores()
            out[who] = {
                "active_score": active,
                "passive_score": passive,
                "level": self.ladder[m.rank - 1][1] if m.rank else None,
                "points": m.points(),
                "level_changes": [list(c) for c in m.chain],
            }
        return out

    def badges(self) -> dict[str, dict[str, datetime]]:
        """Each member's badges: when each was first earned."""
        return {who: dict(m.badges) for who, m in self.members.items() if m.badges}


# -- periods and boards (SPEC §7, §11) --

HELPFUL = "solution_accepted"  # the metric with a board of its own ("most helpful")


def _period_names(day: str) -> list[str]:
    """The year, month and ISO week a UTC day (YYYY-MM-DD) falls in: "year:2026", "month:2026-11", "week:2026-W48"."""
    iso = datetime.strptime(day, "%Y-%m-%d").isocalendar()
    return [f"year:{day[:4]}", f"month:{day[:7]}", f"week:{iso.year}-W{iso.week:02d}"]


def period_points(member: Member) -> dict[tuple[str, str], int]:
    """A member's points per (board, period), a board being a tier or the helpful metric: the
    ledger keeps each reversal on the day of what it reversed, so it counts in that day's periods."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for (metric, day), pts in member.ledger.items():
        boards = ["passive" if metric in PASSIVE else "active"] + ([HELPFUL] if metric == HELPFUL else [])
        for board in boards:
            for name in _period_names(day):
                out[(board, name)] += pts
    return {key: n for key, n in out.items() if n}


def board(model: Model, board: str, period: str, excluded: frozenset[str] = frozenset()) -> list[tuple[int, str, int]]:
    """(rank, member, points) of a board ("active", "passive" or the helpful metric; period "all"
    or a period's name), without the excluded members: points down, then member id; ties share
    a rank (one more than the members with more points); members without points not listed."""
    points: dict[str, int] = {}
    for who, m in model.members.items():
        if who in excluded:
            continue
        if period != "all":
            points[who] = period_points(m).get((board, period), 0)
        elif board == HELPFUL:
            points[who] = m.total(HELPFUL)
        else:
            points[who] = m.scores()[0 if board == "active" else 1]
    listed = sorted((-n, who) for who, n in points.items() if n > 0)
    return [(1 + sum(1 for other, _ in listed if other < n), who, -n) for n, who in listed]

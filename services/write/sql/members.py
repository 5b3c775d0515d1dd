"""`members` and `member_facts`: each member's figures, and the facts later records need."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import iso_utc
from shared.rules import Rules
from shared.scoring import MemberState, Pin, freed_cap, tenure_due_at

_FIGURES = (
    "member_id, points, level_id, level_seq, joined_declared, first_seen,"
    " rules_version, pinned_level, pinned_reason, pinned_until, programs, badges"
)


def _state(row: Any) -> MemberState:
    """A member's figures from a `members` row (selected as `_FIGURES`), with no facts loaded."""
    pin = Pin(row.pinned_level, row.pinned_reason, row.pinned_until) if row.pinned_level is not None else None
    return MemberState(
        row.member_id,
        dict(row.points),
        row.level_id,
        row.level_seq,
        row.joined_declared,
        row.first_seen,
        rules_version=row.rules_version,
        pin=pin,
        programs=tuple(row.programs),
        badges={badge: datetime.fromisoformat(at) for badge, at in (row.badges or {}).items()},
    )


async def lock_states(conn: AsyncConnection, member_ids: list[str]) -> dict[str, MemberState]:
    """Load and lock members' figures (in id order, so concurrent writers cannot deadlock)."""
    rows = await conn.execute(
        text(
            f"SELECT {_FIGURES} FROM members WHERE member_id = ANY(CAST(:ids AS text[])) ORDER BY member_id FOR UPDATE"
        ),
        {"ids": member_ids},
    )
    return {state.member_id: state for state in map(_state, rows)}


async def lock_tenure_due(conn: AsyncConnection, now: datetime, limit: int) -> dict[str, MemberState]:
    """Members whose tenure may now raise their level; rows another writer holds are left for later."""
    rows = await conn.execute(
        text(
            f"SELECT {_FIGURES} FROM members WHERE tenure_due_at <= :now"
            " ORDER BY member_id LIMIT :limit FOR UPDATE SKIP LOCKED"
        ),
        {"now": now, "limit": limit},
    )
    return {state.member_id: state for state in map(_state, rows)}


class Stored(NamedTuple):
    """A member's figures as views are made of them."""

    state: MemberState
    version: int
    updated_at: datetime


async def member_views(conn: AsyncConnection, member_ids: list[str]) -> list[Stored]:
    """Members' figures as views are made of them."""
    rows = await conn.execute(
        text(f"SELECT {_FIGURES}, version, updated_at FROM members WHERE member_id = ANY(CAST(:ids AS text[]))"),
        {"ids": member_ids},
    )
    return [Stored(_state(row), row.version, row.updated_at) for row in rows]


async def views_after(conn: AsyncConnection, after: str, limit: int) -> list[Stored]:
    """A page of every member in id order, for rebuilding Redis."""
    rows = await conn.execute(
        text(
            f"SELECT {_FIGURES}, version, updated_at FROM members WHERE member_id > :after"
            " ORDER BY member_id LIMIT :limit"
        ),
        {"after": after, "limit": limit},
    )
    return [Stored(_state(row), row.version, row.updated_at) for row in rows]


async def save_states(conn: AsyncConnection, states: list[MemberState], rules: Rules, now: datetime) -> dict[str, int]:
    """Write members' figures; returns each member's new version (from one sequence for all
    members, so a later member of an erased id has higher versions than the erased one had)."""
    if not states:
        return {}
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            *("ids", "levels", "seqs", "actives", "passives", "points", "declared", "first", "dues"),
            *("versions", "pinned", "reasons", "untils", "badges"),
        )
    }
    for s in states:
        cols["ids"].append(s.member_id)
        cols["levels"].append(s.level)
        cols["seqs"].append(s.seq)
        active, passive = s.scores(rules)
        cols["actives"].append(active)
        cols["passives"].append(passive)
        cols["points"].append(orjson.dumps(s.points).decode())
        cols["declared"].append(s.joined_declared)
        cols["first"].append(s.first_seen)
        cols["dues"].append(tenure_due_at(s, rules))
        cols["versions"].append(s.rules_version or rules.version)
        cols["pinned"].append(s.pin and s.pin.level)
        cols["reasons"].append(s.pin and s.pin.reason)
        cols["untils"].append(s.pin and s.pin.until)
        cols["badges"].append(orjson.dumps({b: iso_utc(at) for b, at in s.badges.items()}).decode())
    rows = await conn.execute(
        text(
            """
            INSERT INTO members AS m (member_id, level_id, level_seq, active_score, passive_score, points,
                                      joined_at, joined_declared, first_seen, tenure_due_at, rules_version,
                                      pinned_level, pinned_reason, pinned_until, badges, version, updated_at)
            SELECT i, r, q, a, p, CAST(pt AS jsonb), coalesce(jd, fs), jd, fs, d, rv, pr, pn, pu, CAST(b AS jsonb),
                   nextval('member_versions'), :now
            FROM unnest(CAST(:ids AS text[]), CAST(:levels AS text[]), CAST(:seqs AS int[]),
                        CAST(:actives AS bigint[]), CAST(:passives AS bigint[]), CAST(:points AS text[]),
                        CAST(:declared AS timestamptz[]), CAST(:first AS timestamptz[]),
                        CAST(:dues AS timestamptz[]), CAST(:versions AS text[]), CAST(:pinned AS text[]),
                        CAST(:reasons AS text[]), CAST(:untils AS timestamptz[]), CAST(:badges AS text[]))
                 AS u(i, r, q, a, p, pt, jd, fs, d, rv, pr, pn, pu, b)
            ON CONFLICT (member_id) DO UPDATE SET
                level_id = excluded.level_id, level_seq = excluded.level_seq,
                active_score = excluded.active_score, passive_score = excluded.passive_score,
                points = excluded.points, joined_at = excluded.joined_at,
                joined_declared = excluded.joined_declared, first_seen = excluded.first_seen,
                tenure_due_at = excluded.tenure_due_at, rules_version = excluded.rules_version,
                pinned_level = excluded.pinned_level, pinned_reason = excluded.pinned_reason,
                pinned_until = excluded.pinned_until, badges = excluded.badges, version = excluded.version,
                updated_at = excluded.updated_at
            RETURNING member_id, version
            """
        ),
        {**cols, "now": now},
    )
    return {row.member_id: row.version for row in rows}


Facts = dict[tuple[str, str], bytes]  # (member, fact) -> its JSON as loaded, to tell what changed


async def load_facts(conn: AsyncConnection, states: dict[str, MemberState], wanted: dict[str, set[str]]) -> Facts:
    """Put into the states the facts a batch names that exist (each by its key: an index lookup,
    whatever the member's history), then the caps their reversal would free. Returns what was
    loaded, for `save_facts`."""
    loaded: Facts = {}
    while wanted := {m: keys - states[m].facts.keys() for m, keys in wanted.items() if m in states}:
        pairs = sorted((m, k) for m, keys in wanted.items() for k in keys)  # in index order
        if not pairs:
            break
        rows = await conn.execute(
            text(
                "SELECT f.member_id, f.fact, f.value FROM unnest(CAST(:ids AS text[]), CAST(:facts AS text[]))"
                " AS w(member_id, fact) JOIN member_facts AS f USING (member_id, fact)"
            ),
            {"ids": [m for m, _ in pairs], "facts": [k for _, k in pairs]},
        )
        found: dict[str, set[str]] = {}
        for row in rows:
            states[row.member_id].facts[row.fact] = row.value
            loaded[(row.member_id, row.fact)] = orjson.dumps(row.value)
            if cap := freed_cap(row.fact, row.value):
                found.setdefault(row.member_id, set()).add(cap)
        wanted = found
    return loaded


async def save_facts(conn: AsyncConnection, states: list[MemberState], loaded: Facts) -> None:
    """Write the facts that are new or changed, and delete those loaded that are gone."""
    upsert: list[tuple[str, str, str]] = []
    for state in states:
        for key, value in state.facts.items():
            raw = orjson.dumps(value)
            if loaded.get((state.member_id, key)) != raw:
                upsert.append((state.member_id, key, raw.decode()))
    upsert.sort()  # in index order
    held = {(s.member_id, k) for s in states for k in s.facts}
    gone = [pair for pair in loaded if pair not in held]
    if upsert:
        await conn.execute(
            text(
                """
                INSERT INTO member_facts (member_id, fact, value)
                SELECT m, f, CAST(v AS jsonb)
                FROM unnest(CAST(:ids AS text[]), CAST(:facts AS text[]), CAST(:values AS text[])) AS u(m, f, v)
                ON CONFLICT (member_id, fact) DO UPDATE SET value = excluded.value
                """
            ),
            {"ids": [u[0] for u in upsert], "facts": [u[1] for u in upsert], "values": [u[2] for u in upsert]},
        )
    if gone:
        await conn.execute(
            text(
                "DELETE FROM member_facts AS f USING unnest(CAST(:ids AS text[]), CAST(:facts AS text[])) AS g(m, k)"
                " WHERE f.member_id = g.m AND f.fact = g.k"
            ),
            {"ids": [m for m, _ in gone], "facts": [k for _, k in gone]},
        )


async def drop_facts(conn: AsyncConnection, member_ids: list[str]) -> None:
    await conn.execute(
        text("DELETE FROM member_facts WHERE member_id = ANY(CAST(:ids AS text[]))"), {"ids": sorted(member_ids)}
    )


async def next_member_version(conn: AsyncConnection) -> int:
    """A version above every member version handed out so far (erasure's Redis stamp)."""
    return int((await conn.execute(text("SELECT nextval('member_versions')"))).scalar_one())


async def pins_outside(conn: AsyncConnection, level_ids: list[str]) -> list[tuple[str, str]]:
    """Members pinned at a level not among these, (member, level) in member id order."""
    rows = await conn.execute(
        text(
            "SELECT member_id, pinned_level FROM members"
            " WHERE pinned_level IS NOT NULL AND NOT pinned_level = ANY(CAST(:ids AS text[])) ORDER BY member_id"
        ),
        {"ids": level_ids},
    )
    return [(row.member_id, row.pinned_level) for row in rows]


async def members_behind(conn: AsyncConnection, version: str, after: str, limit: int) -> list[str]:
    """The next members (in id order, after `after`) not yet scored under this version."""
    rows = await conn.execute(
        text(
            "SELECT member_id FROM members WHERE member_id > :after AND rules_version IS DISTINCT FROM :v"
            " ORDER BY member_id LIMIT :limit"
        ),
        {"after": after, "v": version, "limit": limit},
    )
    return [row.member_id for row in rows]


async def count_behind(conn: AsyncConnection, version: str) -> int:
    row = await conn.execute(
        text("SELECT count(*) FROM members WHERE rules_version IS DISTINCT FROM :v"), {"v": version}
    )
    return int(row.scalar_one())


async def count_members(conn: AsyncConnection) -> int:
    return int((await conn.execute(text("SELECT count(*) FROM members"))).scalar_one())

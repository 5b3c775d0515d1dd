"""All of the scorer's SQL. Each function runs inside a transaction its caller opened."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.members import Periods
from shared.rules import Rules
from shared.scoring import LevelChange, MemberState, Pin, freed_cap, tenure_due_at

# A scorer's PostgreSQL sessions are named SESSION_PREFIX + its instance name.
SESSION_PREFIX = "scorer:"


@dataclass(frozen=True)
class Claim:
    partition: int
    next_offset: int | None  # None: nothing processed yet, start at the beginning
    epoch: int


@dataclass(frozen=True)
class OffsetMove:
    partition: int
    epoch: int
    first_offset: int  # the batch's first record: must be where the stored offset says
    next_offset: int


async def claim_partitions(
    conn: AsyncConnection, group_id: str, topic: str, partitions: list[int], owner: str
) -> list[Claim]:
    """Take ownership of partitions: a new epoch for each, so the previous owner's writes fail."""
    rows = await conn.execute(
        text(
            """
            INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, epoch, owner, updated_at)
            SELECT :group_id, :topic, p, NULL, 1, :owner, now() FROM unnest(CAST(:partitions AS int[])) AS p
            ON CONFLICT (group_id, topic, partition) DO UPDATE
                SET epoch = consumer_offsets.epoch + 1, owner = excluded.owner, updated_at = now()
            RETURNING partition, next_offset, epoch
            """
        ),
        {"group_id": group_id, "topic": topic, "partitions": partitions, "owner": owner},
    )
    return [Claim(*row) for row in rows]


async def stored_offsets(conn: AsyncConnection, group_id: str, topic: str, partitions: list[int]) -> list[Claim]:
    rows = await conn.execute(
        text(
            "SELECT partition, next_offset, epoch FROM consumer_offsets"
            " WHERE group_id = :group_id AND topic = :topic AND partition = ANY(CAST(:partitions AS int[]))"
        ),
        {"group_id": group_id, "topic": topic, "partitions": partitions},
    )
    return [Claim(*row) for row in rows]


async def advance_offsets(conn: AsyncConnection, group_id: str, topic: str, moves: list[OffsetMove]) -> set[int]:
    """Store where each partition resumes, but only for the owner's epoch and only contiguously.

    Returns the partitions whose write was refused. Taking these row locks first also orders
    this transaction after any concurrent claim of the same partitions.
    """
    rows = await conn.execute(
        text(
            """
            UPDATE consumer_offsets AS o SET next_offset = m.next_offset, updated_at = now()
            FROM unnest(CAST(:partitions AS int[]), CAST(:epochs AS bigint[]),
                        CAST(:firsts AS bigint[]), CAST(:nexts AS bigint[])) AS m(partition, epoch, first, next_offset)
            WHERE o.group_id = :group_id AND o.topic = :topic AND o.partition = m.partition
              AND o.epoch = m.epoch AND (o.next_offset IS NULL OR o.next_offset = m.first)
            RETURNING o.partition
            """
        ),
        {
            "group_id": group_id,
            "topic": topic,
            "partitions": [m.partition for m in moves],
            "epochs": [m.epoch for m in moves],
            "firsts": [m.first_offset for m in moves],
            "nexts": [m.next_offset for m in moves],
        },
    )
    return {m.partition for m in moves} - {row[0] for row in rows}


async def record_activity(
    conn: AsyncConnection, rows: list[tuple[str, str, str, int, int]], now: datetime
) -> set[tuple[str, str]]:
    """Keep each (member, event id, event JSON, partition, offset); return the keys not seen before."""
    if not rows:
        return set()
    members, event_ids, events, partitions, offsets = (list(col) for col in zip(*rows, strict=True))
    result = await conn.execute(
        text(
            """
            INSERT INTO activity (member_id, event_id, event, source_partition, source_offset, applied_at)
            SELECT m, e, CAST(v AS jsonb), p, o, :now
            FROM unnest(CAST(:members AS text[]), CAST(:event_ids AS text[]), CAST(:events AS text[]),
                        CAST(:partitions AS int[]), CAST(:offsets AS bigint[])) AS r(m, e, v, p, o)
            ON CONFLICT DO NOTHING
            RETURNING member_id, event_id
            """
        ),
        {
            "members": members,
            "event_ids": event_ids,
            "events": events,
            "partitions": partitions,
            "offsets": offsets,
            "now": now,
        },
    )
    return {(row[0], row[1]) for row in result}


_FIGURES = (
    "member_id, points, level_id, level_seq, joined_declared, first_seen,"
    " rules_version, pinned_level, pinned_reason, pinned_until"
)
_AFTER = 10  # the first column after `_FIGURES`


def _state(row: Any) -> MemberState:
    """A member's figures from a `members` row (selected as `_FIGURES`), with no facts loaded."""
    pin = Pin(row[7], row[8], row[9]) if row[7] is not None else None
    return MemberState(row[0], dict(row[1]), row[2], row[3], row[4], row[5], rules_version=row[6], pin=pin)


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
        for member, key, value in rows:
            states[member].facts[key] = value
            loaded[(member, key)] = orjson.dumps(value)
            if cap := freed_cap(key, value):
                found.setdefault(member, set()).add(cap)
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


async def save_states(conn: AsyncConnection, states: list[MemberState], rules: Rules, now: datetime) -> dict[str, int]:
    """Write members' figures; returns each member's new version (from one sequence for all
    members, so a later member of an erased id has higher versions than the erased one had)."""
    if not states:
        return {}
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            *("ids", "levels", "seqs", "actives", "passives", "points", "declared", "first", "dues"),
            *("versions", "pinned", "reasons", "untils"),
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
    rows = await conn.execute(
        text(
            """
            INSERT INTO members AS m (member_id, level_id, level_seq, active_score, passive_score, points,
                                      joined_at, joined_declared, first_seen, tenure_due_at, rules_version,
                                      pinned_level, pinned_reason, pinned_until, version, updated_at)
            SELECT i, r, q, a, p, CAST(pt AS jsonb), coalesce(jd, fs), jd, fs, d, rv, pr, pn, pu,
                   nextval('member_versions'), :now
            FROM unnest(CAST(:ids AS text[]), CAST(:levels AS text[]), CAST(:seqs AS int[]),
                        CAST(:actives AS bigint[]), CAST(:passives AS bigint[]), CAST(:points AS text[]),
                        CAST(:declared AS timestamptz[]), CAST(:first AS timestamptz[]),
                        CAST(:dues AS timestamptz[]), CAST(:versions AS text[]), CAST(:pinned AS text[]),
                        CAST(:reasons AS text[]), CAST(:untils AS timestamptz[]))
                 AS u(i, r, q, a, p, pt, jd, fs, d, rv, pr, pn, pu)
            ON CONFLICT (member_id) DO UPDATE SET
                level_id = excluded.level_id, level_seq = excluded.level_seq,
                active_score = excluded.active_score, passive_score = excluded.passive_score,
                points = excluded.points, joined_at = excluded.joined_at,
                joined_declared = excluded.joined_declared, first_seen = excluded.first_seen,
                tenure_due_at = excluded.tenure_due_at, rules_version = excluded.rules_version,
                pinned_level = excluded.pinned_level, pinned_reason = excluded.pinned_reason,
                pinned_until = excluded.pinned_until, version = excluded.version,
                updated_at = excluded.updated_at
            RETURNING member_id, version
            """
        ),
        {**cols, "now": now},
    )
    return {row[0]: row[1] for row in rows}


async def record_level_changes(conn: AsyncConnection, changes: list[LevelChange], payloads: list[bytes]) -> None:
    """Add level changes to the members' history, which is also the relay's outbox."""
    if not changes:
        return
    await conn.execute(
        text(
            """
            INSERT INTO level_changes (member_id, seq, payload, occurred_at)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:seqs AS int[]), CAST(:payloads AS text[]),
                                 CAST(:occurred AS timestamptz[]))
            """
        ),
        {
            "ids": [c.member_id for c in changes],
            "seqs": [c.seq for c in changes],
            "payloads": [p.decode() for p in payloads],
            "occurred": [c.occurred_at for c in changes],
        },
    )


@dataclass(frozen=True)
class PinAudit:
    """One line of the pin audit log (SPEC §9.3): who pinned, released or let expire a level, when and why."""

    member_id: str
    action: str  # pin, unpin, expire
    level_id: str | None  # the level pinned, or released
    reason: str | None
    until: datetime | None
    operator: str
    at: datetime


async def record_pin_audit(conn: AsyncConnection, entries: list[PinAudit]) -> None:
    if not entries:
        return
    await conn.execute(
        text(
            """
            INSERT INTO pin_audit (member_id, action, level_id, reason, until, operator, at)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:actions AS text[]), CAST(:levels AS text[]),
                                 CAST(:reasons AS text[]), CAST(:untils AS timestamptz[]),
                                 CAST(:operators AS text[]), CAST(:ats AS timestamptz[]))
            """
        ),
        {
            "ids": [e.member_id for e in entries],
            "actions": [e.action for e in entries],
            "levels": [e.level_id for e in entries],
            "reasons": [e.reason for e in entries],
            "untils": [e.until for e in entries],
            "operators": [e.operator for e in entries],
            "ats": [e.at for e in entries],
        },
    )


async def add_period_points(conn: AsyncConnection, deltas: Periods) -> Periods:
    """Add to members' points per tier and period; returns the new totals of those touched."""
    rows = sorted((m, tier, period, n) for m, by in deltas.items() for (tier, period), n in by.items())
    if not rows:
        return {}
    result = await conn.execute(
        text(
            """
            INSERT INTO member_periods AS p (member_id, tier, period, points)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:tiers AS text[]), CAST(:periods AS text[]),
                                 CAST(:deltas AS bigint[]))
            ON CONFLICT (member_id, tier, period) DO UPDATE SET points = p.points + excluded.points
            RETURNING member_id, tier, period, points
            """
        ),
        {
            "ids": [r[0] for r in rows],
            "tiers": [r[1] for r in rows],
            "periods": [r[2] for r in rows],
            "deltas": [r[3] for r in rows],
        },
    )
    out: Periods = {}
    for member, tier, period, points in result:
        out.setdefault(member, {})[(tier, period)] = points
    return out


async def period_points(conn: AsyncConnection, member_ids: list[str], periods: list[str]) -> Periods:
    """Members' points in these periods (for rebuilding the leaderboards in Redis)."""
    result = await conn.execute(
        text(
            "SELECT member_id, tier, period, points FROM member_periods"
            " WHERE member_id = ANY(CAST(:ids AS text[])) AND period = ANY(CAST(:periods AS text[]))"
        ),
        {"ids": member_ids, "periods": periods},
    )
    out: Periods = {}
    for member, tier, period, points in result:
        out.setdefault(member, {})[(tier, period)] = points
    return out


async def prune_periods(conn: AsyncConnection, oldest: dict[str, str], limit: int) -> int:
    """Delete up to `limit` rows of weeks, months and years older than the oldest kept of each
    kind (as `shared.scoring.oldest_kept` names them), found through the period index (in byte
    order, as the names sort); rows a commit holds are left for a later round. Returns how
    many were deleted."""
    result = await conn.execute(
        text(
            """
            DELETE FROM member_periods AS p USING (
                SELECT member_id, tier, period FROM member_periods
                WHERE period COLLATE "C" >= 'week:' AND period COLLATE "C" < :week
                   OR period COLLATE "C" >= 'month:' AND period COLLATE "C" < :month
                   OR period COLLATE "C" >= 'year:' AND period COLLATE "C" < :year
                LIMIT :limit FOR UPDATE SKIP LOCKED
            ) AS x
            WHERE p.member_id = x.member_id AND p.tier = x.tier AND p.period = x.period
            """
        ),
        {"week": oldest["week"], "month": oldest["month"], "year": oldest["year"], "limit": limit},
    )
    return _rowcount(result)


async def count(conn: AsyncConnection, levels: dict[str, int], hourly: dict[str, int], now: datetime) -> None:
    """Add to the members per level (by id) and to this hour's counts (by what)."""
    levels = {level: n for level, n in levels.items() if n}
    if levels:
        await conn.execute(
            text(
                """
                INSERT INTO level_counts AS c (level_id, members)
                SELECT * FROM unnest(CAST(:levels AS text[]), CAST(:deltas AS bigint[]))
                ON CONFLICT (level_id) DO UPDATE SET members = c.members + excluded.members
                """
            ),
            {"levels": sorted(levels), "deltas": [levels[lv] for lv in sorted(levels)]},
        )
    hourly = {what: n for what, n in hourly.items() if n}
    if hourly:
        await conn.execute(
            text(
                """
                INSERT INTO hourly_counts AS c (hour, what, n)
                SELECT date_trunc('hour', CAST(:now AS timestamptz)), w, d
                FROM unnest(CAST(:whats AS text[]), CAST(:deltas AS bigint[])) AS u(w, d)
                ON CONFLICT (hour, what) DO UPDATE SET n = c.n + excluded.n
                """
            ),
            {"now": now, "whats": sorted(hourly), "deltas": [hourly[w] for w in sorted(hourly)]},
        )


async def unsent_level_changes(conn: AsyncConnection, limit: int) -> list[tuple[int, str, str | None]]:
    """The oldest level changes not yet published: (id, member_id, payload); a payload of None
    is an erased member's tombstone."""
    rows = await conn.execute(
        text("SELECT id, member_id, payload FROM level_changes WHERE sent_at IS NULL ORDER BY id LIMIT :limit"),
        {"limit": limit},
    )
    return [(row[0], row[1], row[2]) for row in rows]


async def mark_sent(conn: AsyncConnection, ids: list[int], now: datetime) -> None:
    """Mark level changes published; a published tombstone is deleted, so no row keeps the id."""
    await conn.execute(
        text("UPDATE level_changes SET sent_at = :now WHERE id = ANY(CAST(:ids AS bigint[])) AND payload IS NOT NULL"),
        {"ids": ids, "now": now},
    )
    await conn.execute(
        text("DELETE FROM level_changes WHERE id = ANY(CAST(:ids AS bigint[])) AND payload IS NULL"), {"ids": ids}
    )


async def take_relay_lease(conn: AsyncConnection, owner: str, ttl_s: float) -> bool:
    """One relay publishes at a time, so a member's level changes reach Kafka in seq order.

    A lease rather than a lock: it is taken (or renewed) in a short transaction, and the relay
    sends with no transaction open. It passes on when it expires, or at once when its owner
    has no session left (a scorer's sessions carry its name: a crashed scorer has none).
    """
    row = await conn.execute(
        text(
            """
            UPDATE relay_lease SET owner = :owner, expires_at = now() + make_interval(secs => :ttl)
            WHERE owner = :owner OR expires_at < now()
               OR NOT EXISTS (SELECT 1 FROM pg_stat_activity  -- names are cut to 63 bytes
                              WHERE application_name = left(:prefix || relay_lease.owner, 63))
            RETURNING 1
            """
        ),
        {"owner": owner, "ttl": ttl_s, "prefix": SESSION_PREFIX},
    )
    return row.first() is not None


async def release_relay_lease(conn: AsyncConnection, owner: str) -> None:
    await conn.execute(text("UPDATE relay_lease SET expires_at = now() WHERE owner = :owner"), {"owner": owner})


async def add_pending_views(conn: AsyncConnection, member_ids: list[str], written: list[int]) -> int:
    """Note that these members' views are to be written to Redis (one row for the commit), and
    delete the rows whose views have been written; returns the new row's id."""
    row = await conn.execute(
        text(
            """
            WITH written AS (DELETE FROM pending_views WHERE id = ANY(CAST(:written AS bigint[])))
            INSERT INTO pending_views (member_ids) VALUES (CAST(:ids AS text[])) RETURNING id
            """
        ),
        {"ids": member_ids, "written": written},
    )
    return int(row.scalar_one())


async def left_pending_views(
    conn: AsyncConnection, written: list[int], grace_s: float, limit: int
) -> list[tuple[int, list[str]]]:
    """Delete the rows whose views have been written; lock and return those older than the
    grace (left behind by a failed write or a crash), skipping any another scorer holds."""
    rows = await conn.execute(
        text(
            """
            WITH written AS (DELETE FROM pending_views WHERE id = ANY(CAST(:written AS bigint[])))
            SELECT id, member_ids FROM pending_views
            WHERE recorded_at < now() - make_interval(secs => :grace) AND id <> ALL(CAST(:written AS bigint[]))
            ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
            """
        ),
        {"written": written, "grace": grace_s, "limit": limit},
    )
    return [(row[0], list(row[1])) for row in rows]


async def drop_pending_views(conn: AsyncConnection, ids: list[int]) -> None:
    if ids:
        await conn.execute(text("DELETE FROM pending_views WHERE id = ANY(CAST(:ids AS bigint[]))"), {"ids": ids})


async def member_views(conn: AsyncConnection, member_ids: list[str]) -> list[tuple[MemberState, int, datetime]]:
    """Members' figures as views are made of them: (state, version, updated_at)."""
    rows = await conn.execute(
        text(f"SELECT {_FIGURES}, version, updated_at FROM members WHERE member_id = ANY(CAST(:ids AS text[]))"),
        {"ids": member_ids},
    )
    return [(_state(row), row[_AFTER], row[_AFTER + 1]) for row in rows]


async def views_after(conn: AsyncConnection, after: str, limit: int) -> list[tuple[MemberState, int, datetime]]:
    """A page of every member in id order, for rebuilding Redis: (state, version, updated_at)."""
    rows = await conn.execute(
        text(
            f"SELECT {_FIGURES}, version, updated_at FROM members WHERE member_id > :after"
            " ORDER BY member_id LIMIT :limit"
        ),
        {"after": after, "limit": limit},
    )
    return [(_state(row), row[_AFTER], row[_AFTER + 1]) for row in rows]


async def next_view_epoch(conn: AsyncConnection) -> int:
    """The next view epoch; its row stays locked until the transaction ends, so scorers take turns."""
    row = await conn.execute(text("UPDATE view_sync SET epoch = epoch + 1 RETURNING epoch"))
    return int(row.scalar_one())


async def reset_offset(
    conn: AsyncConnection, group_id: str, topic: str, partition: int, epoch: int, next_offset: int
) -> bool:
    """Move a partition's stored offset (out of range on the broker), if this epoch still owns it."""
    row = await conn.execute(
        text(
            "UPDATE consumer_offsets SET next_offset = :next, updated_at = now()"
            " WHERE group_id = :group_id AND topic = :topic AND partition = :partition AND epoch = :epoch"
            " RETURNING 1"
        ),
        {"group_id": group_id, "topic": topic, "partition": partition, "epoch": epoch, "next": next_offset},
    )
    return row.first() is not None


@dataclass(frozen=True)
class Backlog:
    unsent_level_changes: int
    oldest_unsent_age: float | None  # seconds, by PostgreSQL's clock
    unsynced_members: int  # members of pending view rows (the last commit's, until the next one)


# The head of the relay's queue (the first row of the partial index of unsent rows), aged by
# PostgreSQL's clock, which also stamped recorded_at: no clock skew with the scorer's host.
_OLDEST_UNSENT_AGE = (
    "SELECT extract(epoch FROM now() - recorded_at) FROM level_changes WHERE sent_at IS NULL ORDER BY id LIMIT 1"
)


async def backlog(conn: AsyncConnection) -> Backlog:
    """What waits for the relay (read through a partial index) and for Redis."""
    row = await conn.execute(
        text(
            "SELECT (SELECT count(*) FROM level_changes WHERE sent_at IS NULL),"
            f" ({_OLDEST_UNSENT_AGE}),"
            " (SELECT coalesce(sum(cardinality(member_ids)), 0) FROM pending_views)"
        )
    )
    unsent, oldest, unsynced = row.one()
    return Backlog(unsent, None if oldest is None else float(oldest), unsynced)


async def oldest_unsent_age(conn: AsyncConnection) -> float | None:
    """Seconds since the oldest level change not yet published was recorded; None: none waits.
    One index probe, cheap enough for every /readyz."""
    age = (await conn.execute(text(_OLDEST_UNSENT_AGE))).scalar()
    return None if age is None else float(age)


# -- rules versions (SPEC §9.1) ---------------------------------------------------------


# Scoring transactions hold this advisory lock shared, a switch of the rules in force and an
# erasure hold it alone: the switch waits for the transactions scoring under the old rules, and
# every later one reads the new; every transaction applying records runs wholly before an
# erasure or wholly after it. (An advisory lock writes nothing, where a row lock would write the row.)
RULES_LOCK = 0x636C2D72756C6573  # "cl-rules"


async def rules_in_force(conn: AsyncConnection) -> str | None:
    """The version in force; the rules lock is held shared until the transaction ends."""
    await conn.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": RULES_LOCK})
    row = await conn.execute(text("SELECT version FROM rules_in_force WHERE id = 1"))
    return row.scalar_one_or_none()


async def rules_body(conn: AsyncConnection, version: str) -> str | None:
    row = await conn.execute(text("SELECT body FROM rules WHERE version = :v"), {"v": version})
    return row.scalar_one_or_none()


async def record_rules(conn: AsyncConnection, version: str, body: str) -> str:
    """Keep a rules file under its version (once); returns the body kept under that version."""
    await conn.execute(
        text("INSERT INTO rules (version, body) VALUES (:v, :b) ON CONFLICT DO NOTHING"), {"v": version, "b": body}
    )
    return str(await rules_body(conn, version))


async def seed_rules(conn: AsyncConnection, version: str) -> None:
    """Put a recorded version in force if none is: the members scored before versions were
    kept are scored under it."""
    row = await conn.execute(
        text("INSERT INTO rules_in_force (id, version) VALUES (1, :v) ON CONFLICT DO NOTHING RETURNING 1"),
        {"v": version},
    )
    if row.first() is not None:
        await conn.execute(text("UPDATE members SET rules_version = :v WHERE rules_version IS NULL"), {"v": version})


async def put_rules_in_force(conn: AsyncConnection, version: str) -> None:
    """Name the rules in force, once no transaction scores under the old ones (the lock alone)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RULES_LOCK})
    await conn.execute(
        text(
            "INSERT INTO rules_in_force (id, version) VALUES (1, :v)"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version, since = now()"
        ),
        {"v": version},
    )


async def pins_outside(conn: AsyncConnection, level_ids: list[str]) -> list[tuple[str, str]]:
    """Members pinned at a level not among these, (member, level) in member id order."""
    rows = await conn.execute(
        text(
            "SELECT member_id, pinned_level FROM members"
            " WHERE pinned_level IS NOT NULL AND NOT pinned_level = ANY(CAST(:ids AS text[])) ORDER BY member_id"
        ),
        {"ids": level_ids},
    )
    return [(row[0], row[1]) for row in rows]


async def members_behind(conn: AsyncConnection, version: str, after: str, limit: int) -> list[str]:
    """The next members (in id order, after `after`) not yet scored under this version."""
    rows = await conn.execute(
        text(
            "SELECT member_id FROM members WHERE member_id > :after AND rules_version IS DISTINCT FROM :v"
            " ORDER BY member_id LIMIT :limit"
        ),
        {"after": after, "v": version, "limit": limit},
    )
    return [row[0] for row in rows]


async def count_behind(conn: AsyncConnection, version: str) -> int:
    row = await conn.execute(
        text("SELECT count(*) FROM members WHERE rules_version IS DISTINCT FROM :v"), {"v": version}
    )
    return int(row.scalar_one())


# Erasure (SPEC §9.4, `cl member erase`). A tombstone is the outbox row of seq 0 with no
# payload: a member's level changes count from 1, so it never collides with one, not even with
# those of a later member of the same id recorded before the tombstone is sent.
TOMBSTONE_SEQ = 0
_NAMING = ("like", "unlike", "solution_accepted")  # the events that name a second member


async def exclude_scoring(conn: AsyncConnection) -> None:
    """Wait for the transactions scoring now, and keep others out until this one ends."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RULES_LOCK})


async def next_member_version(conn: AsyncConnection) -> int:
    """A version above every member version handed out so far (erasure's Redis stamp)."""
    return int((await conn.execute(text("SELECT nextval('member_versions')"))).scalar_one())


@dataclass(frozen=True)
class ErasedId:
    """An erased member whose records sent before the erasure may still be unapplied."""

    stand_in: str  # the digest the erasure put in place of the id
    topic: str  # the activity topic, and where each of its partitions ended (by partition)
    ends: list[int]

    def before(self, topic: str, partition: int, offset: int) -> bool:
        """Whether this record was sent before the erasure."""
        return topic == self.topic and partition < len(self.ends) and offset < self.ends[partition]


async def erased_ids(conn: AsyncConnection, lookups: list[str]) -> dict[str, ErasedId]:
    """The erased members among these (by lookup digest)."""
    rows = await conn.execute(
        text("SELECT lookup, stand_in, topic, ends FROM erased_members WHERE lookup = ANY(CAST(:l AS text[]))"),
        {"l": lookups},
    )
    return {row[0]: ErasedId(row[1], row[2], list(row[3])) for row in rows}


async def record_erased(conn: AsyncConnection, lookup: str, erased: ErasedId, now: datetime) -> None:
    await conn.execute(
        text(
            """
            INSERT INTO erased_members (lookup, stand_in, topic, ends, erased_at)
            VALUES (:lookup, :stand_in, :topic, CAST(:ends AS bigint[]), :now)
            ON CONFLICT (lookup) DO UPDATE SET stand_in = excluded.stand_in, topic = excluded.topic,
                ends = excluded.ends, erased_at = excluded.erased_at
            """
        ),
        {"lookup": lookup, "stand_in": erased.stand_in, "topic": erased.topic, "ends": erased.ends, "now": now},
    )


async def prune_erased(conn: AsyncConnection, group_id: str) -> int:
    """Forget the erased members whose records sent before the erasure are all applied: the
    group's stored offset of every partition is past where it ended."""
    result = await conn.execute(
        text(
            """
            DELETE FROM erased_members AS e WHERE NOT EXISTS (
                SELECT 1 FROM generate_subscripts(e.ends, 1) AS i
                WHERE e.ends[i] > 0 AND NOT EXISTS (
                    SELECT 1 FROM consumer_offsets AS o
                    WHERE o.group_id = :group_id AND o.topic = e.topic AND o.partition = i - 1
                      AND o.next_offset >= e.ends[i]))
            """
        ),
        {"group_id": group_id},
    )
    return _rowcount(result)


async def named_by(conn: AsyncConnection, member_id: str) -> list[str]:
    """The other members the member's applied records name: each like, unlike or accepted
    solution is recorded once per member it names, so theirs name this member too."""
    rows = await conn.execute(
        text(
            """
            SELECT DISTINCT CASE WHEN event->>'member_id' = :id THEN event->>'target_member_id'
                                 ELSE event->>'member_id' END AS other
            FROM activity WHERE member_id = :id AND event->>'type' = ANY(CAST(:types AS text[]))
            """
        ),
        {"id": member_id, "types": list(_NAMING)},
    )
    return sorted(other for (other,) in rows if other is not None and other != member_id)


async def digest_named(conn: AsyncConnection, others: list[str], member_id: str, digest: str) -> tuple[int, int]:
    """In other members' facts and applied records, put the digest where the member's id was
    (the attributes the member's events carried go too: never scored, they may say anything);
    returns how many facts and records."""
    facts = await conn.execute(
        text(
            """
            UPDATE member_facts SET fact = :new_prefix || substr(fact, length(:old_prefix) + 1)
            WHERE member_id = ANY(CAST(:others AS text[])) AND starts_with(fact, :old_prefix)
            """
        ),
        {"others": others, "old_prefix": f"like_received|{member_id}|", "new_prefix": f"like_received|{digest}|"},
    )
    records = await conn.execute(
        text(
            """
            UPDATE activity SET event = (event || jsonb_strip_nulls(jsonb_build_object(
                    'member_id', CASE WHEN event->>'member_id' = :id THEN CAST(:digest AS text) END,
                    'target_member_id', CASE WHEN event->>'target_member_id' = :id THEN CAST(:digest AS text) END
                ))) - 'attributes'
            WHERE member_id = ANY(CAST(:others AS text[]))
              AND (event->>'member_id' = :id OR event->>'target_member_id' = :id)
            """
        ),
        {"others": others, "id": member_id, "digest": digest},
    )
    return _rowcount(facts), _rowcount(records)


_ERASED_TABLES = ("members", "member_facts", "activity", "level_changes", "member_periods", "pin_audit")


async def delete_member(conn: AsyncConnection, member_id: str) -> dict[str, int]:
    """Delete every row stored under the member's id; returns how many from each table."""
    # An earlier erasure's tombstone not yet sent is replaced by this one's, and not counted.
    await conn.execute(text("DELETE FROM level_changes WHERE member_id = :id AND payload IS NULL"), {"id": member_id})
    deleted = {}
    for table in _ERASED_TABLES:
        result = await conn.execute(text(f"DELETE FROM {table} WHERE member_id = :id"), {"id": member_id})
        deleted[table] = _rowcount(result)
    return deleted


async def unpend_member(conn: AsyncConnection, member_id: str) -> None:
    """Take the member out of the pending view rows."""
    await conn.execute(
        text(
            "UPDATE pending_views SET member_ids = array_remove(member_ids, CAST(:id AS text))"
            " WHERE CAST(:id AS text) = ANY(member_ids)"
        ),
        {"id": member_id},
    )


async def member_activity(
    conn: AsyncConnection, member_ids: list[str], skip: set[tuple[str, str]] | frozenset[tuple[str, str]]
) -> dict[str, str]:
    """Each of these members' applied records but `skip` (member, event id), in the order
    applied, as one JSON array of events (without their attributes, which are never scored)."""
    rows = await conn.execute(
        text(
            """
            SELECT member_id, json_agg(event - 'attributes' ORDER BY position)::text FROM activity AS a
            WHERE member_id = ANY(CAST(:ids AS text[])) AND NOT EXISTS (
                SELECT 1 FROM unnest(CAST(:skip_ids AS text[]), CAST(:skip_events AS text[])) AS s(m, e)
                WHERE s.m = a.member_id AND s.e = a.event_id)
            GROUP BY member_id
            """
        ),
        {"ids": member_ids, "skip_ids": [m for m, _ in skip], "skip_events": [e for _, e in skip]},
    )
    return {row[0]: row[1] for row in rows}


async def drop_facts(conn: AsyncConnection, member_ids: list[str]) -> None:
    await conn.execute(
        text("DELETE FROM member_facts WHERE member_id = ANY(CAST(:ids AS text[]))"), {"ids": sorted(member_ids)}
    )


async def replace_period_points(conn: AsyncConnection, points: Periods) -> Periods:
    """Set members' points per tier and period to exactly these; returns them, with a 0 for
    each period they no longer have points in."""
    ids = sorted(points)
    dropped = await conn.execute(
        text(
            "DELETE FROM member_periods WHERE member_id = ANY(CAST(:ids AS text[])) RETURNING member_id, tier, period"
        ),
        {"ids": ids},
    )
    out: Periods = {m: {} for m in ids}
    for member, tier, period in dropped:
        out[member][(tier, period)] = 0
    for member, by in points.items():
        out[member].update(by)
    await add_period_points(conn, points)  # nothing left to add to: it inserts them
    return out


async def record_tombstone(conn: AsyncConnection, member_id: str, now: datetime) -> None:
    """Put the member's tombstone in the outbox (after the member's other rows were deleted)."""
    await conn.execute(
        text("INSERT INTO level_changes (member_id, seq, payload, occurred_at) VALUES (:id, :seq, NULL, :now)"),
        {"id": member_id, "seq": TOMBSTONE_SEQ, "now": now},
    )


def _rowcount(result: Any) -> int:
    return int(result.rowcount)

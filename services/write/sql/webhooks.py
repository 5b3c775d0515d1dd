"""`webhook_endpoints`, `webhook_deliveries`, `webhook_attempts` and `webhook_audit` (SPEC §12):
the endpoints registered, the dispatcher's outbox of deliveries, each attempt, and who changed
an endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection


async def add(
    conn: AsyncConnection, url: str, events: list[str], exclude_causes: list[str], secret: bytes, at: datetime
) -> int:
    row = await conn.execute(
        text(
            "INSERT INTO webhook_endpoints (url, events, exclude_causes, secret, created_at)"
            " VALUES (:url, :events, :causes, :secret, :at) RETURNING id"
        ),
        {"url": url, "events": events, "causes": exclude_causes, "secret": secret, "at": at},
    )
    return int(row.scalar_one())


async def audit(
    conn: AsyncConnection, endpoint_id: int, action: str, detail: str | None, operator: str, at: datetime
) -> None:
    await conn.execute(
        text(
            "INSERT INTO webhook_audit (endpoint_id, action, detail, operator, at)"
            " VALUES (:id, :action, :detail, :operator, :at)"
        ),
        {"id": endpoint_id, "action": action, "detail": detail, "operator": operator, "at": at},
    )


async def endpoints(conn: AsyncConnection) -> Sequence[Row[Any]]:
    """Every endpoint with its pending deliveries and its last attempt."""
    rows = await conn.execute(
        text(
            "SELECT e.id, e.url, e.events, e.exclude_causes, e.enabled, e.disabled_reason, e.failing_since,"
            " (SELECT count(*) FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.state = 'pending')"
            "   AS pending,"
            " (SELECT max(a.at) FROM webhook_attempts a WHERE a.endpoint_id = e.id) AS last_attempt"
            " FROM webhook_endpoints e ORDER BY e.id"
        )
    )
    return rows.all()


async def set_enabled(conn: AsyncConnection, endpoint_id: int, enabled: bool, reason: str | None) -> bool:
    """Enable (clearing the failures counted so far) or disable an endpoint; False if there is none."""
    row = await conn.execute(
        text(
            "UPDATE webhook_endpoints SET enabled = :enabled, disabled_reason = :reason,"
            " failing_since = CASE WHEN CAST(:enabled AS boolean) THEN NULL ELSE failing_since END"
            " WHERE id = :id RETURNING id"
        ),
        {"id": endpoint_id, "enabled": enabled, "reason": reason},
    )
    return row.scalar_one_or_none() is not None


async def remove(conn: AsyncConnection, endpoint_id: int) -> bool:
    """Delete an endpoint, its deliveries and attempts (the audit stays)."""
    row = await conn.execute(text("DELETE FROM webhook_endpoints WHERE id = :id RETURNING id"), {"id": endpoint_id})
    return row.scalar_one_or_none() is not None


async def rotate(conn: AsyncConnection, endpoint_id: int, secret: bytes, previous_until: datetime) -> bool:
    """A new secret; the one it replaces still signs until `previous_until`."""
    row = await conn.execute(
        text(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = :until, secret = :secret"
            " WHERE id = :id RETURNING id"
        ),
        {"id": endpoint_id, "secret": secret, "until": previous_until},
    )
    return row.scalar_one_or_none() is not None


async def attempts(conn: AsyncConnection, endpoint_id: int, since: datetime) -> Sequence[Row[Any]]:
    """An endpoint's attempts since a time, the latest first, with the delivery each was of."""
    rows = await conn.execute(
        text(
            "SELECT a.at, d.event_id, d.event_type, d.member_id, a.outcome, a.status, a.error, a.duration_ms,"
            " d.attempts, d.state"
            " FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id"
            " WHERE a.endpoint_id = :id AND a.at >= :since ORDER BY a.at DESC, a.id DESC"
        ),
        {"id": endpoint_id, "since": since},
    )
    return rows.all()


async def exists(conn: AsyncConnection, endpoint_id: int) -> bool:
    row = await conn.execute(text("SELECT 1 FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id})
    return row.scalar_one_or_none() is not None


# -- the dispatcher -----------------------------------------------------------------------


async def subscribers(conn: AsyncConnection) -> Sequence[Row[Any]]:
    """The enabled endpoints and what each takes."""
    rows = await conn.execute(
        text("SELECT id, events, exclude_causes FROM webhook_endpoints WHERE enabled ORDER BY id")
    )
    return rows.all()


async def record(conn: AsyncConnection, deliveries: list[dict[str, Any]]) -> None:
    """Deliveries due now; a record of the topic already recorded for an endpoint (Kafka
    delivered it again) is not recorded twice."""
    await conn.execute(
        text(
            'INSERT INTO webhook_deliveries (endpoint_id, topic, partition, "offset", member_id, event_id,'
            " event_type, body, next_attempt_at, recorded_at)"
            " VALUES (:endpoint_id, :topic, :partition, :offset, :member_id, :event_id, :event_type, :body, :at, :at)"
            ' ON CONFLICT (endpoint_id, topic, partition, "offset") DO NOTHING'
        ),
        deliveries,
    )


async def lease(conn: AsyncConnection, endpoint_id: int, owner: str, until: datetime, now: datetime) -> Row[Any] | None:
    """The endpoint (its URL and secrets) if it is enabled and this dispatcher holds, or now
    takes, its lease; else None."""
    row = await conn.execute(
        text(
            "UPDATE webhook_endpoints SET lease_owner = :owner, lease_until = :until"
            " WHERE id = :id AND enabled AND (lease_owner IS NULL OR lease_owner = :owner OR lease_until < :now)"
            " RETURNING id, url, secret, previous_secret, previous_until"
        ),
        {"id": endpoint_id, "owner": owner, "until": until, "now": now},
    )
    return row.one_or_none()


async def release(conn: AsyncConnection, owner: str) -> None:
    await conn.execute(
        text("UPDATE webhook_endpoints SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = :owner"),
        {"owner": owner},
    )


async def heads(conn: AsyncConnection, endpoint_id: int, now: datetime, limit: int) -> Sequence[Row[Any]]:
    """Each member's oldest pending delivery to the endpoint, if it is due: a member's later
    deliveries wait for it, so they reach the endpoint in order."""
    rows = await conn.execute(
        text(
            "SELECT id, member_id, event_id, body, attempts FROM ("
            "  SELECT DISTINCT ON (member_id) id, member_id, event_id, body, attempts, next_attempt_at"
            "  FROM webhook_deliveries WHERE endpoint_id = :id AND state = 'pending'"
            "  ORDER BY member_id, id) AS head"
            " WHERE next_attempt_at <= :now ORDER BY id LIMIT :limit"
        ),
        {"id": endpoint_id, "now": now, "limit": limit},
    )
    return rows.all()


async def next_due(conn: AsyncConnection, endpoint_id: int) -> datetime | None:
    row = await conn.execute(
        text("SELECT min(next_attempt_at) FROM webhook_deliveries WHERE endpoint_id = :id AND state = 'pending'"),
        {"id": endpoint_id},
    )
    return row.scalar_one_or_none()


async def settle(
    conn: AsyncConnection,
    delivery_id: int,
    endpoint_id: int,
    at: datetime,
    status: int | None,
    error: str | None,
    outcome: str,
    duration_ms: int,
    next_at: datetime | None,
) -> None:
    """An attempt, and what it makes of its delivery: delivered, failed for good, or retried at `next_at`."""
    await conn.execute(
        text(
            "INSERT INTO webhook_attempts (delivery_id, endpoint_id, at, status, error, outcome, duration_ms)"
            " VALUES (:delivery, :endpoint, :at, :status, :error, :outcome, :duration)"
        ),
        {
            "delivery": delivery_id,
            "endpoint": endpoint_id,
            "at": at,
            "status": status,
            "error": error,
            "outcome": outcome,
            "duration": duration_ms,
        },
    )
    await conn.execute(
        text(
            "UPDATE webhook_deliveries SET attempts = attempts + 1,"
            " state = CASE WHEN CAST(:outcome AS text) = 'retry' THEN 'pending' ELSE CAST(:outcome AS text) END,"
            " next_attempt_at = COALESCE(CAST(:next_at AS timestamptz), next_attempt_at),"
            " done_at = CASE WHEN CAST(:outcome AS text) = 'retry' THEN NULL ELSE CAST(:at AS timestamptz) END"
            " WHERE id = :delivery"
        ),
        {"delivery": delivery_id, "outcome": outcome, "next_at": next_at, "at": at},
    )


async def mark_failing(
    conn: AsyncConnection, endpoint_id: int, failing: bool, at: datetime, disable_before: datetime
) -> bool:
    """Note whether the endpoint answers; one failing since before `disable_before` is disabled
    (returns True then)."""
    if not failing:
        await conn.execute(
            text("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = :id AND failing_since IS NOT NULL"),
            {"id": endpoint_id},
        )
        return False
    row = await conn.execute(
        text(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, CAST(:at AS timestamptz)),"
            " enabled = enabled AND COALESCE(failing_since, CAST(:at AS timestamptz)) > CAST(:before AS timestamptz),"
            " disabled_reason = CASE WHEN COALESCE(failing_since, CAST(:at AS timestamptz))"
            "   <= CAST(:before AS timestamptz) AND enabled"
            "   THEN 'failing since ' || to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            "   ELSE disabled_reason END"
            " WHERE id = :id RETURNING enabled"
        ),
        {"id": endpoint_id, "at": at, "before": disable_before},
    )
    return row.scalar_one_or_none() is False


async def prune(conn: AsyncConnection, before: datetime) -> int:
    """Attempts and settled deliveries older than `before`; returns how many deliveries went."""
    await conn.execute(text("DELETE FROM webhook_attempts WHERE at < :before"), {"before": before})
    rows = await conn.execute(
        text("DELETE FROM webhook_deliveries WHERE state <> 'pending' AND done_at < :before"), {"before": before}
    )
    return int(rows.rowcount)  # type: ignore[attr-defined]


async def pending(conn: AsyncConnection) -> tuple[int, datetime | None]:
    """How many deliveries wait, and since when the oldest."""
    row = await conn.execute(text("SELECT count(*), min(recorded_at) FROM webhook_deliveries WHERE state = 'pending'"))
    count, oldest = row.one()
    return int(count), oldest

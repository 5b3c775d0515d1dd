"""Webhook endpoints and their deliveries (SPEC §12): the transactions of `cl webhook` and of the
dispatcher (`services.webhooks`). Secrets are stored encrypted (Fernet, CL_WEBHOOK_SECRET_KEY)
and decrypted only to sign, so a database dump alone does not reveal them."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import MultiFernet
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from services.write.sql import webhooks as sql

SECRET_PREFIX = "whsec_"  # the Standard Webhooks form of a secret


def new_secret() -> str:
    """A Standard Webhooks secret: 32 random bytes, base64, with its prefix."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as the dispatcher sends to it: its URL and the secrets that sign (the
    current one, and the one a rotation replaced while it still signs)."""

    id: int
    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Head:
    """A member's oldest pending delivery to an endpoint."""

    id: int
    member_id: str
    event_id: str
    body: bytes
    attempts: int


class Webhooks:
    def __init__(self, engine: AsyncEngine, fernet: MultiFernet) -> None:
        self.engine, self.fernet = engine, fernet

    # -- cl webhook ---------------------------------------------------------------------

    async def add(
        self, url: str, events: list[str], exclude_causes: list[str], operator: str, now: datetime
    ) -> tuple[int, str]:
        """Register an endpoint; returns its id and its secret (shown this once)."""
        secret = new_secret()
        async with self.engine.begin() as conn:
            endpoint_id = await sql.add(conn, url, events, exclude_causes, self.fernet.encrypt(secret.encode()), now)
            await sql.audit(conn, endpoint_id, "add", url, operator, now)
        return endpoint_id, secret

    async def endpoints(self) -> list[Row[Any]]:
        async with self.engine.connect() as conn:
            return list(await sql.endpoints(conn))

    async def set_enabled(self, endpoint_id: int, enabled: bool, operator: str, now: datetime) -> bool:
        async with self.engine.begin() as conn:
            reason = None if enabled else f"disabled by {operator}"
            if not await sql.set_enabled(conn, endpoint_id, enabled, reason):
                return False
            await sql.audit(conn, endpoint_id, "enable" if enabled else "disable", None, operator, now)
        return True

    async def remove(self, endpoint_id: int, operator: str, now: datetime) -> bool:
        async with self.engine.begin() as conn:
            if not await sql.remove(conn, endpoint_id):
                return False
            await sql.audit(conn, endpoint_id, "remove", None, operator, now)
        return True

    async def rotate(self, endpoint_id: int, operator: str, now: datetime, overlap: timedelta) -> str | None:
        """A new secret (returned, shown this once); the old one signs too for `overlap`."""
        secret = new_secret()
        async with self.engine.begin() as conn:
            if not await sql.rotate(conn, endpoint_id, self.fernet.encrypt(secret.encode()), now + overlap):
                return None
            await sql.audit(conn, endpoint_id, "rotate-secret", None, operator, now)
        return secret

    async def attempts(self, endpoint_id: int, since: datetime) -> list[Row[Any]] | None:
        """The endpoint's attempts since a time; None if there is no such endpoint."""
        async with self.engine.connect() as conn:
            if not await sql.exists(conn, endpoint_id):
                return None
            return list(await sql.attempts(conn, endpoint_id, since))

    # -- the dispatcher -----------------------------------------------------------------

    async def subscribers(self) -> list[Row[Any]]:
        async with self.engine.connect() as conn:
            return list(await sql.subscribers(conn))

    async def record(self, deliveries: list[dict[str, Any]]) -> None:
        if deliveries:
            async with self.engine.begin() as conn:
                await sql.record(conn, deliveries)

    async def lease(self, endpoint_id: int, owner: str, lease: timedelta, now: datetime) -> Endpoint | None:
        async with self.engine.begin() as conn:
            row = await sql.lease(conn, endpoint_id, owner, now + lease, now)
        if row is None:
            return None
        keys = [row.secret] + ([row.previous_secret] if row.previous_secret and row.previous_until > now else [])
        return Endpoint(row.id, row.url, tuple(self.fernet.decrypt(key).decode() for key in keys))

    async def release(self, owner: str) -> None:
        async with self.engine.begin() as conn:
            await sql.release(conn, owner)

    async def heads(self, endpoint_id: int, now: datetime, limit: int) -> tuple[list[Head], datetime | None]:
        """The due heads, and when the next pending delivery is due."""
        async with self.engine.connect() as conn:
            rows = await sql.heads(conn, endpoint_id, now, limit)
            due = await sql.next_due(conn, endpoint_id)
        return [Head(r.id, r.member_id, r.event_id, bytes(r.body), r.attempts) for r in rows], due

    async def settle(
        self,
        endpoint_id: int,
        head: Head,
        at: datetime,
        status: int | None,
        error: str | None,
        outcome: str,
        duration_ms: int,
        next_at: datetime | None,
        disable_after: timedelta,
    ) -> bool:
        """Record an attempt and what became of the delivery; returns True if the endpoint, failing
        since `disable_after` ago, has been disabled."""
        async with self.engine.begin() as conn:
            await sql.settle(conn, head.id, endpoint_id, at, status, error, outcome, duration_ms, next_at)
            failing = outcome != "delivered"
            return await sql.mark_failing(conn, endpoint_id, failing, at, at - disable_after)

    async def prune(self, before: datetime) -> int:
        async with self.engine.begin() as conn:
            return await sql.prune(conn, before)

    async def pending(self) -> tuple[int, datetime | None]:
        async with self.engine.connect() as conn:
            return await sql.pending(conn)

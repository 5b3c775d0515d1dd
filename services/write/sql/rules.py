"""`rules` (every rules file the system has scored under) and `rules_in_force` (one row: the
version in force, SPEC §9.1)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

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


async def exclude_scoring(conn: AsyncConnection) -> None:
    """Wait for the transactions scoring now, and keep others out until this one ends."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RULES_LOCK})


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
    await exclude_scoring(conn)
    await conn.execute(
        text(
            "INSERT INTO rules_in_force (id, version) VALUES (1, :v)"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version, since = now()"
        ),
        {"v": version},
    )

"""Production posture against the real PostgreSQL: each service's role may do what it needs and
nothing more, and database errors never carry the values of a statement."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.common import db
from tests.conftest import unique

WEBHOOK_TABLES = ("webhook_endpoints", "webhook_deliveries", "webhook_attempts", "webhook_audit")


async def connect(url: str, **kwargs: object) -> asyncpg.Connection:
    return await asyncpg.connect(url.replace("+asyncpg", ""), **kwargs)


@pytest.fixture
async def as_api(database_urls: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(database_urls["api"])
    yield conn
    await conn.close()


@pytest.fixture
async def as_scorer(database_urls: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    # As the scorer connects: with a server setting of its own (db.engine's server_settings).
    conn = await connect(database_urls["scorer"], server_settings={"idle_in_transaction_session_timeout": "20000"})
    yield conn
    await conn.close()


MEMBER_ROW = """
    INSERT INTO members (member_id, level_id, level_seq, active_score, passive_score, points, joined_at,
                         version, updated_at)
    VALUES ($1, 'new_member', 0, 0, 0, '{}', now(), 1, now())
"""


async def test_the_api_role_reads_and_cannot_write(as_api: asyncpg.Connection) -> None:
    assert await as_api.fetchval("SELECT count(*) FROM members") >= 0
    assert await as_api.fetchval("SELECT count(*) FROM level_changes") >= 0
    for statement, args in [
        (MEMBER_ROW, (unique("api"),)),
        ("UPDATE members SET version = version + 1", ()),
        ("DELETE FROM level_changes", ()),
        ("TRUNCATE activity", ()),
        ("CREATE TABLE api_made (id int)", ()),
        *((f"SELECT count(*) FROM {table}", ()) for table in WEBHOOK_TABLES),
    ]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_api.execute(statement, *args)


async def test_the_scorer_role_writes_rows_and_cannot_change_the_schema(as_scorer: asyncpg.Connection) -> None:
    for statement in [
        "CREATE TABLE scorer_made (id int)",
        "DROP TABLE members",
        "ALTER TABLE members ADD COLUMN extra int",
        "TRUNCATE activity",
        "CREATE INDEX scorer_index ON members (version)",
        "DELETE FROM alembic_version",
    ]:
        with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedTableError)) as refused:
            await as_scorer.execute(statement)
        assert isinstance(refused.value, asyncpg.InsufficientPrivilegeError), f"{statement}: {refused.value!r}"


async def test_the_scorer_role_can_do_everything_the_scorer_does(as_scorer: asyncpg.Connection) -> None:
    member = unique("scorer")
    async with as_scorer.transaction():
        assert await as_scorer.fetchval("SHOW idle_in_transaction_session_timeout") == "20s"
        await as_scorer.execute("SET LOCAL lock_timeout = '5s'")
        await as_scorer.execute(MEMBER_ROW, member)
        # Identity columns: inserting takes the sequence's next value.
        position = await as_scorer.fetchval(
            """INSERT INTO activity (member_id, event_id, event, source_partition, source_offset, applied_at)
               VALUES ($1, 'e-1', '{}', 0, 0, now())
               ON CONFLICT (member_id, event_id) DO NOTHING RETURNING position""",
            member,
        )
        assert position is not None
        await as_scorer.execute(
            "INSERT INTO level_changes (member_id, seq, payload, occurred_at) VALUES ($1, 1, '{}', now())", member
        )
        await as_scorer.execute("UPDATE members SET version = 2 WHERE member_id = $1", member)
        await as_scorer.execute("DELETE FROM level_changes WHERE member_id = $1", member)
        await as_scorer.execute("UPDATE view_sync SET epoch = epoch")  # the Redis repair's epoch row
        await as_scorer.execute("DELETE FROM members WHERE member_id = $1", member)  # not a state the scorer reads


async def test_every_table_of_every_migration_is_granted(pg: asyncpg.Connection) -> None:
    # Default privileges cover tables that later migrations add: no table is left unreadable by
    # the api or unwritable by the scorer, and neither may touch the migrations' own table.
    rows = await pg.fetch(
        """SELECT tablename,
                  has_table_privilege('cl_scorer', format('public.%I', tablename), 'SELECT, INSERT, UPDATE, DELETE')
                      AS scorer_writes,
                  has_table_privilege('cl_api', format('public.%I', tablename), 'SELECT') AS api_reads,
                  has_table_privilege('cl_api', format('public.%I', tablename), 'INSERT, UPDATE, DELETE, TRUNCATE')
                      AS api_writes
           FROM pg_tables WHERE schemaname = 'public'"""
    )
    tables = {row["tablename"]: (row["scorer_writes"], row["api_reads"], row["api_writes"]) for row in rows}
    assert tables.pop("alembic_version") == (False, False, False)
    assert {"members", "activity", "level_changes", "consumer_offsets"} <= set(tables)
    # The webhook tables (migration 0015) hold endpoints' encrypted secrets and what was sent:
    # none of the api's business, so its role does not even read them.
    webhooks = {name: tables.pop(name) for name in WEBHOOK_TABLES}
    assert webhooks == dict.fromkeys(WEBHOOK_TABLES, (True, False, False))
    assert {name: grants for name, grants in tables.items() if grants != (True, True, False)} == {}


async def test_the_service_roles_are_no_superusers(pg: asyncpg.Connection) -> None:
    rows = await pg.fetch(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname LIKE 'cl\\_%'"
    )
    roles = {row["rolname"]: (row["rolsuper"], row["rolcreaterole"], row["rolcreatedb"]) for row in rows}
    assert roles == dict.fromkeys(["cl_owner", "cl_scorer", "cl_api"], (False, False, False))


async def test_a_failing_statement_does_not_show_its_values(run_env: dict[str, str]) -> None:
    secret = unique("member-secret")
    engine = db.engine(run_env["CL_DATABASE_URL"], "test")
    try:
        with pytest.raises(DBAPIError) as failed:
            async with engine.begin() as conn:  # NOT NULL columns missing: refused
                await conn.execute(text("INSERT INTO members (member_id) VALUES (:member)"), {"member": secret})
    finally:
        await engine.dispose()
    assert "INSERT INTO members" in str(failed.value)  # the statement is still there to debug with
    assert secret not in str(failed.value) and secret not in repr(failed.value)

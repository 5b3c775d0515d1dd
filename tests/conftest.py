"""Fixtures for tests that use the real servers (started by `make test`).

Each test session gets its own database (migrations applied once), its own topics, consumer
group and Redis key prefix, so runs never see each other's data; tests use unique member ids.
Services a test starts listen on free ports: `make test` runs beside `make run`, whose
services hold the default ones (8001, 8002, 8003, 8004).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from alembic import command
from alembic.config import Config
from sqlalchemy import make_url

from services.api.settings import ApiSettings
from services.common.kafka import ensure_topics
from services.common.settings import Settings
from services.ingest.settings import IngestSettings
from services.scorer.settings import ScorerSettings
from services.webhooks.settings import WebhookSettings

ROOT = Path(__file__).resolve().parents[1]
RUN = uuid.uuid4().hex[:8]


# The ports `make run`'s services listen on: their settings' defaults.
DEFAULT_PORTS = frozenset(
    {
        IngestSettings.model_fields["port"].default,
        ApiSettings.model_fields["api_port"].default,
        ScorerSettings.model_fields["port"].default,
        WebhookSettings.model_fields["port"].default,
    }
)


@pytest.fixture(scope="session", autouse=True)
def no_default_ports() -> Iterator[None]:
    """No test may listen on a default port: in this process, a bind to one fails as it does
    beside a running `make run`, whether `make run` is up or not. Tests take free ports
    (`port=0`, or tests.support.free_port for a process of their own)."""
    bind = socket.socket.bind

    def guarded(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 2 and address[1] in DEFAULT_PORTS:
            raise OSError(errno.EADDRINUSE, f"port {address[1]} belongs to make run's services; take a free port")
        bind(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "bind", guarded)
        yield


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# The admin and the services' roles of scripts/local/roles.sql, with their local passwords
# (README "Database roles"): the admin only creates and drops the session's database, the
# owner role runs the migrations, and the e2e services connect as their own roles.
ADMIN = "cl"
ROLES = {"owner": "cl_owner", "scorer": "cl_scorer", "api": "cl_api"}


def database_url(role: str, database: str) -> str:
    """The URL of `database` as `role` (its local password is its name), on the server that
    CL_DATABASE_URL names."""
    url = make_url(Settings().database_url).set(username=role, password=role, database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_urls(run_env: dict[str, str]) -> dict[str, str]:
    """This session's database as each role: owner, scorer, api."""
    database = str(make_url(run_env["CL_DATABASE_URL"]).database)
    return {name: database_url(role, database) for name, role in ROLES.items()}


@pytest.fixture(scope="session")
def run_env() -> Iterator[dict[str, str]]:
    """CL_* variables naming this session's database, topics and Redis prefix."""
    admin_dsn = database_url(ADMIN, "postgres").replace("+asyncpg", "")
    database = f"cl_test_{RUN}"
    asyncio.run(_create_database(admin_dsn, database))
    env = {
        "CL_DATABASE_URL": database_url(ROLES["owner"], database),
        "CL_TOPIC_ACTIVITY": f"test-{RUN}-activity",
        "CL_TOPIC_LEVEL_CHANGES": f"test-{RUN}-level-changes",
        "CL_TOPIC_DLQ": f"test-{RUN}-activity.dlq",
        "CL_REDIS_PREFIX": f"test:{RUN}:",
        "CL_GROUP_ID": f"scorer-{RUN}",
    }
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = env["CL_DATABASE_URL"]
    command.upgrade(config, "head")
    settings = Settings.model_validate({k.removeprefix("CL_").lower(): v for k, v in env.items()})
    asyncio.run(ensure_topics(settings))
    yield env
    asyncio.run(_drop_database(admin_dsn, database))
    asyncio.run(_delete_topics(settings.kafka_bootstrap, f"test-{RUN}-"))


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete the session's topics (its tests' own ones too), so a broker that outlives many
    sessions (`make run`'s) does not gather thousands of partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def _create_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" OWNER {ROLES["owner"]}')
    finally:
        await conn.close()


async def _drop_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def migrate(url: str, step: str = "upgrade", revision: str = "head") -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    getattr(command, step)(config, revision)


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    """A database of the test's own, migrated, as the owner role (URL); dropped afterwards."""
    admin, name = database_url(ADMIN, "postgres").replace("+asyncpg", ""), unique("cl_own").replace("-", "_")
    await _create_database(admin, name)
    try:
        url = database_url(ROLES["owner"], name)
        await asyncio.to_thread(migrate, url)
        yield url
    finally:
        await _drop_database(admin, name)


@pytest.fixture(scope="session")
def settings_kwargs(run_env: dict[str, str]) -> dict[str, Any]:
    """The session's CL_* values as keyword arguments for any service's Settings."""
    return {k.removeprefix("CL_").lower(): v for k, v in run_env.items()}


@pytest.fixture
async def pg(run_env: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the session's database, for checking what the services wrote."""
    conn = await asyncpg.connect(run_env["CL_DATABASE_URL"].replace("+asyncpg", ""))
    yield conn
    await conn.close()


def env_with(run_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The process environment for a service started as a subprocess in this session."""
    return {**os.environ, **run_env, **extra}

"""docker-compose.yml's posture, read from the file (no Docker engine is needed): ports only on
127.0.0.1, Redis behind a password, each service on its own database role, secrets only from
the environment or .env."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import ROOT

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def env(service: str) -> dict[str, str]:
    return {key: str(value) for key, value in SERVICES[service].get("environment", {}).items()}


def test_every_published_port_listens_on_the_loopback_only() -> None:
    published = [(name, port) for name, service in SERVICES.items() for port in service.get("ports", [])]
    assert published
    assert [(name, port) for name, port in published if not str(port).startswith("127.0.0.1:")] == []


def test_redis_requires_a_password_that_the_services_urls_carry() -> None:
    redis = SERVICES["redis"]
    assert "requirepass" in " ".join(redis["command"])
    assert env("redis")["REDISCLI_AUTH"].startswith("${CL_REDIS_PASSWORD:?")  # required, no default
    for name in ("ingest", "scorer", "api"):
        assert env(name)["CL_REDIS_URL"].startswith("redis://:${CL_REDIS_PASSWORD:?"), name


def test_each_service_connects_to_postgres_as_its_own_role() -> None:
    roles = {
        name: re.match(r"postgresql\+asyncpg://(\w+):\$\{(\w+):\?", env(name)["CL_DATABASE_URL"])
        for name in ("migrate", "scorer", "api")
    }
    assert {name: (m.group(1), m.group(2)) if m else None for name, m in roles.items()} == {
        "migrate": ("cl_owner", "CL_PG_OWNER_PASSWORD"),
        "scorer": ("cl_scorer", "CL_PG_SCORER_PASSWORD"),
        "api": ("cl_api", "CL_PG_API_PASSWORD"),
    }
    assert "CL_DATABASE_URL" not in env("ingest")  # ingest has no business in the database
    assert "/roles.sql" in SERVICES["roles"]["command"]
    assert SERVICES["migrate"]["depends_on"]["roles"]["condition"] == "service_completed_successfully"


def test_secrets_come_from_the_environment_and_are_documented_in_the_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required == {
        "CL_PG_ADMIN_PASSWORD",
        "CL_PG_OWNER_PASSWORD",
        "CL_PG_SCORER_PASSWORD",
        "CL_PG_API_PASSWORD",
        "CL_REDIS_PASSWORD",
        "CL_INGEST_API_KEYS",
    }
    example = (ROOT / ".env.example").read_text()
    assert {name for name in required if re.search(rf"^{name}=$", example, re.M)} == required
    assert not re.search(r"PASSWORD: (?!\$\{)", text), "a literal password in docker-compose.yml"
    for ignore in (".gitignore", ".dockerignore"):
        assert ".env" in (ROOT / ignore).read_text().split(), f"{ignore} lets .env through"

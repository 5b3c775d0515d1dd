"""docker-compose.yml's and the Dockerfile's posture, read from the files (no Docker engine is
needed): ports only on 127.0.0.1, Kafka's host listener behind SASL, Redis behind a password,
each service on its own database role, secrets only from the environment or .env, images
pinned by digest, packages installed from the lock file, production settings by default."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

import pytest
import yaml

from services.common.settings import load_settings
from services.ingest.settings import IngestSettings
from services.webhooks.settings import WebhookSettings
from tests.conftest import ROOT

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DIGEST = re.compile(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}")


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(word.upper(), rest.strip()) for word, _, rest in (line.partition(" ") for line in lines)]


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
        for name in ("migrate", "scorer", "api", "webhooks")
    }
    assert {name: (m.group(1), m.group(2)) if m else None for name, m in roles.items()} == {
        "migrate": ("cl_owner", "CL_PG_OWNER_PASSWORD"),
        "scorer": ("cl_scorer", "CL_PG_SCORER_PASSWORD"),
        "api": ("cl_api", "CL_PG_API_PASSWORD"),
        "webhooks": ("cl_scorer", "CL_PG_SCORER_PASSWORD"),  # the write side's role, for its own tables
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
        "CL_KAFKA_HOST_PASSWORD",
        "CL_INGEST_API_KEYS",
        "CL_WEBHOOK_SECRET_KEY",
    }
    example = (ROOT / ".env.example").read_text()
    assert {name for name in required if re.search(rf"^{name}=$", example, re.M)} == required
    assert not re.search(r"PASSWORD: (?!\$\{)", text), "a literal password in docker-compose.yml"
    for ignore in (".gitignore", ".dockerignore"):
        assert ".env" in (ROOT / ignore).read_text().split(), f"{ignore} lets .env through"


def test_the_kafka_listener_published_to_the_host_takes_only_sasl_clients() -> None:
    kafka = env("kafka")
    listeners = dict(re.findall(r"(\w+)://[^:,]*:(\d+)", kafka["KAFKA_LISTENERS"]))  # name: port
    protocols = dict(item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    published = [str(port).rsplit(":", 1)[1] for port in SERVICES["kafka"]["ports"]]
    on_host = [name for name, port in listeners.items() if port in published]
    assert on_host == ["HOST"]
    for name in on_host:
        assert protocols[name] in ("SASL_PLAINTEXT", "SASL_SSL"), name
        mechanisms = kafka[f"KAFKA_LISTENER_NAME_{name}_SASL_ENABLED_MECHANISMS"].split(",")
        assert mechanisms and set(mechanisms) <= {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
        if "PLAIN" in mechanisms:  # its users and their passwords, from .env only
            jaas = kafka[f"KAFKA_LISTENER_NAME_{name}_PLAIN_SASL_JAAS_CONFIG"]
            assert re.fullmatch(r"\S+PlainLoginModule required( user_\w+=\"\$\{\w+:\?[^}]*\}\")+;", jaas), jaas
    # The services stay on compose's own network, where only these containers reach Kafka.
    for name in ("ingest", "scorer", "api", "migrate", "webhooks"):
        assert env(name)["CL_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert protocols["INTERNAL"] == "PLAINTEXT" and listeners["INTERNAL"] == "9092"


def test_every_image_is_pinned_by_digest() -> None:
    pulled = {name: service["image"] for name, service in SERVICES.items() if "build" not in service}
    assert {name: image for name, image in pulled.items() if not DIGEST.fullmatch(image)} == {}
    bases = [args.split()[0] for instruction, args in dockerfile() if instruction == "FROM"]
    assert bases and [base for base in bases if not DIGEST.fullmatch(base)] == []


def test_the_image_installs_exactly_the_locked_packages() -> None:
    runs = [args for instruction, args in dockerfile() if instruction == "RUN" and "pip install" in args]
    assert runs[0] == "pip install --require-hashes --no-deps -r requirements.lock"
    # The project itself last, with nothing fetched: every package it needs is in the lock.
    assert runs[1:] == ["pip install --no-deps --no-build-isolation --no-index ."]
    lock = (ROOT / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[a-z])", lock)[1:]  # one a package: its pin, hashes and comments
    locked = dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\$", lock, re.M))
    assert len(locked) == len(entries) and all("--hash=sha256:" in entry for entry in entries)
    # Every dependency pinned in pyproject.toml is locked at its version.
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S)
    assert dependencies
    pinned = dict(re.findall(r'"([a-z0-9-]+)(?:\[[\w,]+\])?==([^"]+)"', dependencies.group(1)))
    assert pinned and {name: locked.get(name) for name in pinned} == pinned
    assert "setuptools" in locked  # the build backend, for the project's own install


def test_the_image_runs_as_production_and_refuses_the_published_local_key(monkeypatch: pytest.MonkeyPatch) -> None:
    env_lines = [shlex.split(args) for instruction, args in dockerfile() if instruction == "ENV"]
    image_env = dict(pair.split("=", 1) for line in env_lines for pair in line)
    assert image_env["CL_ENV"] == "production"
    # A container started without settings: the image's environment, and no CL_* of ours.
    for name in [name for name in os.environ if name.startswith("CL_")]:
        monkeypatch.delenv(name)
    for name, value in image_env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as refused:
        load_settings(IngestSettings, "ingest")  # what `python -m services.ingest` does first
    assert "CL_INGEST_API_KEYS" in str(refused.value) and "local key" in str(refused.value)
    with pytest.raises(SystemExit) as refused:
        load_settings(WebhookSettings, "webhooks")  # the dispatcher's, and `cl webhook`'s, secret key
    assert "CL_WEBHOOK_SECRET_KEY" in str(refused.value) and "local key" in str(refused.value)

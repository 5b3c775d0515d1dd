"""Settings every service shares: CL_ENV and what it refuses outside local and test runs, and
Kafka's TLS and SASL options. A refused setting stops the process at start, naming the
setting and never printing its value (it may be a secret)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys

import pytest
from pydantic import ValidationError

from services.common.kafka import client_options
from services.common.settings import Settings
from services.ingest.settings import IngestSettings
from services.scorer.settings import ScorerSettings
from tests.conftest import ROOT

STRONG_KEY = "k" * 32


def start(service: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Start a service with only these CL_* variables; settings are refused before any server is used."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CL_")}
    return subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_ingest_outside_local_and_test_refuses_short_keys_naming_the_setting_not_the_key() -> None:
    secret = "short-but-secret-key"
    run = start("ingest", CL_ENV="production", CL_INGEST_API_KEYS=f"{STRONG_KEY},{secret}")
    assert run.returncode == 1
    assert "CL_INGEST_API_KEYS" in run.stderr and "32 characters" in run.stderr
    assert secret not in run.stderr + run.stdout


def test_an_ingest_in_staging_refuses_the_published_local_key_even_as_the_default() -> None:
    run = start("ingest", CL_ENV="staging")
    assert run.returncode == 1
    assert "CL_INGEST_API_KEYS" in run.stderr and "local key" in run.stderr


@pytest.mark.parametrize("env", ["staging", "production"])
def test_strong_keys_are_accepted_outside_local_and_test(env: str) -> None:
    settings = IngestSettings(env=env, api_keys=f"{STRONG_KEY}, {'x' * 40}")
    assert settings.env == env and len(settings.api_keys) == 2


@pytest.mark.parametrize("env", ["local", "test"])
def test_local_and_test_runs_keep_the_development_defaults(env: str) -> None:
    assert IngestSettings(env=env).api_keys and IngestSettings(env=env, api_keys="short").api_keys
    assert ScorerSettings(env=env, failpoints="after_commit:kill:0.5").failpoints


def test_a_scorer_outside_local_and_test_refuses_failpoints_naming_the_setting() -> None:
    run = start("scorer", CL_ENV="production", CL_FAILPOINTS="after_commit:kill:0.5")
    assert run.returncode == 1
    assert "CL_FAILPOINTS" in run.stderr and "fault suite" in run.stderr


def test_every_service_knows_cl_env_and_refuses_an_unknown_one() -> None:
    assert Settings().env == "local"
    run = start("api", CL_ENV="prod")
    assert run.returncode == 1 and "CL_ENV" in run.stderr


def test_sasl_without_its_credentials_stops_a_service_without_printing_the_password() -> None:
    run = start("api", CL_KAFKA_SECURITY_PROTOCOL="SASL_SSL", CL_KAFKA_SASL_PASSWORD="hunter2-kafka")
    assert run.returncode == 1
    assert "CL_KAFKA_SASL_MECHANISM" in run.stderr and "CL_KAFKA_SASL_USERNAME" in run.stderr
    assert "hunter2-kafka" not in run.stderr + run.stdout


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"kafka_sasl_username": "cl"}, "CL_KAFKA_SASL_USERNAME"),  # SASL credentials on plaintext
        ({"kafka_security_protocol": "SSL", "kafka_sasl_mechanism": "PLAIN"}, "CL_KAFKA_SASL_MECHANISM"),
        ({"kafka_ssl_cafile": __file__}, "CL_KAFKA_SSL_CAFILE"),  # a CA without TLS
        ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": __file__}, "CL_KAFKA_SSL_CERTFILE"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "cl"}, "CL_KAFKA_SASL_PASSWORD"),
    ],
)
def test_inconsistent_kafka_security_is_refused(settings: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(**settings)  # type: ignore[arg-type]


def test_a_missing_kafka_ca_file_is_refused() -> None:
    with pytest.raises(ValidationError, match="kafka_ssl_cafile"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile="/no/such/ca.pem")  # type: ignore[arg-type]


def test_plaintext_kafka_needs_no_options_beyond_the_protocol() -> None:
    assert client_options(Settings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_over_tls_gives_every_client_a_verifying_context_and_the_credentials() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="cl",
        kafka_sasl_password="s3cret",  # type: ignore[arg-type]
    )
    assert "s3cret" not in repr(settings)
    options = client_options(settings)
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "cl",
        "sasl_plain_password": "s3cret",
    }


@pytest.mark.parametrize("source", ["urn:community-levels:scorer", "https://forum.example/levels", "/scorer"])
def test_a_scorer_takes_any_uri_reference_as_its_event_source(source: str) -> None:
    assert ScorerSettings(event_source=source).event_source == source


@pytest.mark.parametrize("source", ["", "scorer one", "http://[::1", "caf\u00e9", "%zz"])
def test_a_scorer_refuses_an_event_source_that_is_no_uri_reference(source: str) -> None:
    with pytest.raises(ValidationError, match="URI-reference"):
        ScorerSettings(event_source=source)


def test_the_scorer_takes_its_host_and_port_by_name_as_ingest_does() -> None:
    # A name the settings ignored would leave the default port, which `make run`'s scorer holds.
    settings = ScorerSettings(host="127.0.0.2", port=0)
    assert (settings.host, settings.port) == ("127.0.0.2", 0)
    assert IngestSettings(host="127.0.0.2", port=0).port == 0

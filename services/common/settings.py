"""Settings shared by every service, read from CL_* environment variables.

Defaults work with the local servers that `make run` starts; see the README for each variable.
"""

from __future__ import annotations

import sys
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, Self, TypeVar

from pydantic import BeforeValidator, Field, FilePath, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.rules import DEFAULT_RULES_PATH, Rules, RulesError, load_rules
from shared.scoring import oldest_kept


def _seconds(value: object) -> object:
    # pydantic reads "10" from the environment as an ISO 8601 duration and refuses it: take a
    # bare number as seconds, the way people write timeouts.
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except ValueError:
            pass
    return value


Seconds = Annotated[timedelta, BeforeValidator(_seconds)]


def comma_separated(text: str) -> list[str]:
    """The items of a comma-separated setting, blanks around them and empty ones dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


Env = Literal["local", "test", "staging", "production"]
# Where development defaults (the documented API key, crash points) are allowed.
DEVELOPMENT_ENVS: frozenset[str] = frozenset({"local", "test"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CL_", extra="ignore", frozen=True)

    env: Env = Field(default="local", description="local and test allow development defaults; others refuse them")
    kafka_bootstrap: str = "localhost:19092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: FilePath | None = Field(default=None, description="CA bundle; the system's when unset")
    kafka_ssl_certfile: FilePath | None = Field(default=None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: FilePath | None = Field(default=None, description="the client certificate's key")
    # The schema owner's URL, so that migrations and a service run by hand just work; `make run`
    # and compose give each service its own role (README "Database roles").
    database_url: str = "postgresql+asyncpg://cl_owner:cl_owner@localhost:15432/community_levels"
    redis_url: str = "redis://localhost:16379/0"
    redis_prefix: str = Field(default="cl:", description="prefix of every Redis key, so runs can share a server")
    topic_activity: str = "activity"
    topic_level_changes: str = "level-changes"
    topic_dlq: str = "activity.dlq"
    topic_partitions: int = Field(default=6, ge=1)
    rules_path: Path = DEFAULT_RULES_PATH
    log_level: str = "INFO"

    @cached_property
    def rules(self) -> Rules:
        return load_rules(self.rules_path)

    @property
    def development(self) -> bool:
        return self.env in DEVELOPMENT_ENVS

    @model_validator(mode="after")
    def _kafka_security(self) -> Self:
        # A half-configured secure connection would fail later and obscurely (or, worse, fall
        # back to plaintext): refuse it at start, naming what is missing or out of place.
        protocol = self.kafka_security_protocol
        sasl = {
            "CL_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "CL_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "CL_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        tls = {
            "CL_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "CL_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "CL_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if protocol.startswith("SASL_"):
            if missing := [name for name, value in sasl.items() if not value]:
                raise ValueError(f"CL_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
        elif given := [name for name, value in sasl.items() if value]:
            raise ValueError(f"{', '.join(given)} set, but CL_KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL")
        if not protocol.endswith("SSL") and (given := [name for name, value in tls.items() if value]):
            raise ValueError(f"{', '.join(given)} set, but CL_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("CL_KAFKA_SSL_KEYFILE set without CL_KAFKA_SSL_CERTFILE")
        return self


class KeptPeriods(Settings):
    """How long `member_periods` keeps past periods: the scorer prunes older ones, and the API
    answers a board of an older one with 410 (docs/PERFORMANCE.md, "Data over the years")."""

    periods_weeks_kept: int = Field(
        default=53, ge=1, description="past ISO weeks whose points `member_periods` keeps, beside the running one"
    )
    periods_months_kept: int = Field(
        default=25, ge=1, description="past calendar months whose points `member_periods` keeps, beside the running one"
    )
    periods_years_kept: int = Field(
        default=5, ge=3, description="past calendar years whose points `member_periods` keeps, beside the running one"
    )

    def oldest_kept(self, today: date) -> dict[str, str]:
        """The oldest week, month and year kept (`shared.scoring.oldest_kept`)."""
        return oldest_kept(today, self.periods_weeks_kept, self.periods_months_kept, self.periods_years_kept)


S = TypeVar("S", bound=Settings)


def load_settings(cls: type[S], service: str) -> S:
    """The service's settings and rules, or exit naming each invalid setting (never its value,
    which may be a secret)."""
    try:
        settings = cls()
        _ = settings.rules
    except ValidationError as exc:
        problems = "; ".join(
            f"{_setting_name(cls, e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        sys.exit(f"{service}: invalid settings: {problems}")
    except RulesError as exc:
        sys.exit(f"{service}: {exc} (CL_RULES_PATH)")
    return settings


def _setting_name(cls: type[Settings], loc: tuple[int | str, ...]) -> str:
    """The environment variable behind an error's location (CL_FAILPOINTS, not failpoints)."""
    if not loc:
        return "settings"  # a check across settings; its message names them
    field = cls.model_fields.get(str(loc[0]))
    if field is None:
        return ".".join(map(str, loc))  # a validation alias: already the variable's name
    if isinstance(field.validation_alias, str):
        return field.validation_alias
    return f"{cls.model_config.get('env_prefix', '')}{loc[0]}".upper()

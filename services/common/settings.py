"""Settings shared by every service, read from CL_* environment variables.

Defaults work with the local servers that `make run` starts; see the README for each variable.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.rules import DEFAULT_RULES_PATH, Rules, RulesError, load_rules


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CL_", extra="ignore", frozen=True)

    kafka_bootstrap: str = "localhost:19092"
    database_url: str = "postgresql+asyncpg://cl:cl@localhost:15432/community_levels"
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


S = TypeVar("S", bound=Settings)


def load_settings(cls: type[S], service: str) -> S:
    """The service's settings and rules, or exit naming each invalid setting (never its value,
    which may be a secret)."""
    try:
        settings = cls()
        _ = settings.rules
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        sys.exit(f"{service}: invalid settings: {problems}")
    except RulesError as exc:
        sys.exit(f"{service}: {exc} (CL_RULES_PATH)")
    return settings

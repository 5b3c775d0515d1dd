"""Settings shared by every service, read from CL_* environment variables.

Defaults work with the local servers that `make run` starts; see the README for each variable.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.rules import DEFAULT_RULES_PATH, Rules, load_rules


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

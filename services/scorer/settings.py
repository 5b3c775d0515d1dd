from __future__ import annotations

import os
import socket
from datetime import timedelta

from pydantic import Field, ValidationInfo, field_validator

from services.common.settings import DEVELOPMENT_ENVS, Seconds, Settings
from services.scorer.failpoints import parse


class ScorerSettings(Settings):
    group_id: str = Field(default="scorer", description="the Kafka consumer group (CL_GROUP_ID)")
    instance: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    batch_max_records: int = Field(default=2000, ge=1)
    fetch_wait: Seconds = timedelta(milliseconds=200)
    tenure_interval: Seconds = Field(
        default=timedelta(minutes=5), description="how often tenure promotions are looked for"
    )
    repair_interval: Seconds = Field(default=timedelta(seconds=5), description="how often Redis is repaired")
    relay_interval: Seconds = Field(default=timedelta(seconds=1), description="outbox poll when idle")
    retry_max: Seconds = Field(default=timedelta(seconds=5), description="longest wait between retries")
    session_timeout: Seconds = timedelta(seconds=10)
    idle_in_transaction_timeout: Seconds = Field(
        default=timedelta(seconds=20),
        description="PostgreSQL ends a scorer transaction left idle this long (a stalled scorer frees its locks)",
    )
    stall_timeout: Seconds = Field(
        default=timedelta(seconds=60),
        description="/readyz fails when records wait and none has been committed for this long",
    )
    redis_timeout: Seconds = Field(
        default=timedelta(seconds=1),
        description="longest wait for any Redis call (a hung Redis must not stall scoring)",
    )
    redis_pause: Seconds = Field(
        default=timedelta(seconds=5), description="after a Redis failure, views are left to the repair loop this long"
    )
    health_interval: Seconds = Field(
        default=timedelta(seconds=5), description="how often lag, outbox and Redis backlog gauges are refreshed"
    )
    failpoints: str = Field(default="", description="crash points for the fault suite; see failpoints.py")
    host: str = Field(default="127.0.0.1", validation_alias="CL_SCORER_HOST")
    port: int = Field(
        default=8003, ge=0, le=65535, validation_alias="CL_SCORER_PORT", description="/healthz, /readyz, /metrics"
    )

    @field_validator("failpoints")
    @classmethod
    def _failpoints(cls, value: str, info: ValidationInfo) -> str:
        parse(value)
        # Crash points kill the process on purpose: never outside a local or test run. CL_ENV is
        # a field of the base class, so it is validated (into info.data) before this one.
        env = info.data.get("env", "local")
        if value.strip() and env not in DEVELOPMENT_ENVS:
            raise ValueError(f"crash points are for the fault suite only; unset it when CL_ENV={env}")
        return value

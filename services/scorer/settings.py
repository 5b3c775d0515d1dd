from __future__ import annotations

import os
import re
import socket
from datetime import timedelta
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import DEVELOPMENT_ENVS, KeptPeriods, Seconds
from services.scorer.failpoints import parse

# RFC 3986 URI-reference characters: unreserved, reserved and percent-encoded octets.
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")


class ScorerSettings(KeptPeriods):
    # host and port take their names in code (ScorerSettings(port=0)) and CL_SCORER_* in the
    # environment, as ingest's do: a name the settings ignored would leave the default port.
    model_config = SettingsConfigDict(validate_by_name=True, validate_by_alias=True)

    group_id: str = Field(default="scorer", description="the Kafka consumer group (CL_GROUP_ID)")
    instance: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    batch_max_records: int = Field(
        default=5000, ge=1, description="records a fetch may bring for one batch (docs/PERFORMANCE.md: batch size)"
    )
    commit_lanes: int = Field(
        default=2, ge=1, description="batch transactions in flight at once, each on partitions of its own"
    )
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
    code_fault_retry: Seconds = Field(
        default=timedelta(minutes=1),
        description="a partition stopped by a code fault is read again after this long (or a rebalance, or a restart)",
    )
    outbox_max_age: Seconds = Field(
        default=timedelta(minutes=5),
        description="/readyz fails while the oldest level change not yet published is older than this",
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
    prune_interval: Seconds = Field(
        default=timedelta(hours=1), description="how often the periods past their retention are looked for"
    )
    event_source: str = Field(
        default="urn:community-levels:scorer",
        description="ce_source of every level change published (CL_EVENT_SOURCE); a URI-reference",
    )
    failpoints: str = Field(default="", description="crash points for the fault suite; see failpoints.py")
    host: str = Field(default="127.0.0.1", validation_alias="CL_SCORER_HOST")
    port: int = Field(
        default=8003, ge=0, le=65535, validation_alias="CL_SCORER_PORT", description="/healthz, /readyz, /metrics"
    )

    @field_validator("event_source")
    @classmethod
    def _event_source(cls, value: str) -> str:
        # CloudEvents 1.0 requires a non-empty URI-reference; a bad one would reach every
        # notifier, so refuse it at start.
        try:
            urlsplit(value)  # brackets that are no IPv6 host
        except ValueError as exc:
            raise ValueError(f"not a URI-reference: {exc}") from None
        if not _URI_CHARS.fullmatch(value):
            raise ValueError("not a URI-reference (RFC 3986): percent-encode spaces and other characters")
        return value

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

"""Settings of the ingest service: the shared CL_* ones, and its own under CL_INGEST_*."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated, Self

from limits import parse, parse_many
from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.settings import DEVELOPMENT_ENVS, Seconds, Settings, comma_separated
from shared.events import MAX_BATCH

LOCAL_DEV_KEY = "local-dev-key"  # the key the README documents for local runs
MIN_KEY_LENGTH = 32  # outside local and test runs: long random keys, not guessable words


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _key_digests(value: object) -> object:
    # Keys arrive comma-separated; only their SHA-256 digests are kept, so the keys themselves
    # never sit in memory (or in a repr of the settings) after start.
    if isinstance(value, str):
        return frozenset(digest(key) for key in comma_separated(value))
    return value


KeyDigests = Annotated[frozenset[bytes], NoDecode, BeforeValidator(_key_digests)]


def _one_rate(value: str) -> str:
    # The notation of the `limits` library ("100/second", "3000 per minute"); one rate only,
    # so that "10/second;100/minute" is refused rather than silently cut to its first part.
    try:
        rates = parse_many(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate like 100/second or 3000/minute") from None
    if len(rates) != 1:
        raise ValueError(f"{value!r} names {len(rates)} rates; give one, like 100/second")
    if rates[0].amount < 1:
        raise ValueError(f"{value!r} allows no request at all")
    return value


RateLimit = Annotated[str, AfterValidator(_one_rate)]


def _fits_a_batch(value: str) -> str:
    # A batch is refused whole or taken whole: a rate below one full batch would refuse it forever.
    if parse(value).amount < MAX_BATCH:
        raise ValueError(f"{value!r} is below one batch of {MAX_BATCH} events")
    return value


EventRateLimit = Annotated[RateLimit, AfterValidator(_fits_a_batch)]


class IngestSettings(Settings):
    # Fields take their names in code (IngestSettings(api_keys=...)) and CL_INGEST_* in the
    # environment, so they do not collide with other services' CL_HOST or CL_PORT.
    model_config = SettingsConfigDict(validate_by_name=True, validate_by_alias=True)

    api_keys: KeyDigests = Field(
        default=LOCAL_DEV_KEY,
        validate_default=True,
        validation_alias="CL_INGEST_API_KEYS",
        description="comma-separated API keys the forum platform may use",
    )
    host: str = Field(default="127.0.0.1", validation_alias="CL_INGEST_HOST")
    port: int = Field(default=8001, ge=0, le=65535, validation_alias="CL_INGEST_PORT")
    publish_timeout: Seconds = Field(
        default=timedelta(seconds=10),
        validation_alias="CL_INGEST_PUBLISH_TIMEOUT",
        description="how long a request waits for Kafka's acknowledgement before it answers 503",
    )
    retry_after_s: int = Field(default=1, ge=0, validation_alias="CL_INGEST_RETRY_AFTER_S")
    rate_limit: RateLimit = Field(
        default="100/second",
        validation_alias="CL_INGEST_RATE_LIMIT",
        description="requests per API key over a moving window, like 100/second or 3000/minute",
    )
    event_rate_limit: EventRateLimit = Field(
        default="5000/second",
        validation_alias="CL_INGEST_EVENT_RATE_LIMIT",
        description="events per API key over a moving window (a batch counts each of its events)",
    )
    auth_failure_limit: RateLimit = Field(
        default="10/minute",
        validation_alias="CL_INGEST_AUTH_FAILURE_LIMIT",
        description="failed authentications per key presented (wrong or missing) over a moving window; past it, 429",
    )
    auth_failure_address_limit: RateLimit = Field(
        default="600/minute",
        validation_alias="CL_INGEST_AUTH_FAILURE_ADDRESS_LIMIT",
        description="failed authentications per client address over a moving window; past it, failures answer 429",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _strong_keys(cls, value: object, info: ValidationInfo) -> object:
        # Checked here, while the keys are still at hand: only their digests are kept. CL_ENV is
        # a field of the base class, so it is validated (into info.data) before the keys.
        env = info.data.get("env", "local")
        if isinstance(value, str) and env not in DEVELOPMENT_ENVS:
            keys = comma_separated(value)
            if LOCAL_DEV_KEY in keys:
                raise ValueError(f"must not hold the published local key {LOCAL_DEV_KEY!r} when CL_ENV={env}")
            if any(len(key) < MIN_KEY_LENGTH for key in keys):
                raise ValueError(f"every key needs at least {MIN_KEY_LENGTH} characters when CL_ENV={env}")
        return value

    @model_validator(mode="after")
    def _some_key(self) -> Self:
        if not self.api_keys:
            raise ValueError("CL_INGEST_API_KEYS holds no key")
        return self

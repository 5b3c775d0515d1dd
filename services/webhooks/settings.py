"""The webhook settings: the dispatcher's, and the key `cl webhook` encrypts secrets with."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from cryptography.fernet import Fernet, MultiFernet
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import DEVELOPMENT_ENVS, Seconds, Settings, comma_separated

# The key the README documents for local runs and tests; refused outside them.
LOCAL_DEV_SECRET_KEY = "bG9jYWwtZGV2LXdlYmhvb2stc2VjcmV0LWtleS0zMmI="


class WebhookSettings(Settings):
    model_config = SettingsConfigDict(validate_by_name=True, validate_by_alias=True)

    webhook_secret_key: SecretStr = Field(
        default=SecretStr(LOCAL_DEV_SECRET_KEY),
        validate_default=True,
        description="Fernet keys (comma-separated, the first encrypts) that endpoints' secrets are stored under",
    )
    webhook_allow_private: bool = Field(
        default=False, description="allow endpoints on loopback, private and link-local addresses"
    )
    webhook_group_id: str = Field(default="webhooks", description="the dispatcher's Kafka consumer group")
    webhook_timeout: Seconds = Field(default=timedelta(seconds=10), description="longest wait for one POST")
    webhook_retry_first: Seconds = Field(default=timedelta(seconds=1), description="the first wait before a retry")
    webhook_retry_max: Seconds = Field(default=timedelta(hours=1), description="the longest wait between retries")
    webhook_disable_after: Seconds = Field(
        default=timedelta(days=1), description="an endpoint failing this long is disabled"
    )
    webhook_lease: Seconds = Field(
        default=timedelta(seconds=30), description="how long a dispatcher holds an endpoint without renewing"
    )
    webhook_concurrency: int = Field(default=16, ge=1, description="members delivered at once, per endpoint")
    webhook_keep: Seconds = Field(default=timedelta(days=7), description="how long attempts and deliveries are kept")
    webhook_poll: Seconds = Field(default=timedelta(seconds=1), description="how often endpoints are looked at")
    instance: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    host: str = Field(default="127.0.0.1", validation_alias="CL_WEBHOOKS_HOST")
    port: int = Field(
        default=8004, ge=0, le=65535, validation_alias="CL_WEBHOOKS_PORT", description="/healthz, /readyz, /metrics"
    )

    @field_validator("webhook_secret_key")
    @classmethod
    def _keys(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        keys = comma_separated(value.get_secret_value())
        if not keys:
            raise ValueError(
                "holds no key; make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            )
        for key in keys:
            try:
                Fernet(key)
            except ValueError:
                raise ValueError("every key must be 32 url-safe base64-encoded bytes (Fernet.generate_key())") from None
        env = info.data.get("env", "local")
        if env not in DEVELOPMENT_ENVS and LOCAL_DEV_SECRET_KEY in keys:
            raise ValueError(f"must not hold the published local key when CL_ENV={env}")
        return value

    def fernet(self) -> MultiFernet:
        """Encrypts with the first key, decrypts with any (so keys can be rotated)."""
        return MultiFernet([Fernet(key) for key in comma_separated(self.webhook_secret_key.get_secret_value())])

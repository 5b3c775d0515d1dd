"""Kafka clients and topics."""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from services.common.settings import Settings


def client_options(settings: Settings) -> dict[str, Any]:
    """How every Kafka client of the services connects: TLS and SASL as the settings say
    (Settings refuses inconsistent combinations at start). The bootstrap servers are not in
    here, so a caller that names them itself can still splat these in."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,  # None: the system's CAs
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        assert settings.kafka_sasl_password is not None  # Settings requires it with SASL
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,  # aiokafka uses these for SCRAM too
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


def producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica (acks=all)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        **client_options(settings),
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,  # requests of a batch leave together; the broker is local
        request_timeout_ms=10_000,
    )


async def ensure_topics(settings: Settings) -> None:
    """Create the activity, level-change and dead-letter topics if they are missing."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="cl-admin", **client_options(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.topic_activity, settings.topic_level_changes, settings.topic_dlq]
        new = [
            NewTopic(name, num_partitions=settings.topic_partitions, replication_factor=1)
            for name in wanted
            if name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process created them first
                await admin.create_topics(new)
    finally:
        await admin.close()

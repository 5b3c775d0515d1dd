"""Kafka clients and topics."""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.common.settings import Settings


def producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica (acks=all)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,  # requests of a batch leave together; the broker is local
        request_timeout_ms=10_000,
    )


async def ensure_topics(settings: Settings) -> None:
    """Create the activity, level-change and dead-letter topics if they are missing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="cl-admin")
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

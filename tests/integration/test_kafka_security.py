"""Kafka over SASL, for real: the local broker's second listener (scripts/local/kafka.sh) takes
only SASL/PLAIN clients, and the services reach it through their CL_KAFKA_* settings alone."""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from services.common.kafka import client_options, ensure_topics
from services.common.kafka import producer as make_producer
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from services.scorer.service import Scorer
from services.scorer.settings import ScorerSettings
from tests.conftest import unique
from tests.support import eventually, in_process, own_topics, values

# The listener and the one user scripts/local/kafka.sh gives it.
SASL_BOOTSTRAP = f"localhost:{os.environ.get('KAFKA_SASL_PORT', '19094')}"
SASL = {
    "kafka_bootstrap": SASL_BOOTSTRAP,
    "kafka_security_protocol": "SASL_PLAINTEXT",
    "kafka_sasl_mechanism": "PLAIN",
    "kafka_sasl_username": os.environ.get("KAFKA_SASL_USER", "cl"),
    "kafka_sasl_password": os.environ.get("KAFKA_SASL_PASSWORD", "cl-local-sasl"),
}
KEY = "sasl-test-key"


@pytest.fixture
def sasl_kwargs(settings_kwargs: dict[str, Any]) -> dict[str, Any]:
    host, port = SASL_BOOTSTRAP.rsplit(":", 1)
    with socket.socket() as probe:
        if probe.connect_ex((host, int(port))):
            pytest.fail(
                f"no SASL listener at {SASL_BOOTSTRAP}: a kafka.sh older than the test started Kafka; restart it"
            )
    return {**own_topics(settings_kwargs, unique("sasl")), **SASL}


async def read_level_changes(settings: ScorerSettings, member: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        settings.topic_level_changes,
        bootstrap_servers=settings.kafka_bootstrap,
        **client_options(settings),
        group_id=unique("reader"),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        found: list[Any] = []
        async with asyncio.timeout(30):
            while not found:
                batches = await consumer.getmany(timeout_ms=500)
                found = [m for msgs in batches.values() for m in msgs if m.key == member.encode()]
        return values(found)
    finally:
        await consumer.stop()


async def test_events_flow_through_ingest_and_the_scorer_over_sasl(
    sasl_kwargs: dict[str, Any], pg: asyncpg.Connection
) -> None:
    scorer_settings = ScorerSettings(**sasl_kwargs, relay_interval=timedelta(milliseconds=200))
    scorer_settings = scorer_settings.model_copy(update={"port": 0})  # CL_SCORER_PORT is read by alias only
    ingest_settings = IngestSettings(**sasl_kwargs, env="test", api_keys=KEY, rate_limit="1000/second")
    await ensure_topics(scorer_settings)  # the admin client, over SASL too
    member = unique("sasl")
    scorer = Scorer(scorer_settings)
    scoring = asyncio.create_task(scorer.run())
    try:
        async with in_process(create_app(ingest_settings)) as ingest:

            async def ready() -> bool:
                return (await ingest.get("/readyz")).status_code == 200

            await eventually(ready, what="ingest's producer started over SASL")
            event = {
                "event_id": unique("e"),
                "type": "article",
                "member_id": member,
                "occurred_at": "2026-11-20T09:00:00Z",
                "content_id": unique("a"),
            }
            response = await ingest.post("/v1/events", json=event, headers={"Authorization": f"Bearer {KEY}"})
            assert response.status_code == 202, response.text

        async def scored() -> bool:
            return await pg.fetchval("SELECT 1 FROM members WHERE member_id = $1", member) == 1

        await eventually(scored, what=f"{member} scored by a scorer consuming over SASL")
        changes = await read_level_changes(scorer_settings, member)
        assert changes and changes[0]["member_id"] == member
    finally:
        scorer.stop()
        await asyncio.wait_for(scoring, 30)


async def test_a_wrong_sasl_password_is_refused(sasl_kwargs: dict[str, Any]) -> None:
    settings = ScorerSettings(**{**sasl_kwargs, "kafka_sasl_password": "not-the-password"})
    producer = make_producer(settings, "wrong-password")
    with pytest.raises(KafkaError):
        async with asyncio.timeout(30):
            await producer.start()
    await producer.stop()


async def test_the_sasl_listener_refuses_clients_without_sasl(sasl_kwargs: dict[str, Any]) -> None:
    plain = {key: value for key, value in sasl_kwargs.items() if not key.startswith("kafka_s")}
    producer = make_producer(ScorerSettings(**plain), "no-sasl")
    with pytest.raises((KafkaError, TimeoutError)):
        async with asyncio.timeout(10):
            await producer.start()
    await producer.stop()

"""`python -m services.ingest`: make sure the topics exist, then serve the ingest API."""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from aiokafka.errors import KafkaError

from services.common.kafka import ensure_topics
from services.common.settings import load_settings
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings

log = logging.getLogger("services.ingest")


async def _ensure_topics(settings: IngestSettings) -> None:
    # Kafka may come up after ingest does: the app then answers 503 until its producer starts,
    # and the topics are created by whoever reaches Kafka first (the scorer does the same).
    try:
        async with asyncio.timeout(15):
            await ensure_topics(settings)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("could not make sure the topics exist (%r); serving anyway", exc)


def main() -> None:
    settings = load_settings(IngestSettings, "ingest")
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_ensure_topics(settings))
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop="uvloop",  # as the api: C event loop and HTTP parser
        http="httptools",
    )


if __name__ == "__main__":
    main()

"""`python -m services.scorer`: run one scorer instance (start as many as the topic has partitions)."""

import asyncio
import logging

import uvloop

from services.common.kafka import ensure_topics
from services.common.runtime import settle_garbage_collector
from services.common.settings import load_settings
from services.scorer.service import main
from services.scorer.settings import ScorerSettings

settings = load_settings(ScorerSettings, "scorer")
logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
asyncio.run(ensure_topics(settings))
settle_garbage_collector()
uvloop.run(main(settings))  # the faster event loop (the API's and ingest's, through uvicorn)

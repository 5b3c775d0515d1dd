"""`python -m services.webhooks`: run one webhook dispatcher (SPEC §12)."""

import asyncio
import logging

import uvloop

from services.common.kafka import ensure_topics
from services.common.runtime import settle_garbage_collector
from services.common.settings import load_settings
from services.webhooks.service import main
from services.webhooks.settings import WebhookSettings

settings = load_settings(WebhookSettings, "webhooks")
logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per POST; attempts are kept in PostgreSQL
asyncio.run(ensure_topics(settings))
settle_garbage_collector()
uvloop.run(main(settings))

"""`python -m services.api`: serve the read API."""

import logging

import uvicorn

from services.api.app import create_app
from services.api.settings import SERVER, ApiSettings
from services.common.runtime import settle_garbage_collector
from services.common.settings import load_settings

settings = load_settings(ApiSettings, "api")
logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
app = create_app(settings)
settle_garbage_collector()
uvicorn.run(app, host=settings.api_host, port=settings.api_port, **SERVER)

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import NoDecode

from services.common.settings import KeptPeriods, comma_separated


def _comma_separated(value: object) -> object:
    return comma_separated(value) if isinstance(value, str) else value


def _origin(value: str) -> str:
    # An origin is scheme, host and port; a path or a trailing slash would never match one.
    if value != "*" and not re.fullmatch(r"https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an origin like https://forum.example.org (or *)")
    return value


# How uvicorn serves the API (and benchmarks/bare_app.py its baseline): uvloop's event loop and
# httptools' HTTP parser, both in C, take a fraction of the pure-Python defaults' CPU per request.
SERVER: dict[str, Any] = {"loop": "uvloop", "http": "httptools", "log_level": "warning"}

Origins = Annotated[list[Annotated[str, AfterValidator(_origin)]], NoDecode, BeforeValidator(_comma_separated)]


class ApiSettings(KeptPeriods):
    api_host: str = Field(default="127.0.0.1", description="CL_API_HOST")
    api_port: int = Field(default=8002, description="CL_API_PORT")
    api_cors_origins: Origins = Field(
        default=[], description="CL_API_CORS_ORIGINS: comma-separated origins whose pages may read the API"
    )

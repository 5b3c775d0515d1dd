from __future__ import annotations

from pydantic import Field

from services.common.settings import Settings


class ApiSettings(Settings):
    api_host: str = Field(default="127.0.0.1", description="CL_API_HOST")
    api_port: int = Field(default=8002, description="CL_API_PORT")
    many_max: int = Field(default=100, description="most members one GET /v1/members may ask for")

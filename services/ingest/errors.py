"""The answers other than 202, each an exception with its status, a stable code and a message.

Every error body has one shape, `{"error": <code>, "message": <text>}`; a 422 adds `errors`,
one `{"index", "field", "reason"}` per problem (`index` is null for a problem of the envelope).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.common import http


class Problem(BaseModel):
    index: int | None
    field: str
    reason: str


class ErrorBody(http.ErrorBody):
    # The error document, with a 422's problems. (No docstring: it would join the OpenAPI document.)
    errors: list[Problem] | None = None


def error_doc(description: str, **headers: str) -> dict[str, Any]:
    """An error answer of ingest, as the OpenAPI document declares it."""
    return http.error_doc(description, ErrorBody, **headers)


@dataclass(frozen=True)
class EventError:
    """Why an event is invalid; `index` is its place in the batch (None: the request as a whole)."""

    index: int | None
    field: str
    reason: str


class IngestError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class NotJson(IngestError):
    status, code = 400, "invalid_json"


class Unauthorized(IngestError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class TooLarge(IngestError):
    status, code = 413, "too_large"


class InvalidEvents(IngestError):
    """Nothing of the request is published: the client must fix every listed problem."""

    status, code = 422, "invalid_events"

    def __init__(self, message: str, errors: Sequence[EventError]) -> None:
        super().__init__(message)
        self.errors = [{"index": e.index, "field": e.field, "reason": e.reason} for e in errors]

    def body(self) -> dict[str, Any]:
        return {**super().body(), "errors": self.errors}


class Retriable(IngestError):
    """Try again later, as Retry-After says: nothing of the request was acknowledged."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class RateLimited(Retriable):
    status, code = 429, "rate_limited"


class Unavailable(Retriable):
    status, code = 503, "unavailable"

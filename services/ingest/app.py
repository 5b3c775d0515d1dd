"""The ingest service (SPEC §3): authenticates, validates and publishes activity events.

POST /v1/events answers 202 only once Kafka has acknowledged every record of the request;
an invalid event refuses the whole request, so a request is published entirely or not at all
(a 503 may leave part of it on the topic: the client retries, and event ids make that safe).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from services.common import http
from services.ingest.access import ApiKeys, RateLimiter
from services.ingest.errors import IngestError, Unauthorized, error_doc
from services.ingest.payload import MAX_BODY_BYTES, events_of, parse_body, read_body
from services.ingest.publisher import Publisher
from services.ingest.settings import IngestSettings
from shared.events import EVENT, MAX_BATCH

# auto_error off: a missing or malformed header is ours to answer (401), and the scheme
# still documents the bearer key in the OpenAPI document.
bearer = HTTPBearer(auto_error=False, description="an API key of the forum platform (CL_INGEST_API_KEYS)")


class Accepted(BaseModel):
    accepted: int


# The event schema, one variant per type, from the models that validate events; its parts go to
# the document's components (see create_app), which the request body refers to.
EVENT_SCHEMA = EVENT.json_schema(ref_template="#/components/schemas/{model}")
SCHEMAS: dict[str, Any] = {
    **EVENT_SCHEMA.pop("$defs"),
    "ActivityEvent": {"title": "ActivityEvent", **EVENT_SCHEMA},
    "Batch": {
        "title": "Batch",
        "type": "object",
        "properties": {
            "events": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ActivityEvent"},
                "minItems": 1,
                # Past it the answer is 413 (SPEC §3), which the document declares.
                "maxItems": MAX_BATCH,
            }
        },
        "required": ["events"],
        "additionalProperties": False,
    },
}


def _request_body_doc() -> dict[str, Any]:
    # Examples a client can post as they are (and the fuzzer's examples phase does).
    reply = {"event_id": "e-1", "type": "reply", "member_id": "ann", "occurred_at": "2026-11-20T09:00:00Z"}
    like = {**reply, "event_id": "e-2", "type": "like", "content_id": "p-7", "target_member_id": "bob"}
    examples = {
        "event": {"summary": "one event", "value": {**reply, "content_id": "r-1"}},
        "batch": {"summary": "a batch", "value": {"events": [like, {**reply, "event_id": "e-3", "content_id": "r-2"}]}},
    }
    return {
        "required": True,
        "description": f"one event, or a batch of 1 to {MAX_BATCH}; at most {MAX_BODY_BYTES} bytes",
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in ("ActivityEvent", "Batch")]},
                "examples": examples,
            }
        },
    }


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: error_doc("the body is not JSON"),
    401: error_doc("the API key is missing or wrong", **{"WWW-Authenticate": "Bearer"}),
    413: error_doc(f"the body is over {MAX_BODY_BYTES} bytes or the batch over {MAX_BATCH} events"),
    422: error_doc("one or more events are invalid (each named by index, field and reason); none was published"),
    429: error_doc(
        "the API key is over its rate of requests or events; or, for a missing or wrong key, the key presented or"
        " the client address is over its failed authentications",
        **{"Retry-After": "seconds to wait"},
    ),
    503: error_doc("Kafka cannot take the events now; nothing was acknowledged", **{"Retry-After": "seconds to wait"}),
}


class Metrics:
    def __init__(self) -> None:
        # One registry per app, so several apps (tests) never register a metric twice.
        self.registry = CollectorRegistry()
        self.events_accepted = Counter(
            "cl_ingest_events_accepted", "events acknowledged by Kafka", registry=self.registry
        )
        self.records_published = Counter(
            "cl_ingest_records_published", "activity records acknowledged by Kafka", registry=self.registry
        )
        self.requests = Counter(
            "cl_ingest_event_requests", "POST /v1/events answers", ["status"], registry=self.registry
        )
        self.rate_in_memory = Counter(
            "cl_ingest_rate_checked_in_memory",
            "rate checks this process counted in memory because Redis did not answer",
            registry=self.registry,
        )


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    keys = ApiKeys(settings.api_keys)
    metrics = Metrics()
    limiter = RateLimiter(settings, on_fallback=metrics.rate_in_memory.inc)
    publisher = Publisher(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with limiter, publisher:
            yield

    app = FastAPI(title="Community Levels ingest", version="1", lifespan=lifespan)
    # Request counts and latencies per route, in the app's registry (served on /metrics).
    http.add_request_metrics(app, metrics.registry)

    def openapi() -> dict[str, Any]:
        # The body is read raw (see post_events), so FastAPI does not know the event models:
        # their schemas join the document's components here.
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)
            document.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]

    def count_unexpected(request: Request) -> None:
        if request.url.path == "/v1/events":
            metrics.requests.labels("500").inc()

    http.add_error_handlers(app, on_unexpected=count_unexpected)

    async def accept(request: Request, credentials: HTTPAuthorizationCredentials | None) -> int:
        # Behind a proxy, uvicorn takes the address from X-Forwarded-For (--forwarded-allow-ips).
        address = request.client.host if request.client else "unknown"
        key = credentials.credentials if credentials else None
        try:
            caller = keys.check(key)
        except Unauthorized:
            await limiter.failed_authentication(address, key)  # 429 instead, past a bound
            raise
        await limiter.take_request(caller)
        accepted = events_of(parse_body(await read_body(request)), now=datetime.now(UTC))
        await limiter.take_events(caller, len(accepted))
        records = [(subject.encode(), value) for event, value in accepted for subject in event.subjects()]
        await publisher.publish(settings.topic_activity, records)
        metrics.records_published.inc(len(records))
        return len(accepted)

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=Accepted,
        response_description="every event of the request is acknowledged by Kafka",
        responses=RESPONSES,
        openapi_extra={"requestBody": _request_body_doc()},
        summary="Post one activity event or a batch",
    )
    async def post_events(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Response:
        # The body is read raw (no FastAPI body parameter), so FastAPI's own validation never
        # answers: every refusal is one of ours, in our shape.
        try:
            count = await accept(request, credentials)
        except IngestError as exc:
            response = exc.response()
        else:
            metrics.events_accepted.inc(count)
            response = JSONResponse({"accepted": count}, status_code=202)
        metrics.requests.labels(str(response.status_code)).inc()
        return response

    http.add_healthz(app, summary="The process is alive")

    @app.get("/readyz", summary="Kafka answers", responses={503: error_doc("Kafka does not answer")})
    async def readyz() -> Response:
        problem = await publisher.kafka_answers()
        if problem is not None:
            return JSONResponse(
                {"error": "not_ready", "message": f"kafka: {problem}", "checks": {"kafka": problem}}, 503
            )
        return JSONResponse({"status": "ready", "checks": {"kafka": "ok"}})

    # The operation keeps the name the document has always given it.
    http.add_metrics(app, metrics.registry, operation_id="prometheus_metrics_get")

    return app

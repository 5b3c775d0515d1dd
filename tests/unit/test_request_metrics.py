"""The services' request metrics (`services.common.http.RequestMetrics`) count what
prometheus-fastapi-instrumentator's `requests` and `latency` metrics count, label for label:
dashboards and alerts written for the one read the other."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_fastapi_instrumentator import Instrumentator, metrics

from services.common import http
from services.common.http import LATENCY_BUCKETS


def both_instrumented() -> tuple[FastAPI, CollectorRegistry, CollectorRegistry]:
    """An app with the services' shapes of route (a router with a prefix and a path parameter,
    a refusal, a bug, `/healthz`, `/metrics`), counted by both."""
    app = FastAPI()
    ours, reference = CollectorRegistry(), CollectorRegistry()
    http.add_request_metrics(app, ours)
    Instrumentator(registry=reference, excluded_handlers=["/metrics"]).add(
        metrics.requests(registry=reference),
        metrics.latency(registry=reference, should_include_status=False, buckets=LATENCY_BUCKETS),
    ).instrument(app)
    members = APIRouter(prefix="/v1")

    @members.get("/members/{member_id}")
    async def member(member_id: str, limit: int = 1) -> dict[str, str]:
        if member_id == "bug":
            raise RuntimeError("a bug")
        return {"member_id": member_id}

    app.include_router(members)
    http.add_error_handlers(app)
    http.add_healthz(app)
    http.add_metrics(app, ours, reference)
    return app, ours, reference


def counted(registry: CollectorRegistry) -> Iterator[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every request count and latency sample but the timings themselves."""
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name.endswith(("_total", "_count")):
                yield s.name, tuple(sorted(s.labels.items())), s.value


async def test_the_requests_are_counted_as_the_instrumentator_counts_them() -> None:
    app, ours, reference = both_instrumented()
    # Starlette answers a bug with 500, then raises it again for the server to log.
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for _ in range(3):
            assert (await client.get("/v1/members/m-1")).status_code == 200
        assert (await client.get("/v1/members/m-2", params={"limit": "x"})).status_code == 422
        assert (await client.post("/v1/members/m-1")).status_code == 405
        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.get("/v1/members/bug")).status_code == 500
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200

    found = sorted(counted(ours))
    assert found == sorted(counted(reference))
    statuses = {dict(labels).get("status") for name, labels, _ in found if name == "http_requests_total"}
    assert statuses == {"2xx", "4xx", "5xx"}
    handlers = {dict(labels)["handler"] for _, labels, _ in found}
    assert handlers == {"/v1/members/{member_id}", "/healthz", "none"}  # /metrics is not counted
    assert (
        "http_requests_total",
        (("handler", "/v1/members/{member_id}"), ("method", "GET"), ("status", "2xx")),
        3.0,
    ) in found

"""The read API's HTTP surface for browsers and operators: CORS for configured origins, and
request latencies on /metrics, against the real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from services.api.app import create_app
from services.api.settings import ApiSettings
from tests.conftest import unique
from tests.integration.test_api import ev, score
from tests.integration.test_ingest_limits import sample
from tests.support import in_process

FORUM = "https://forum.example.org"


@pytest.fixture(scope="module")
async def member(settings_kwargs: dict[str, Any]) -> str:
    member = unique("cors")
    await score(ApiSettings(**settings_kwargs), [ev("post", member, content_id="p1")], cache=True)
    return member


@pytest.fixture(scope="module")
async def api(settings_kwargs: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    settings = ApiSettings(**settings_kwargs, api_cors_origins=f"{FORUM}, https://other.example.org")
    async with in_process(create_app(settings)) as client:
        yield client


def preflight(origin: str, method: str = "GET", headers: str = "if-none-match") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def test_a_configured_origin_may_get_with_if_none_match(api: httpx.AsyncClient, member: str) -> None:
    response = await api.options(f"/v1/members/{member}", headers=preflight(FORUM))
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == FORUM
    assert "GET" in response.headers["Access-Control-Allow-Methods"]
    assert "if-none-match" in response.headers["Access-Control-Allow-Headers"].lower()


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
async def test_a_preflight_for_anything_but_get_is_refused(api: httpx.AsyncClient, member: str, method: str) -> None:
    response = await api.options(f"/v1/members/{member}", headers=preflight(FORUM, method))
    assert response.status_code == 400
    assert method not in response.headers.get("Access-Control-Allow-Methods", "")


async def test_a_preflight_from_an_origin_not_configured_is_refused(api: httpx.AsyncClient, member: str) -> None:
    response = await api.options(f"/v1/members/{member}", headers=preflight("https://evil.example.org"))
    assert response.status_code == 400
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_a_cross_origin_get_exposes_the_etag(api: httpx.AsyncClient, member: str) -> None:
    response = await api.get(f"/v1/members/{member}", headers={"Origin": FORUM})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == FORUM
    assert response.headers["Access-Control-Expose-Headers"] == "ETag"
    again = await api.get(f"/v1/members/{member}", headers={"Origin": FORUM, "If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.headers["Access-Control-Allow-Origin"] == FORUM


async def test_a_cross_origin_get_from_an_origin_not_configured_gets_no_cors_headers(
    api: httpx.AsyncClient, member: str
) -> None:
    response = await api.get(f"/v1/members/{member}", headers={"Origin": "https://evil.example.org"})
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_without_configured_origins_there_is_no_cors(settings_kwargs: dict[str, Any], member: str) -> None:
    async with in_process(create_app(ApiSettings(**settings_kwargs))) as client:
        response = await client.get(f"/v1/members/{member}", headers={"Origin": FORUM})
        assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response.headers
        refused = await client.options(f"/v1/members/{member}", headers=preflight(FORUM))
        assert refused.status_code == 405 and "Access-Control-Allow-Origin" not in refused.headers


@pytest.mark.parametrize("origins", ["forum.example.org", "https://forum.example.org/", "https://a.org/path"])
def test_an_origin_that_is_not_one_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, origins: str) -> None:
    monkeypatch.setenv("CL_API_CORS_ORIGINS", origins)
    with pytest.raises(ValidationError, match="api_cors_origins"):
        ApiSettings()


def test_origins_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CL_API_CORS_ORIGINS", f"{FORUM}, http://localhost:3000")
    assert ApiSettings().api_cors_origins == [FORUM, "http://localhost:3000"]


async def test_each_request_shows_in_the_latency_histogram(api: httpx.AsyncClient, member: str) -> None:
    labels = {"handler": "/v1/members/{member_id}", "method": "GET"}
    before = sample((await api.get("/metrics")).text, "http_request_duration_seconds_count", **labels)
    assert (await api.get(f"/v1/members/{member}")).status_code == 200
    metrics = (await api.get("/metrics")).text
    assert sample(metrics, "http_request_duration_seconds_count", **labels) == before + 1
    assert sample(metrics, "http_request_duration_seconds_bucket", le="+Inf", **labels) == before + 1
    # Buckets fine enough to tell a 10 ms p99 apart, and no other request metrics than the two.
    buckets = [
        s.labels["le"]
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "http_request_duration_seconds_bucket" and s.labels["handler"] == labels["handler"]
    ]
    assert buckets == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf"]
    assert {line.split("{")[0] for line in metrics.splitlines() if line.startswith("http_")} == {
        "http_requests_total",
        "http_requests_created",
        "http_request_duration_seconds_bucket",
        "http_request_duration_seconds_count",
        "http_request_duration_seconds_sum",
        "http_request_duration_seconds_created",
    }
    assert "api_member_reads_total" in metrics  # the API's own metrics are still there

"""Ingest's abuse limits against the real Redis and Kafka: events per key, failed authentications
per key presented and per address, counting in memory while Redis is away, and request
latencies on /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from services.common.kafka import ensure_topics
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.conftest import unique
from tests.integration.test_ingest import assert_error, post, until_ready
from tests.support import own_topics

KEY = "limits-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
WRONG = {"Authorization": "Bearer wrong-key"}


@pytest.fixture(scope="module")
async def settings(settings_kwargs: dict[str, Any]) -> IngestSettings:
    settings = IngestSettings(
        **own_topics(settings_kwargs, "limits"), env="test", api_keys=KEY, topic_partitions=1, rate_limit="1000/second"
    )
    await ensure_topics(settings)
    return settings


def limited(settings: IngestSettings, **changes: object) -> IngestSettings:
    """The settings with their own Redis prefix (counts start at zero) and these changes."""
    return settings.model_copy(update={"redis_prefix": f"test:{unique('limits')}:", **changes})


@asynccontextmanager
async def serving(
    settings: IngestSettings, address: str = "127.0.0.1"
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The app with its lifespan running, and two clients calling it in-process: one from
    `address`, one from another address."""
    app = create_app(settings)

    def client(host: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app, client=(host, 4000)), base_url="http://ingest")

    async with app.router.lifespan_context(app), client(address) as one, client("192.0.2.7") as other:
        yield one, other


def sample(metrics: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


# --- events per key ---


async def test_a_key_over_its_event_rate_is_refused_with_retry_after_and_nothing_published(
    settings: IngestSettings,
) -> None:
    async with serving(limited(settings, event_rate_limit="1000/minute")) as (client, _):
        await until_ready(client)
        batch = {"events": [post(unique("m")) for _ in range(600)]}
        assert (await client.post("/v1/events", json=batch, headers=AUTH)).status_code == 202
        # One request, well under the request rate, but 600 more events than the minute allows.
        response = await client.post("/v1/events", json=batch, headers=AUTH)
        body = assert_error(response, 429, "rate_limited")
        assert "events" in body["message"]
        assert 55 <= int(response.headers["Retry-After"]) <= 60
        # What is left of the window still takes a batch that fits.
        fits = {"events": batch["events"][:400]}
        assert (await client.post("/v1/events", json=fits, headers=AUTH)).status_code == 202


# --- failed authentications per key presented, and per address ---


async def test_a_wrong_key_past_its_failures_is_refused_and_the_right_key_from_the_same_address_is_not(
    settings: IngestSettings,
) -> None:
    # Behind a proxy or Docker's published ports, the forum platform and a misconfigured client
    # reach ingest from one address: the client's failures must not lock the platform out.
    async with serving(limited(settings, auth_failure_limit="3/minute")) as (client, elsewhere):
        for _ in range(3):
            assert_error(await client.post("/v1/events", json=post(unique("m")), headers=WRONG), 401, "unauthorized")
        refused = await client.post("/v1/events", json=post(unique("m")), headers=WRONG)
        assert "this key" in assert_error(refused, 429, "rate_limited")["message"]
        assert 55 <= int(refused.headers["Retry-After"]) <= 60
        # The same wrong key is refused from anywhere; the right key, from the same address, passes.
        assert_error(await elsewhere.post("/v1/events", content=b"[]", headers=WRONG), 429, "rate_limited")
        for _ in range(5):
            assert_error(await client.post("/v1/events", content=b"[]", headers=AUTH), 422, "invalid_events")
        # Another wrong key has failures of its own to spend.
        other = {"Authorization": "Bearer another-wrong-key"}
        assert_error(await client.post("/v1/events", content=b"[]", headers=other), 401, "unauthorized")


async def test_no_key_at_all_counts_as_one_key_presented(settings: IngestSettings) -> None:
    async with serving(limited(settings, auth_failure_limit="2/minute")) as (client, elsewhere):
        statuses = [(await c.post("/v1/events", content=b"[]")).status_code for c in (client, elsewhere, client)]
        assert statuses == [401, 401, 429]
        assert_error(await client.post("/v1/events", content=b"[]", headers=WRONG), 401, "unauthorized")
        assert_error(await client.post("/v1/events", content=b"[]", headers=AUTH), 422, "invalid_events")


async def test_an_address_guessing_many_keys_is_held_back_but_never_the_right_key(settings: IngestSettings) -> None:
    limits = limited(settings, auth_failure_limit="3/minute", auth_failure_address_limit="5/minute")
    async with serving(limits) as (client, elsewhere):
        guesses = [{"Authorization": f"Bearer guess-{n}"} for n in range(6)]
        statuses = [(await client.post("/v1/events", content=b"[]", headers=guess)).status_code for guess in guesses]
        assert statuses == [401] * 5 + [429]
        refused = await client.post("/v1/events", content=b"[]", headers={"Authorization": "Bearer guess-7"})
        assert "this address" in assert_error(refused, 429, "rate_limited")["message"]
        assert_error(await client.post("/v1/events", content=b"[]", headers=AUTH), 422, "invalid_events")
        # Another address guessing is not held back by this one.
        assert_error(await elsewhere.post("/v1/events", content=b"[]", headers=guesses[-1]), 401, "unauthorized")


async def test_successful_authentications_do_not_count_as_failures(settings: IngestSettings) -> None:
    async with serving(limited(settings, auth_failure_limit="2/minute")) as (client, _):
        for _ in range(5):
            assert_error(await client.post("/v1/events", content=b"[]", headers=AUTH), 422, "invalid_events")
        assert_error(await client.post("/v1/events", content=b"[]", headers=WRONG), 401, "unauthorized")


# --- Redis away ---


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never answers (a hung Redis)."""
    hung: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in hung:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("redis", ["closed-port", "never-answers"])
async def test_while_redis_is_away_each_process_keeps_counting_in_memory(
    settings: IngestSettings, redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with silent_server() as port:
        url = f"redis://127.0.0.1:{port if redis == 'never-answers' else 1}/0"
        limits = limited(settings, redis_url=url, rate_limit="3/minute", auth_failure_limit="2/minute")
        async with serving(limits) as (client, elsewhere):
            statuses = [(await client.post("/v1/events", content=b"[]", headers=AUTH)).status_code for _ in range(4)]
            assert statuses == [422, 422, 422, 429]
            assert int((await client.post("/v1/events", content=b"[]", headers=AUTH)).headers["Retry-After"]) >= 55
            # Failed authentications are held back in memory too.
            wrong = [(await elsewhere.post("/v1/events", content=b"[]", headers=WRONG)).status_code for _ in range(3)]
            assert wrong == [401, 401, 429]
            metrics = (await client.get("/metrics")).text
            assert sample(metrics, "cl_ingest_rate_checked_in_memory_total") >= 7
    assert any(r.levelname == "WARNING" and "counts in memory" in r.getMessage() for r in caplog.records)


async def test_a_hung_redis_costs_at_most_one_timeout_a_second(settings: IngestSettings) -> None:
    async with silent_server() as port, serving(limited(settings, redis_url=f"redis://127.0.0.1:{port}/0")) as (c, _):
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(20):
            await c.post("/v1/events", content=b"[]", headers=AUTH)
        # 20 requests, each with two rate checks: one timeout (0.25 s) at most, then memory.
        assert loop.time() - started < 1.0


# --- latency metrics ---


async def test_each_request_shows_in_the_latency_histogram(settings: IngestSettings) -> None:
    async with serving(limited(settings)) as (client, _):
        await until_ready(client)
        labels = {"handler": "/v1/events", "method": "POST"}
        before = sample((await client.get("/metrics")).text, "http_request_duration_seconds_count", **labels)
        assert (await client.post("/v1/events", json=post(unique("m")), headers=AUTH)).status_code == 202
        metrics = (await client.get("/metrics")).text
        assert sample(metrics, "http_request_duration_seconds_count", **labels) == before + 1
        assert sample(metrics, "http_request_duration_seconds_bucket", le="+Inf", **labels) == before + 1


# --- settings ---


def test_an_event_rate_below_one_batch_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CL_INGEST_EVENT_RATE_LIMIT", "999/minute")
    with pytest.raises(ValidationError, match="CL_INGEST_EVENT_RATE_LIMIT"):
        IngestSettings()
    monkeypatch.setenv("CL_INGEST_EVENT_RATE_LIMIT", "1000/minute")
    assert IngestSettings().event_rate_limit == "1000/minute"


@pytest.mark.parametrize("variable", ["CL_INGEST_AUTH_FAILURE_LIMIT", "CL_INGEST_AUTH_FAILURE_ADDRESS_LIMIT"])
def test_a_failed_authentication_limit_that_is_not_a_rate_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "often")
    with pytest.raises(ValidationError, match=variable):
        IngestSettings()

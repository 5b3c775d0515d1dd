"""The ingest service in-process, against the real Kafka: what a client posts, what lands on the topic."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError
from redis.asyncio import Redis

from services.common.kafka import ensure_topics
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.support import eventually, in_process, read_topic

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MIB = 1024 * 1024
RUN = uuid.uuid4().hex[:8]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def event(kind: str, member: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": unique("e"),
        "type": kind,
        "member_id": member,
        "occurred_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        **fields,
    }


def post(member: str) -> dict[str, Any]:
    return event("post", member, content_id=unique("p"))


def like(member: str, author: str) -> dict[str, Any]:
    return event("like", member, content_id=unique("p"), target_member_id=author)


def serving(settings: IngestSettings) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return in_process(create_app(settings))


async def until_ready(client: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await eventually(ready, timeout=30, what="ingest ready (its producer started on Kafka)")


@pytest.fixture(scope="session")
async def settings() -> IngestSettings:
    settings = IngestSettings(
        env="test",
        api_keys=f"other-key,{KEY}",
        redis_prefix=f"test:{RUN}:",
        rate_limit="10000/second",  # the rate tests below set their own
        topic_activity=f"test-activity-{RUN}",
        topic_level_changes=f"test-level-changes-{RUN}",
        topic_dlq=f"test-activity-{RUN}.dlq",
        topic_partitions=3,
    )

    async def created() -> bool:
        try:
            await ensure_topics(settings)
        except KafkaConnectionError:
            return False  # Kafka is (re)starting
        return True

    await eventually(created, timeout=60, what=f"topics created on Kafka at {settings.kafka_bootstrap}")
    return settings


@pytest.fixture(scope="session")
async def client(settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings) as client:
        await until_ready(client)
        yield client


@pytest.fixture(scope="session")
async def down() -> AsyncIterator[httpx.AsyncClient]:
    """The app pointed at a Kafka port where nothing listens."""
    settings = IngestSettings(
        env="test",
        api_keys=KEY,
        redis_prefix=f"test:{RUN}:",
        kafka_bootstrap="localhost:1",
        publish_timeout=timedelta(milliseconds=500),
    )
    async with serving(settings) as client:
        yield client


async def on_topic(settings: IngestSettings, *members: str) -> list[tuple[str, dict[str, Any]]]:
    """(key, value) of every record on the activity topic keyed by one of the members."""
    records = await read_topic(settings.kafka_bootstrap, settings.topic_activity, keys=set(members))
    return [(r.key.decode(), json.loads(r.value)) for r in records]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    return body


# --- accepted ---


async def test_a_single_event_is_published_keyed_by_its_member(
    client: httpx.AsyncClient, settings: IngestSettings
) -> None:
    member = unique("m")
    raw = post(member)
    response = await client.post("/v1/events", json=raw, headers=AUTH)
    assert response.status_code == 202 and response.json() == {"accepted": 1}
    [(key, value)] = await on_topic(settings, member)
    assert key == member
    assert value["event_id"] == raw["event_id"] and value["content_id"] == raw["content_id"]


async def test_a_batch_is_published_one_record_per_member_it_changes(
    client: httpx.AsyncClient, settings: IngestSettings
) -> None:
    liker, author, self_liker, visitor = (unique(p) for p in ("liker", "author", "self", "visitor"))
    batch = [like(liker, author), like(self_liker, self_liker), event("visit", visitor, duration_s=600)]
    response = await client.post("/v1/events", json={"events": batch}, headers=AUTH)
    assert response.status_code == 202 and response.json() == {"accepted": 3}
    records = await on_topic(settings, liker, author, self_liker, visitor)
    assert sorted((key, value["event_id"]) for key, value in records) == sorted(
        [
            (liker, batch[0]["event_id"]),  # a like: the liker ...
            (author, batch[0]["event_id"]),  # ... and the author
            (self_liker, batch[1]["event_id"]),  # a self-like: once
            (visitor, batch[2]["event_id"]),
        ]
    )


async def test_a_batch_of_1000_events_is_accepted(client: httpx.AsyncClient, settings: IngestSettings) -> None:
    member = unique("m")
    response = await client.post("/v1/events", json={"events": [post(member) for _ in range(1000)]}, headers=AUTH)
    assert response.status_code == 202 and response.json() == {"accepted": 1000}
    assert len(await on_topic(settings, member)) == 1000


async def test_a_member_records_keep_their_batch_order(client: httpx.AsyncClient, settings: IngestSettings) -> None:
    member = unique("m")
    batch = [post(member) for _ in range(20)]
    assert (await client.post("/v1/events", json={"events": batch}, headers=AUTH)).status_code == 202
    assert [value["event_id"] for _, value in await on_topic(settings, member)] == [e["event_id"] for e in batch]


# --- refused ---


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer "}],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
async def test_a_missing_or_wrong_key_is_refused(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.post("/v1/events", json=post(unique("m")), headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"not json", b'{"a": NaN}', b"[Infinity]", b'{"member_id": "\xff"}', b"[" * 100_000],
    ids=["truncated", "empty", "text", "nan", "infinity", "not-utf8", "too-deep"],
)
async def test_a_body_that_is_not_json_is_refused(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/v1/events", content=body, headers=AUTH)
    assert_error(response, 400, "invalid_json")


# Bodies that are larger than they say: tests/integration/test_bad_input.py.
async def test_a_body_declared_over_1_mib_is_refused_before_it_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", content=b"{}", headers={**AUTH, "Content-Length": str(MIB + 1)})
    assert_error(response, 413, "too_large")


async def test_a_batch_over_1000_events_is_refused_and_names_the_limit(
    client: httpx.AsyncClient, settings: IngestSettings
) -> None:
    member = unique("m")
    response = await client.post("/v1/events", json={"events": [post(member) for _ in range(1001)]}, headers=AUTH)
    assert "1000" in assert_error(response, 413, "too_large")["message"]
    assert await on_topic(settings, member) == []


async def test_invalid_events_are_named_and_nothing_of_the_request_is_published(
    client: httpx.AsyncClient, settings: IngestSettings
) -> None:
    good, liker = unique("good"), unique("liker")
    batch = [
        post(good),
        {**post(good), "extra": 1},
        {**like(liker, unique("author")), "occurred_at": "2026-01-01T00:00:00"},
        event("visit", good),
        "not an event",
    ]
    response = await client.post("/v1/events", json={"events": batch}, headers=AUTH)
    body = assert_error(response, 422, "invalid_events")
    assert {(e["index"], e["field"]) for e in body["errors"]} == {
        (1, "extra"),
        (2, "occurred_at"),
        (3, "duration_s"),
        (4, "event"),
    }
    assert all(e["reason"] for e in body["errors"])
    assert await on_topic(settings, good, liker) == []


async def test_an_event_that_cannot_become_a_record_is_refused(client: httpx.AsyncClient) -> None:
    # Deeper than pydantic serializes: refused before anything is published, never a 500.
    deep = {**post(unique("m")), "attributes": {"k": json.loads("[" * 300 + "]" * 300)}}
    response = await client.post("/v1/events", json=deep, headers=AUTH)
    assert [e["field"] for e in assert_error(response, 422, "invalid_events")["errors"]] == ["attributes"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ("event", "body"),
        (None, "body"),
        ({"events": []}, "events"),
        ({"events": {"event_id": "e"}}, "events"),
        ({"events": [{}], "source": "forum"}, "source"),
    ],
    ids=["array", "string", "null", "empty-batch", "events-not-a-list", "beside-events"],
)
async def test_a_body_that_is_neither_an_event_nor_a_batch_is_refused(
    client: httpx.AsyncClient, body: object, field: str
) -> None:
    response = await client.post("/v1/events", content=json.dumps(body).encode(), headers=AUTH)
    errors = assert_error(response, 422, "invalid_events")["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(None, field)]


# --- the rate limit ---
# Each test has its own Redis prefix, so its counts start at zero. A body of `[]` is refused
# (422) after the rate check, so these tests need no Kafka.


def limited(settings: IngestSettings, rate: str, **changes: object) -> IngestSettings:
    return settings.model_copy(update={"rate_limit": rate, "redis_prefix": f"test:{unique('rate')}:", **changes})


async def statuses(client: httpx.AsyncClient, count: int, headers: dict[str, str] = AUTH) -> list[int]:
    return [(await client.post("/v1/events", content=b"[]", headers=headers)).status_code for _ in range(count)]


async def test_a_key_over_its_rate_is_told_when_to_retry(settings: IngestSettings) -> None:
    async with serving(limited(settings, "2/minute")) as client:
        assert await statuses(client, 3) == [422, 422, 429]
        response = await client.post("/v1/events", json=post(unique("m")), headers=AUTH)
        assert_error(response, 429, "rate_limited")
        # The window frees its oldest request a minute after it was made: seconds ago.
        assert 55 <= int(response.headers["Retry-After"]) <= 60


async def test_a_key_under_its_rate_again_once_the_window_moves_on(settings: IngestSettings) -> None:
    async with serving(limited(settings, "1/second")) as client:
        assert await statuses(client, 2) == [422, 429]
        refused = await client.post("/v1/events", content=b"[]", headers=AUTH)
        assert refused.headers["Retry-After"] == "1"  # never 0, even with less than a second to go
        await asyncio.sleep(1.1)
        assert await statuses(client, 1) == [422]


async def test_the_rate_is_per_key(settings: IngestSettings) -> None:
    async with serving(limited(settings, "2/minute")) as client:
        assert await statuses(client, 3) == [422, 422, 429]
        assert await statuses(client, 2, headers={"Authorization": "Bearer other-key"}) == [422, 422]


async def test_the_rate_is_shared_by_every_copy_of_ingest(settings: IngestSettings) -> None:
    shared = limited(settings, "3/minute")
    async with serving(shared) as one, serving(shared) as two:
        assert await statuses(one, 2) + await statuses(two, 1) == [422, 422, 422]
        assert await statuses(two, 1) + await statuses(one, 1) == [429, 429]


async def test_the_rate_is_counted_by_key_digest_under_the_redis_prefix(settings: IngestSettings) -> None:
    limits = limited(settings, "5/minute")
    async with serving(limits) as client:
        await statuses(client, 1)
    redis = Redis.from_url(limits.redis_url)
    try:
        keys = [key.decode() async for key in redis.scan_iter(f"{limits.redis_prefix}*")]
    finally:
        await redis.aclose()
    assert len(keys) == 1
    assert keys[0].startswith(f"{limits.redis_prefix}ingest:rate:")
    assert hashlib.sha256(KEY.encode()).hexdigest() in keys[0] and KEY not in keys[0].split("/")


async def test_without_redis_the_rate_is_counted_in_memory_and_the_fallback_is_counted(
    settings: IngestSettings, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(limited(settings, "2/minute", redis_url="redis://127.0.0.1:1/0")) as client:
        await until_ready(client)
        assert await statuses(client, 3) == [422, 422, 429]
        assert "cl_ingest_rate_checked_in_memory_total" in (await client.get("/metrics")).text
    assert any(r.levelname == "WARNING" and "in memory" in r.getMessage() for r in caplog.records)


def test_a_rate_that_is_not_one_rate_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for rate in ("fast", "10/second;100/minute", "0/second"):
        monkeypatch.setenv("CL_INGEST_RATE_LIMIT", rate)
        with pytest.raises(ValidationError, match="rate_limit|CL_INGEST_RATE_LIMIT"):
            IngestSettings()
    monkeypatch.setenv("CL_INGEST_RATE_LIMIT", "3000 per minute")
    assert IngestSettings().rate_limit == "3000 per minute"


# --- Kafka down ---


async def test_without_kafka_the_app_starts_and_answers_503_with_retry_after(down: httpx.AsyncClient) -> None:
    assert (await down.get("/healthz")).status_code == 200
    response = await down.post("/v1/events", json=post(unique("m")), headers=AUTH)
    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1"


async def test_without_kafka_the_app_is_not_ready_and_says_why(down: httpx.AsyncClient) -> None:
    response = await down.get("/readyz")
    assert response.status_code == 503 and "kafka" in response.json()["message"]


async def test_without_kafka_clients_still_learn_what_is_wrong_with_their_request(down: httpx.AsyncClient) -> None:
    assert (await down.post("/v1/events", json=post(unique("m")))).status_code == 401
    assert (await down.post("/v1/events", content=b"{", headers=AUTH)).status_code == 400


async def test_when_kafka_does_not_acknowledge_in_time_the_answer_is_503(settings: IngestSettings) -> None:
    # No broker creates a topic by this name, so Kafka never acknowledges: the timeout answers.
    unwritable = {"topic_activity": "not a topic!", "publish_timeout": timedelta(milliseconds=500)}
    async with serving(settings.model_copy(update=unwritable)) as client:
        await until_ready(client)
        response = await client.post("/v1/events", json=post(unique("m")), headers=AUTH)
        assert_error(response, 503, "unavailable")
        assert response.headers["Retry-After"] == "1"


# --- the rest of the surface ---


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    response = await client.get("/readyz")
    assert response.status_code == 200 and response.json()["checks"] == {"kafka": "ok"}


async def test_metrics_count_accepted_events_and_answers(client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json=post(unique("m")), headers=AUTH)
    text = (await client.get("/metrics")).text
    assert "cl_ingest_events_accepted_total" in text
    assert 'cl_ingest_event_requests_total{status="202"}' in text


async def test_an_unknown_path_answers_in_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing"), 404, "not_found")
    assert_error(await client.get("/v1/events"), 405, "method_not_allowed")


async def test_the_openapi_document_describes_the_body_and_every_answer(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/v1/events"]["post"]
    doc = (await client.get("/openapi.json")).json()
    [event, batch] = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    schemas = doc["components"]["schemas"]
    event, batch = (schemas[ref["$ref"].rsplit("/", 1)[1]] for ref in (event, batch))
    # One schema per type, each requiring what the type uses and refusing the rest.
    assert event["discriminator"]["propertyName"] == "type" and len(event["oneOf"]) == 14
    awarded = schemas[event["discriminator"]["mapping"]["badge_awarded"].rsplit("/", 1)[1]]
    assert awarded["properties"]["content_id"]["pattern"] == "^[a-z0-9_]{1,64}$"
    like = schemas[event["discriminator"]["mapping"]["like"].rsplit("/", 1)[1]]
    assert set(like["required"]) == {"event_id", "type", "member_id", "occurred_at", "content_id", "target_member_id"}
    assert like["additionalProperties"] is False and "duration_s" not in like["properties"]
    assert batch["properties"]["events"]["maxItems"] == 1000
    assert {"202", "400", "401", "413", "422", "429", "503"} <= set(operation["responses"])


async def test_an_unexpected_error_is_logged_and_answered_in_the_error_shape(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("services.ingest.app.events_of", broken)
    app = create_app(IngestSettings(env="test", api_keys=KEY, kafka_bootstrap="localhost:1"))
    # The server error middleware re-raises after answering, for the server to see; the
    # transport must not turn that into an exception here.
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://i") as client:
        response = await client.post("/v1/events", json=post(unique("m")), headers=AUTH)
    assert_error(response, 500, "internal")
    assert "a bug" not in response.text
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


# --- settings ---


def test_production_refuses_the_documented_local_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CL_INGEST_API_KEYS", raising=False)
    monkeypatch.setenv("CL_ENV", "production")
    with pytest.raises(ValidationError, match="published local key"):
        IngestSettings()
    assert IngestSettings(api_keys="a-real-key-of-at-least-32-characters").env == "production"


def test_keys_come_from_the_environment_and_are_kept_only_as_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CL_INGEST_API_KEYS", "key-one, key-two")
    monkeypatch.setenv("CL_INGEST_PUBLISH_TIMEOUT", "2.5")
    settings = IngestSettings()
    assert len(settings.api_keys) == 2 and "key-one" not in repr(settings)
    assert settings.publish_timeout == timedelta(seconds=2.5)

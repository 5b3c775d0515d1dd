"""The pure parts of webhooks (SPEC §12): which addresses an endpoint may reach, what an answer
makes of a delivery and how long it then waits, which events an endpoint takes, and the event
a record of level-changes becomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from aiokafka import ConsumerRecord
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.common.addresses import AddressRefused, check_url, resolve, why_refused
from services.webhooks import delivery
from services.webhooks.service import event_of
from services.write.webhooks import new_secret
from shared.webhooks import ERASED, EVENTS, EVERY, causes, event_types, short_name, wanted
from tests.asyncapi import validator
from tests.unit.test_contract import _changes

# -- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped: still the loopback
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd00::1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # the cloud metadata service
        ("fe80::1%eth0", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
    ],
)
def test_special_addresses_are_refused_and_named(address: str, why: str) -> None:
    assert why_refused(address) == why


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert why_refused(address) is None


async def test_a_private_literal_is_refused_unless_the_setting_allows_it() -> None:
    with pytest.raises(AddressRefused) as refused:
        await resolve("10.0.0.7", 443, allow_private=False)
    assert "10.0.0.7 is a private address" in str(refused.value)
    assert "CL_WEBHOOK_ALLOW_PRIVATE" in str(refused.value)
    assert await resolve("10.0.0.7", 443, allow_private=True) == ["10.0.0.7"]


async def test_a_name_that_resolves_to_the_loopback_is_refused_naming_both() -> None:
    with pytest.raises(AddressRefused) as refused:
        await resolve("localhost", 80, allow_private=False)
    assert str(refused.value).startswith("localhost resolves to ")
    assert "a loopback address" in str(refused.value)
    assert set(await resolve("localhost", 80, allow_private=True)) <= {"127.0.0.1", "::1"}


async def test_the_connect_time_guard_refuses_before_any_connection() -> None:
    # What `cl webhook add` accepted may resolve elsewhere later: the client checks again.
    async with delivery.client(allow_private=False, timeout=timedelta(seconds=2)) as client:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.post("http://127.0.0.1:9/hook", content=b"{}")
    assert isinstance(refused.value.__cause__, delivery.Refused)
    assert "a loopback address" in str(refused.value.__cause__)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.org/hook", "starts with https://"),
        ("https:///hook", "names no host"),
        ("https://user:pw@example.org/hook", "no credentials"),
        ("https://example.org:99999/hook", "is not a URL"),
    ],
)
def test_a_bad_url_is_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_url(url)


def test_a_url_gives_its_host_and_port() -> None:
    assert check_url("https://hooks.example.org/x") == ("hooks.example.org", 443)
    assert check_url("http://hooks.example.org/x") == ("hooks.example.org", 80)
    assert check_url("https://[2606:4700::1]:8443/x") == ("2606:4700::1", 8443)


# -- answers, retries and waits --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (500, "retry"),
        (503, "retry"),
        (408, "retry"),
        (429, "retry"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (410, "failed"),
        (301, "failed"),  # a redirect is not followed
        (307, "failed"),
    ],
)
def test_what_an_answer_makes_of_a_delivery(status: int, outcome: str) -> None:
    assert delivery.outcome(status) == outcome


FIRST, LONGEST = timedelta(seconds=1), timedelta(hours=1)


def test_backoff_grows_with_jitter_and_stops_at_the_longest() -> None:
    for attempt in range(1, 8):
        waits = [delivery.backoff(attempt, FIRST, LONGEST) for _ in range(200)]
        base = FIRST * 2 ** (attempt - 1)
        # tenacity: initial * 2**(n-1) plus up to `jitter` (here: the first wait) at random.
        assert all(base <= wait <= base + FIRST for wait in waits), attempt
        assert len(set(waits)) > 1, "no jitter"
    assert {delivery.backoff(40, FIRST, LONGEST) for _ in range(20)} == {LONGEST}


def test_the_wait_honours_a_longer_retry_after_up_to_the_longest() -> None:
    assert delivery.next_wait(1, None, FIRST, LONGEST) <= 2 * FIRST
    assert delivery.next_wait(1, timedelta(seconds=30), FIRST, LONGEST) == timedelta(seconds=30)
    # A shorter ask than the backoff does not hurry it.
    assert delivery.next_wait(10, timedelta(seconds=1), FIRST, LONGEST) >= timedelta(seconds=512)
    assert delivery.next_wait(1, timedelta(days=3), FIRST, LONGEST) == LONGEST


NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "wait"),
    [
        ("120", timedelta(seconds=120)),
        ("1.5", timedelta(seconds=1.5)),
        ("-4", timedelta(0)),
        ("Sat, 05 Dec 2026 08:02:00 GMT", timedelta(minutes=2)),
        ("Sat, 05 Dec 2026 07:00:00 GMT", timedelta(0)),  # a date passed: at once
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_takes_seconds_or_a_date(value: str | None, wait: timedelta | None) -> None:
    response = httpx.Response(429, headers={"retry-after": value} if value else {})
    assert delivery.retry_after(response, NOW) == wait


def test_signed_headers_verify_with_either_secret_during_a_rotation() -> None:
    old, new = new_secret(), new_secret()
    body = b'{"type":"community.level.promoted","timestamp":"2026-12-05T08:00:00Z","data":{}}'
    at = datetime.now(UTC)  # the library refuses a timestamp more than 5 minutes off
    headers = delivery.signed_headers([new, old], "evt-1", at, body)
    assert headers["webhook-id"] == "evt-1" and headers["webhook-timestamp"] == str(int(at.timestamp()))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == orjson.loads(body)
    with pytest.raises(WebhookVerificationError, match="signature"):
        Webhook(new).verify(body.replace(b"promoted", b"demoted"), headers)
    with pytest.raises(WebhookVerificationError, match="signature"):
        Webhook(new_secret()).verify(body, headers)


# -- which events an endpoint takes ----------------------------------------------------------


def test_events_are_named_short_or_in_full_or_all() -> None:
    assert event_types("promoted, badge.granted") == ["community.level.promoted", "community.badge.granted"]
    assert event_types("community.program.left,promoted,promoted") == [
        "community.program.left",
        "community.level.promoted",
    ]
    assert event_types("promoted,all") == [EVERY]
    assert [short_name(t) for t in event_types(",".join(EVENTS))] == list(EVENTS)
    assert short_name(EVERY) == "all"


@pytest.mark.parametrize(("text", "problem"), [("", "names no event"), ("promoted,levelup", "no event 'levelup'")])
def test_an_unknown_event_is_refused_naming_it(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        event_types(text)


def test_causes_are_checked() -> None:
    assert causes("rescore, override,rescore") == ["rescore", "override"]
    assert causes("") == []
    with pytest.raises(ValueError, match="no cause 'manual'"):
        causes("rescore,manual")


PROMOTED, BADGE = EVENTS["promoted"], EVENTS["badge.granted"]


@pytest.mark.parametrize(
    ("events", "excluded", "event_type", "cause", "sent"),
    [
        ([PROMOTED], [], PROMOTED, "activity", True),
        ([PROMOTED], [], BADGE, None, False),  # not a type it takes
        ([EVERY], [], "community.something.new", None, True),  # `all` takes types added later
        ([PROMOTED], ["rescore"], PROMOTED, "rescore", False),
        ([PROMOTED], ["rescore"], PROMOTED, "override", True),
        ([EVERY], ["rescore", "override"], PROMOTED, "override", False),
        ([EVERY], ["rescore"], BADGE, None, True),  # an event without a cause is never excluded by one
        ([ERASED], ["rescore"], ERASED, None, True),
    ],
)
def test_an_endpoint_gets_the_types_it_takes_less_the_causes_it_excludes(
    events: list[str], excluded: list[str], event_type: str, cause: str | None, sent: bool
) -> None:
    assert wanted(events, excluded, event_type, cause) is sent


# -- the event a record becomes --------------------------------------------------------------


def record(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], offset: int = 7
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="level-changes",
        partition=2,
        offset=offset,
        timestamp=int(NOW.timestamp() * 1000),
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=headers,
    )


def test_a_level_change_becomes_its_cloud_event_type_with_its_cause() -> None:
    value = orjson.dumps({"event_id": "lc-1", "direction": "promoted", "cause": {"kind": "rescore"}})
    headers = [("ce_type", PROMOTED.encode()), ("ce_id", b"lc-1"), ("ce_time", b"2026-12-05T08:00:00Z")]
    event = event_of(record(b"ann", value, headers))
    assert (event.member_id, event.event_id, event.event_type, event.cause) == ("ann", "lc-1", PROMOTED, "rescore")
    body = orjson.loads(event.body)
    assert body == {"type": PROMOTED, "timestamp": "2026-12-05T08:00:00Z", "data": orjson.loads(value)}
    assert value in event.body  # the record's own bytes, untouched


def test_a_tombstone_becomes_an_erasure_with_an_id_stable_across_redeliveries() -> None:
    first, again = event_of(record(b"bob", None, [])), event_of(record(b"bob", None, []))
    assert first.event_type == ERASED and first.cause is None
    assert first.event_id == again.event_id == "erased-2-7"
    assert orjson.loads(first.body)["data"] == {"member_id": "bob"}
    assert event_of(record(b"bob", None, [], offset=8)).event_id != first.event_id


@pytest.mark.parametrize(("key", "value"), [(None, b"{}"), (b"ann", b"[1]"), (b"ann", b"not json")])
def test_a_record_that_carries_no_event_is_refused(key: bytes | None, value: bytes) -> None:
    with pytest.raises(ValueError):
        event_of(record(key, value, []))


def test_what_endpoints_get_is_what_the_asyncapi_document_describes() -> None:
    change = _changes()[0]
    value = orjson.dumps(change)
    headers = [
        ("ce_type", PROMOTED.encode()),
        ("ce_id", change["event_id"].encode()),
        ("ce_time", b"2026-12-05T08:00:00Z"),
    ]
    bodies = [event_of(record(b"ann", value, headers)).body, event_of(record(b"bob", None, [])).body]
    for body in bodies:
        validator("WebhookPayload").validate(orjson.loads(body))
    signed = delivery.signed_headers([new_secret(), new_secret()], change["event_id"], NOW, bodies[0])
    validator("WebhookHeaders").validate(signed)
    # A body whose data does not match its type is refused.
    mismatched = orjson.loads(bodies[0]) | {"type": ERASED}
    assert not validator("WebhookPayload").is_valid(mismatched)
    assert not validator("WebhookHeaders").is_valid(signed | {"webhook-signature": "v2,abc"})

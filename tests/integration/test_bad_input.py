"""What a careless or hostile client may send, over HTTP, in-process against the real servers.

The rules themselves are pinned on the domain core (tests/unit/test_events.py); these tests pin
what only the HTTP surface can show: raw JSON escapes and numbers as the body parser sees them,
the server's own clock, bodies that lie about their size, keys, and the read API's parameters.
Each answer is a 4xx in the service's error shape, never a 500, and a refused request publishes
nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from services.api.app import create_app as create_api
from services.api.settings import ApiSettings
from services.common.kafka import ensure_topics
from services.ingest.settings import IngestSettings
from shared.events import shown
from tests.conftest import unique
from tests.integration.test_ingest import assert_error, like, on_topic, post, serving, until_ready
from tests.support import in_process, own_topics

KEY = "bad-input-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
async def settings(settings_kwargs: dict[str, Any]) -> IngestSettings:
    settings = IngestSettings(
        **own_topics(settings_kwargs, "bad-input"),
        env="test",
        api_keys=f"{KEY},other-key",
        topic_partitions=1,
        rate_limit="100000/minute",
    )
    await ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
async def ingest(settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings) as client:
        await until_ready(client)
        yield client


@pytest.fixture(scope="module")
async def api(settings_kwargs: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(create_api(ApiSettings(**settings_kwargs))) as client:
        yield client


def raw(fields: dict[str, str]) -> bytes:
    """An event as JSON text whose values are written as given (escapes stay escapes)."""
    return ("{" + ", ".join(f'"{name}": {text}' for name, text in fields.items()) + "}").encode()


def like_fields(member: str, **changes: str) -> dict[str, str]:
    base = {
        "event_id": json.dumps(unique("e")),
        "type": '"like"',
        "member_id": json.dumps(member),
        "occurred_at": json.dumps((datetime.now(UTC) - timedelta(hours=1)).isoformat()),
        "content_id": json.dumps(unique("p")),
        "target_member_id": json.dumps(unique("author")),
    }
    return {**base, **changes}


# --- bodies that lie about their size ---


class Stream:
    """A body of `total` bytes, made as it is read, that counts what the server took."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b" " * self.chunk


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Length": "2"}, {"Content-Length": str(MIB)}],
    ids=["chunked", "content-length-far-too-small", "content-length-at-the-limit"],
)
async def test_a_50_mib_body_is_refused_once_past_1_mib_and_never_read_to_its_end(
    ingest: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = Stream(50 * MIB)
    response = await ingest.post("/v1/events", content=body, headers={**AUTH, **headers})
    assert_error(response, 413, "too_large")
    # The server answered when the body passed 1 MiB: a chunk or so past it, not 50 MiB.
    assert MIB < body.sent <= MIB + 2 * body.chunk


# --- numbers ---


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
async def test_a_number_json_cannot_write_is_refused_as_not_json(ingest: httpx.AsyncClient, number: str) -> None:
    fields = {**like_fields(unique("m")), "type": '"visit"', "duration_s": number}
    del fields["content_id"], fields["target_member_id"]
    assert_error(await ingest.post("/v1/events", content=raw(fields), headers=AUTH), 400, "invalid_json")


@pytest.mark.parametrize(
    "duration",
    [str(2**64), str(2**63), str(-(2**63) - 1), "-1", "86401", "600.5", "6e-2", "1e400", "-1e400", "1" + "0" * 5000],
    ids=lambda text: text[:12],
)
async def test_a_duration_out_of_range_or_not_an_integer_is_named(ingest: httpx.AsyncClient, duration: str) -> None:
    member = unique("m")
    fields = {**like_fields(member), "type": '"visit"', "duration_s": duration}
    del fields["content_id"], fields["target_member_id"]
    body = assert_error(await ingest.post("/v1/events", content=raw(fields), headers=AUTH), 422, "invalid_events")
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "duration_s")]


# --- characters ---

INVISIBLE = {
    "nul": "\\u0000",
    "bell": "\\u0007",
    "newline": "\\n",
    "del": "\\u007f",
    "lone-high-surrogate": "\\ud800",
    "lone-low-surrogate": "\\udfff",
    "reversed-surrogates": "\\udc00\\ud800",
    "zero-width-space": "\\u200b",
    "zero-width-joiner": "\\u200d",
    "bom": "\\ufeff",
    "bidi-override": "\\u202e",
}


@pytest.mark.parametrize("field", ["event_id", "member_id", "content_id", "target_member_id"])
@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
async def test_an_id_with_a_control_surrogate_or_invisible_character_is_refused(
    ingest: httpx.AsyncClient, field: str, char: str
) -> None:
    # Refused, not a 500 when a lone surrogate cannot be encoded into the record.
    fields = like_fields(unique("m"))
    fields[field] = f'"{json.loads(fields[field])}{char}x"'
    response = await ingest.post("/v1/events", content=raw(fields), headers=AUTH)
    body = assert_error(response, 422, "invalid_events")
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, field)]


async def test_an_invisible_character_sent_as_utf_8_rather_than_escaped_is_refused_too(
    ingest: httpx.AsyncClient,
) -> None:
    fields = like_fields(unique("m"))
    fields["content_id"] = '"post\u200b-1"'  # the character itself, three bytes of UTF-8
    body = assert_error(await ingest.post("/v1/events", content=raw(fields), headers=AUTH), 422, "invalid_events")
    assert [e["field"] for e in body["errors"]] == ["content_id"]


async def test_a_content_id_with_an_escaped_surrogate_pair_is_one_character_and_accepted(
    ingest: httpx.AsyncClient, settings: IngestSettings
) -> None:
    member = unique("m")
    fields = like_fields(member, content_id='"post \\ud83d\\ude00"')  # U+1F600, escaped as a pair
    response = await ingest.post("/v1/events", content=raw(fields), headers=AUTH)
    assert response.status_code == 202, response.text
    [(_, value)] = await on_topic(settings, member)
    assert value["content_id"] == "post \U0001f600"


# --- what cannot be stored ---

UNSTORABLE_ATTRIBUTES = {
    "nul-value": r'{"k": "a\u0000b"}',
    "nul-key": r'{"a\u0000": 1}',
    "surrogate-value": r'{"k": "\ud800"}',
    "surrogate-key": r'{"\udfff": 1}',
    "reversed-pair-deep": r'{"k": [{"x": ["\udc00\ud800"]}]}',
    "nul-key-deep": r'{"k": {"x": {"\u0000": null}}}',
    "huge-number": '{"k": [1e400]}',
    "tiny-number": '{"k": 1e-20000}',
    "exponent-past-decimal": '{"k": 1e-999999999999999999}',
    "long-fraction": '{"k": 1.' + "0" * 2000 + "}",
    "huge-integer": '{"k": ' + "9" * 5000 + "}",
    "nested-500": '{"k": ' + "[" * 500 + "]" * 500 + "}",
}


@pytest.mark.parametrize("attributes", UNSTORABLE_ATTRIBUTES.values(), ids=UNSTORABLE_ATTRIBUTES.keys())
async def test_attributes_that_cannot_be_stored_are_named_and_nothing_is_published(
    ingest: httpx.AsyncClient, settings: IngestSettings, attributes: str
) -> None:
    member = unique("m")
    response = await ingest.post("/v1/events", content=raw(like_fields(member, attributes=attributes)), headers=AUTH)
    body = assert_error(response, 422, "invalid_events")
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "attributes")]
    assert await on_topic(settings, member) == []


async def test_attributes_nested_deeper_than_the_parser_recurses_are_refused_as_not_json(
    ingest: httpx.AsyncClient,
) -> None:
    attributes = "[" * 100_000 + "]" * 100_000
    response = await ingest.post(
        "/v1/events", content=raw(like_fields(unique("m"), attributes=attributes)), headers=AUTH
    )
    assert "nested too deeply" in assert_error(response, 400, "invalid_json")["message"]


@pytest.mark.parametrize(
    "name", [r"\u0000", r"\ud800", r"x\udc00", "\u202e"], ids=["nul", "lone-high", "lone-low", "bidi"]
)
async def test_an_unknown_field_named_with_what_cannot_be_encoded_is_named_with_escapes(
    ingest: httpx.AsyncClient, name: str
) -> None:
    fields = {**like_fields(unique("m")), json.loads(f'"{name}"'): "1"}
    body = ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}").encode()
    errors = assert_error(await ingest.post("/v1/events", content=body, headers=AUTH), 422, "invalid_events")["errors"]
    assert [(e["field"], e["reason"]) for e in errors] == [(shown(json.loads(f'"{name}"')), "unknown field")]


@pytest.mark.parametrize(
    "body",
    [
        b'{"event_id": "e-1", "event_id": "e-2", "type": "post"}',
        b'{"events": [], "events": []}',
        json.dumps({"events": []}).encode("utf-16"),
        b"\xef\xbb\xbf" + json.dumps({"events": []}).encode(),
    ],
    ids=["duplicate-name", "duplicate-events", "utf-16", "bom"],
)
async def test_a_body_with_a_name_twice_or_not_in_utf_8_is_refused_as_not_json(
    ingest: httpx.AsyncClient, body: bytes
) -> None:
    assert_error(await ingest.post("/v1/events", content=body, headers=AUTH), 400, "invalid_json")


async def test_a_batch_over_1000_events_is_413(ingest: httpx.AsyncClient) -> None:
    batch = {"events": [post(unique("m")) for _ in range(1001)]}
    assert_error(await ingest.post("/v1/events", json=batch, headers=AUTH), 413, "too_large")


# --- time ---


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(minutes=4), True),
        (timedelta(minutes=6), False),
        (timedelta(days=3650), False),
    ],
    ids=["4-min-ahead", "6-min-ahead", "10-years-ahead"],
)
async def test_occurred_at_is_checked_against_the_servers_clock(
    ingest: httpx.AsyncClient, offset: timedelta, accepted: bool
) -> None:
    raw_event = {**post(unique("m")), "occurred_at": (datetime.now(UTC) + offset).isoformat()}
    response = await ingest.post("/v1/events", json=raw_event, headers=AUTH)
    if accepted:
        assert response.status_code == 202, response.text
    else:
        errors = assert_error(response, 422, "invalid_events")["errors"]
        assert [(e["field"], e["reason"]) for e in errors] == [
            ("occurred_at", "must not be more than 5 minutes ahead of the server clock")
        ]


@pytest.mark.parametrize(
    "occurred_at",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.9999999999-00:01"],
)
async def test_occurred_at_outside_what_python_holds_in_utc_is_named_not_a_500(
    ingest: httpx.AsyncClient, occurred_at: str
) -> None:
    response = await ingest.post("/v1/events", json={**post(unique("m")), "occurred_at": occurred_at}, headers=AUTH)
    errors = assert_error(response, 422, "invalid_events")["errors"]
    assert [e["field"] for e in errors] == ["occurred_at"]


@pytest.mark.parametrize("occurred_at", ["1999-12-31T23:59:59Z", "2000-01-01T00:59:59+01:00", "0001-01-01T00:00:00Z"])
async def test_occurred_at_before_2000_is_refused(ingest: httpx.AsyncClient, occurred_at: str) -> None:
    response = await ingest.post("/v1/events", json={**post(unique("m")), "occurred_at": occurred_at}, headers=AUTH)
    assert [e["field"] for e in assert_error(response, 422, "invalid_events")["errors"]] == ["occurred_at"]


# --- fields ---


@pytest.mark.parametrize("extra", ["points", "Event_id", "member_id "], ids=repr)
async def test_an_unknown_field_on_a_single_event_is_named_and_nothing_is_published(
    ingest: httpx.AsyncClient, settings: IngestSettings, extra: str
) -> None:
    member = unique("m")
    response = await ingest.post("/v1/events", json={**post(member), extra: 10}, headers=AUTH)
    errors = assert_error(response, 422, "invalid_events")["errors"]
    assert [(e["index"], e["field"], e["reason"]) for e in errors] == [(0, extra, "unknown field")]
    assert await on_topic(settings, member) == []


# --- repeated event ids ---


async def test_a_repeated_event_id_is_accepted_and_published_within_a_batch_and_across_batches(
    ingest: httpx.AsyncClient, settings: IngestSettings
) -> None:
    # Counting it once is the scorer's part (tests/integration/test_scorer.py); ingest passes it on.
    member = unique("m")
    again = post(member)
    response = await ingest.post("/v1/events", json={"events": [again, again]}, headers=AUTH)
    assert response.status_code == 202 and response.json() == {"accepted": 2}
    response = await ingest.post("/v1/events", json=again, headers=AUTH)
    assert response.status_code == 202 and response.json() == {"accepted": 1}
    assert [value["event_id"] for _, value in await on_topic(settings, member)] == [again["event_id"]] * 3


# --- API keys ---


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {KEY.upper()}",
        f"Bearer {KEY}x",
        f"Bearer {KEY[:-1]}",
        f"Bearer {KEY},other-key",
        f"Token {KEY}",
        KEY,
        "Bearer " + "k" * 64 * 1024,
        "Bearer k\u00e9y",
    ],
    ids=[
        "upper-case",
        "longer",
        "shorter",
        "two-keys",
        "other-scheme",
        "no-scheme",
        "64k",
        "latin-1",
    ],
)
async def test_a_key_that_is_almost_right_is_refused(ingest: httpx.AsyncClient, authorization: str) -> None:
    response = await ingest.post(
        "/v1/events", json=post(unique("m")), headers={b"Authorization": authorization.encode("latin-1")}
    )
    assert_error(response, 401, "unauthorized")


async def test_the_bearer_scheme_is_case_insensitive(ingest: httpx.AsyncClient) -> None:
    response = await ingest.post("/v1/events", json=post(unique("m")), headers={"Authorization": f"bearer {KEY}"})
    assert response.status_code == 202, response.text


async def test_wrong_keys_do_not_spend_a_real_keys_rate(settings: IngestSettings) -> None:
    limited = settings.model_copy(update={"rate_limit": "2/minute", "redis_prefix": f"test:{unique('rate')}:"})
    async with serving(limited) as client:
        for _ in range(5):
            wrong = await client.post("/v1/events", content=b"[]", headers={"Authorization": "Bearer wrong"})
            assert_error(wrong, 401, "unauthorized")
        statuses = [(await client.post("/v1/events", content=b"[]", headers=AUTH)).status_code for _ in range(3)]
        assert statuses == [422, 422, 429]


async def test_a_refused_key_publishes_nothing_even_with_a_valid_batch(
    ingest: httpx.AsyncClient, settings: IngestSettings
) -> None:
    liker, author = unique("liker"), unique("author")
    response = await ingest.post("/v1/events", json={"events": [like(liker, author)]}, headers={})
    assert_error(response, 401, "unauthorized")
    assert await on_topic(settings, liker, author) == []


# --- the read API ---


def assert_invalid(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error", "message"} and body["message"], body


BAD_MEMBER_IDS = {
    "too-long": "m" * 129,
    "space": "ann%20b",
    "nul": "a%00b",
    "zero-width": "a%E2%80%8Bb",
    "non-ascii": "ann%C3%A9",
    "not-utf-8": "a%FFb",
    "lone-surrogate-utf-8": "a%ED%A0%80b",
    "quote": "a%22b",
}


@pytest.mark.parametrize("path", ["/v1/members/{}", "/v1/members/{}/level-changes"], ids=["member", "history"])
@pytest.mark.parametrize("member_id", BAD_MEMBER_IDS.values(), ids=BAD_MEMBER_IDS.keys())
async def test_a_bad_member_id_in_the_path_is_422(api: httpx.AsyncClient, path: str, member_id: str) -> None:
    assert_invalid(await api.get(path.format(member_id)))


@pytest.mark.parametrize("path", ["/v1/members/a%2Fb", "/v1/members/a%2Fb/level-changes"])
async def test_an_encoded_slash_in_a_member_id_reaches_no_route_and_is_404_in_the_error_shape(
    api: httpx.AsyncClient, path: str
) -> None:
    response = await api.get(path)
    assert response.status_code == 404 and response.json()["error"] == "not_found", response.text


async def test_the_longest_member_id_is_read_as_never_seen(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/v1/members/{'m' * 128}")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?ids=",
        "?ids=,,,",
        "?ids=" + ",".join(f"m{i}" for i in range(101)),
        "?ids=ok,not%20ok",
        "?ids=ok," + "m" * 129,
        "?ids=ok,a%00b",
        "?ids=ok,a%ED%A0%80b",
        "?ids=a,,b",
        "?ids=a,",
        "?ids=" + ",".join(["m"] * 101),
    ],
    ids=[
        "missing",
        "empty",
        "only-commas",
        "101",
        "space",
        "too-long",
        "nul",
        "lone-surrogate-utf-8",
        "empty-between",
        "trailing-comma",
        "101-repeats",
    ],
)
async def test_ids_that_name_no_member_too_many_or_bad_ones_are_422(api: httpx.AsyncClient, query: str) -> None:
    assert_invalid(await api.get(f"/v1/members{query}"))


@pytest.mark.parametrize(
    ("query", "problem"),
    [("", 'not member ids: [""]'), ("a,,b", 'not member ids: [""]'), (",".join(["m"] * 101), "names 101 members")],
    ids=["empty", "empty-between", "101"],
)
async def test_ids_refused_by_its_pattern_are_explained_in_words(
    api: httpx.AsyncClient, query: str, problem: str
) -> None:
    response = await api.get(f"/v1/members?ids={query}")
    assert_invalid(response)
    rule = "1 to 100 member ids, comma-separated, each 1 to 128 of A-Z a-z 0-9 . _ : @ -"
    assert response.json()["message"] == f"ids: {problem}; ids must be {rule}"


async def test_the_documented_ids_pattern_is_the_one_enforced(api: httpx.AsyncClient) -> None:
    [ids] = (await api.get("/openapi.json")).json()["paths"]["/v1/members"]["get"]["parameters"]
    pattern = ids["schema"]["pattern"]
    assert re.fullmatch(pattern, ",".join(["m"] * 100)) and not re.fullmatch(pattern, ",".join(["m"] * 101))
    assert not re.fullmatch(pattern, "") and not re.fullmatch(pattern, "a,,b")


async def test_100_ids_and_repeats_of_fewer_are_read(api: httpx.AsyncClient) -> None:
    hundred = [unique("m") for _ in range(100)]
    response = await api.get("/v1/members", params={"ids": ",".join(hundred)})
    assert response.status_code == 200 and response.json()["missing"] == hundred
    repeated = await api.get("/v1/members", params={"ids": ",".join([hundred[0]] * 100)})
    assert repeated.status_code == 200 and repeated.json()["missing"] == [hundred[0]]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=x",
        "limit=1.5",
        f"limit={10**30}",
        "before=0",
        "before=-5",
        f"before={2**31}",
        f"before={10**30}",
        "before=abc",
        "before=",
        # Integers written other than in digits, which pydantic alone would read.
        "limit=1.0",
        "limit=%205",
        "limit=5%20",
        "limit=5_0",
        "before=%2B3",
    ],
)
async def test_limit_and_before_out_of_range_are_422(api: httpx.AsyncClient, query: str) -> None:
    assert_invalid(await api.get(f"/v1/members/{unique('m')}/level-changes?{query}"))


@pytest.mark.parametrize("offset", ["1.0", "%200", "1_0", "%2B1", "-1"])
async def test_an_offset_not_in_digits_or_below_0_is_422_naming_it(api: httpx.AsyncClient, offset: str) -> None:
    response = await api.get(f"/v1/leaderboard?offset={offset}")
    assert_invalid(response)
    assert response.json()["message"].startswith("offset: ")


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:  # the pages' router
            yield from api_routes(included.routes)


def routes_taking_query_parameters() -> list[tuple[str, str]]:
    routes = api_routes(create_api(ApiSettings()).routes)
    return [(r.path, p.alias) for r in routes for p in r.dependant.query_params]


@pytest.mark.parametrize(("path", "name"), routes_taking_query_parameters())
async def test_any_query_parameter_given_twice_is_422_naming_it(api: httpx.AsyncClient, path: str, name: str) -> None:
    member = unique("m")
    path = path.format(member_id=member, level_id="new_member", program_id="community_boss")
    response = await api.get(f"{path}?{name}=1&{name}=1")
    assert_invalid(response)
    assert response.json()["message"] == f"{name}: given more than once"


def test_the_routes_taking_query_parameters_are_the_known_ones() -> None:
    # So the test above cannot pass by finding no route.
    assert {path for path, _ in routes_taking_query_parameters()} == {
        "/v1/members",
        "/v1/members/{member_id}/level-changes",
        "/v1/leaderboard",
        "/v1/members/{member_id}/rank",
        "/v1/levels/{level_id}/members",
        "/v1/levels/{level_id}/within-reach",
        "/members/{member_id}",
        "/leaderboard",
        "/v1/programs/{program_id}/eligible",
    }


async def test_a_query_parameter_a_route_does_not_declare_may_repeat(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/leaderboard?utm=a&utm=b")).status_code in (200, 503)
    assert (await api.get("/v1/levels?v=1&v=2")).status_code == 200


async def test_limit_and_before_at_their_bounds_are_read(api: httpx.AsyncClient) -> None:
    member = unique("m")
    for query in ("limit=1", "limit=100", "before=1", f"before={2**31 - 1}"):
        response = await api.get(f"/v1/members/{member}/level-changes?{query}")
        # No such member: 404 without `before`, an empty page with it.
        assert response.status_code in (200, 404), (query, response.text)
        assert response.status_code == (200 if query.startswith("before") else 404), query

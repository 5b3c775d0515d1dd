"""Schemathesis over the OpenAPI documents of ingest and the read API, in-process (ASGI), with
the apps' lifespans running against the real servers.

Every phase runs where it applies: examples, coverage and fuzzing on every operation; stateful
on the read API, whose member operations schemathesis links by their parameters (ingest has no
links to follow). Every check of schemathesis runs, with the project's schemathesis.toml (which
`schemathesis run` reads by hand too): every answer is in the document, schema-valid requests
are taken and schema-invalid ones refused. Ingest alone may refuse a schema-valid request, with
a 422 naming a rule no schema can say (an `occurred_at` ahead of the server clock, say), and
the test holds each such 422 to that list.
"""

from __future__ import annotations

import asyncio
import re
import time
import tomllib
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from redis.asyncio import Redis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema

from services.api.app import create_app as create_api
from services.api.settings import ApiSettings
from services.common.kafka import ensure_topics
from services.common.members import MemberCache
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from tests.conftest import ROOT, unique
from tests.integration.test_api import ev, score
from tests.support import own_topics

KEY = "fuzz-key"
# Bounds the fuzzing phase per operation; the examples and coverage phases are bounded by the
# schema itself.
MAX_EXAMPLES = 200


def fuzz_config(**project: Any) -> SchemathesisConfig:
    # The project's schemathesis.toml (what `schemathesis run` reads by hand too), with this
    # test's own settings on top.
    with open(ROOT / "schemathesis.toml", "rb") as file:
        base = tomllib.load(file)
    return SchemathesisConfig.from_dict(
        {**base, "generation": {**base["generation"], "max-examples": MAX_EXAMPLES}, **project}
    )


class UnderTest:
    """The ASGI app a schema calls, set by a fixture: the schema is loaded when pytest collects
    the tests, the app is built later from the session's settings."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "the app fixture has not run"
        await self.app(scope, receive, send)


def in_process(document: dict[str, Any], config: SchemathesisConfig) -> tuple[BaseSchema, UnderTest]:
    # The document is the app's own (it does not depend on settings). Schemathesis runs the
    # app's lifespan itself, in its own event loop, from the first request of a test to its end.
    schema = schemathesis.openapi.from_dict(document, config=config)
    schema.app = under_test = UnderTest()
    return schema, under_test


INGEST, INGEST_APP = in_process(
    create_ingest(IngestSettings(env="test", api_keys=KEY)).openapi(),
    fuzz_config(auth={"openapi": {"HTTPBearer": {"bearer": KEY}}}),
)
API, API_APP = in_process(create_api(ApiSettings()).openapi(), fuzz_config())
# The stateful phase starts from a member that exists (ids names it), so the links from one
# member read to the next have something to follow.
MEMBER = unique("fuzz")
API_LINKED, API_LINKED_APP = in_process(create_api(ApiSettings()).openapi(), fuzz_config(parameters={"ids": MEMBER}))
# Every phase again with the member ids fixed to that member, so 200 answers are checked too.
API_KNOWN, API_KNOWN_APP = in_process(
    create_api(ApiSettings()).openapi(), fuzz_config(parameters={"ids": MEMBER, "member_id": MEMBER})
)


def until_ready(schema: BaseSchema, timeout: float = 30) -> None:
    """Start the app's lifespan and wait until its /readyz answers 200."""
    readyz = schema["/readyz"]["GET"]
    deadline = time.monotonic() + timeout
    while (response := readyz.Case().call()).status_code != 200:
        assert time.monotonic() < deadline, f"not ready in {timeout} s: {response.text}"
        time.sleep(0.2)


@pytest.fixture(scope="module", autouse=True)
def apps(settings_kwargs: dict[str, Any]) -> None:
    ingest = IngestSettings(
        **own_topics(settings_kwargs, "fuzz"),
        env="test",
        api_keys=KEY,
        topic_partitions=1,
        # Far above what the fuzzer sends, so no answer depends on how fast it ran.
        rate_limit="100000/minute",
        event_rate_limit="10000000/minute",
        # The fuzzer sends wrong keys on purpose, and expects 401 each time.
        auth_failure_limit="100000/minute",
        auth_failure_address_limit="100000/minute",
    )
    asyncio.run(ensure_topics(ingest))
    INGEST_APP.app = create_ingest(ingest)
    api = ApiSettings(**settings_kwargs)
    # A member with a level history: promoted, demoted, promoted again.
    events = [ev("post", MEMBER, content_id="p1"), ev("content_removed", MEMBER, content_id="p1")]
    asyncio.run(score(api, [*events, ev("reply", MEMBER, content_id="r1")], cache=True))
    asyncio.run(mark_built(api))
    API_APP.app, API_LINKED_APP.app, API_KNOWN_APP.app = create_api(api), create_api(api), create_api(api)


async def mark_built(api: ApiSettings) -> None:
    """Say Redis holds every member, as a scorer's repair loop does once it has rebuilt the views
    (until then the leaderboards answer 503)."""
    redis = Redis.from_url(api.redis_url)
    try:
        await redis.set(MemberCache(redis, api.redis_prefix).built_key, "fuzz")
    finally:
        await redis.aclose()


# Function-scoped, as each test's lifespan is; not an argument of the tests, so Hypothesis
# does not take it for state shared between examples.
@pytest.fixture
def ingest_ready() -> None:
    until_ready(INGEST)


@pytest.fixture
def api_ready() -> None:
    until_ready(API)


@pytest.fixture
def api_linked_ready() -> None:
    until_ready(API_LINKED)


@pytest.fixture
def api_known_ready() -> None:
    until_ready(API_KNOWN)


# What ingest may refuse in a request valid by its schema: the rules no JSON Schema can say.
UNSCHEMATIC = re.compile(
    r"occurred_at: (must not be more than 5 minutes ahead|is not a valid date and time|must not be before 2000"
    r"|is out of range)|content_id: must not contain the character|attributes: "
)


@INGEST.parametrize()
@pytest.mark.usefixtures("ingest_ready")
def test_ingest_answers_every_request_as_its_document_says(case: Case) -> None:
    response = case.call_and_validate()
    if case.meta is not None and case.meta.generation.mode.is_positive and response.status_code == 422:
        for error in response.json()["errors"]:
            assert UNSCHEMATIC.match(f"{error['field']}: {error['reason']}"), (error, case.body)


@API.parametrize()
@pytest.mark.usefixtures("api_ready")
def test_the_read_api_answers_every_request_as_its_document_says(case: Case) -> None:
    case.call_and_validate()


@API_KNOWN.parametrize()
@pytest.mark.usefixtures("api_known_ready")
def test_the_read_api_answers_about_a_known_member_as_documented(case: Case) -> None:
    case.call_and_validate()


@pytest.mark.usefixtures("api_linked_ready")
def test_the_read_api_answers_as_documented_along_the_links_between_member_reads() -> None:
    API_LINKED.as_state_machine().run(
        settings=hypothesis.settings(max_examples=MAX_EXAMPLES, stateful_step_count=6, deadline=None)
    )


def test_the_catalogues_are_among_the_operations_fuzzed() -> None:
    """The ladder, the programmes and the badges (SPEC §10, §11) are in the read API's document,
    so every phase above runs on them; the fixture's member holds badges, so its reads carry them."""
    for path in ("/v1/levels", "/v1/programs", "/v1/badges"):
        assert API[path]["GET"].path == path

"""Every record decode_record accepts, PostgreSQL stores as jsonb just as it was sent (the scorer
keeps each applied record's value): what the validation lets through never wedges the scorer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.scorer.records import RecordError, decode_record
from tests.unit.test_records import JSON, event_like, to_json


class Store:
    """One connection on its own event loop, for sync Hypothesis tests."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(dsn))

    def takes(self, text: str) -> bool:
        try:
            self.loop.run_until_complete(self.conn.fetchval("SELECT CAST($1 AS text)::jsonb", text))
        except asyncpg.PostgresError:
            return False
        return True

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


@pytest.fixture(scope="module")
def store(run_env: dict[str, str]) -> Iterator[Store]:
    store = Store(run_env["CL_DATABASE_URL"].replace("+asyncpg", ""))
    yield store
    store.close()


def accepted(value: bytes) -> bool:
    try:
        decode_record(b"ann", value)
    except RecordError:
        return False
    return True


LIKE = '"event_id": "e-1", "type": "like", "member_id": "ann", "occurred_at": "2026-11-20T09:00:00Z", "content_id": "p"'


@pytest.mark.parametrize(
    "attributes",
    [
        r'{"k": "\u0000"}',
        r'{"\u0000": 1}',
        r'{"k": "\ud800"}',
        r'{"k": ["\udc00\ud800"]}',
        '{"k": 1e-20000}',
        '{"k": 0.' + "0" * 20000 + "1}",
        '{"k": 1.' + "0" * 20000 + "}",
        r'{"k": "\u0000", "k": ""}',
    ],
    ids=["nul", "nul-key", "lone-high", "reversed", "tiny", "long-fraction", "long-zeros", "hidden-duplicate"],
)
def test_what_jsonb_refuses_decode_record_refuses(store: Store, attributes: str) -> None:
    value = f'{{{LIKE}, "target_member_id": "bob", "attributes": {attributes}}}'
    assert not store.takes(value)  # the case is one PostgreSQL refuses
    assert not accepted(value.encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_like())
def test_what_decode_record_accepts_jsonb_stores(store: Store, raw: dict[str, Any]) -> None:
    text = to_json(raw)
    if accepted(text.encode()):
        assert store.takes(text), text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=5), JSON, max_size=4))
def test_any_attributes_decode_record_accepts_jsonb_stores(store: Store, attributes: dict[str, Any]) -> None:
    text = f'{{{LIKE}, "target_member_id": "bob", "attributes": {to_json(attributes)}}}'
    if accepted(text.encode()):
        assert store.takes(text), text

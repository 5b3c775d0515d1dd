"""`make test` beside a running `make run` (README): the session's services, topics, consumer
group, database and Redis keys are its own, never the defaults `make run` uses."""

from __future__ import annotations

import asyncio
import socket

import pytest
from sqlalchemy import make_url

from services.common.settings import Settings
from services.scorer.settings import ScorerSettings
from tests.conftest import DEFAULT_PORTS


@pytest.mark.parametrize("port", sorted(DEFAULT_PORTS))
async def test_no_test_can_listen_on_a_default_port(port: int) -> None:
    with socket.socket() as sock, pytest.raises(OSError, match="make run"):
        sock.bind(("127.0.0.1", port))
    with pytest.raises(OSError, match="make run"):
        await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)


def test_a_free_port_is_still_taken() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1] not in DEFAULT_PORTS


def test_the_session_names_no_database_topic_group_or_prefix_of_make_run(run_env: dict[str, str]) -> None:
    session = ScorerSettings.model_validate({k.removeprefix("CL_").lower(): v for k, v in run_env.items()})
    defaults = ScorerSettings()  # what `make run` uses
    for name in ("topic_activity", "topic_level_changes", "topic_dlq", "group_id"):
        assert getattr(session, name) != getattr(defaults, name), name
    assert not session.redis_prefix.startswith(defaults.redis_prefix)
    assert make_url(session.database_url).database != make_url(Settings().database_url).database

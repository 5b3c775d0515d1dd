"""How a failure to wait out is told from a record at fault (the scorer's, and the view
writer's), and how to wait."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

log = logging.getLogger("scorer")

# SQLSTATE classes a record itself causes: data exceptions (a character or number the store
# cannot hold), integrity violations, program limits (a value too large to index). Any other
# database failure (connection, serialization, deadlock, permissions) is the system's, and is
# retried rather than blamed on a record.
RECORD_SQLSTATES = {"22", "23", "54"}


class RecordRefused(Exception):
    """The rules in force refuse what a record asks (a badge award naming a badge they lack,
    or one earned by its criterion): the record's fault, dead-lettered with this reason."""


def transient(exc: BaseException) -> bool:
    """Worth waiting out: a store or the broker is away, busy or misconfigured, not a record at fault."""
    if isinstance(exc, DBAPIError):
        return not refused_record(exc)
    return isinstance(exc, OSError | TimeoutError | PoolTimeout | KafkaError | RedisError)


def refused_record(exc: BaseException) -> bool:
    """The store refused what a record carries: the one failure at apply time that is the
    record's fault. Any other error that is not transient comes from the scorer's own code
    (every record of that member would hit it): a code fault, which stops the partition."""
    if isinstance(exc, RecordRefused):
        return True
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    return str(getattr(exc.orig, "sqlstate", None) or "")[:2] in RECORD_SQLSTATES


async def retry(what: str, step: Callable[[], Awaitable[Any]], stopping: asyncio.Event, longest: timedelta) -> Any:
    """`step` until it succeeds; transient failures wait with backoff and jitter (up to
    `longest`), others raise, and so does the last failure once `stopping` is set."""

    def warn(state: Any) -> None:
        log.warning("could not %s, retrying in %.1fs: %r", what, state.upcoming_sleep, state.outcome.exception())

    retrying = AsyncRetrying(
        retry=retry_if_exception(transient),
        wait=wait_exponential_jitter(multiplier=0.2, max=longest.total_seconds()),
        stop=lambda _: stopping.is_set(),
        before_sleep=warn,
        reraise=True,
    )

    async def attempt() -> Any:  # tenacity takes a lambda for a plain function: await it here
        return await step()

    return await retrying(attempt)

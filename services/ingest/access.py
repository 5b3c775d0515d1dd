"""Who may post events, and how often."""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.ingest.errors import RateLimited, Unauthorized
from services.ingest.settings import IngestSettings, digest

log = logging.getLogger(__name__)

# A request waits for a rate check at most this long; Redis that does not answer by then is
# treated as away, and this process counts in memory instead.
REDIS_TIMEOUT_S = 0.25
# After Redis failed, this process counts in memory for this long before Redis is asked again,
# so an unreachable Redis costs one timeout a second, not one per request.
REDIS_PAUSE_S = 1.0

T = TypeVar("T")


class ApiKeys:
    def __init__(self, digests: frozenset[bytes]) -> None:
        self._digests = tuple(digests)

    def check(self, key: str | None) -> bytes:
        """The digest of a valid key (it names the caller), else Unauthorized."""
        if not key:
            raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
        given = digest(key)
        # Digests have one length, so compare_digest takes the same time whatever the key;
        # and every known key is compared, so the time does not tell which one matched.
        valid = False
        for known in self._digests:
            valid |= hmac.compare_digest(given, known)
        if not valid:
            raise Unauthorized("the API key is not valid")
        return given


class RateLimiter:
    """Moving windows (the `limits` library) over each API key's requests and events, and over
    failed authentications per key presented and per client address, counted in Redis so every
    copy of ingest shares one count.

    Redis is not what ingest exists for: while it does not answer, each process counts in its
    own memory (limits' MemoryStorage), with a warning in the log and `on_fallback` called for a
    metric. The Redis client is created on entry and closed on exit (the app's lifespan).
    """

    def __init__(self, settings: IngestSettings, on_fallback: Callable[[], None] = lambda: None) -> None:
        self._settings = settings
        self._requests: RateLimitItem = parse(settings.rate_limit)
        self._events: RateLimitItem = parse(settings.event_rate_limit)
        self._key_failures: RateLimitItem = parse(settings.auth_failure_limit)
        self._address_failures: RateLimitItem = parse(settings.auth_failure_address_limit)
        self._on_fallback = on_fallback
        self._redis_away_until = -math.inf
        self._pool: ConnectionPool | None = None
        self._redis: MovingWindowRateLimiter | None = None
        self._memory_storage: MemoryStorage | None = None
        self._memory: MovingWindowRateLimiter | None = None

    async def __aenter__(self) -> RateLimiter:
        # The pool is ours, so it is closed with the app; limits' client runs on it.
        self._pool = ConnectionPool.from_url(
            self._settings.redis_url,
            client_name="cl-ingest",
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            # redis-py retries a failed command up to 10 times by default; here a failure
            # should cost one timeout, then the count goes on in memory.
            retry=Retry(NoBackoff(), 0),
        )
        storage = RedisStorage(
            f"async+{self._settings.redis_url}",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=f"{self._settings.redis_prefix}ingest:rate",
            connection_pool=self._pool,  # type: ignore[arg-type]
        )
        self._redis = MovingWindowRateLimiter(storage)
        self._memory_storage = MemoryStorage()
        self._memory = MovingWindowRateLimiter(self._memory_storage)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._memory_storage is not None and self._memory_storage.timer is not None:
            self._memory_storage.timer.cancel()  # its expiry task, if one is pending
        self._redis = self._memory = self._memory_storage = None
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    async def take_request(self, caller: bytes) -> None:
        """Spend one request of the caller's rate, or raise RateLimited saying when to come back."""
        rate = self._settings.rate_limit
        await self._take(self._requests, ("requests", caller.hex()), 1, f"over the rate of {rate} for this API key")

    async def take_events(self, caller: bytes, count: int) -> None:
        """Spend `count` events of the caller's rate, or raise RateLimited (nothing is spent)."""
        rate = self._settings.event_rate_limit
        message = f"{count} events would pass the rate of {rate} events for this API key"
        await self._take(self._events, ("events", caller.hex()), count, message)

    async def failed_authentication(self, address: str, key: str | None) -> None:
        """Count a request whose key was missing or not valid, against the key presented (by its
        digest; no key at all is one more) and against the client address; RateLimited, rather
        than the 401, once either is past its bound.

        Only failures are counted, and only failures are refused: a valid key is never held back
        by anyone's failures, even when every client reaches ingest from one address (a proxy,
        Docker's published ports). What keeps keys from being guessed is their length (32
        characters outside local and test runs); these bounds tell a misconfigured or guessing
        client to back off, and the address's bound caps what one address makes Redis count."""
        presented = digest(key).hex()[:32] if key else "none"
        await self._take(
            self._address_failures,
            ("auth-failures-address", address),
            1,
            "too many failed authentications from this address",
        )
        await self._take(
            self._key_failures, ("auth-failures-key", presented), 1, "too many failed authentications with this key"
        )

    async def _take(self, item: RateLimitItem, ids: tuple[str, str], cost: int, message: str) -> None:
        if not await self._call(lambda limiter: limiter.hit(item, *ids, cost=cost)):
            raise RateLimited(message, await self._wait(item, ids))

    async def _wait(self, item: RateLimitItem, ids: tuple[str, str]) -> int:
        # The window frees room when its oldest entry leaves it; never 0, even with less than a
        # second to go.
        window = await self._call(lambda limiter: limiter.get_window_stats(item, *ids))
        return max(1, math.ceil(window.reset_time - time.time()))

    async def _call(self, use: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        """`use` on Redis, or on this process's memory while Redis is away."""
        if self._redis is None or self._memory is None:
            raise RuntimeError("the rate limiter is used outside the app's lifespan")
        if time.monotonic() >= self._redis_away_until:
            try:
                return await use(self._redis)
            except (StorageError, RedisError, OSError) as exc:
                cause = exc.storage_error if isinstance(exc, StorageError) else exc
                log.warning(
                    "Redis did not answer a rate check (%r): this process counts in memory for %g s",
                    cause,
                    REDIS_PAUSE_S,
                )
                self._redis_away_until = time.monotonic() + REDIS_PAUSE_S
        self._on_fallback()
        return await use(self._memory)

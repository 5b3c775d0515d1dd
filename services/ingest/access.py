"""Who may post events, and how often."""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Callable
from types import TracebackType

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.ingest.errors import RateLimited, Unauthorized
from services.ingest.settings import IngestSettings, digest

log = logging.getLogger(__name__)

# A request waits for the rate check at most this long; Redis that does not answer by then is
# treated as down (the request goes through unchecked).
REDIS_TIMEOUT_S = 0.25
# After Redis failed, requests go through unchecked for this long before Redis is asked again,
# so an unreachable Redis costs one timeout a second, not one per request.
REDIS_PAUSE_S = 1.0


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
    """Each API key's rate over a moving window, counted in Redis (the `limits` library), so
    every copy of ingest shares one count per key.

    Redis is not what ingest exists for: when it does not answer, requests go through
    unchecked (fail open), with a warning in the log and `on_unchecked` called for a metric.
    The Redis client is created on entry and closed on exit (the app's lifespan).
    """

    def __init__(
        self,
        settings: IngestSettings,
        on_unchecked: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._item: RateLimitItem = parse(settings.rate_limit)
        self._on_unchecked = on_unchecked
        self._clock = clock
        self._paused_until = -math.inf
        self._pool: ConnectionPool | None = None
        self._limiter: MovingWindowRateLimiter | None = None

    async def __aenter__(self) -> RateLimiter:
        # The pool is ours, so it is closed with the app; limits' client runs on it.
        self._pool = ConnectionPool.from_url(
            self._settings.redis_url,
            client_name="cl-ingest",
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            # redis-py retries a failed command up to 10 times by default; here a failure
            # should cost one timeout, then the request goes on unchecked.
            retry=Retry(NoBackoff(), 0),
        )
        storage = RedisStorage(
            f"async+{self._settings.redis_url}",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=f"{self._settings.redis_prefix}ingest:rate",
            connection_pool=self._pool,  # type: ignore[arg-type]
        )
        self._limiter = MovingWindowRateLimiter(storage)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._limiter = None
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    async def take(self, caller: bytes) -> None:
        """Spend one request of the caller's rate, or raise RateLimited saying when to come back."""
        limiter = self._limiter
        if limiter is None:
            raise RuntimeError("the rate limiter is used outside the app's lifespan")
        if self._clock() < self._paused_until:
            self._on_unchecked()
            return
        key = caller.hex()
        try:
            if await limiter.hit(self._item, key):
                return
            window = await limiter.get_window_stats(self._item, key)
        except (StorageError, RedisError, OSError) as exc:
            cause = exc.storage_error if isinstance(exc, StorageError) else exc
            log.warning(
                "Redis did not answer the rate check (%r): requests go through unchecked for %g s",
                cause,
                REDIS_PAUSE_S,
            )
            self._paused_until = self._clock() + REDIS_PAUSE_S
            self._on_unchecked()
            return
        # The window frees a request when its oldest one leaves it.
        wait = max(1, math.ceil(window.reset_time - time.time()))
        raise RateLimited(f"over the rate of {self._settings.rate_limit} for this API key", wait)

"""Who may post events, and how often."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable

from services.ingest.errors import RateLimited, Unauthorized
from services.ingest.settings import digest


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
    """A token bucket per API key. It lives in one process: N copies of ingest allow N times
    the rate, which is the price of keeping ingest stateless."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key digest -> (tokens, at)

    def take(self, caller: bytes) -> None:
        """Spend one request of the caller's rate, or raise RateLimited saying when to come back."""
        now = self._clock()
        tokens, at = self._buckets.get(caller, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1:
            self._buckets[caller] = (tokens, now)
            wait = math.ceil((1 - tokens) / self._rate)
            raise RateLimited(f"over the rate of {self._rate:g} requests a second for this API key", wait)
        self._buckets[caller] = (tokens - 1, now)

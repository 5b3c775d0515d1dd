"""One POST of a delivery, following the Standard Webhooks specification (SPEC §12): signed
with the `standardwebhooks` package, sent by an httpx client that follows no redirect and
connects only to allowed addresses, and what its answer makes of the delivery."""

from __future__ import annotations

import ssl
import typing
from collections.abc import Iterable
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

import httpcore
import httpx
from standardwebhooks.webhooks import Webhook
from tenacity import RetryCallState, wait_exponential_jitter

from services.common.addresses import AddressRefused, resolve

# Retried: the endpoint is down, busy or slow, and may not be later. Any other 4xx says the
# request itself is refused: recorded, not retried.
RETRIED_STATUSES = frozenset({408, 429})


class Refused(httpcore.ConnectError):
    """The address connected to is one a webhook may not reach (httpx raises its ConnectError
    from this)."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses a loopback, private or link-local address (unless
    allowed) and connects to the address it checked: what is checked is what is reached, so a
    name that resolves elsewhere between the check and the connect gets nowhere (DNS rebinding).
    TLS still verifies the host's name: httpcore starts it with the name, not the address."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port, self.allow_private)
        except AddressRefused as exc:
            raise Refused(str(exc)) from None
        return await self.backend.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("webhooks are not sent over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over `GuardedBackend`; no proxy (one would connect on our behalf)."""

    def __init__(self, allow_private: bool, max_connections: int) -> None:
        super().__init__()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30,
            network_backend=GuardedBackend(allow_private),
        )


def client(allow_private: bool, timeout: timedelta, max_connections: int = 100) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private, max_connections),
        follow_redirects=False,  # a redirect could lead anywhere: it is an answer, not followed
        timeout=timeout.total_seconds(),
        trust_env=False,  # no proxy or .netrc from the environment
        headers={"user-agent": "community-levels-webhooks/1"},
    )


def signed_headers(secrets: Iterable[str], event_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: one signature per secret (two while a rotated-out one
    still signs), so the receiver verifies with either."""
    signatures = " ".join(Webhook(secret).sign(event_id, at, body) for secret in secrets)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }


def outcome(status: int) -> str:
    """What an answer makes of a delivery: delivered (2xx), retry (5xx, 408, 429) or failed
    (any other: a 3xx is a redirect not followed, a 4xx a refusal)."""
    if 200 <= status < 300:
        return "delivered"
    if status >= 500 or status in RETRIED_STATUSES:
        return "retry"
    return "failed"


def backoff(attempt: int, first: timedelta, longest: timedelta) -> timedelta:
    """The wait before the next try after `attempt` failed tries: exponential, with jitter, at
    most `longest` (tenacity's strategy, fed the attempt number that PostgreSQL keeps)."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # only the attempt number is read
    state.attempt_number = attempt
    wait = wait_exponential_jitter(
        initial=first.total_seconds(), max=longest.total_seconds(), jitter=first.total_seconds()
    )
    return timedelta(seconds=wait(state))


def next_wait(attempts: int, asked: timedelta | None, first: timedelta, longest: timedelta) -> timedelta:
    """How long a delivery waits after its `attempts`-th failed try: the backoff, or longer if
    the endpoint asked for longer (`Retry-After`), never more than `longest`."""
    pause = backoff(attempts, first, longest)
    return min(max(pause, asked or pause), longest)


def retry_after(response: httpx.Response, now: datetime) -> timedelta | None:
    """The wait a 429 or 503 asks for (Retry-After: seconds or a date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return timedelta(seconds=max(0.0, float(value)))
    except ValueError:
        pass
    try:
        return max(timedelta(0), parsedate_to_datetime(value) - now)
    except (TypeError, ValueError):
        return None

"""Which addresses a webhook may reach (SPEC §12): none on the loopback, private, link-local
or otherwise special networks, unless the operator allows them (CL_WEBHOOK_ALLOW_PRIVATE).

`cl webhook add` checks what a URL's host resolves to; the dispatcher checks again each
address it connects to (`services.webhooks.delivery`), so a name that resolves elsewhere later
(DNS rebinding) is refused all the same.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class AddressRefused(Exception):
    """A webhook's host is, or resolves to, an address it may not reach."""


def why_refused(address: str) -> str | None:
    """Why an IP address may not be reached ("a loopback address", "a private address"…), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is no part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is the loopback
    # The narrower kinds first: Python counts link-local and loopback networks as private too.
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind.replace('_', '-')} address"
    if not ip.is_global:
        return "not a public address"
    return None


async def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses `host` resolves to, every one allowed; AddressRefused names the first that is
    not (or says the name does not resolve)."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressRefused(f"{host} does not resolve: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))
    if not allow_private:
        for address in addresses:
            if why := why_refused(address):
                named = f"{address} is" if host.strip("[]") == address else f"{host} resolves to {address},"
                raise AddressRefused(f"{named} {why}: webhooks may not reach it unless CL_WEBHOOK_ALLOW_PRIVATE is set")
    return addresses


def check_url(url: str) -> tuple[str, int]:
    """The host and port of a webhook URL; ValueError says what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: a webhook URL starts with https:// (or http://)")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    if parts.username or parts.password:
        raise ValueError(f"{url!r}: no credentials in the URL; the signature authenticates each request")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)

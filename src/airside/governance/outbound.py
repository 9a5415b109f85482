"""Where Airside may connect on its own: the URLs an administrator gives it (webhook
destinations, camera streams) may not point back at this machine or at addresses no
outside service lives on, so that a URL cannot be used to reach what only this machine can
(server-side request forgery): loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16,
where clouds serve their instance metadata at 169.254.169.254; fe80::/10), the unspecified
address (0.0.0.0, ::), multicast and reserved ranges.

The host name is resolved and every address it resolves to is checked (a name that
resolves to one good and one bad address is refused). A name that does not resolve now is
let through at configuration time (the network may be down); the webhook deliverer checks
again before every delivery (a name re-pointed after it was added: DNS rebinding).

``allow_private_urls`` lifts the rule; ``outbound_allow`` lists host names and CIDRs
allowed despite it (e.g. a receiver on this machine: ``127.0.0.1/32``)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from airside.config import Settings
from airside.errors import AirsideError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


def forbidden(address: Address) -> str | None:
    """Why connecting to ``address`` is refused, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "this machine (loopback)"
    if address.is_link_local:
        return "a link-local address (cloud instance metadata lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    return None


def _allowed(settings: Settings, host: str, address: Address | None) -> bool:
    for item in (p.strip() for p in settings.outbound_allow.split(",")):
        if not item:
            continue
        if item.lower() == host.lower():
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(item, strict=False):
                    return True
            except ValueError:
                continue
    return False


def check_url(
    settings: Settings, url: str, *, field: str = "url", resolver: Resolver | None = None
) -> None:
    """Raise ``url_not_allowed`` unless Airside may connect to ``url``'s host."""
    if settings.allow_private_urls:
        return
    host = urlsplit(url.strip()).hostname
    if not host:
        return  # not a URL with a host (a file, camera:0): nothing to connect to
    try:
        literal: Address | None = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = None
    addresses = [str(literal)] if literal is not None else (resolver or resolve)(host)
    if host.lower() in ("localhost", "localhost.localdomain") and not addresses:
        addresses = ["127.0.0.1"]
    for text in addresses:
        address = ipaddress.ip_address(text)
        why = forbidden(address)
        if why is not None and not _allowed(settings, host, address):
            shown = host if str(address) == host else f"{host} ({address})"
            raise AirsideError(
                f"the URL points at {shown}, {why}: Airside does not connect there unless an "
                "administrator allows it (AIRSIDE_OUTBOUND_ALLOW=<host or CIDR>, or "
                "AIRSIDE_ALLOW_PRIVATE_URLS=true)",
                code="url_not_allowed",
                details={"field": field},
            )

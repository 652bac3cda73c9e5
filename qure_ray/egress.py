"""Where the platform may send requests a partner asked for (webhook URLs).

A webhook URL is the partner's choice. Without a policy it could make the platform POST to services only the
platform can reach: its own loopback ports, the cloud's metadata endpoint (169.254.169.254), hosts on the
cluster's private network (server-side request forgery). So a webhook may reach public addresses only, plus
the networks the operator lists in QURE_WEBHOOK_ALLOWED_NETWORKS (e.g. a hospital LAN, `10.20.0.0/16`).

Both registration and every delivery attempt resolve the host and check every address it resolves to, so a
name that later points inside is refused then. (The HTTP client resolves once more when it connects; a DNS
server that answers differently within those milliseconds is not covered.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from qure_ray.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(setting: str, text: str) -> tuple[IPNetwork, ...]:
    """`10.20.0.0/16,127.0.0.1/32,fd00::/8` → networks; a bad entry is a ConfigError naming `setting`."""
    networks = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{setting}: {entry!r} is not a network such as 10.20.0.0/16 ({exc})") from exc
    return tuple(networks)


def refused_address(addresses: Iterable[str], allowed: Sequence[IPNetwork]) -> str | None:
    """The first address a request may not go to, or None when all may be reached."""
    for text in addresses:
        address: IPAddress = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global and not any(address in network for network in allowed):
            return str(address)
    return None


class EgressRefused(Exception):
    """The URL's host is not one the platform may call; the message says why."""


async def check_url(url: str, allowed: Sequence[IPNetwork]) -> None:
    """Resolve `url`'s host and raise EgressRefused unless every address it has may be reached."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise EgressRefused(f"{url[:100]!r} names no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise EgressRefused(f"host {host!r} does not resolve ({exc})") from exc
    refused = refused_address([str(info[4][0]) for info in infos], allowed)
    if refused is not None:
        raise EgressRefused(
            f"host {host!r} is {refused}, a loopback, private, link-local or reserved address; the operator "
            "can allow its network with QURE_WEBHOOK_ALLOWED_NETWORKS"
        )

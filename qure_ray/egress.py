"""Where the platform may send requests a partner asked for (webhook URLs).

A webhook URL is the partner's choice. Without a policy it could make the platform POST to services only the
platform can reach: its own loopback ports, the cloud's metadata endpoint (169.254.169.254), hosts on the
cluster's private network (server-side request forgery). So a webhook may reach public addresses only, plus
the networks the operator lists in QURE_WEBHOOK_ALLOWED_NETWORKS (e.g. a hospital LAN, `10.20.0.0/16`).

Registration resolves the host and checks every address it resolves to. Every delivery connects through
`CheckedNetworkBackend`, which resolves the host once, checks every address, and connects to those very
addresses: a name that later points inside is refused then, and a DNS server that answers one way to the
check and another to the connect (DNS rebinding) has no second question to answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from urllib.parse import urlsplit

import httpcore
import httpx

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


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: where the IPv4 address sits varies by prefix
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64, SIIT, IPv4-compatible; "::" and "::1" are
    not IPv4): on a network that translates them, such an address reaches that IPv4 host, a private one too."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or address in IPV4_TRANSLATED or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_address(text: str) -> IPAddress:
    """An address as a socket or resolver gives it, without an IPv6 zone ("fe80::1%eth0"); ValueError if none."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def refused_address(addresses: Iterable[str], allowed: Sequence[IPNetwork]) -> str | None:
    """The first address a request may not go to, or None when all may be reached."""
    for text in addresses:
        address = parse_address(text)
        embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        reached = embedded or address  # an IPv6 form of an IPv4 address reaches that IPv4 host
        public = reached.is_global and reached not in LOCAL_NAT64
        if not public and not any(reached in network for network in allowed):
            return str(address)
    return None


class EgressRefused(Exception):
    """The URL's host is not one the platform may call; the message says why."""


async def check_url(url: str, allowed: Sequence[IPNetwork]) -> None:
    """Resolve `url`'s host and raise EgressRefused unless every address it has may be reached."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket
        raise EgressRefused(f"{url[:100]!r} is not a URL ({exc})") from exc
    host = parts.hostname
    if not host:
        raise EgressRefused(f"{url[:100]!r} names no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a port out of range
        raise EgressRefused(f"{url[:100]!r} has no valid port ({exc})") from exc
    await reachable_addresses(host, port, allowed)


async def reachable_addresses(host: str, port: int, allowed: Sequence[IPNetwork]) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order; EgressRefused unless every one may be reached."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode (an empty or long label)
        raise EgressRefused(f"host {host!r} does not resolve ({exc})") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if refused_address(addresses, allowed) is not None:
        # not which address: a partner must not learn how the platform's network resolves its names
        raise EgressRefused(
            f"host {host!r} resolves to a loopback, private, link-local or reserved address; the operator can "
            "allow its network with QURE_WEBHOOK_ALLOWED_NETWORKS"
        )
    return addresses


class CheckedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's connections, each to an address checked in the same step that resolved it.

    TLS still verifies the URL's host name: httpcore gives the origin's name, not the address, as the server
    name. Addresses are tried in the resolver's order, as a plain client would, each with its share of the
    connect timeout, so an address that drops packets (an IPv6 route that goes nowhere) leaves time for the next."""

    def __init__(self, allowed: Sequence[IPNetwork], connect: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allowed = allowed
        self._connect = connect or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await reachable_addresses(host, port, self.allowed)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"host {host!r} did not resolve within {timeout:g} s") from exc
        each = timeout / max(1, len(addresses)) if timeout is not None else None
        failure: Exception = EgressRefused(f"host {host!r} resolves to no address")
        for address in addresses:
            try:
                return await self._connect.connect_tcp(address, port, each, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:  # the next address may answer
                failure = exc
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("a webhook cannot reach a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._connect.sleep(seconds)


def checked_client(allowed: Sequence[IPNetwork], *, timeout_s: float, max_connections: int) -> httpx.AsyncClient:
    """An HTTP client for partners' URLs: every connection goes only to an address the egress policy allows,
    checked as it is resolved (`CheckedNetworkBackend`). No redirects are followed and no proxy is taken from
    the environment (a proxy would resolve the host itself, past the check). httpx still reads the URL (IDNA
    names, bracketed IPv6 hosts, credentials in it) and writes the request."""
    pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=max_connections,
        max_keepalive_connections=min(max_connections, 20),
        keepalive_expiry=5.0,
        network_backend=CheckedNetworkBackend(allowed),
    )
    return httpx.AsyncClient(transport=_PoolTransport(pool), timeout=timeout_s, follow_redirects=False, trust_env=False)


class _PoolTransport(httpx.AsyncBaseTransport):
    """httpx over an httpcore pool of one's own making: httpx's transport does not take a network backend."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self.pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        response = await self.pool.handle_async_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()

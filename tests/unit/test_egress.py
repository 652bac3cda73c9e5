from __future__ import annotations

import asyncio
from typing import Any

import httpcore
import pytest

from qure_ray import egress
from qure_ray.egress import CheckedNetworkBackend, EgressRefused, check_url, parse_networks, refused_address
from qure_ray.errors import ConfigError

INSIDE = [
    "127.0.0.1", "169.254.169.254", "10.1.2.3", "172.16.0.9", "192.168.1.1", "100.64.0.1", "0.0.0.0",
    "::1", "fe80::1%eth0", "fd00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    # IPv4 inside IPv6 (NAT64, 6to4, IPv4-compatible, SIIT): on a translating network they reach that host
    "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "::127.0.0.1", "::ffff:0:7f00:1", "64:ff9b:1::a9fe:a9fe",
]  # fmt: skip


@pytest.mark.parametrize("address", INSIDE)
def test_loopback_private_link_local_and_reserved_addresses_are_refused(address: str) -> None:
    assert refused_address([address], ()) is not None


def test_public_addresses_pass_and_one_inside_address_refuses_the_host() -> None:
    assert refused_address(["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"], ()) is None
    assert refused_address(["8.8.8.8", "10.0.0.7"], ()) == "10.0.0.7"


def test_listed_networks_are_allowed_and_nothing_beside_them() -> None:
    allowed = parse_networks("QURE_WEBHOOK_ALLOWED_NETWORKS", " 10.20.0.0/16 , 127.0.0.1/32,fd00::/8")
    assert refused_address(["10.20.3.4", "127.0.0.1", "fd00::5", "::ffff:10.20.0.1"], allowed) is None
    assert refused_address(["10.21.0.1"], allowed) == "10.21.0.1"
    assert refused_address(["127.0.0.2"], allowed) == "127.0.0.2"


def test_a_bad_network_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"QURE_WEBHOOK_ALLOWED_NETWORKS: '10\.0\.0\.0/33'"):
        parse_networks("QURE_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8,10.0.0.0/33")


def test_check_url_resolves_the_host_and_says_why_it_refuses() -> None:
    with pytest.raises(
        EgressRefused, match=r"'localhost' resolves to a loopback.*QURE_WEBHOOK_ALLOWED_NETWORKS"
    ) as info:
        asyncio.run(check_url("http://localhost:9000/hook", ()))
    assert "127.0.0.1" not in str(info.value)  # how the platform resolves names is not the partner's business
    with pytest.raises(EgressRefused, match="no valid port"):
        asyncio.run(check_url("http://example.org:99999/hook", ()))
    with pytest.raises(EgressRefused, match=r"169\.254\.169\.254"):
        asyncio.run(check_url("http://169.254.169.254/latest/meta-data/", ()))
    with pytest.raises(EgressRefused, match="does not resolve"):
        asyncio.run(check_url("https://no-such-host.invalid/hook", ()))
    asyncio.run(check_url("http://localhost:9000/hook", parse_networks("X", "127.0.0.0/8")))
    asyncio.run(check_url("https://[2606:4700:4700::1111]/hook", ()))  # a public literal needs no DNS


class Dialer(httpcore.AsyncNetworkBackend):
    """Stands in for the network: `silent` addresses time out; every dial is noted with its timeout."""

    def __init__(self, silent: set[str]) -> None:
        self.silent = silent
        self.dialed: list[tuple[str, float | None]] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, *args: Any) -> Any:
        self.dialed.append((host, timeout))
        if host in self.silent:
            raise httpcore.ConnectTimeout(f"{host} did not answer")
        return f"stream to {host}"


def test_a_connection_tries_the_next_checked_address_when_one_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dual-stack partner whose IPv6 route drops packets is still reached over IPv4, within the timeout."""

    async def resolved(host: str, port: int, allowed: object) -> list[str]:
        return ["2606:4700::1", "1.1.1.1"]

    monkeypatch.setattr(egress, "reachable_addresses", resolved)
    dialer = Dialer(silent={"2606:4700::1"})
    backend = CheckedNetworkBackend((), connect=dialer)
    assert asyncio.run(backend.connect_tcp("partner.example", 443, timeout=10.0)) == "stream to 1.1.1.1"
    assert dialer.dialed == [("2606:4700::1", 5.0), ("1.1.1.1", 5.0)]  # the connect timeout shared

    dialer.silent.add("1.1.1.1")
    with pytest.raises(httpcore.ConnectTimeout, match=r"1\.1\.1\.1"):
        asyncio.run(backend.connect_tcp("partner.example", 443, timeout=10.0))


def test_a_name_that_does_not_resolve_in_time_is_a_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def slow(host: str, port: int, allowed: object) -> list[str]:
        await asyncio.sleep(5)
        return ["1.1.1.1"]

    monkeypatch.setattr(egress, "reachable_addresses", slow)
    backend = CheckedNetworkBackend((), connect=Dialer(silent=set()))
    with pytest.raises(httpcore.ConnectTimeout, match=r"did not resolve within 0\.1 s"):
        asyncio.run(backend.connect_tcp("partner.example", 443, timeout=0.1))


def test_a_name_that_resolves_to_nothing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing(host: str, port: int, allowed: object) -> list[str]:
        return []

    monkeypatch.setattr(egress, "reachable_addresses", nothing)
    backend = CheckedNetworkBackend((), connect=Dialer(silent=set()))
    with pytest.raises(EgressRefused, match="resolves to no address"):
        asyncio.run(backend.connect_tcp("partner.example", 443, timeout=10.0))

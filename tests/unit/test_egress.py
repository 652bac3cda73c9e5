from __future__ import annotations

import asyncio

import pytest

from qure_ray.egress import EgressRefused, check_url, parse_networks, refused_address
from qure_ray.errors import ConfigError

INSIDE = [
    "127.0.0.1", "169.254.169.254", "10.1.2.3", "172.16.0.9", "192.168.1.1", "100.64.0.1", "0.0.0.0",
    "::1", "fe80::1%eth0", "fd00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
]  # fmt: skip


@pytest.mark.parametrize("address", INSIDE)
def test_loopback_private_link_local_and_reserved_addresses_are_refused(address: str) -> None:
    assert refused_address([address], ()) is not None


def test_public_addresses_pass_and_one_inside_address_refuses_the_host() -> None:
    assert refused_address(["8.8.8.8", "2606:4700:4700::1111"], ()) is None
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
    with pytest.raises(EgressRefused, match=r"'localhost' is 127\.0\.0\.1.*QURE_WEBHOOK_ALLOWED_NETWORKS"):
        asyncio.run(check_url("http://localhost:9000/hook", ()))
    with pytest.raises(EgressRefused, match=r"169\.254\.169\.254"):
        asyncio.run(check_url("http://169.254.169.254/latest/meta-data/", ()))
    with pytest.raises(EgressRefused, match="does not resolve"):
        asyncio.run(check_url("https://no-such-host.invalid/hook", ()))
    asyncio.run(check_url("http://localhost:9000/hook", parse_networks("X", "127.0.0.0/8")))
    asyncio.run(check_url("https://[2606:4700:4700::1111]/hook", ()))  # a public literal needs no DNS

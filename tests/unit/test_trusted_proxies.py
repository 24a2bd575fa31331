"""Whose client address a service believes: only a trusted proxy's, given as addresses or
networks (compose gives the edge a fixed address; a cluster may trust its pod network)."""

from __future__ import annotations

import pytest

from gateway.config import EdgeSettings
from services.common.rate_limit import CLIENT_ADDRESS_HEADER, forwarded_address, trusted_proxies

SENT = [(CLIENT_ADDRESS_HEADER, "203.0.113.9")]


def test_an_address_or_a_network_is_trusted_and_nothing_else() -> None:
    trusted = trusted_proxies(" 172.30.0.10 , 10.1.0.0/16,::1")
    assert forwarded_address("ipv4:172.30.0.10:40112", SENT, trusted) == "203.0.113.9"
    assert forwarded_address("ipv4:10.1.200.3:5000", SENT, trusted) == "203.0.113.9"
    assert forwarded_address("ipv6:[::1]:5000", SENT, trusted) == "203.0.113.9"
    assert forwarded_address("ipv4:172.30.0.11:40112", SENT, trusted) is None
    assert forwarded_address("ipv4:10.2.0.1:5000", SENT, trusted) is None
    assert forwarded_address("unix:/tmp/socket", SENT, trusted) is None
    assert forwarded_address("ipv4:172.30.0.10:1", [], trusted) is None


def test_nobody_is_trusted_by_default() -> None:
    assert forwarded_address("ipv4:127.0.0.1:1", SENT, trusted_proxies("")) is None


def test_a_bad_entry_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="not an address or network"):
        trusted_proxies("edge.internal")


def test_the_edges_quota_keys_belong_to_its_deployment() -> None:
    assert EdgeSettings(deployment="laptop-a1").edge_rate_limit_prefix() == "laptop-a1:edge-rate"
    explicit = EdgeSettings(deployment="x", edge_rate_limit_key_prefix="custom")
    assert explicit.edge_rate_limit_prefix() == "custom"

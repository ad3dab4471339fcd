"""The loopback-only guard the whole suite runs under: it must really refuse the outside world."""

from __future__ import annotations

import socket

import pytest

from hfsoup.testing import netguard


@pytest.fixture
def forget_blocked():
    before = len(netguard.BLOCKED)
    yield
    del netguard.BLOCKED[before:]  # these attempts were deliberate; they must not fail the session


@pytest.mark.parametrize("address", [("10.255.255.1", 443), ("8.8.8.8", 53), ("2001:4860:4860::8888", 443)])
def test_connection_off_loopback_is_refused(address, forget_blocked):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(netguard.OffLoopbackConnectionError):
        sock.connect(address)
    assert netguard.BLOCKED[-1][0] == address[0]


def test_dns_lookup_of_a_public_host_is_refused(forget_blocked):
    with pytest.raises(netguard.OffLoopbackConnectionError):
        socket.getaddrinfo("huggingface.co", 443)


def test_loopback_is_allowed():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    assert socket.getaddrinfo("localhost", 80)

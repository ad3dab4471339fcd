"""Refuse every network connection that does not stay on loopback.

The test suite installs this for the whole session so that a client which ignores `HF_ENDPOINT` (download counters,
telemetry, a parquet-export lookup) fails loudly instead of silently reaching, or waiting for, the internet.
"""

from __future__ import annotations

import ipaddress
import socket

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}

#: Every (host, port) a guarded process tried to reach outside loopback, in order.
BLOCKED: list[tuple[str, object]] = []

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex
_original_getaddrinfo = socket.getaddrinfo


class OffLoopbackConnectionError(ConnectionRefusedError):
    """Raised instead of opening a connection to a host that is not loopback."""


def _is_loopback(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _check(sock: socket.socket, address: object) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets and the like never leave the machine.
    host = address[0] if isinstance(address, tuple) else address
    if not _is_loopback(host):
        BLOCKED.append((str(host), address[1] if isinstance(address, tuple) and len(address) > 1 else None))
        raise OffLoopbackConnectionError(f"hfsoup network guard: refused a connection to {address!r} (not loopback)")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    return _original_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _original_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):  # noqa: ANN001 - the signature of socket.getaddrinfo
    # A DNS lookup of a public name is already traffic off the machine.
    if not _is_loopback(host):
        BLOCKED.append((str(host), args[0] if args else None))
        raise OffLoopbackConnectionError(f"hfsoup network guard: refused to resolve {host!r} (not loopback)")
    return _original_getaddrinfo(host, *args, **kwargs)


def install() -> None:
    """Guard every new connection in this process."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo


def uninstall() -> None:
    socket.socket.connect = _original_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _original_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _original_getaddrinfo

"""The connection of one call to tke-ipamd: a unix socket or TCP (TLS on top of it is `tls`).
Connecting ends by the call's deadline; every later send and receive is bounded by h2.

It uses `_socket`, the C module behind socket.py, which would import enum and selectors for
nothing used here. Failures are `h2.Unreachable`, each saying which address failed and why.
"""

from __future__ import annotations

import _socket  # socket.py would import enum and selectors

from tke.internal.cni.h2 import Unreachable, remaining

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Stream(Protocol):
        """What h2 needs of a connection (a `_socket.socket` is one)."""

        def sendall(self, data: bytes, /) -> None: ...
        def recv(self, size: int, /) -> bytes: ...
        def settimeout(self, timeout: float | None, /) -> None: ...
        def close(self) -> None: ...


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"; ValueError when it is neither."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return _socket.inet_pton(_socket.AF_INET, host)[0] == 127
    except OSError:
        pass
    try:
        return _socket.inet_pton(_socket.AF_INET6, host) == bytes(15) + b"\x01"
    except OSError:
        return False


def dial_unix(path: str, deadline: float) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(remaining(deadline))
        sock.connect(path)
    except TimeoutError:
        sock.close()
        raise Unreachable(f"{path}: deadline exceeded while connecting") from None
    except OSError as err:
        sock.close()
        raise Unreachable(f"{path}: {err.strerror or err}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def dial_tcp(address: str, deadline: float) -> _socket.socket:
    """A connected TCP socket to `address` (host:port; every address the name resolves to is
    tried in turn). Name resolution itself is not bounded by the deadline: give an address."""
    host, port = split_address(address)
    try:
        candidates = _socket.getaddrinfo(host, port, _socket.AF_UNSPEC, _socket.SOCK_STREAM)
    except OSError as err:
        raise Unreachable(f"{host}: {err.strerror or err}") from None
    failure = "no address"
    for family, kind, proto, _, target in candidates:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining(deadline))
            sock.connect(target)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        except TimeoutError:
            sock.close()
            raise Unreachable(f"{address}: deadline exceeded while connecting") from None
        except OSError as err:
            sock.close()
            failure = err.strerror or str(err)
        except BaseException:
            sock.close()
            raise
    raise Unreachable(f"{address}: {failure}")

"""Free TCP ports for servers the tests start as processes, which must be told their port.

A port found free may be taken before the server binds it. That is unlikely here because
ports come from below the kernel's ephemeral range (which every outgoing connection on the
machine draws from, so a port the kernel picked for `bind(0)` may next serve a client), at
random (so suites running at the same time rarely pick the same one), and never twice in
one process (so a test's two servers never get one port)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def _below_ephemeral() -> range:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return range(10000, max(low, 20000))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing on `host` listens on or is bound to, not handed out before."""
    candidates = _below_ephemeral()
    for _ in range(200):
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {host} in {candidates}")


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive free ports, none handed out before (all are handed out
    now): for a server that binds several, such as the metrics ports of `tke-apiserver --workers`."""
    candidates = _below_ephemeral()
    for _ in range(200):
        first = random.choice(candidates[: len(candidates) - count])
        ports = range(first, first + count)
        if any(p in _handed_out for p in ports):
            continue
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        _handed_out.update(ports)
        return first
    raise RuntimeError(f"no {count} consecutive free ports on {host} in {candidates}")

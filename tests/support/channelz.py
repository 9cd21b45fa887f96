"""What gRPC core knows about this process's client channels (channelz), for tests that must see
the connections under a channel: each member's subchannel, its state, its sockets, and how many
keepalive pings each socket sent.

grpcio keeps channelz on by default; its query functions live in grpc's Cython module (the
grpcio-channelz service only serves the same data over gRPC), so this reads them directly."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# grpc ships no types for its Cython module.
cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")


@dataclass(frozen=True)
class Socket:
    """One transport (an HTTP/2 connection) of a subchannel."""

    socket_id: int
    keepalives_sent: int
    streams_started: int


@dataclass(frozen=True)
class Subchannel:
    """The channel's connection to one address: `target` is `ipv4:host:port` (or the host:port
    given), `state` a connectivity state's name (READY, CONNECTING, ...)."""

    target: str
    state: str
    sockets: tuple[Socket, ...]


def _get(fn: Callable[[int], bytes], ident: int, key: str) -> dict[str, Any]:
    return dict(json.loads(fn(ident)).get(key, {}))


def _socket(socket_id: int) -> Socket:
    data = _get(cygrpc.channelz_get_socket, socket_id, "socket").get("data", {})
    return Socket(
        socket_id=socket_id,
        keepalives_sent=int(data.get("keepAlivesSent", 0)),
        streams_started=int(data.get("streamsStarted", 0)),
    )


def subchannels_of(target: str) -> list[Subchannel]:
    """The subchannels of every top channel of this process whose target is `target` (as passed
    to grpc)."""
    found: list[Subchannel] = []
    start = 0
    while True:
        page = json.loads(cygrpc.channelz_get_top_channels(start))
        channels = page.get("channel", [])
        for channel in channels:
            start = max(start, int(channel["ref"]["channelId"]) + 1)
            # grpc names a bare host:port by its default scheme (dns:///host:port).
            if channel.get("data", {}).get("target") not in (target, f"dns:///{target}"):
                continue
            for ref in channel.get("subchannelRef", []):
                sub = _get(cygrpc.channelz_get_subchannel, int(ref["subchannelId"]), "subchannel")
                data = sub.get("data", {})
                found.append(
                    Subchannel(
                        target=str(data.get("target", "")),
                        state=str(data.get("state", {}).get("state", "")),
                        sockets=tuple(_socket(int(s["socketId"])) for s in sub.get("socketRef", [])),
                    )
                )
        if page.get("end", True) or not channels:
            return found


def sockets_of(target: str) -> list[Socket]:
    """The open sockets of the channels to `target`, over all their subchannels."""
    return [s for sub in subchannels_of(target) for s in sub.sockets]

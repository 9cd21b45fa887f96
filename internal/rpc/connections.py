"""What a server's listeners let callers hold before any call is authenticated: connections,
calls in progress, and the time a connection may sit before it is useful or after.

The in-flight limits (tke.internal.rpc.inflight) count calls whose request has arrived. Below
them grpc keeps state for every HTTP/2 stream a client opens, from its headers on, and for every
TCP connection, before anyone knows who the client is. Unbounded, one unauthenticated client
grows the process without end (10,000 streams that send their headers and never their message
took a bare grpc.aio server from 36 to 242 MiB, with 60 KB of the message each to 771 MiB), and
connections up to the open-file limit leave the process unable to open a file, reconnect to
etcd or rotate its logs. So every listener has:

- `max_connections`: connections one listener holds at once (grpc's
  `grpc.max_allowed_incoming_connections`, counted per listener: a TCP flood never takes the
  unix socket's). Beyond, a new connection is closed at once (the client sees UNAVAILABLE and
  retries). It is kept below the process's open-file limit (raised to its hard limit at start):
  see `fitted`; unset, it is 10,000 or what that limit allows. An idle connection costs ~14.5 KB.
- `max_streams`: calls in progress in the server at once, of every kind (unary calls waiting
  for their request, watches, health checks; grpc's `maximum_concurrent_rpcs`). Beyond, a call
  is refused at once by grpc with RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!". Set it
  above everything the other limits admit together, so that it only ever refuses what they
  cannot see (streams that never send their request). A stream costs the apiserver ~22 KB:
  with 10,000, 200,000 streams that never sent their request left it at 330 MiB (without the
  cap, 100,000 took it from 73 to 823 MiB, growing with every stream).
- `max_streams_per_connection`: streams one connection may have open at once (HTTP/2's
  SETTINGS_MAX_CONCURRENT_STREAMS, grpc's `grpc.max_concurrent_streams`; unset, grpc allows any
  number). Beyond, grpc's C core refuses the stream with RST_STREAM REFUSED_STREAM, and its
  overload protection counts a stream its client reset until it is freed: so a client that opens
  and resets streams in a loop (HTTP/2 rapid reset, CVE-2023-44487) is refused by grpc instead of
  making the server start a call for each (one connection took the apiserver from 2 to 140% CPU,
  another tenant's Get from 2 to 358 ms; with 250: 37% and 3 ms). It also bounds what one
  connection's oversized header blocks hold: grpc keeps each block it will refuse (1 MiB blocks:
  +193 MiB with 100, +356 MiB with 250, +1.3 GiB with 1,000, without a cap +3 GiB in 8 s and
  growing). grpc clients queue calls beyond it; one that keeps about this many open on one
  connection may see a rare UNAVAILABLE. 250 is Go's HTTP/2 default.
- `handshake_timeout`: seconds a new connection has to finish its TLS and HTTP/2 handshake
  (grpc's default is 120), so that connections that say nothing free their place.
- `connection_idle_timeout`: seconds a connection with no call in progress is kept (then closed
  with a GOAWAY: grpc clients reconnect on their next call without an error); 0 keeps it.

What stays: a client that opens `max_connections` connections, or `max_streams` streams, denies
the listener to others while it holds them (memory stays bounded). Limits per client address
belong in front of the server (a load balancer, a firewall), which sees addresses grpc hides.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

# Open files a process keeps for itself beside its connections: etcd channels, log and audit
# files, the metrics listener and its connections (tke.internal.metrics.MAX_CONNECTIONS), grpc's own descriptors.
RESERVED_FILES = 256
# A process of the platform has at most two listeners (TCP and a unix socket), which share its
# open-file limit.
LISTENERS_PER_PROCESS = 2
DEFAULT_CONNECTIONS = 10_000
DEFAULT_STREAMS_PER_CONNECTION = 250


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int | None = None  # None: DEFAULT_CONNECTIONS, or what the open-file limit allows
    max_streams: int = 10_000
    handshake_timeout: float = 20.0
    connection_idle_timeout: float = 600.0
    max_streams_per_connection: int = DEFAULT_STREAMS_PER_CONNECTION

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if self.max_streams_per_connection < 1:
            raise ValueError("max_streams_per_connection must be at least 1")
        if self.handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be more than 0 seconds")
        if self.connection_idle_timeout < 0:
            raise ValueError("connection_idle_timeout must be 0 (keep idle connections) or more seconds")

    def contain(self, admitted: int, limits: str) -> None:
        """Check that `max_streams` is above the calls the server's other limits (`limits`,
        named for the message) admit together (`admitted`), so that it refuses only streams they
        never see."""
        if self.max_streams <= admitted:
            raise ValueError(
                f"max_streams ({self.max_streams}) must be more than {limits} together ({admitted}), "
                "which it contains, with room for watches"
            )

    def options(self) -> list[tuple[str, Any]]:
        """grpc's server options for these limits (maximum_concurrent_rpcs is an argument of its
        own: `max_streams`)."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_allowed_incoming_connections", self.max_connections or DEFAULT_CONNECTIONS),
            ("grpc.server_handshake_timeout_ms", int(self.handshake_timeout * 1000)),
            # SETTINGS_MAX_CONCURRENT_STREAMS; grpc's overload protection (on by default) counts
            # a stream its client reset until grpc has freed it.
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
        ]
        if self.connection_idle_timeout:
            options.append(("grpc.max_connection_idle_ms", int(self.connection_idle_timeout * 1000)))
        return options

    def fitted(self, open_files: int | None = None) -> ConnectionLimits:
        """These limits with `max_connections` set, lowered where needed so that the process's
        listeners together stay `RESERVED_FILES` below its open-file limit (`open_files`, or the
        process's own, its soft limit raised to the hard one first, as Go programs such as etcd
        do). Lowering a configured value is logged: the operator raises the limit (systemd's
        LimitNOFILE) or the option."""
        files = open_files if open_files is not None else raise_open_file_limit()
        fit = max(1, (files - RESERVED_FILES) // LISTENERS_PER_PROCESS)
        if self.max_connections is None:
            return replace(self, max_connections=min(DEFAULT_CONNECTIONS, fit))
        if self.max_connections <= fit:
            return self
        log.warning(
            "max_connections %d per listener does not fit the open-file limit %d (%d kept for the process, "
            "up to %d listeners): using %d; raise the limit (LimitNOFILE, ulimit -n) to allow more",
            self.max_connections,
            files,
            RESERVED_FILES,
            LISTENERS_PER_PROCESS,
            fit,
        )
        return replace(self, max_connections=fit)


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as err:  # a container may forbid it: keep the soft limit
            log.debug("cannot raise the open-file limit from %d to %d: %s", soft, hard, err)
    return soft


# The defaults, for configurations that spell the limits out as options of their own.
DEFAULTS = ConnectionLimits()

"""A gRPC connection to an etcd cluster: endpoints, TLS, keepalive, deadlines and retries.

aetcd provides etcd's generated v3 stubs and messages; this module owns the channel because
aetcd's own client takes one endpoint, no TLS and no keepalive (a hung member would never be
noticed). Invariants:
- Every unary call has a deadline; none waits forever.
- Calls wait for the channel to become ready within their deadline (wait_for_ready), so a
  member restart looks like a slow call rather than an immediate failure.
- Reads are retried on transient errors; an interrupted write surfaces as
  `Unavailable(ambiguous=True)` for the store to resolve by reading back.
- etcd's refusals that are about the request or the cluster's state, not about this call,
  become the Store's errors: NOSPACE is `NoSpace`, a request over etcd's limits (its size, or
  the operations of a transaction) or an answer over the channel's `TooLarge`, and "too many
  requests" (an overloaded member, which refuses before proposing anything) is retried like any
  transient error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from aetcd import rpc

from tke.internal.metrics import ETCD_LATENCY
from tke.internal.storage.store import NoSpace, TooLarge, Unavailable

T = TypeVar("T")

# Codes that say the member could not answer now. A write that fails with one of them may
# still have been applied (the connection can break after etcd committed it).
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}


def _refusal(err: grpc.aio.AioRpcError) -> Exception | None:
    """The Store error for etcd's refusals that say something about the request or the
    cluster (see the module docstring); None for the rest."""
    details = err.details() or ""
    code = err.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "space exceeded" in details:
        return NoSpace(
            "etcd is out of space (NOSPACE alarm: its --quota-backend-bytes is reached); "
            "writes are refused until it is compacted, defragmented and the alarm disarmed"
        )
    if (
        "request is too large" in details
        or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details)
        or "too many operations in txn request" in details  # over its --max-txn-ops (128)
    ):
        return TooLarge(f"etcd: {details}")
    return None


def _overloaded(err: grpc.aio.AioRpcError) -> bool:
    # Refused before it was proposed: nothing was applied, so even a write may be retried.
    return err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many requests" in (err.details() or "")


@dataclass(frozen=True)
class EtcdTLS:
    """Client TLS to etcd: the CA that signed the members' certificates, and optionally a client
    certificate and key for etcd's --client-cert-auth."""

    ca_file: str
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class EtcdConfig:
    """How to reach etcd. Endpoints are host:port (an http:// or https:// prefix is accepted)."""

    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    prefix: str = "/tke"
    tls: EtcdTLS | None = None
    # Deadline of one unary call attempt, and the total time spent retrying it.
    request_timeout: float = 5.0
    retry_budget: float = 15.0
    # HTTP/2 pings find a hung member: one every keepalive_time on each connection, which is
    # closed when the answer takes longer than keepalive_timeout. etcd answers pings closer
    # together than its --grpc-keepalive-min-time (5 s unless set: server_keepalive_min_time)
    # with GOAWAY "too_many_pings", so keepalive_time must stay above it.
    keepalive_time: float = 10.0
    keepalive_timeout: float = 3.0
    server_keepalive_min_time: float = 5.0

    def __post_init__(self) -> None:
        if self.keepalive_timeout <= 0:
            raise ValueError(f"keepalive_timeout must be above 0, not {self.keepalive_timeout}")
        if self.server_keepalive_min_time <= 0:
            raise ValueError(
                "server_keepalive_min_time is etcd's --grpc-keepalive-min-time (5 s unless set), "
                f"above 0, not {self.server_keepalive_min_time}"
            )
        if self.keepalive_time <= self.server_keepalive_min_time:
            raise ValueError(
                f"keepalive_time {self.keepalive_time} s must be above etcd's --grpc-keepalive-min-time "
                f"(server_keepalive_min_time, {self.server_keepalive_min_time} s): etcd closes a connection "
                "that pings more often (GOAWAY too_many_pings)"
            )


def channel_target(endpoints: list[str]) -> str:
    """The gRPC target for the endpoints: one host:port, or a static list of addresses."""
    hosts = [e.split("://", 1)[-1].rstrip("/") for e in endpoints]
    if not hosts:
        raise ValueError("no etcd endpoints configured")
    if len(hosts) == 1:
        return hosts[0]

    # Several members: gRPC's static ipv4:/ipv6: resolver. It needs literal addresses; host
    # names fall back to the first endpoint.
    def is_ip(hostport: str) -> bool:
        host = hostport.rsplit(":", 1)[0].strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True

    if all(is_ip(h) for h in hosts):
        scheme = "ipv6" if all(":" in h.rsplit(":", 1)[0] for h in hosts) else "ipv4"
        return f"{scheme}:{','.join(hosts)}"
    return hosts[0]


class EtcdConnection:
    """One channel to etcd and its stubs, with retrying unary calls."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        # etcd (grpc-go) counts a strike for every ping on a connection without a stream, and for
        # every ping sooner than --grpc-keepalive-min-time after the last; at the third strike
        # (forgiven only when etcd sends something) it closes the connection with GOAWAY
        # ENHANCE_YOUR_CALM "too_many_pings". So pings go only while a stream is open
        # (permit_without_calls 0), further apart than its minimum (EtcdConfig checks that), and
        # each connection keeps one stream open for them: gRPC's client-side health check, a
        # grpc.health.v1 Watch that etcd serves and leaves quiet. That keeps every member's
        # connection pinged while the process sits idle, so a hung member is dropped before a
        # call picks it. round_robin (even for one endpoint, or a name with several addresses)
        # runs that health check; it also spreads calls over the members.
        service_config = {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": ""},
        }
        options: list[tuple[str, int | str]] = [
            ("grpc.keepalive_time_ms", int(config.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout * 1000)),
            # gRPC core closes a transport on an unanswered ping only after this (60 s unless set).
            ("grpc.http2.ping_timeout_ms", int(config.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.service_config", json.dumps(service_config)),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
            # Also the connect timeout: a stopped member accepts TCP but never answers.
            ("grpc.min_reconnect_backoff_ms", 1000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        target = channel_target(config.endpoints)
        if config.tls is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(config.tls.ca_file).read_bytes(),
                private_key=Path(config.tls.key_file).read_bytes() if config.tls.key_file else None,
                certificate_chain=Path(config.tls.cert_file).read_bytes() if config.tls.cert_file else None,
            )
            self.channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        self.kv = rpc.KVStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def call(self, fn: Callable[..., Awaitable[T]], request: object, *, idempotent: bool) -> T:
        """Call a unary etcd method with a deadline. A read (`idempotent`) is retried on
        transient errors within the retry budget; a write is tried once, and a transient error
        raises Unavailable(ambiguous=True) because it may have been applied: the store resolves
        that by reading back. Raises Unavailable when the budget is spent."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.config.retry_budget
        delay = 0.05
        method = type(request).__name__.removesuffix("Request")
        while True:
            started = time.perf_counter()
            try:
                result = await fn(request, timeout=self.config.request_timeout, wait_for_ready=True)
            except grpc.aio.AioRpcError as err:
                ETCD_LATENCY.labels(method, err.code().name).observe(time.perf_counter() - started)
                if (refused := _refusal(err)) is not None:
                    raise refused from None
                overloaded = _overloaded(err)
                if err.code() not in _TRANSIENT and not overloaded:
                    raise
                if (not idempotent and not overloaded) or loop.time() + delay > give_up:
                    raise Unavailable(
                        f"etcd: {err.code().name.lower()}: {err.details()}", ambiguous=not (idempotent or overloaded)
                    ) from None
            else:
                ETCD_LATENCY.labels(method, "OK").observe(time.perf_counter() - started)
                return result
            await backoff_sleep(delay)
            delay = min(delay * 2, 1.0)

    def deadline_passed(self, started: float) -> bool:
        return asyncio.get_running_loop().time() - started > self.config.retry_budget


async def backoff_sleep(delay: float) -> None:
    """Sleep about `delay` seconds, jittered so that many clients do not retry in step."""
    await asyncio.sleep(delay * (0.5 + random.random()))

"""A grpc.aio server as every platform binary runs it: TCP (TLS when configured, mutual TLS
when a client CA is set) and optionally a unix socket, server reflection and grpc.health.v1,
keepalive, bounded connections and streams (tke.internal.rpc.connections), and a graceful stop.

Graceful stop: health turns NOT_SERVING, `on_stop` hooks run (services end their watch streams
with a clean status), then in-flight calls get `grace` seconds to finish.

A unix socket is as private as its directory: it is created only in a directory that root or
this process's user owns and that nobody else may write to (with every ancestor either not
writable by others or sticky, as /tmp), so no other user can put a socket of theirs in its
place; and it is bound with a strict umask, then given its mode.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tke.internal.rpc.connections import ConnectionLimits
from tke.internal.rpc.interceptors import CallChain, Interceptor
from tke.internal.rpc.reflection import documented_pool

log = logging.getLogger(__name__)


class _CallAlreadyOver(logging.Filter):
    """grpc logs an ERROR with a traceback ("ExecuteBatchError raised in core by servicer
    method") when a unary call's response cannot be sent because the call is already over: the
    client hung up or its deadline passed while the handler ran. Any client causes that at will,
    one traceback per call; it is no server error. The record becomes one DEBUG line without
    the traceback, written only when the access log's debug lines are (`log_level = "debug"`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if type(err).__name__ != "ExecuteBatchError":
            return True
        method = record.getMessage().rpartition("[")[2].rstrip("]")
        record.msg, record.args = (
            "%s: the call was over (client gone or deadline passed) before its response was sent",
            (method,),
        )
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("tke.access").isEnabledFor(logging.DEBUG)


# (Logger filters run whatever handlers the process configured; adding it again is a no-op.)
_CALL_ALREADY_OVER = _CallAlreadyOver()

# grpc's own default, said out loud: every server of the platform takes requests up to 4 MiB.
DEFAULT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class TLSConfig:
    """Server TLS. With `client_ca_file`, clients must present a certificate signed by it
    (grpcio's Python API has no "request but do not require" mode, so a listener is either
    mutual TLS for everyone or for no one)."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""


@dataclass(frozen=True)
class ListenConfig:
    """Where a server listens. An empty `address` disables TCP; an empty `unix_socket` disables
    the unix socket."""

    address: str = "127.0.0.1:50051"
    unix_socket: str = ""
    unix_socket_mode: int = 0o600
    tls: TLSConfig | None = None

    def __post_init__(self) -> None:
        check_socket_mode(self.unix_socket_mode, "unix_socket_mode")


def check_socket_mode(mode: int, name: str) -> None:
    """A unix socket is for its owner (0600) and at most its group (0660): never for everyone."""
    if mode & ~0o660:
        raise ValueError(f"{name} {mode:#o} gives others access (or is not a mode); use 0o600, or 0o660 for a group")


@dataclass
class ServerSpec:
    """What to serve: `register` adds servicers; `services` are their full names (for health
    and reflection); `interceptors` are the steps of the call chain, outermost first."""

    register: Callable[[grpc.aio.Server], None]
    services: Sequence[str]
    interceptors: Sequence[Interceptor] = ()
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Requests larger than this are refused by grpc itself with RESOURCE_EXHAUSTED.
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    # Connections and calls in progress each listener holds (tke.internal.rpc.connections).
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)


def _answers(path: Path) -> bool:
    """Whether something listens on the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _check_private_directory(directory: Path) -> None:
    """OSError unless only root or this process's user can change what `directory` holds."""
    me = os.geteuid()
    info = directory.stat()
    if info.st_uid not in (0, me):
        raise OSError(f"{directory} belongs to uid {info.st_uid}: a unix socket there could be replaced by that user")
    if info.st_mode & 0o022:
        raise OSError(
            f"{directory} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o}): they could replace "
            "the unix socket with their own; use a directory only its owner can write (chmod go-w)"
        )
    for parent in directory.resolve().parents:
        mode = parent.stat().st_mode
        if mode & 0o002 and not mode & stat.S_ISVTX:
            raise OSError(
                f"{parent} is writable by everyone without the sticky bit: the unix socket's directory can be replaced"
            )


def _credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    key = Path(tls.key_file).read_bytes()
    cert = Path(tls.cert_file).read_bytes()
    if tls.client_ca_file:
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=Path(tls.client_ca_file).read_bytes(),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([(key, cert)])


class RunningServer:
    def __init__(self, server: grpc.aio.Server, health_servicer: Any, spec: ServerSpec, port: int) -> None:
        self.server = server
        self.health = health_servicer
        self.spec = spec
        self.port = port

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        for hook in self.spec.on_stop:
            try:
                await hook()
            except Exception:
                log.exception("stop hook failed")
        await self.server.stop(grace)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def start_server(listen: ListenConfig, spec: ServerSpec, *, reuse_port: bool = False) -> RunningServer:
    """Start serving; returns once the ports are bound. `port` is the bound TCP port (useful
    with address "127.0.0.1:0"). With `reuse_port`, other processes may bind the same TCP port
    (SO_REUSEPORT: the kernel spreads connections over them); without, binding a port in use
    fails."""
    logging.getLogger("grpc._cython.cygrpc").addFilter(_CALL_ALREADY_OVER)
    limits = spec.connections.fitted()
    server = grpc.aio.server(
        interceptors=[CallChain(spec.interceptors)],
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", spec.max_receive_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
            *limits.options(),
        ],
        maximum_concurrent_rpcs=limits.max_streams,
    )
    spec.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*spec.services, health.SERVICE_NAME, reflection.SERVICE_NAME]
    # The stubs ask for a DescriptorPool; ours stands in for one with the methods reflection
    # calls (rpc/reflection.py), so that descriptions keep their comments.
    reflection.enable_server_reflection(names, server, pool=documented_pool())  # type: ignore[arg-type]

    port = 0
    if listen.address:
        if listen.tls is not None:
            port = server.add_secure_port(listen.address, _credentials(listen.tls))
        else:
            port = server.add_insecure_port(listen.address)
        if port == 0:
            raise OSError(f"cannot listen on {listen.address}")
    if listen.unix_socket:
        path = Path(listen.unix_socket)
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        _check_private_directory(path.parent)
        if path.is_socket():
            if _answers(path):
                raise OSError(f"{path} is in use by another server")
            path.unlink()  # left over from a process that is gone
        elif path.exists() or path.is_symlink():
            raise OSError(f"{path} exists and is not a socket; remove it or choose another path")
        # Bind with a strict umask so the socket is never reachable with looser permissions.
        old = os.umask(0o177)
        try:
            server.add_insecure_port(f"unix:{path}")
        finally:
            os.umask(old)
        os.chmod(path, listen.unix_socket_mode)
    await server.start()
    for name in [*spec.services, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, health_servicer, spec, port)

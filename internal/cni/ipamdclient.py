"""A small synchronous client of tke-ipamd for the CNI plugins: one call at a time, a deadline
on every call (connecting, the TLS handshake and the answer included), no waiting for a daemon
that is not there.

It speaks gRPC through `h2` (a minimal HTTP/2 client) with the messages of `ipamwire`, on the
connection `transport` makes: the node-local unix socket, plaintext TCP on loopback, or TLS
with the configured CA (and client certificate). A plugin process imports neither grpc nor
protobuf, whichever way it reaches ipamd.

Failures are two types: `IpamdUnreachable` (no answer, a timeout, an untrusted or unwilling TLS
peer, an answer that does not decode, or ipamd itself says UNAVAILABLE, or RESOURCE_EXHAUSTED with
a RetryInfo, which is its cap on calls at once, not an exhausted pool: try again later) and
`IpamdRefused` (ipamd answered with a refusal: an exhausted pool, an address owned by someone
else, invalid input). A configuration that cannot work (a remote address without TLS, TLS
files that cannot be read) is a CNIError with code 7.
"""

from __future__ import annotations

import time

from tke.internal.cni import h2
from tke.internal.cni import ipamwire as wire
from tke.internal.cni.endpoint import invalid
from tke.internal.cni.transport import dial_tcp, dial_unix, is_loopback, split_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import TypeVar

    from tke.internal.cni.endpoint import IpamdEndpoint
    from tke.internal.cni.owner import PodOwner
    from tke.internal.cni.transport import Stream

    T = TypeVar("T")
    Dial = Callable[[float], Stream]

SERVICE = "/tke.ipam.v1.IPAMService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)  # grpc status codes by number
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED", "UNKNOWN"})


def _status(reply: h2.Reply) -> bytes:
    """The google.rpc.Status of ipamd's refusal (its details), b"" when there is none."""
    encoded = reply.metadata.get("grpc-status-details-bin", "")
    if not encoded:
        return b""
    import binascii  # a refusal's path only

    try:
        return binascii.a2b_base64(encoded + "=" * (-len(encoded) % 4))
    except ValueError:  # not base64 (binascii.Error), not ASCII
        return b""


def _says_retry(status: bytes) -> bool:
    """Whether ipamd's refusal carries a RetryInfo: RESOURCE_EXHAUSTED is an exhausted pool,
    unless ipamd says to try again (it is serving its maximum of calls at once)."""
    try:
        return any(t.endswith("/google.rpc.RetryInfo") for t in wire.status_detail_types(status))
    except ValueError:  # not a Status (WireError)
        return False


def _reason(status: bytes) -> str:
    """The ErrorInfo reason of ipamd's refusal ("" when it has none or it does not decode)."""
    try:
        return wire.status_reason(status)
    except ValueError:  # not a Status (WireError)
        return ""


class IpamdUnreachable(Exception):
    """No usable answer from ipamd; the same request may succeed later."""


class IpamdRefused(Exception):
    """ipamd answered and said no; `reason` is its ErrorInfo's (NODE_RESTRICTED, ...), if any."""

    def __init__(self, code: str, message: str, reason: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reason = reason


def connector(endpoint: IpamdEndpoint) -> tuple[Dial, str, str]:
    """How to reach `endpoint`: (dial by a deadline, the :authority, the :scheme). Plaintext on
    a unix socket or loopback TCP, TLS otherwise (a TCP address without `tls.caFile` that is
    not loopback is a configuration error)."""
    if endpoint.is_unix:
        path = endpoint.socket_path
        return (lambda deadline: dial_unix(path, deadline)), "localhost", "http"
    address = endpoint.address
    try:
        host, _ = split_address(address)
    except ValueError as err:
        raise invalid(f"ipamd address: {err}") from None
    if not endpoint.ca_file:
        if endpoint.cert_file or endpoint.key_file or endpoint.server_name:
            raise invalid("ipamd.tls needs caFile: the CA that signed ipamd's certificate")
        if not is_loopback(host):
            raise invalid(f"ipamd address {address} is not local: set ipamd.tls.caFile (and certFile/keyFile)")
        return (lambda deadline: dial_tcp(address, deadline)), address, "http"
    from tke.internal.cni.tls import TLSClient  # ssl: only for TLS

    try:
        tls = TLSClient(endpoint.ca_file, endpoint.cert_file, endpoint.key_file, endpoint.server_name)
    except ValueError as err:
        raise invalid("cannot use the ipamd TLS configuration", str(err)) from None
    return (lambda deadline: tls.dial(address, deadline)), endpoint.server_name or address, "https"


class IpamdClient:
    def __init__(self, endpoint: IpamdEndpoint) -> None:
        self.endpoint = endpoint
        self._connector: tuple[Dial, str, str] | None = None  # made by the first call

    def __enter__(self) -> IpamdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # every call closes its own connection

    def call(self, method: str, request: bytes) -> bytes:
        """One unary call within the client's deadline; the response message's bytes."""
        deadline = time.monotonic() + self.endpoint.timeout
        if self._connector is None:
            self._connector = connector(self.endpoint)
        dial, authority, scheme = self._connector
        try:
            stream = dial(deadline)
            try:
                reply = h2.unary(stream, method, request, deadline, authority=authority, scheme=scheme)
            finally:
                stream.close()
        except h2.ProtocolError as err:
            raise IpamdUnreachable(f"malformed answer: {err}") from None
        except h2.Unreachable as err:
            raise IpamdUnreachable(str(err)) from None
        name = CODES[reply.code] if reply.code < len(CODES) else "UNKNOWN"
        if name == "OK":
            return reply.data
        status = _status(reply)
        if name in RETRYABLE or (name == "RESOURCE_EXHAUSTED" and _says_retry(status)):
            raise IpamdUnreachable(f"{name}: {reply.message}")
        raise IpamdRefused(name, reply.message or name, _reason(status))

    def _decoded(self, method: str, request: bytes, decode: Callable[[bytes], T]) -> T:
        data = self.call(SERVICE + method, request)
        try:
            return decode(data)
        except wire.WireError as err:
            raise IpamdUnreachable(f"malformed {method} answer: {err}") from None

    def lookup_binding(self, pod: PodOwner) -> wire.Binding | None:
        request = wire.encode_lookup_binding(pod.namespace, pod.pod_name, pod.workload_kind, pod.workload_name)
        try:
            return self._decoded("LookupBinding", request, wire.decode_binding)
        except IpamdRefused as err:
            if err.code == "NOT_FOUND":
                return None
            raise

    def allocate(self, request: bytes) -> wire.AllocateResponse:
        """`request`: wire.encode_allocate(...)."""
        return self._decoded("Allocate", request, wire.decode_allocate_response)

    def release(self, container_id: str, ifname: str, pod_uid: str = "") -> wire.ReleaseResponse:
        request = wire.encode_release(container_id, ifname, pod_uid)
        return self._decoded("Release", request, wire.decode_release_response)

    def get_allocation(self, container_id: str, ifname: str) -> wire.Allocation | None:
        request = wire.encode_get_allocation_by_attachment(container_id, ifname)
        try:
            return self._decoded("GetAllocation", request, wire.decode_allocation)
        except IpamdRefused as err:
            if err.code == "NOT_FOUND":
                return None
            raise

    def garbage_collect(
        self, node: str, valid: Iterable[tuple[str, str]], min_age_seconds: int | None = None
    ) -> list[wire.Allocation]:
        request = wire.encode_garbage_collect(node, valid, min_age_seconds)
        return self._decoded("GarbageCollect", request, wire.decode_collected)

    def serving(self) -> bool:
        """grpc.health.v1 Check of the whole server (an empty request; SERVING is 1)."""
        data = self.call(HEALTH_CHECK, b"")
        try:
            return wire.get_int(wire.parse(data), 1) == wire.SERVING
        except wire.WireError as err:
            raise IpamdUnreachable(f"malformed health answer: {err}") from None

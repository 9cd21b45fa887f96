"""A small synchronous client of tke-ipamd for the CNI plugins: one call at a time, a deadline
on every call, no waiting for a daemon that is not there.

On the node-local unix socket it speaks gRPC through `h2` (a minimal HTTP/2 client) with the
messages of `ipamwire`, so a plugin process imports neither grpc nor protobuf; over TCP (TLS),
or if the small client meets something it does not decode, it makes the same call with grpc,
imported then. Both paths send and receive the same bytes.

Failures are two types: `IpamdUnreachable` (no answer, timeout, or ipamd itself says
UNAVAILABLE: try again later) and `IpamdRefused` (ipamd answered with a refusal: an exhausted
pool, an address owned by someone else, invalid input).
"""

from __future__ import annotations

import os

from tke.internal.cni import h2
from tke.internal.cni import ipamwire as wire
from tke.internal.cni.errors import INVALID_NETWORK_CONFIG, CNIError
from tke.internal.cni.skel import warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from tke.internal.cni.endpoint import IpamdEndpoint
    from tke.internal.cni.owner import PodOwner

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


class IpamdUnreachable(Exception):
    """No usable answer from ipamd; the same request may succeed later."""


class IpamdRefused(Exception):
    """ipamd answered and said no."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _loopback(address: str) -> bool:
    import ipaddress

    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def socket_path(endpoint: IpamdEndpoint) -> str:
    """The file system path of a unix socket address (`/p`, `unix:/p`, `unix:///p`)."""
    address = endpoint.address
    if address.startswith("unix:"):
        address = "/" + address[len("unix:") :].lstrip("/")
    return os.path.abspath(address)


def open_channel(endpoint: IpamdEndpoint) -> Any:
    """A grpc channel to ipamd: plaintext on a unix socket or loopback, TLS otherwise (a TCP
    address without `tls.caFile` is a configuration error)."""
    import grpc

    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0), ("grpc.enable_http_proxy", 0)]
    if endpoint.is_unix:
        return grpc.insecure_channel("unix://" + socket_path(endpoint), options=options)
    if _loopback(endpoint.address) and not endpoint.ca_file:
        return grpc.insecure_channel(endpoint.address, options=options)
    if not endpoint.ca_file:
        raise CNIError(
            INVALID_NETWORK_CONFIG,
            f"ipamd address {endpoint.address} is not local: set ipamd.tls.caFile (and certFile/keyFile)",
        )
    try:
        with open(endpoint.ca_file, "rb") as ca:
            root = ca.read()
        key = chain = None
        if endpoint.key_file:
            with open(endpoint.key_file, "rb") as f:
                key = f.read()
        if endpoint.cert_file:
            with open(endpoint.cert_file, "rb") as f:
                chain = f.read()
    except OSError as err:
        raise CNIError(INVALID_NETWORK_CONFIG, "cannot read ipamd TLS files", str(err)) from None
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
    if endpoint.server_name:
        options.append(("grpc.ssl_target_name_override", endpoint.server_name))
    return grpc.secure_channel(endpoint.address, creds, options=options)


class IpamdClient:
    def __init__(self, endpoint: IpamdEndpoint) -> None:
        self.endpoint = endpoint
        self._channel: Any = None
        self._direct = endpoint.is_unix

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> IpamdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, request: bytes) -> bytes:
        """One unary call with the client's deadline; the response message's bytes."""
        if self._direct:
            try:
                code, message, data = h2.unary(socket_path(self.endpoint), method, request, self.endpoint.timeout)
            except h2.Unreachable as err:
                raise IpamdUnreachable(str(err)) from None
            except h2.ProtocolUnsupported as err:
                warn(f"ipamd's answer needs the full gRPC client ({err}); retrying with it")
                self._direct = False
            else:
                name = CODES[code] if 0 <= code < len(CODES) else "UNKNOWN"
                if name == "OK":
                    return data
                if name in RETRYABLE:
                    raise IpamdUnreachable(f"{name}: {message}")
                raise IpamdRefused(name, message or name)
        return self._grpc_call(method, request)

    def _grpc_call(self, method: str, request: bytes) -> bytes:
        import grpc

        if self._channel is None:
            self._channel = open_channel(self.endpoint)
        stub = self._channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            answer: bytes = stub(request, timeout=self.endpoint.timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
            text = err.details() if hasattr(err, "details") else str(err)
            if code.name in RETRYABLE:
                raise IpamdUnreachable(f"{code.name}: {text}") from None
            raise IpamdRefused(code.name, text or code.name) from None
        return answer

    def _decoded(self, method: str, request: bytes) -> bytes:
        return self.call(SERVICE + method, request)

    def lookup_binding(self, pod: PodOwner) -> wire.Binding | None:
        request = wire.encode_lookup_binding(pod.namespace, pod.pod_name, pod.workload_kind, pod.workload_name)
        try:
            return wire.decode_binding(self._decoded("LookupBinding", request))
        except IpamdRefused as err:
            if err.code == "NOT_FOUND":
                return None
            raise

    def allocate(self, request: bytes) -> wire.AllocateResponse:
        """`request`: wire.encode_allocate(...)."""
        return wire.decode_allocate_response(self._decoded("Allocate", request))

    def release(self, container_id: str, ifname: str, pod_uid: str = "") -> wire.ReleaseResponse:
        return wire.decode_release_response(
            self._decoded("Release", wire.encode_release(container_id, ifname, pod_uid))
        )

    def get_allocation(self, container_id: str, ifname: str) -> wire.Allocation | None:
        request = wire.encode_get_allocation_by_attachment(container_id, ifname)
        try:
            return wire.decode_allocation(self._decoded("GetAllocation", request))
        except IpamdRefused as err:
            if err.code == "NOT_FOUND":
                return None
            raise

    def garbage_collect(
        self, node: str, valid: Iterable[tuple[str, str]], min_age_seconds: int | None = None
    ) -> list[wire.Allocation]:
        request = wire.encode_garbage_collect(node, valid, min_age_seconds)
        return wire.decode_collected(self._decoded("GarbageCollect", request))

    def serving(self) -> bool:
        """grpc.health.v1 Check of the whole server (an empty request; SERVING is 1)."""
        fields = wire.parse(self.call(HEALTH_CHECK, b""))
        return wire.get_int(fields, 1) == wire.SERVING

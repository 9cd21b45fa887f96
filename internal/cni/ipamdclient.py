"""A small synchronous client of tke-ipamd for the CNI plugins: one channel per invocation, a
deadline on every call, no waiting for a daemon that is not there.

Importing this module imports grpc and the generated contract (~70-100 ms), so the plugins
import it only in the verbs that must talk to ipamd.

Failures are two types: `IpamdUnreachable` (no answer, timeout, or ipamd itself says
UNAVAILABLE: try again later) and `IpamdRefused` (ipamd answered with a refusal: an exhausted
pool, an address owned by someone else, invalid input).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from tke.internal.cni.endpoint import IpamdEndpoint
from tke.internal.cni.errors import INVALID_NETWORK_CONFIG, CNIError
from tke.internal.cni.owner import PodOwner
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
    }
)


class IpamdUnreachable(Exception):
    """No usable answer from ipamd; the same request may succeed later."""


class IpamdRefused(Exception):
    """ipamd answered and said no."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_channel(endpoint: IpamdEndpoint) -> grpc.Channel:
    """A channel to ipamd: plaintext on a unix socket or loopback, TLS otherwise (a TCP
    address without a `tls` section is a configuration error)."""
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0), ("grpc.enable_http_proxy", 0)]
    if endpoint.is_unix or (_loopback(endpoint.address) and not endpoint.ca_file):
        return grpc.insecure_channel(endpoint.target, options=options)
    if not endpoint.ca_file:
        raise CNIError(
            INVALID_NETWORK_CONFIG,
            f"ipamd address {endpoint.address} is not local: set ipamd.tls.caFile (and certFile/keyFile)",
        )
    try:
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(endpoint.ca_file).read_bytes(),
            private_key=Path(endpoint.key_file).read_bytes() if endpoint.key_file else None,
            certificate_chain=Path(endpoint.cert_file).read_bytes() if endpoint.cert_file else None,
        )
    except OSError as err:
        raise CNIError(INVALID_NETWORK_CONFIG, "cannot read ipamd TLS files", str(err)) from None
    if endpoint.server_name:
        options.append(("grpc.ssl_target_name_override", endpoint.server_name))
    return grpc.secure_channel(endpoint.target, creds, options=options)


class IpamdClient:
    def __init__(self, endpoint: IpamdEndpoint) -> None:
        self.endpoint = endpoint
        self.channel = open_channel(endpoint)
        self.stub = ipam_pb2_grpc.IPAMServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> IpamdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.endpoint.timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
            text = err.details() if hasattr(err, "details") else str(err)
            if code in RETRYABLE:
                raise IpamdUnreachable(f"{code.name}: {text}") from None
            raise IpamdRefused(code.name, text or code.name) from None

    def lookup_binding(self, pod: PodOwner) -> ipam_pb2.Binding | None:
        request = ipam_pb2.LookupBindingRequest(
            namespace=pod.namespace,
            pod_name=pod.pod_name,
            workload_kind=pod.workload_kind,
            workload_name=pod.workload_name,
        )
        try:
            found: ipam_pb2.Binding = self._call(self.stub.LookupBinding, request)
        except IpamdRefused as err:
            if err.code == "NOT_FOUND":
                return None
            raise
        return found

    def allocate(self, request: ipam_pb2.AllocateRequest) -> ipam_pb2.AllocateResponse:
        answer: ipam_pb2.AllocateResponse = self._call(self.stub.Allocate, request)
        return answer

    def release(self, container_id: str, ifname: str, pod_uid: str = "") -> ipam_pb2.ReleaseResponse:
        request = ipam_pb2.ReleaseRequest(container_id=container_id, ifname=ifname, pod_uid=pod_uid)
        answer: ipam_pb2.ReleaseResponse = self._call(self.stub.Release, request)
        return answer

    def get_allocation(self, container_id: str, ifname: str) -> ipam_pb2.Allocation | None:
        request = ipam_pb2.GetAllocationRequest(
            attachment=ipam_pb2.Attachment(container_id=container_id, ifname=ifname)
        )
        try:
            found: ipam_pb2.Allocation = self._call(self.stub.GetAllocation, request)
        except IpamdRefused as err:
            if err.code == "NOT_FOUND":
                return None
            raise
        return found

    def garbage_collect(
        self, node: str, valid: Iterable[tuple[str, str]], min_age_seconds: int | None = None
    ) -> ipam_pb2.GarbageCollectResponse:
        request = ipam_pb2.GarbageCollectRequest(
            node=node, valid_attachments=[ipam_pb2.Attachment(container_id=c, ifname=i) for c, i in valid]
        )
        if min_age_seconds is not None:
            request.min_age_seconds = min_age_seconds
        answer: ipam_pb2.GarbageCollectResponse = self._call(self.stub.GarbageCollect, request)
        return answer

    def serving(self) -> bool:
        """grpc.health.v1 Check of the whole server, without importing grpc_health: an empty
        HealthCheckRequest; SERVING is field 1 = 1."""
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        answer = self._call(check, b"")
        return bool(answer == b"\x08\x01")

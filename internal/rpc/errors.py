"""Errors that servers return to clients: a gRPC status code, a message written for users, and
google.rpc details (BadRequest, PreconditionFailure, ResourceInfo, ErrorInfo).

Handlers raise ApiError (or a helper below); the error interceptor turns it into a rich status.
Any other exception becomes INTERNAL with a generic message and a request id, so no Python
exception text or traceback ever reaches a client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "tke.cloud"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: `field` is a path such as "cluster.spec.network.pod_cidr"."""

    field: str
    description: str


class ApiError(Exception):
    """An error for the client: code, message and details."""

    def __init__(self, code: grpc.StatusCode, message: str, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)

    def to_status(self) -> status_pb2.Status:
        packed = []
        for d in self.details:
            a = any_pb2.Any()
            a.Pack(d)
            packed.append(a)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)


def invalid(violations: Sequence[FieldViolation], message: str = "") -> ApiError:
    if not message:
        first = violations[0]
        message = f"invalid {first.field}: {first.description}"
        if len(violations) > 1:
            message += f" (and {len(violations) - 1} more)"
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description) for v in violations
        ]
    )
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, [detail])


def invalid_field(field: str, description: str) -> ApiError:
    return invalid([FieldViolation(field, description)])


def not_found(resource: str, name: str, tenant: str) -> ApiError:
    info = error_details_pb2.ResourceInfo(resource_type=resource, resource_name=name, owner=tenant)
    return ApiError(grpc.StatusCode.NOT_FOUND, f'{resource} "{name}" not found', [info])


def already_exists(resource: str, name: str, tenant: str) -> ApiError:
    info = error_details_pb2.ResourceInfo(resource_type=resource, resource_name=name, owner=tenant)
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, f'{resource} "{name}" already exists', [info])


def precondition(kind: str, subject: str, description: str, code: grpc.StatusCode) -> ApiError:
    detail = error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(type=kind, subject=subject, description=description)
        ]
    )
    return ApiError(code, description, [detail])


def conflict(resource: str, name: str, expected: str, current: str) -> ApiError:
    """ABORTED: the object changed since the client read it."""
    return precondition(
        "RESOURCE_VERSION",
        f"{resource}/{name}",
        f'{resource} "{name}" was modified (resource_version {current}, request had {expected}): '
        "get it again and retry",
        grpc.StatusCode.ABORTED,
    )


def out_of_range(message: str, reason: str = "EXPIRED") -> ApiError:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
    return ApiError(grpc.StatusCode.OUT_OF_RANGE, message, [info])


def resource_exhausted(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def throttled(message: str, retry_after_seconds: float) -> ApiError:
    """RESOURCE_EXHAUSTED with a RetryInfo: try again after that long."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(retry_after_seconds * 1e9))
    retry = error_details_pb2.RetryInfo(retry_delay=delay)
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, [retry])


def unauthenticated(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message)


def permission_denied(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message)


def unavailable(message: str, retry_after_seconds: float = 1.0) -> ApiError:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(retry_after_seconds * 1e9))
    retry = error_details_pb2.RetryInfo(retry_delay=delay)
    return ApiError(grpc.StatusCode.UNAVAILABLE, message, [retry])


def internal(request_id: str) -> ApiError:
    info = error_details_pb2.RequestInfo(request_id=request_id)
    return ApiError(
        grpc.StatusCode.INTERNAL, f"internal error (request id {request_id}); the server log has the details", [info]
    )

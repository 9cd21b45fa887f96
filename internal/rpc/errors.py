"""Errors that servers return to clients: a gRPC status code, a message written for users, and
google.rpc details (BadRequest, PreconditionFailure, ResourceInfo, ErrorInfo).

Handlers raise ApiError (or a helper below); the error interceptor turns it into a rich status.
Any other exception becomes INTERNAL with a generic message and a request id, so no Python
exception text or traceback ever reaches a client.

An error always fits the response's trailers (grpc-message and grpc-status-details-bin; a
client refuses trailers over 8 KiB by default, and would see RESOURCE_EXHAUSTED instead of the
error): `to_status` clips the message to MESSAGE_BYTES once percent-encoded, every string in
the details to DETAIL_CHARS, and drops details past DETAILS_BYTES; `invalid` names at most
MAX_VIOLATIONS fields ("and 80 more" in the message). Whatever a client sends, however long
its bad values or however many, the error says what is wrong in a bounded size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "tke.cloud"

# Bounds that keep every error inside the trailers (see the module docstring).
MAX_VIOLATIONS = 20
MESSAGE_BYTES = 1024  # grpc-message, percent-encoded
DETAIL_CHARS = 256  # each string in a detail (a field path, a description, a resource name)
FIELD_CHARS = 128  # a violation's field path (it can hold a user's map key)
DETAILS_BYTES = 3072  # the packed details, before base64


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
        packed: list[any_pb2.Any] = []
        size = 0
        for d in self.details:
            a = any_pb2.Any()
            a.Pack(_clipped(d))
            size += a.ByteSize()
            if size > DETAILS_BYTES:
                break  # the first details are the most specific; the rest would not fit
            packed.append(a)
        return status_pb2.Status(code=self.code.value[0], message=clip_message(self.message), details=packed)


def clip(text: str, limit: int) -> str:
    """`text`, cut to at most `limit` characters with "..." marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def clip_message(text: str, limit: int = MESSAGE_BYTES) -> str:
    """`text` cut so that it takes at most `limit` bytes as grpc-message, which percent-encodes
    every byte outside printable ASCII (and '%'): three bytes for each."""
    size = 0
    for i, ch in enumerate(text):
        size += 1 if " " <= ch <= "~" and ch != "%" else 3 * len(ch.encode("utf-8", "replace"))
        if size > limit - 3:
            return text[:i] + "..."
    return text


def _clipped(detail: Message) -> Message:
    """A copy of `detail` with every string cut to DETAIL_CHARS (field paths to FIELD_CHARS)."""
    out = type(detail)()
    out.CopyFrom(detail)
    _clip_strings(out)
    return out


def _clip_strings(message: Message) -> None:
    for fd, value in message.ListFields():
        limit = FIELD_CHARS if fd.name == "field" else DETAIL_CHARS
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            if fd.message_type.fields_by_name["value"].type == fd.TYPE_STRING:
                entries = {clip(k, limit): clip(v, limit) for k, v in value.items()}
                value.clear()
                value.update(entries)
        elif fd.type == fd.TYPE_MESSAGE:
            for child in value if fd.is_repeated else [value]:
                _clip_strings(child)
        elif fd.type == fd.TYPE_STRING:
            if fd.is_repeated:
                value[:] = [clip(v, limit) for v in value]
            else:
                setattr(message, fd.name, clip(value, limit))


def invalid(violations: Sequence[FieldViolation], message: str = "") -> ApiError:
    """INVALID_ARGUMENT with a BadRequest naming the first MAX_VIOLATIONS fields (as many as
    fit the details' budget); the message names the first and counts the others."""
    detail = error_details_pb2.BadRequest()
    for v in violations[:MAX_VIOLATIONS]:
        detail.field_violations.add(field=clip(v.field, FIELD_CHARS), description=clip(v.description, DETAIL_CHARS))
        if detail.ByteSize() > DETAILS_BYTES - 64:  # room for the Any's type URL
            del detail.field_violations[-1]
            break
    if not message:
        first = violations[0]
        message = f"invalid {clip(first.field, FIELD_CHARS)}: {clip(first.description, DETAIL_CHARS)}"
        if len(violations) > 1:
            message += f" (and {len(violations) - 1} more"
            unlisted = len(violations) - len(detail.field_violations)
            message += f"; {unlisted} of them not listed in the details)" if unlisted else ")"
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


def resource_exhausted(
    message: str, *, reason: str = "", retry_after_seconds: float = 0.0, metadata: Mapping[str, str] | None = None
) -> ApiError:
    """RESOURCE_EXHAUSTED; with `reason`, an ErrorInfo naming the limit (and `metadata`, which
    of its kind: a tenant's share, say); with `retry_after_seconds`, a RetryInfo saying when
    trying again makes sense."""
    details: list[Message] = []
    if reason:
        details.append(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    if retry_after_seconds:
        details.append(_retry_info(retry_after_seconds))
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, details)


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


def _retry_info(seconds: float) -> Message:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    info: Message = error_details_pb2.RetryInfo(retry_delay=delay)
    return info


def unavailable(message: str, retry_after_seconds: float = 1.0) -> ApiError:
    return ApiError(grpc.StatusCode.UNAVAILABLE, message, [_retry_info(retry_after_seconds)])


def internal(request_id: str) -> ApiError:
    info = error_details_pb2.RequestInfo(request_id=request_id)
    return ApiError(
        grpc.StatusCode.INTERNAL, f"internal error (request id {request_id}); the server log has the details", [info]
    )

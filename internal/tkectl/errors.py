"""What tkectl tells a user when something fails: one line with the gRPC code name, and an exit
code a script can test. No traceback ever reaches the terminal."""

from __future__ import annotations

import enum
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class Exit(enum.IntEnum):
    """tkectl's exit codes (docs/tkectl.md lists them)."""

    OK = 0
    ERROR = 1  # a gRPC error not listed below; the message starts with its code name
    USAGE = 2  # bad arguments, an unreadable or invalid file, a verb the resource does not support
    NOT_FOUND = 3  # NOT_FOUND
    CONFLICT = 4  # ALREADY_EXISTS, or ABORTED (the object changed since it was read)
    DENIED = 5  # UNAUTHENTICATED or PERMISSION_DENIED: log in again, or ask for a role
    UNAVAILABLE = 6  # the server cannot be reached, or did not answer in time
    INTERRUPTED = 130  # Ctrl-C


_EXIT_BY_CODE = {
    grpc.StatusCode.NOT_FOUND: Exit.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: Exit.CONFLICT,
    grpc.StatusCode.ABORTED: Exit.CONFLICT,
    grpc.StatusCode.UNAUTHENTICATED: Exit.DENIED,
    grpc.StatusCode.PERMISSION_DENIED: Exit.DENIED,
    grpc.StatusCode.UNAVAILABLE: Exit.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Exit.UNAVAILABLE,
}


class CliError(Exception):
    """A failure to report: `message` is the whole line after "tkectl: "."""

    def __init__(self, exit_code: Exit, message: str, code: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message
        self.code = code  # the gRPC code name, when the error came from a server


def usage(message: str) -> CliError:
    return CliError(Exit.USAGE, message)


def not_found(message: str) -> CliError:
    return CliError(Exit.NOT_FOUND, f"NOT_FOUND: {message}", "NOT_FOUND")


def from_rpc(err: Any, target: str = "") -> CliError:
    """A gRPC error as one line: "CODE: message", with BadRequest's fields spelled out."""
    code: grpc.StatusCode = err.code()
    text = " ".join((err.details() or "").split())
    violations = _field_violations(err)
    if violations:
        text = "; ".join(violations)
    if code == grpc.StatusCode.UNAVAILABLE and target:
        text = f"cannot reach {target}: {text}" if text else f"cannot reach {target}"
    return CliError(_EXIT_BY_CODE.get(code, Exit.ERROR), f"{code.name}: {text}" if text else code.name, code.name)


def _field_violations(err: Any) -> list[str]:
    try:
        status = rpc_status.from_call(err)
    except ValueError:  # a trailer that does not match the status: show the plain message
        return []
    if status is None:
        return []
    found: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [f"{v.field}: {v.description}" for v in bad.field_violations]
    return found

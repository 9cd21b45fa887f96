"""Kubernetes' error responses: a `Status` object with the HTTP code, a CamelCase reason and a
message worded as kube-apiserver words it (clients match on `reason`, people read `message`).
Every module of the stand-in raises StatusError; the server turns it into the response."""

from __future__ import annotations

from typing import Any


class StatusError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def _details(name: str, plural: str, group: str, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name} if name else {}
    if group:
        out["group"] = group
    out["kind"] = plural
    out.update(more)
    return out


def not_found(plural: str, group: str, name: str) -> StatusError:
    message = f'{_qualified(plural, group)} "{name}" not found'
    return StatusError(404, "NotFound", message, _details(name, plural, group))


def already_exists(plural: str, group: str, name: str) -> StatusError:
    return StatusError(
        409, "AlreadyExists", f'{_qualified(plural, group)} "{name}" already exists', _details(name, plural, group)
    )


def conflict(plural: str, group: str, name: str, why: str) -> StatusError:
    message = f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": {why}'
    return StatusError(409, "Conflict", message, _details(name, plural, group))


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> StatusError:
    """422 Invalid: `causes` are (reason, field, message), as in field.ErrorList."""
    summary = ", ".join(f"{f}: {m}" if f else m for _, f, m in causes)
    if len(causes) > 1:
        summary = f"[{summary}]"
    return StatusError(
        422,
        "Invalid",
        f'{kind}.{group} "{name}" is invalid: {summary}' if group else f'{kind} "{name}" is invalid: {summary}',
        _details(name, kind, group, causes=[{"reason": r, "message": m, "field": f} for r, f, m in causes]),
    )


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", "Unauthorized")


def method_not_allowed(method: str) -> StatusError:
    message = f"the server does not allow this method on the requested resource ({method})"
    return StatusError(405, "MethodNotAllowed", message)

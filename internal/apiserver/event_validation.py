"""Validation of Events (tke.platform.v1.Event): pure functions returning FieldViolations, with
the request's field paths, as validation.py does for clusters and machines."""

from __future__ import annotations

import re
from typing import Any

from tke.internal.apiserver.validation import validate_metadata
from tke.internal.meta.labels import dns1123_label_error
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import event_pb2

_CAMEL = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,127}$")
MAX_MESSAGE = 4096


def validate_event(event: event_pb2.Event, path: str = "event") -> list[FieldViolation]:
    out = validate_metadata(event.metadata, f"{path}.metadata")
    spec = event.spec
    ref = spec.involved_object
    where = f"{path}.spec.involved_object"
    if err := _camel_case_error(ref.kind, "kind such as Cluster or Machine"):
        out.append(FieldViolation(f"{where}.kind", err))
    if err := dns1123_label_error(ref.name):
        out.append(FieldViolation(f"{where}.name", err))
    if err := _camel_case_error(spec.reason, "reason such as StepSucceeded"):
        out.append(FieldViolation(f"{path}.spec.reason", err))
    if len(spec.message) > MAX_MESSAGE:
        out.append(FieldViolation(f"{path}.spec.message", f"must be at most {MAX_MESSAGE} characters"))
    if spec.count < 0:
        out.append(FieldViolation(f"{path}.spec.count", "must not be negative"))
    if spec.type not in event_pb2.EventType.values():
        out.append(FieldViolation(f"{path}.spec.type", "must be EVENT_TYPE_NORMAL or EVENT_TYPE_WARNING"))
    return out


def _camel_case_error(value: str, what: str) -> str | None:
    """Why `value` is no CamelCase word (a letter, then letters and digits, at most 128), or None."""
    if _CAMEL.fullmatch(value):
        return None
    if not value:
        return f"is required: a CamelCase {what}"
    return f"must be a CamelCase {what}: a letter, then letters and digits, at most 128 characters"


def validate_event_status(status: Any, path: str) -> list[FieldViolation]:
    return []  # EventStatus has no fields yet

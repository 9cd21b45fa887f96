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
    if not _CAMEL.fullmatch(ref.kind):
        out.append(FieldViolation(f"{where}.kind", "is required: a CamelCase kind such as Cluster or Machine"))
    if err := dns1123_label_error(ref.name):
        out.append(FieldViolation(f"{where}.name", err))
    if not _CAMEL.fullmatch(spec.reason):
        out.append(FieldViolation(f"{path}.spec.reason", "is required: a CamelCase reason such as StepSucceeded"))
    if len(spec.message) > MAX_MESSAGE:
        out.append(FieldViolation(f"{path}.spec.message", f"must be at most {MAX_MESSAGE} characters"))
    if spec.count < 0:
        out.append(FieldViolation(f"{path}.spec.count", "must not be negative"))
    if spec.type not in event_pb2.EventType.values():
        out.append(FieldViolation(f"{path}.spec.type", "must be EVENT_TYPE_NORMAL or EVENT_TYPE_WARNING"))
    return out


def validate_event_status(status: Any, path: str) -> list[FieldViolation]:
    return []  # EventStatus has no fields yet

"""Masked updates: copy the fields an update_mask names from the request's object onto the
stored one, replacing each named field whole, and clearing it when the request leaves it
empty (Kubernetes' semantics for a field named in a patch).

protobuf's own FieldMask.MergeMessage cannot be used for this: it skips a path whose parent
message the request does not carry, so a mask of `spec.machines` with no machines (the request's
`spec` then serializes as absent) changed nothing instead of removing every machine.

Invariants: only the named fields change; paths are checked against the descriptor by the
caller (Registry._check_mask) before they get here; a path and one beneath it ("spec" and
"spec.version") act as the outer one alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message


def apply(paths: Sequence[str], source: Message, destination: Message) -> None:
    """Replace every field named by `paths` in `destination` with its value in `source`."""
    canonical = field_mask_pb2.FieldMask()
    canonical.CanonicalFormFromMask(field_mask_pb2.FieldMask(paths=list(paths)))
    for path in canonical.paths:
        *parents, leaf = path.split(".")
        src, dst = source, destination
        for name in parents:
            # Reading an unset message field gives its empty default: a parent the request
            # does not carry still names a field to clear beneath it.
            src, dst = getattr(src, name), getattr(dst, name)
        _replace(leaf, src, dst)


def _replace(name: str, source: Message, destination: Message) -> None:
    field = source.DESCRIPTOR.fields_by_name[name]
    destination.ClearField(name)
    if field.is_repeated:  # repeated fields and maps
        getattr(destination, name).MergeFrom(getattr(source, name))
    elif field.message_type is not None:
        if source.HasField(name):
            getattr(destination, name).CopyFrom(getattr(source, name))
    elif not field.has_presence or source.HasField(name):
        setattr(destination, name, getattr(source, name))

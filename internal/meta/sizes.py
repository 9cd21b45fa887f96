"""Where the bytes of a protobuf message are: the field that makes an object too large.

An object over the size limit is refused naming the field a user can act on: a huge
annotation, a label map with too many entries, a long spec field. `largest_field` walks down
from the message into whichever field holds at least half of its parent's bytes, and stops at
the first field whose bytes are spread over several parts (a map of many small entries is
named as the map, one huge entry as that entry).

Paths are written as validation writes them: `cluster.metadata.annotations['note']`,
`cluster.spec.machines[2].labels`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


def _scalar_size(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    return 8  # numbers, enums, bools: a few bytes at most


def _size(value: object) -> int:
    return value.ByteSize() if isinstance(value, Message) else _scalar_size(value)


def _parts(fd: FieldDescriptor, value: Any, path: str) -> list[tuple[str, object, int]]:
    """(path, value, bytes) of each element of a map or repeated field."""
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        return [(f"{path}[{key!r}]", v, _scalar_size(key) + _size(v)) for key, v in value.items()]
    return [(f"{path}[{i}]", v, _size(v)) for i, v in enumerate(value)]


def largest_field(message: Message, path: str) -> tuple[str, int]:
    """The path of the field that makes `message` big, and its size in bytes."""
    size = message.ByteSize()
    while True:
        # The field with the most bytes, and what to look into next: the field's value, or
        # for a map or list the element that holds at least half of it (None: no such one).
        best: tuple[str, int, str, object] | None = None
        for fd, value in message.ListFields():
            field_path = f"{path}.{fd.name}"
            if fd.is_repeated:
                parts = _parts(fd, value, field_path)
                field_size = sum(p[2] for p in parts)
                top = max(parts, key=lambda p: p[2])
                inner: tuple[str, object] | None = (top[0], top[1]) if top[2] * 2 >= field_size else None
            else:
                field_size = _size(value)
                inner = (field_path, value)
            if best is None or field_size > best[1]:
                best = (field_path, field_size, *(inner or ("", None)))
        if best is None or best[1] * 2 < size:
            return path, size  # the bytes are spread over several fields: this message is the one
        field_path, field_size, inner_path, inner_value = best
        if not inner_path:
            return field_path, field_size
        path, size = inner_path, _size(inner_value)
        if not isinstance(inner_value, Message):
            return path, size
        message = inner_value

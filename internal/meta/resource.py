"""The shape every stored kind has (Cluster, Machine, Event, ...): metadata, spec and status,
as in Kubernetes. The registry stores any message of this shape; controllers, informers and
the event recorder handle any of them."""

from __future__ import annotations

from typing import Any, Protocol, Self

from google.protobuf.message import Message

from tke.meta.v1 import meta_pb2


class Resource(Protocol):
    """What every stored kind looks like: metadata, spec and status."""

    @property
    def metadata(self) -> meta_pb2.ObjectMeta: ...
    @property
    def spec(self) -> Message: ...
    @property
    def status(self) -> Message: ...
    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...
    def ParseFromString(self, serialized: bytes) -> int: ...
    def CopyFrom(self, other_msg: Self) -> None: ...
    def ClearField(self, field_name: Any) -> None: ...

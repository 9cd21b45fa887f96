"""What every kind offers tkectl: how to read, list, write, delete and watch it, how to name it,
and the columns of its table. A verb a service does not have raises a usage error."""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from tke.internal.tkectl.connection import Connection
from tke.internal.tkectl.errors import CliError, from_rpc, usage


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Any], str]


@dataclass(frozen=True)
class Query:
    """What to list or watch: a tenant ("" the caller's, "*" all), a label selector, and
    kind-specific filters (cluster, pool, node, pod namespace, involved object)."""

    tenant: str = ""
    selector: str = ""
    filters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    object: Message


class Kind:
    """Base of the adaptors; subclasses set the attributes and override what their service has."""

    plural: str = ""
    singular: str = ""
    kind: str = ""  # the `kind:` of files
    aliases: tuple[str, ...] = ()
    message: type[Message] = Message
    server: str = ""  # connection.APISERVER or connection.IPAMD
    tenanted: bool = True  # objects carry metadata (name, tenant, labels)
    filters: tuple[str, ...] = ()  # the Query.filters keys this kind understands
    columns: tuple[Column, ...] = ()
    wide_columns: tuple[Column, ...] = ()
    # Paths of the file that `apply` replaces: present top-level fields of metadata and spec.
    apply_paths: tuple[str, ...] = ("metadata.labels", "metadata.annotations", "metadata.finalizers", "spec")
    # Whether `edit` can write the object back (the service can update or replace it).
    editable: bool = False
    # Top-level keys of a file document that are not fields of the message (users' password).
    extra_keys: tuple[str, ...] = ()

    def name_of(self, obj: Any) -> str:
        return str(obj.metadata.name)

    def tenant_of(self, obj: Any) -> str:
        return str(obj.metadata.tenant_id) if self.tenanted else ""

    def version_of(self, obj: Any) -> str:
        return str(obj.metadata.resource_version) if self.tenanted else ""

    def prepare(self, obj: Any, tenant: str) -> None:
        """Fill what the command line adds to an object from a file (the tenant)."""
        if self.tenanted and tenant and not obj.metadata.tenant_id:
            obj.metadata.tenant_id = tenant

    def ref(self, obj: Any) -> str:
        """How messages name an object: "cluster/demo"."""
        return f"{self.singular}/{self.name_of(obj)}"

    def unsupported(self, verb: str) -> CliError:
        return usage(f"{verb} is not supported for {self.plural}")

    async def get(self, conn: Connection, name: str, tenant: str) -> Message:
        raise self.unsupported("get")

    async def list(self, conn: Connection, query: Query) -> Sequence[Message]:
        raise self.unsupported("list")

    async def create(self, conn: Connection, obj: Message, extra: dict[str, Any]) -> Message:
        raise self.unsupported("create")

    async def update(self, conn: Connection, obj: Message, paths: Sequence[str]) -> Message:
        """Replace the object; `paths` empty means every field a user may change."""
        raise self.unsupported("update")

    async def delete(self, conn: Connection, name: str, tenant: str, resource_version: str) -> Message | None:
        raise self.unsupported("delete")

    def watch(self, conn: Connection, query: Query, resource_version: str) -> AsyncIterator[WatchEvent]:
        raise self.unsupported("watch")

    def same(self, current: Any, desired: Any, paths: Sequence[str]) -> bool:
        """Whether applying `desired` over `paths` would change nothing."""
        if not paths:
            return True
        mask = field_mask_pb2.FieldMask(paths=list(paths))
        a, b = self.message(), self.message()
        mask.MergeMessage(current, a, replace_message_field=True, replace_repeated_field=True)
        mask.MergeMessage(desired, b, replace_message_field=True, replace_repeated_field=True)
        return bool(a == b)

    async def call(self, conn: Connection, method: Any, request: Message) -> Any:
        """One unary call with the context's credentials and timeout; errors as CliError."""
        try:
            return await method(request, metadata=conn.metadata(self.server), timeout=conn.timeout)
        except Exception as err:
            if hasattr(err, "code") and hasattr(err, "details"):
                raise from_rpc(err, conn.target(self.server)) from None
            raise


# The seconds a google.protobuf.Timestamp may hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_TIMESTAMP_SECONDS = range(-62135596800, 253402300800)


def valid_time(ts: timestamp_pb2.Timestamp) -> bool:
    """Whether `ts` is a Timestamp its definition allows (a server may send any numbers)."""
    return ts.seconds in _TIMESTAMP_SECONDS and 0 <= ts.nanos <= 999_999_999


def time_text(ts: timestamp_pb2.Timestamp) -> str:
    """2026-12-02T16:22:45Z; "<none>" when unset, "<invalid>" when no Timestamp can hold it."""
    if not ts.seconds:
        return "<none>"
    if not valid_time(ts):
        return "<invalid>"
    return f"{ts.ToDatetime(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}"


def age(ts: timestamp_pb2.Timestamp) -> str:
    """Kubernetes-style age: 42s, 5m, 3h, 12d."""
    if not ts.seconds:
        return "<unknown>"
    if not valid_time(ts):
        return "<invalid>"
    seconds = max(0, int(time.time() - ts.seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def labels_text(labels: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def enum_text(message: Message, field_name: str, prefix: str) -> str:
    """An enum value's name without its prefix: NETWORK_MODE_BRIDGE -> BRIDGE; "" when unset."""
    descriptor = message.DESCRIPTOR.fields_by_name[field_name].enum_type
    assert descriptor is not None
    value = descriptor.values_by_number.get(getattr(message, field_name))
    if value is None or value.number == 0:
        return ""
    return value.name.removeprefix(prefix)

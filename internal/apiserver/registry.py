"""The generic resource registry: create, get, list, update, update-status and delete of one
kind of object over the Store, with the API's rules. Services are thin adapters over it.

Rules:
- Keys are `<prefix>/<plural>/<tenant>/<name>`; the value is the object without its
  resource_version, which is the item's mod_revision.
- uid, creation_timestamp, deletion_timestamp, generation and resource_version are the
  server's; whatever a client sends there is ignored. generation grows when the spec changes.
- Every write is a CAS on the revision that was read. A client that sent a resource_version
  gets ABORTED when it is stale; a client that did not gets its change applied on top of the
  latest state (the server re-reads and retries, never overwriting blindly).
- Delete with finalizers sets deletion_timestamp; the object goes when the last finalizer is
  removed. Finalizers cannot be added to an object being deleted.
- Get and List read from the kind's watch cache when it has one (cache.py: the answer etcd
  would give now, or etcd itself answers); writes always read etcd. Every write of a kind
  (but those whose keys expire: events) also touches the kind's last-write key in its
  transaction, which is how a cache learns, in one read for every kind, that it holds etcd's
  current state (cache.py); so the apiserver is the only writer of its kinds' keys.
- Pages of a list are read at one revision; the continue token carries it, sealed (see
  tke.internal.meta.pagetoken) for the kind, tenant and query it was issued for: any other
  token is INVALID_ARGUMENT, one whose revision etcd has compacted OUT_OF_RANGE.
- No object is stored larger than `max_object_bytes` (encoded): a bigger one is refused with
  INVALID_ARGUMENT naming the field that makes it big, before anything is sent to etcd (whose
  own limit, --max-request-bytes, is 1.5 MiB by default and would answer with an error that
  names nothing).
- A tenant's objects of a kind, and its stored bytes, stay within its quotas (quota.py, when
  the registry has `usage`): a create past either, or a write that grows an object past the
  bytes, is RESOURCE_EXHAUSTED (ErrorInfo QUOTA_EXCEEDED) before anything is sent to etcd.
- A kind's `admit_write` sees every write as (before, after) on the exact state the write
  replaces, inside the compare-and-swap loop, so what it approves is what is written (the
  policy centre's escalation check).
- Unique values (a kind's `uniques`, such as machine IPs) are keys under
  `<prefix>/<unique kind>/<value>` that one object at a time holds, across every tenant and
  kind: claimed in the transaction that stores the object, released in the one that drops the
  value or the object. A second claim is FAILED_PRECONDITION naming the field.
- References (a kind's `references`, such as credentials) are keys a valid object names that
  must exist: checked on create, and on update for every reference the update adds (an
  object whose reference went away can still be updated and deleted). A missing one is
  FAILED_PRECONDITION naming the field.
"""

from __future__ import annotations

import builtins
import functools
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from tke.internal.apiserver import masks
from tke.internal.apiserver.cache import KindCache, Reads, last_write_key
from tke.internal.apiserver.quota import KindUsage
from tke.internal.meta.labels import Selector
from tke.internal.meta.pagetoken import PageTokens, TokenError
from tke.internal.meta.resource import Resource
from tke.internal.meta.sizes import largest_field
from tke.internal.rpc import errors
from tke.internal.rpc.errors import FieldViolation
from tke.internal.storage.secret import shared_secret
from tke.internal.storage.store import (
    AlreadyExists,
    Claim,
    Claimed,
    Compacted,
    Conflict,
    FutureRevision,
    Guard,
    Item,
    NotFound,
    PreconditionFailed,
    Store,
    TooLarge,
)

DEFAULT_MAX_OBJECT_BYTES = 1024 * 1024
# A List page stops growing at this many bytes of objects (at least one object): with objects
# of at most 1 MiB a page stays under grpc's default 4 MiB message limit of clients.
DEFAULT_MAX_PAGE_BYTES = 2 * 1024 * 1024
# About how much one read from etcd brings back while a List page is assembled.
READ_BYTES = 16 * 1024 * 1024
# The store key of the key that seals continue tokens (under the prefix; see storage/secret.py).
PAGE_TOKEN_KEY = "secrets/page-tokens"
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000
EXPIRED_TOKEN = "the continue token has expired (its revision was compacted): start the list again"
ALL_TENANTS = "*"
OBJECT_TAG = b"\x12"  # field 2, length-delimited
_WRITE_RETRIES = 16


R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class Unique:
    """A value only one object may hold at a time, across every tenant and kind."""

    key: str  # under the registry's prefix, e.g. "machine-ips/192.0.2.10"
    field: str  # where the object holds it, e.g. "machine.spec.ip"
    type: str  # PreconditionFailure type of a second claim, e.g. "MACHINE_IP"
    what: str  # for messages, e.g. "machine IP 192.0.2.10"


@dataclass(frozen=True)
class Reference:
    """Another key a valid object names, which must exist."""

    key: str  # under the registry's prefix, e.g. "credentials/team-a/ops-key"
    field: str  # where the object names it, e.g. "machine.spec.credential_ref"
    type: str  # PreconditionFailure type when it is missing, e.g. "CREDENTIAL"
    missing: str  # for messages, e.g. 'tenant "team-a" has no credential "ops-key"'
    # What the object asks of the key's value besides its existence (an imported cluster's URL
    # of its credential's pinned servers): the key's value to a FieldViolation (INVALID_ARGUMENT)
    # or None. `detail` is what the check depends on: a reference is checked again when it changes.
    check: Callable[[bytes], FieldViolation | None] | None = None
    detail: str = ""


@dataclass(frozen=True)
class Kind(Generic[R]):
    """Everything the registry needs to know about one kind."""

    name: str  # "cluster", as users say it
    plural: str  # "clusters": key segment and authorization resource
    message: type[R]
    validate: Callable[[R], list[FieldViolation]]
    validate_status: Callable[[Any, str], list[FieldViolation]]
    immutable_spec_fields: tuple[str, ...] = ()
    # Checks of an update against the stored object (before, after), beyond the fields that never
    # change: the provider's fields that cannot change once it built something (admission.py).
    validate_update: Callable[[R, R], list[FieldViolation]] | None = None
    # Extra checks before create, returning guards the write must also hold (for example:
    # the machine's cluster exists and is not being deleted).
    create_guards: Callable[[R, str], Awaitable[Sequence[Guard]]] | None = None
    # The unique values a valid object holds (see the module docstring).
    uniques: Callable[[R], Sequence[Unique]] | None = None
    # The keys a valid object (its tenant set) refers to, which must exist.
    references: Callable[[R], Sequence[Reference]] | None = None
    updatable_paths: tuple[str, ...] = ("metadata.labels", "metadata.annotations", "metadata.finalizers", "spec")
    # Called with (before, after) for every write: None before a create, None after a delete;
    # raises an ApiError to refuse it.
    admit_write: Callable[[R | None, R | None], Awaitable[None]] | None = None


@dataclass(frozen=True)
class ListResult(Generic[R]):
    items: list[R]  # empty when `wire` is set
    revision: int
    continue_token: str
    # With `wire=True`: the items as they go in a List response (field `items`, each with its
    # resource_version); see Registry.framed.
    framed: list[bytes] | None = None


def _now() -> timestamp_pb2.Timestamp:
    # What Timestamp.GetCurrentTime gives (microseconds), without its datetime round trip.
    micros = time.time_ns() // 1000
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


@dataclass
class Registry(Generic[R]):
    kind: Kind[R]
    store: Store
    prefix: str
    now: Callable[[], timestamp_pb2.Timestamp] = field(default=_now)
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES
    # The kind's watch cache (None: every read goes to etcd).
    cache: KindCache | None = None
    # The kind's share of the tenants' quotas, kept by its watch hub (None: no quota).
    usage: KindUsage | None = None
    # Whether writes touch the kind's last-write key (not when the store expires keys: a key
    # that expires is a write nobody touches for).
    marks_writes: bool = True
    _tokens: PageTokens | None = field(default=None, init=False, repr=False)

    # -- keys and encoding ------------------------------------------------------------------

    @property
    def root(self) -> str:
        """Key prefix of every object of this kind (all tenants)."""
        return f"{self.prefix}/{self.kind.plural}/"

    @property
    def last_write(self) -> str | None:
        """The key each write of this kind touches (None: writes touch nothing)."""
        return last_write_key(self.prefix, self.kind.plural) if self.marks_writes else None

    @property
    def _touches(self) -> tuple[str, ...]:
        last = self.last_write
        return () if last is None else (last,)

    def tenant_prefix(self, tenant: str) -> str:
        return self.root if tenant == ALL_TENANTS else f"{self.root}{tenant}/"

    def key(self, tenant: str, name: str) -> str:
        return f"{self.root}{tenant}/{name}"

    def encode(self, obj: R) -> bytes:
        copy = self.kind.message()
        copy.CopyFrom(obj)
        copy.metadata.ClearField("resource_version")
        return copy.SerializeToString(deterministic=True)

    def encode_within_limit(self, obj: R) -> bytes:
        """The stored form of `obj`; INVALID_ARGUMENT naming the biggest field when it is over
        `max_object_bytes`."""
        value = self.encode(obj)
        if len(value) > self.max_object_bytes:
            field_path, size = largest_field(cast(Message, obj), self.kind.name)
            raise errors.invalid_field(
                field_path,
                f"is {_size(size)}, which makes the {self.kind.name} {_size(len(value))}; "
                f"an object may be at most {_size(self.max_object_bytes)}",
            )
        return value

    def decode(self, item: Item) -> R:
        obj = self.kind.message()
        obj.ParseFromString(item.value)
        obj.metadata.resource_version = str(item.mod_revision)
        return obj

    def wire(self, item: Item) -> bytes:
        """The object of `item` as it goes on the wire (what `decode` gives, serialized) without
        decoding it: the stored bytes with `resource_version` added at the end of their
        `metadata` field. The stored encoding is deterministic, so metadata (field 1) comes
        first; one metadata field, since not every parser merges repeated ones (protobuf.js
        replaces)."""
        value = item.value
        meta_tag, version_tag = _version_tags(self.kind.message)
        if not value.startswith(meta_tag):  # not written by encode(): take the long way
            return self.decode(item).SerializeToString()
        text = str(item.mod_revision).encode()
        version = version_tag + varint(len(text)) + text
        body, length = _read_varint(value, len(meta_tag))
        end = body + length
        return b"".join((meta_tag, varint(length + len(version)), value[body:end], version, value[end:]))

    def framed(self, item: Item) -> bytes:
        """The object of `item` as field 2 of a message: `items` of the kind's List response,
        `object` of its watch event (services.py checks both numbers)."""
        body = self.wire(item)
        return OBJECT_TAG + varint(len(body)) + body

    async def _reads(self) -> Reads:
        return await self.cache.reads() if self.cache is not None else self.store

    # -- reads ------------------------------------------------------------------------------

    async def _read(self, tenant: str, name: str) -> tuple[R, Item]:
        if not name:
            raise errors.invalid_field("name", "is required")
        try:
            item = await self.store.get(self.key(tenant, name))
        except NotFound:
            raise errors.not_found(self.kind.name, name, tenant) from None
        return self.decode(item), item

    async def get(self, tenant: str, name: str) -> R:
        return self.decode(await self.get_item(tenant, name))

    async def get_item(self, tenant: str, name: str) -> Item:
        """The stored item of an object, for a Get (from the watch cache when there is one)."""
        if not name:
            raise errors.invalid_field("name", "is required")
        try:
            return await (await self._reads()).get(self.key(tenant, name))
        except NotFound:
            raise errors.not_found(self.kind.name, name, tenant) from None

    async def page_tokens(self) -> PageTokens:
        """The sealer of this registry's continue tokens (its key is read, or made, once)."""
        if self._tokens is None:
            self._tokens = PageTokens(await shared_secret(self.store, f"{self.prefix}/{PAGE_TOKEN_KEY}"))
        return self._tokens

    async def list(
        self,
        tenant: str,
        selector: Selector,
        page_size: int,
        continue_token: str,
        matches: Callable[[R], bool] | None = None,
        *,
        query: bytes = b"",
        wire: bool = False,
    ) -> ListResult[R]:
        """A page of the tenant's objects (every tenant's for ALL_TENANTS) that `selector` and
        `matches` select, in key order. `query` is what the caller's request asked for besides
        the continue token (selector, page size, filters): a continue token is only accepted
        back with the same query, tenant and kind. A page holds at most `page_size` objects and
        stops early once it holds `max_page_bytes`, so that it always fits a client's default
        4 MiB message limit. With `wire`, the page comes as the bytes of its items in a List
        response (ListResult.framed), encoded once per object version when the cache holds it."""
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise errors.invalid_field("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        limit = page_size or DEFAULT_PAGE_SIZE
        prefix = self.tenant_prefix(tenant)
        bound = prefix.encode() + b"\0" + query
        start, revision = prefix, 0
        reads: Reads
        if continue_token:
            start, revision = await self._open_continue(continue_token, prefix, bound)
            reads = self.cache if self.cache is not None else self.store  # at a revision: no probe
            if self.cache is not None and self.cache.holds(revision):
                # The cache still has the token's state, but whether the token has expired is
                # etcd's history's to say, as without the cache: one key read at that revision.
                await self._not_compacted(prefix, start, revision)
        else:
            reads = await self._reads()
        filtering = not selector.empty or matches is not None
        cache = self.cache
        if wire and not filtering and cache is not None and reads is cache and cache.holds(revision):
            # Everything selected, and in memory: the page is the cached encodings, as they are.
            revision = revision or cache.revision
            framed_items, last, more = cache.framed_page(prefix, start, limit, self.max_page_bytes)
            token = await self._seal_continue(bound, last + "\0", revision) if more and framed_items else ""
            return ListResult([], revision, token, framed_items)
        framed = cache.framed if cache is not None and reads is cache else self.framed
        items: list[R] = []
        chunks: list[bytes] = []
        page_bytes = 0
        largest = 0  # the largest object read so far: sizes the next read from etcd
        while True:
            # Filtering may drop items: read in bigger chunks then. One read from etcd stays
            # near READ_BYTES, judged by the largest object seen so far.
            chunk = min(MAX_PAGE_SIZE, max(limit - len(items), 100 if filtering else 1) + 1)
            if largest:
                chunk = max(1, min(chunk, READ_BYTES // largest))
            try:
                page = await reads.list(prefix, start=start, limit=chunk, revision=revision)
            except TooLarge:  # the answer was over the etcd channel's limit: read fewer at once
                if chunk == 1:
                    raise
                largest = max(2 * largest, self.max_object_bytes)  # at least halves the next chunk
                continue
            except Compacted:
                raise errors.out_of_range(EXPIRED_TOKEN) from None
            except FutureRevision:  # no list ever handed out this revision: a made-up token
                raise _bad_continue_token() from None
            revision = page.revision
            for i, item in enumerate(page.items):
                largest = max(largest, len(item.value))
                if filtering or not wire:
                    obj = self.decode(item)
                    if not selector.matches(obj.metadata.labels) or (matches is not None and not matches(obj)):
                        continue
                if wire:
                    chunks.append(framed(item))
                else:
                    items.append(obj)
                page_bytes += len(item.value)
                if len(items) + len(chunks) == limit or page_bytes >= self.max_page_bytes:
                    rest = i + 1 < len(page.items) or page.more
                    token = await self._seal_continue(bound, item.key + "\0", revision) if rest else ""
                    return ListResult(items, revision, token, chunks if wire else None)
            if not page.more:
                return ListResult(items, revision, "", chunks if wire else None)
            start = page.items[-1].key + "\0"

    async def _seal_continue(self, bound: bytes, start: str, revision: int) -> str:
        return (await self.page_tokens()).seal(bound, {"s": start, "r": revision})

    async def _not_compacted(self, prefix: str, start: str, revision: int) -> None:
        try:
            await self.store.list(prefix, start=start, limit=1, revision=revision)
        except Compacted:
            raise errors.out_of_range(EXPIRED_TOKEN) from None

    async def _open_continue(self, token: str, prefix: str, bound: bytes) -> tuple[str, int]:
        try:
            position = (await self.page_tokens()).open(bound, token)
        except TokenError:
            raise _bad_continue_token() from None
        start, revision = position.get("s"), position.get("r")
        # Sealed by us, but checked anyway: the key could have leaked.
        if not isinstance(start, str) or not isinstance(revision, int) or revision <= 0 or not start.startswith(prefix):
            raise _bad_continue_token()
        return start, revision

    # -- writes -----------------------------------------------------------------------------

    async def create(self, tenant: str, obj: R) -> R:
        new = self.kind.message()
        new.CopyFrom(obj)
        meta = new.metadata
        meta.tenant_id = tenant  # validated with its tenant: what a tenant may use can depend on it
        violations = self.kind.validate(new) + _timestamp_violations(new.spec, f"{self.kind.name}.spec")
        if violations:
            raise errors.invalid(violations)
        meta.uid = str(uuid.uuid4())
        meta.generation = 1
        meta.creation_timestamp.CopyFrom(self.now())
        meta.ClearField("deletion_timestamp")
        meta.ClearField("resource_version")
        new.ClearField("status")
        key = self.key(tenant, meta.name)
        if self.kind.admit_write is not None:
            await self.kind.admit_write(None, new)
        value = self.encode_within_limit(new)  # too big is INVALID_ARGUMENT, before any other check
        await self._check_references(new, None)
        uniques = self._uniques(new)
        claims = [Claim(self._unique_key(u), self._holder(new)) for u in uniques]
        hold = self.usage.hold(tenant, 1, len(key) + len(value)) if self.usage is not None else None
        written = 0
        try:
            for _ in range(_WRITE_RETRIES):
                guards = await self.kind.create_guards(new, tenant) if self.kind.create_guards else ()
                try:
                    item = await self.store.create(key, value, guards=guards, claims=claims, touches=self._touches)
                except AlreadyExists:
                    raise errors.already_exists(self.kind.name, meta.name, tenant) from None
                except PreconditionFailed:
                    continue  # the guarded object changed between our read and the write: check again
                except Claimed as c:
                    raise self._claimed(c.holder, uniques, tenant) from None
                written = item.mod_revision
                return self.decode(item)
            raise errors.unavailable("too much contention on a related object; retry")
        finally:
            if self.usage is not None:
                self.usage.done(hold, written)

    async def update(self, tenant: str, obj: R, mask: field_mask_pb2.FieldMask) -> R:
        paths = list(mask.paths)
        self._check_mask(paths)
        name = obj.metadata.name
        expected = _parse_version(obj.metadata.resource_version)
        for _ in range(_WRITE_RETRIES):
            current, item = await self._read(tenant, name)
            self._check_version(expected, item, name)
            new = self.kind.message()
            new.CopyFrom(current)
            # Without a mask every user-writable field is replaced.
            masks.apply(paths or self.kind.updatable_paths, cast(Message, obj), cast(Message, new))
            violations = self.kind.validate(new)
            violations += _timestamp_violations(new.spec, f"{self.kind.name}.spec")
            violations += self._immutable_violations(current, new)
            if current.metadata.HasField("deletion_timestamp"):
                added = set(new.metadata.finalizers) - set(current.metadata.finalizers)
                if added:
                    violations.append(
                        FieldViolation(
                            f"{self.kind.name}.metadata.finalizers",
                            f"cannot add finalizers to a {self.kind.name} being deleted: {sorted(added)}",
                        )
                    )
            if violations:
                raise errors.invalid(violations)
            if new.spec.SerializeToString(deterministic=True) != current.spec.SerializeToString(deterministic=True):
                new.metadata.generation = current.metadata.generation + 1
            value = self.encode_within_limit(new)  # too big is INVALID_ARGUMENT, before any other check
            await self._check_references(new, current)
            if self.kind.admit_write is not None:
                await self.kind.admit_write(current, new)
            result = await self._write(current, item, new, expected, value)
            if result is not None:
                return result
        raise errors.unavailable("too much contention on this object; retry")

    async def update_status(self, tenant: str, obj: R) -> R:
        violations = self.kind.validate_status(obj.status, f"{self.kind.name}.status")
        violations += _timestamp_violations(obj.status, f"{self.kind.name}.status")
        if violations:
            raise errors.invalid(violations)
        name = obj.metadata.name
        expected = _parse_version(obj.metadata.resource_version)
        for _ in range(_WRITE_RETRIES):
            current, item = await self._read(tenant, name)
            self._check_version(expected, item, name)
            new = self.kind.message()
            new.CopyFrom(current)
            new.status.CopyFrom(obj.status)
            if self.kind.admit_write is not None:
                await self.kind.admit_write(current, new)
            result = await self._write(current, item, new, expected)
            if result is not None:
                return result
        raise errors.unavailable("too much contention on this object; retry")

    async def delete(self, tenant: str, name: str, resource_version: str) -> R:
        expected = _parse_version(resource_version)
        for _ in range(_WRITE_RETRIES):
            current, item = await self._read(tenant, name)
            self._check_version(expected, item, name)
            if self.kind.admit_write is not None:
                await self.kind.admit_write(current, None)
            if current.metadata.finalizers:
                if current.metadata.HasField("deletion_timestamp"):
                    return current
                new = self.kind.message()
                new.CopyFrom(current)
                new.metadata.deletion_timestamp.CopyFrom(self.now())
                result = await self._write(current, item, new, expected, deleting=True)
            else:
                result = await self._remove(current, item, expected)
            if result is not None:
                return result
        raise errors.unavailable("too much contention on this object; retry")

    async def _write(
        self,
        current: R,
        item: Item,
        new: R,
        expected: int | None,
        value: bytes | None = None,
        *,
        deleting: bool = False,
    ) -> R | None:
        """CAS `new` (encoded: `value`, when the caller has it) over `item`; None means "lost a
        race, read again". An object being deleted whose last finalizer goes is removed instead.
        `deleting`: the write marks the object deleted, which its tenant's quota never refuses."""
        if new.metadata.HasField("deletion_timestamp") and not new.metadata.finalizers:
            return await self._remove(new, item, expected)
        if value is None:
            value = self.encode_within_limit(new)
        if value == item.value:
            return current  # nothing changed: no write, no event
        claims, releases = await self._moved_uniques(current, new)
        # An object that grows takes the growth from its tenant's bytes quota (quota.py).
        usage, tenant = self.usage, current.metadata.tenant_id
        grow = len(value) - len(item.value)
        hold = usage.hold(tenant, 0, grow, check=not deleting) if usage is not None else None
        revision = 0
        try:
            written = await self.store.update(
                item.key,
                value,
                expected_revision=item.mod_revision,
                claims=claims,
                releases=releases,
                touches=self._touches,
            )
            revision = written.mod_revision
        except NotFound:
            raise errors.not_found(self.kind.name, current.metadata.name, tenant) from None
        except Conflict as c:
            if expected is not None:
                raise self._conflict(current.metadata.name, expected, c.current) from None
            return None
        except Claimed as c:
            raise self._claimed(c.holder, self._uniques(new), tenant) from None
        except PreconditionFailed:
            return None  # a released value changed hands meanwhile: read again
        finally:
            if usage is not None:
                usage.done(hold, revision)
                usage.freed(tenant, 0, -grow, revision)
        return self.decode(written)

    async def _remove(self, last: R, item: Item, expected: int | None) -> R | None:
        _, releases = await self._moved_uniques(last, None)
        try:
            revision = await self.store.delete(
                item.key, expected_revision=item.mod_revision, releases=releases, touches=self._touches
            )
        except NotFound:
            raise errors.not_found(self.kind.name, last.metadata.name, last.metadata.tenant_id) from None
        except Conflict as c:
            if expected is not None:
                raise self._conflict(last.metadata.name, expected, c.current) from None
            return None
        except PreconditionFailed:
            return None
        if self.usage is not None:
            self.usage.freed(last.metadata.tenant_id, 1, len(item.key) + len(item.value), revision)
        gone = self.kind.message()
        gone.CopyFrom(last)
        gone.metadata.resource_version = str(revision)
        return gone

    # -- references and unique values -------------------------------------------------------

    async def _check_references(self, new: R, current: R | None) -> None:
        """Every reference `new` adds to `current` (all of them on create) must exist."""
        if self.kind.references is None:
            return
        before = {(r.key, r.detail) for r in self.kind.references(current)} if current is not None else set()
        for ref in self.kind.references(new):
            if (ref.key, ref.detail) in before:
                continue
            try:
                item = await self.store.get(f"{self.prefix}/{ref.key}")
            except NotFound:
                raise errors.precondition(
                    ref.type, ref.key, f"{ref.field}: {ref.missing}", grpc.StatusCode.FAILED_PRECONDITION
                ) from None
            if ref.check is not None and (violation := ref.check(item.value)) is not None:
                raise errors.invalid([violation])

    def _uniques(self, obj: R) -> builtins.list[Unique]:
        return list(self.kind.uniques(obj)) if self.kind.uniques else []

    def _unique_key(self, unique: Unique) -> str:
        return f"{self.prefix}/{unique.key}"

    def _holder(self, obj: R) -> bytes:
        """A claim's value: who holds it (the uid tells one life of a name from the next)."""
        meta = obj.metadata
        holder = {"kind": self.kind.name, "tenant": meta.tenant_id, "name": meta.name, "uid": meta.uid}
        return json.dumps(holder, separators=(",", ":")).encode()

    async def _moved_uniques(self, current: R, new: R | None) -> tuple[builtins.list[Claim], builtins.list[Guard]]:
        """What a write from `current` to `new` (None: a removal) claims and releases. A value
        `current` holds only in its spec and not in the store (an object stored before the
        value was unique) is claimed if free; one held by someone else is left to them."""
        held = {self._unique_key(u): u for u in self._uniques(current)}
        wanted = {self._unique_key(u): u for u in self._uniques(new)} if new is not None else {}
        claims: builtins.list[Claim] = []
        releases: builtins.list[Guard] = []
        for key in held.keys() | wanted.keys():
            try:
                item: Item | None = await self.store.get(key)
            except NotFound:
                item = None
            ours = item is not None and _holder_uid(item.value) == current.metadata.uid
            if key in wanted and item is None:
                claims.append(Claim(key, self._holder(current)))
            elif key in wanted and not ours and key not in held:
                assert item is not None
                raise self._claimed(item, [wanted[key]], current.metadata.tenant_id)
            elif key not in wanted and ours:
                assert item is not None
                releases.append(Guard(key, item.mod_revision))
        return claims, releases

    def _claimed(self, holder: Item, uniques: Sequence[Unique], tenant: str) -> errors.ApiError:
        """FAILED_PRECONDITION: a value is held by another object (named when it is in the
        caller's tenant; another tenant's objects are not revealed)."""
        unique = next((u for u in uniques if self._unique_key(u) == holder.key), None)
        if unique is None:  # cannot happen: the store names one of our claims
            return errors.unavailable("a unique value changed hands meanwhile; retry")
        try:
            who = json.loads(holder.value)
            by = f'{who["kind"]} "{who["name"]}"' if who["tenant"] == tenant else "an object of another tenant"
        except (ValueError, KeyError, TypeError):
            by = "another object"
        return errors.precondition(
            unique.type,
            unique.key,
            f"{unique.field}: {unique.what} is held by {by}",
            grpc.StatusCode.FAILED_PRECONDITION,
        )

    # -- checks -----------------------------------------------------------------------------

    def _check_version(self, expected: int | None, item: Item, name: str) -> None:
        if expected is not None and expected != item.mod_revision:
            raise self._conflict(name, expected, item)

    def _conflict(self, name: str, expected: int, current: Item | None) -> errors.ApiError:
        now = str(current.mod_revision) if current is not None else "unknown"
        return errors.conflict(self.kind.name, name, str(expected), now)

    def _check_mask(self, paths: builtins.list[str]) -> None:
        for i, path in enumerate(paths):
            allowed = any(path == p or path.startswith(p + ".") for p in self.kind.updatable_paths)
            if not allowed or not field_mask_pb2.FieldMask(paths=[path]).IsValidForDescriptor(
                self.kind.message.DESCRIPTOR  # type: ignore[attr-defined]
            ):
                raise errors.invalid_field(
                    f"update_mask.paths[{i}]",
                    f"{path!r} cannot be updated; updatable: {', '.join(self.kind.updatable_paths)} "
                    "(and fields under spec); status is written by UpdateStatus",
                )

    def _immutable_violations(self, current: R, new: R) -> builtins.list[FieldViolation]:
        out = []
        for name in self.kind.immutable_spec_fields:
            if getattr(current.spec, name) != getattr(new.spec, name):
                out.append(FieldViolation(f"{self.kind.name}.spec.{name}", "is immutable"))
        if self.kind.validate_update is not None and not out:
            out += self.kind.validate_update(current, new)
        return out


def varint(n: int) -> bytes:
    """`n` (>= 0) as a protobuf varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    """(the index after the varint at `i`, its value)."""
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return i, value
        shift += 7


@functools.cache
def _version_tags(message: type) -> tuple[bytes, bytes]:
    """The wire tags of `metadata` in `message` and of `resource_version` in its metadata."""
    meta = message.DESCRIPTOR.fields_by_name["metadata"]  # type: ignore[attr-defined]
    version = meta.message_type.fields_by_name["resource_version"]
    return varint(meta.number << 3 | 2), varint(version.number << 3 | 2)


def _holder_uid(value: bytes) -> str:
    try:
        return str(json.loads(value)["uid"])
    except (ValueError, KeyError, TypeError):
        return ""


def _size(n: int) -> str:
    return f"{n} bytes" if n < 10 * 1024 else f"{n / 1024:.0f} KiB" if n < 10 * 1024 * 1024 else f"{n >> 20} MiB"


def _parse_version(value: str) -> int | None:
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise errors.invalid_field("metadata.resource_version", f"{value!r} is not a resource version")
    return int(value)


def parse_resource_version(value: str, field: str) -> int | None:
    """A client-supplied resource_version as a revision (None when empty)."""
    try:
        return _parse_version(value)
    except errors.ApiError:
        raise errors.invalid_field(field, f"{value!r} is not a resource version") from None


def _bad_continue_token() -> errors.ApiError:
    return errors.invalid_field(
        "continue_token",
        "is not a continue token of this list (the same kind, tenant, selector, page size and filters); "
        "pass the previous page's metadata.continue_token",
    )


# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_TIMESTAMP_SECONDS = range(-62_135_596_800, 253_402_300_800)


def _timestamp_violations(message: Message, path: str) -> list[FieldViolation]:
    """Every Timestamp set in `message`, at any depth, must be one protobuf defines: clients in
    every language (protobuf's JSON, Go's AsTime, Python's ToDatetime) refuse or crash on one
    outside its range, so a stored one would break whoever reads the object."""
    out: list[FieldViolation] = []
    for fd, value in message.ListFields():
        kind = fd.message_type
        if kind is None:
            continue
        where = f"{path}.{fd.name}"
        if kind.GetOptions().map_entry:
            if kind.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    out += _timestamp_violations(item, f"{where}[{key!r}]")
            continue
        items = list(enumerate(value)) if fd.is_repeated else [(None, value)]
        for i, item in items:
            at = where if i is None else f"{where}[{i}]"
            if kind.full_name == "google.protobuf.Timestamp":
                if item.seconds not in _TIMESTAMP_SECONDS or not 0 <= item.nanos <= 999_999_999:
                    out.append(FieldViolation(at, "is not a valid timestamp (years 1 to 9999, nanos 0 to 999999999)"))
            else:
                out += _timestamp_violations(item, at)
    return out

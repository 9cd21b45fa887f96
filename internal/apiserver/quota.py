"""Per-tenant quotas on what the apiserver stores (Kubernetes' ResourceQuota: count/<resource>
and storage bytes): each tenant may hold at most `quotas.<plural>` objects of each kind and
`quotas.bytes` stored bytes (keys and values, every kind together), with overrides per tenant.
A write past a quota is RESOURCE_EXHAUSTED with an ErrorInfo (reason QUOTA_EXCEEDED) naming
the tenant, the resource, what is used and the limit; nothing is written.

Invariants:
- Usage is counted from what etcd holds, never read on a write: each kind's watch hub (one
  etcd watch, watch.py) loads its range into `KindUsage.load` and applies every change with
  `KindUsage.apply`, in revision order. A write adds no etcd round trip: its check is a few
  dict lookups.
- In one process, usage also counts holds: a create (or a write that grows an object) that
  was admitted takes its share before it is sent to etcd, so concurrent writes in one process
  never pass a quota together. A hold is released when the write fails (nothing written), or
  when the hub has applied the write's revision (from then on the watch counts it). What a
  delete (or a write that shrinks an object) frees is free as soon as the write is done, the
  same way: a create right after a delete is admitted.
- Deleting is never refused: marking an object deleted (it has finalizers) is admitted whatever
  its tenant holds.
- Several processes (`workers`, replicas) each count what they see: a process learns of
  another's writes through its watch, milliseconds later. A tenant writing to P processes at
  once can therefore overshoot by what the other processes admitted within that delay, and by
  at most (P - 1) times each quota in the worst case (each process alone never admits past
  the quota).
- Platform administrators' writes (the controller's events and status, an operator's repair)
  are counted but never refused: a tenant at its quota cannot make the platform lose its
  record of that tenant's objects, and no tenant's usage affects another's writes.
- A kind whose keys do not carry the tenant (the accounts' users and API keys, by name) reads
  it from the stored record (`tenant_of`); several kinds of one range are fed by one watch
  (tke.internal.storage.mirror.Followers), each counting only the keys under its root.
- Memory: counters only for tenants that hold something, and one size per stored object.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tke.internal.auth.identity import current_identity
from tke.internal.meta.labels import dns1123_label_error
from tke.internal.rpc import errors
from tke.internal.storage.store import Event, EventType, Item

MiB = 1024 * 1024

# The kinds a quota counts, by their plural (the key segment and the option's name): the
# apiserver's own, the policy centre's (plugins/authz/policy.py) and the built-in accounts'
# (plugins/authn/accounts.py), the plugins' through PluginContext.quota_kind.
KINDS = ("clusters", "machines", "events", "roles", "rolebindings", "users", "apikeys")


@dataclass(frozen=True)
class TenantQuota:
    """One tenant's own quotas; an option not set is the default one (`quotas.<option>`)."""

    clusters: int | None = None
    machines: int | None = None
    events: int | None = None
    roles: int | None = None
    rolebindings: int | None = None
    users: int | None = None
    apikeys: int | None = None
    bytes: int | None = None

    def __post_init__(self) -> None:
        for name in (*KINDS, "bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 (nothing allowed) or more")


@dataclass(frozen=True)
class QuotaConfig:
    """What each tenant may store (`[quotas]`), with overrides (`[quotas.tenants."team-a"]`).
    A quota of 0 allows nothing; `enabled = false` switches every quota off."""

    enabled: bool = True
    # Objects of each kind per tenant.
    clusters: int = 100
    machines: int = 2_000
    # Events expire (event_ttl): this bounds those recorded within one TTL.
    events: int = 10_000
    # The policy centre's roles and role bindings (when it is the authorizer).
    roles: int = 200
    rolebindings: int = 1_000
    # The built-in accounts' users, and API keys (of all the tenant's users together).
    users: int = 1_000
    apikeys: int = 2_000
    # Stored bytes (keys and values) per tenant, every kind together: far below etcd's space
    # quota (2 GiB by default), which holds the history between compactions too.
    bytes: int = 64 * MiB
    tenants: dict[str, TenantQuota] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (*KINDS, "bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (nothing allowed) or more")
        for tenant in self.tenants:
            if err := dns1123_label_error(tenant):
                raise ValueError(f"tenants.{tenant!r} is not a tenant name: {err}")

    def limit(self, tenant: str, name: str) -> tuple[int, str]:
        """The quota `name` of `tenant`, and the option that sets it."""
        own = self.tenants.get(tenant)
        value = getattr(own, name) if own is not None else None
        if value is None:
            return getattr(self, name), f"quotas.{name}"
        return value, f'quotas.tenants."{tenant}".{name}'


@dataclass(slots=True)
class Hold:
    """What one admitted write takes before etcd has it (see the module docstring)."""

    tenant: str
    count: int
    size: int


class Quotas:
    """Usage and quotas of every tenant, for one apiserver process."""

    def __init__(self, config: QuotaConfig) -> None:
        self.config = config
        self._count: dict[tuple[str, str], int] = {}  # (plural, tenant): objects, seen and held
        self._bytes: dict[str, int] = {}  # tenant: stored bytes, seen and held
        self._kinds: dict[str, KindUsage] = {}

    def kind(
        self, plural: str, name: str, root: str, tenant_of: Callable[[Item], str | None] | None = None
    ) -> KindUsage:
        """The usage of the kind `plural` (`name`: one of them) whose keys are
        `<root><tenant>/<name>`, or `<root><name>` whose tenant `tenant_of` reads from the
        stored item (None: counted against no tenant)."""
        usage = self._kinds[plural] = KindUsage(self, plural, name, root, tenant_of)
        return usage

    def usage(self, tenant: str) -> dict[str, int]:
        """What `tenant` holds now (objects per kind, and bytes), held writes included."""
        out = {plural: self._count.get((plural, tenant), 0) for plural in self._kinds}
        out["bytes"] = self._bytes.get(tenant, 0)
        return out

    def report(self, tenant: str) -> list[tuple[str, int, int, str]]:
        """Each quota of `tenant` with what it uses now: (resource, used, limit, option), for
        the kinds counted here in KINDS' order, then bytes (QuotaService). Dict lookups only:
        no etcd round trip."""
        config = self.config
        out = []
        for plural in sorted(self._kinds, key=KINDS.index):
            limit, option = config.limit(tenant, plural)
            out.append((plural, self._count.get((plural, tenant), 0), limit, option))
        limit, option = config.limit(tenant, "bytes")
        out.append(("bytes", self._bytes.get(tenant, 0), limit, option))
        return out

    def _add(self, plural: str, tenant: str, count: int, size: int) -> None:
        if count:
            key = (plural, tenant)
            n = self._count.get(key, 0) + count
            if n:
                self._count[key] = n
            else:
                del self._count[key]
        if size:
            b = self._bytes.get(tenant, 0) + size
            if b:
                self._bytes[tenant] = b
            else:
                del self._bytes[tenant]

    def _check(self, plural: str, tenant: str, count: int, size: int, what: str) -> None:
        config = self.config
        if count:
            used = self._count.get((plural, tenant), 0)
            limit, option = config.limit(tenant, plural)
            if used + count > limit:
                raise _exceeded(
                    tenant, plural, (used, limit), option, f"tenant {tenant!r} has {used} of {limit} {plural}"
                )
        if size:
            used = self._bytes.get(tenant, 0)
            limit, option = config.limit(tenant, "bytes")
            if used + size > limit:
                situation = f"tenant {tenant!r} stores {used} of {limit} bytes and {what} needs {size} more"
                raise _exceeded(tenant, "bytes", (used, limit), option, situation)


def _exceeded(tenant: str, resource: str, used_of: tuple[int, int], option: str, situation: str) -> errors.ApiError:
    used, limit = used_of
    return errors.resource_exhausted(
        f"{situation} (quota {option}); delete some or ask an operator to raise it",
        reason="QUOTA_EXCEEDED",
        metadata={"tenant": tenant, "resource": resource, "used": str(used), "limit": str(limit), "quota": option},
    )


class KindUsage:
    """One kind's share of the usage: fed by the kind's watch hub (or a Mirror, as its
    `follower`), asked by its registry. Items outside `root` are not counted, only their
    revision is taken: a Mirror of a range holding several kinds feeds each of them
    (tke.internal.storage.mirror.Followers)."""

    def __init__(
        self,
        quotas: Quotas,
        plural: str,
        name: str,
        root: str,
        tenant_of: Callable[[Item], str | None] | None = None,
    ) -> None:
        self.quotas = quotas
        self.plural = plural
        self.name = name
        self.root = root
        self.tenant_of = tenant_of
        self._sizes: dict[str, tuple[str, int]] = {}  # key: (tenant, stored bytes), as counted
        self.revision = 0  # the last change (or load) applied
        self._done: list[tuple[int, int, Hold]] = []  # holds of done writes, by revision
        self._seq = itertools.count()

    def _tenant(self, item: Item) -> str | None:
        if self.tenant_of is not None:
            return self.tenant_of(item)
        return item.key[len(self.root) :].split("/", 1)[0]

    # -- kept by the hub ------------------------------------------------------------------

    def load(self, items: Iterable[Item], revision: int) -> None:
        """The kind's whole range at `revision` (the hub's first load, or one after its watch
        lost its history)."""
        for tenant, size in self._sizes.values():
            self.quotas._add(self.plural, tenant, -1, -size)
        self._sizes = {}
        for item in items:
            if item.key.startswith(self.root):
                self._put(item)
        self._advance(revision)

    def apply(self, event: Event) -> None:
        key = event.item.key
        if not key.startswith(self.root):
            self._advance(event.item.mod_revision)
            return
        before = self._sizes.pop(key, None)
        if before is not None:
            self.quotas._add(self.plural, before[0], -1, -before[1])
        if event.type is EventType.PUT:
            self._put(event.item)
        self._advance(event.item.mod_revision)

    def _put(self, item: Item) -> None:
        tenant, size = self._tenant(item), len(item.key) + len(item.value)
        if tenant is None:
            return
        self._sizes[item.key] = (tenant, size)
        self.quotas._add(self.plural, tenant, 1, size)

    def _advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        done = self._done
        while done and done[0][0] <= self.revision:
            self._release(heapq.heappop(done)[2])

    # -- asked by the registry --------------------------------------------------------------

    def hold(self, tenant: str, count: int, size: int, *, check: bool = True) -> Hold | None:
        """Admit a write that adds `count` objects and `size` bytes to `tenant` (RESOURCE_EXHAUSTED
        past a quota; `check=False`: a write that must not be refused, such as marking an object
        deleted) and hold its share until `done`; None when it adds nothing."""
        quotas = self.quotas
        count, size = max(count, 0), max(size, 0)
        if not count and not size:
            return None
        if check and not current_identity.get().is_platform_admin:
            quotas._check(self.plural, tenant, count, size, f"this {self.name}")
        quotas._add(self.plural, tenant, count, size)
        return Hold(tenant, count, size)

    def done(self, hold: Hold | None, revision: int) -> None:
        """The write of `hold` is over: written at `revision`, or not written (0)."""
        if hold is None:
            return
        if revision <= self.revision:
            self._release(hold)  # not written, or the watch has counted it already
        else:
            heapq.heappush(self._done, (revision, next(self._seq), hold))

    def freed(self, tenant: str, count: int, size: int, revision: int) -> None:
        """A write at `revision` removed `count` objects and `size` bytes of `tenant`: they are
        free at once, not only once the watch brings the change."""
        if revision > self.revision and (count > 0 or size > 0):
            hold = Hold(tenant, -max(count, 0), -max(size, 0))
            self.quotas._add(self.plural, tenant, hold.count, hold.size)
            heapq.heappush(self._done, (revision, next(self._seq), hold))

    def _release(self, hold: Hold) -> None:
        self.quotas._add(self.plural, hold.tenant, -hold.count, -hold.size)

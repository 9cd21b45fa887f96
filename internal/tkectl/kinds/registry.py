"""Every kind tkectl knows, found by plural, singular, alias or file `kind:`."""

from __future__ import annotations

from tke.internal.tkectl.errors import usage
from tke.internal.tkectl.kinds.base import Kind
from tke.internal.tkectl.kinds.ipam import Allocations, Bindings, Pools
from tke.internal.tkectl.kinds.platform import Clusters, Events, Machines
from tke.internal.tkectl.kinds.policy import RoleBindings, Roles
from tke.internal.tkectl.kinds.users import Users

KINDS: tuple[Kind, ...] = (
    Clusters(),
    Machines(),
    Events(),
    Pools(),
    Bindings(),
    Allocations(),
    Users(),
    Roles(),
    RoleBindings(),
)

_BY_NAME = {name.lower(): kind for kind in KINDS for name in (kind.plural, kind.singular, kind.kind, *kind.aliases)}


def names() -> list[str]:
    """Resource names for help and completion."""
    return [k.plural for k in KINDS]


def lookup(name: str) -> Kind:
    kind = _BY_NAME.get(name.lower())
    if kind is None:
        raise usage(f'unknown resource type "{name}"; known: {", ".join(names())}')
    return kind


def by_file_kind(kind_field: str) -> Kind:
    """The kind of a file document's `kind:` (Cluster, Pool, RoleBinding, ...)."""
    for kind in KINDS:
        if kind.kind == kind_field:
            return kind
    known = ", ".join(k.kind for k in KINDS)
    raise usage(f'unknown kind "{kind_field}" (known: {known}, List)')

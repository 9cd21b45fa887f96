"""From a gRPC call to authorization Attributes: verb, resource, object name and tenant.

- Services named in RESOURCES map their standard methods (Create, Get, List, Watch, Update,
  UpdateStatus, Delete) to Kubernetes-style verbs on one resource.
- AuthService methods have explicit rules (below): they act on users, passwords, API keys
  and tokens, naming the user concerned (the caller when the request leaves it empty), so
  that "my own account" can be authorized.
- ClusterService/GetKubeconfig is the verb "get-kubeconfig" on the cluster, or
  "get-admin-kubeconfig" when it asks to be cluster-admin in it: two verbs, so that a policy
  can give one without the other (the built-in editor may have a kubeconfig, not an admin one).
- Other methods named Verb+Resource (CreateRole, ListRoleBindings) become that verb on the
  lower-cased plural resource; anything else becomes its own kebab-case verb on the
  service's name.

The name and tenant come from the request, before any handler validates it, and authorizers
keep decisions keyed by them (the policy centre up to 10,000, an external authorizer's cache):
`oversized` says when one is longer than any that can name something (ATTRIBUTE_CHARS), so
that the call is refused before an authorizer, a cache or the audit sees it. Before, 300 Gets
naming 1 MB names grew the apiserver by 700 MiB, kept until roles or bindings changed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from tke.internal.auth.authz import Attributes
from tke.internal.auth.identity import Identity
from tke.internal.rpc.errors import FieldViolation

# Characters of the name or tenant a call may name. Object names are at most 253, tenants 63;
# ipamd's names join a namespace, a kind and a name (or a container id and an interface).
ATTRIBUTE_CHARS = 1024

VERBS = {
    "Create": "create",
    "Get": "get",
    "List": "list",
    "Watch": "watch",
    "WatchBatches": "watch",  # Watch with its ready events in one message: the same verb
    "Update": "update",
    "UpdateStatus": "update-status",
    "Delete": "delete",
}
# Longest first, so that UpdateStatus wins over Update.
_VERB_PREFIXES = sorted(VERBS, key=len, reverse=True)

RESOURCES = {
    "tke.platform.v1.ClusterService": "clusters",
    "tke.platform.v1.MachineService": "machines",
    "tke.platform.v1.EventService": "events",
    "tke.platform.v1.ClusterCredentialService": "clustercredentials",
    # Read-only: its Get is the verb "get" on a tenant's quotas (the request names no object).
    "tke.platform.v1.QuotaService": "quotas",
}


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()


# (Method names are the served ones, a bounded set: grpc answers UNIMPLEMENTED to any other.)
@functools.lru_cache(maxsize=1024)
def verb_and_resource(method_name: str) -> tuple[str, str]:
    """("get", "clusters") for "/tke.platform.v1.ClusterService/Get"."""
    service, _, method = method_name.lstrip("/").rpartition("/")
    if service in RESOURCES and method in VERBS:
        return VERBS[method], RESOURCES[service]
    for prefix in _VERB_PREFIXES:
        rest = method[len(prefix) :]
        if method.startswith(prefix) and rest[:1].isupper():
            resource = rest.lower()
            return VERBS[prefix], resource if resource.endswith("s") else resource + "s"
    short = service.rsplit(".", 1)[-1].removesuffix("Service").lower()
    return _kebab(method), short


@dataclass(frozen=True)
class _Shape:
    """Where a request message type keeps the name and tenant it names: its own `name` and
    `tenant_id` fields, and the message fields that carry a resource object (with metadata),
    in field-number order. Read from the descriptor once per message type."""

    name: bool
    tenant: bool
    objects: tuple[str, ...]


_shapes: dict[Any, _Shape] = {}  # by descriptor: one per request type the servers define


def _shape(request: Message) -> _Shape:
    descriptor = request.DESCRIPTOR
    shape = _shapes.get(descriptor)
    if shape is None:
        fields = descriptor.fields_by_name
        by_number: list[Any] = sorted(fields.values(), key=lambda f: f.number)
        objects = tuple(
            f.name
            for f in by_number
            if f.message_type is not None and not f.is_repeated and "metadata" in f.message_type.fields_by_name
        )
        shape = _shapes[descriptor] = _Shape("name" in fields, "tenant_id" in fields, objects)
    return shape


def _object(request: Message, shape: _Shape) -> Any:
    """The resource object a write request carries (the first set message field with metadata)."""
    for field in shape.objects:
        if request.HasField(field):
            return getattr(request, field)
    return None


def name_and_tenant(request: Any) -> tuple[str, str]:
    """The object name and tenant a request names (empty when it names none)."""
    if not isinstance(request, Message):
        return "", ""
    shape = _shape(request)
    name = getattr(request, "name", "") if shape.name else ""
    tenant = getattr(request, "tenant_id", "") if shape.tenant else ""
    obj = _object(request, shape) if shape.objects else None
    if obj is not None:
        name = name or obj.metadata.name
        tenant = tenant or obj.metadata.tenant_id
    return str(name), str(tenant)


_Rule = tuple[str, str, Callable[[Any, Identity], str]]
_AUTH_SERVICE: dict[str, _Rule] = {
    # Open (no credentials), but audited with the user name it tried; a name longer than any
    # valid one is cut, so that an event stays small.
    "Login": ("login", "tokens", lambda r, i: r.username[:256]),
    "CreateUser": ("create", "users", lambda r, i: r.user.metadata.name),
    "UpdateUser": ("update", "users", lambda r, i: r.user.metadata.name),
    "DeleteUser": ("delete", "users", lambda r, i: r.name),
    "ListUsers": ("list", "users", lambda r, i: ""),
    "ChangePassword": ("update", "passwords", lambda r, i: r.name or i.user),
    "CreateAPIKey": ("create", "apikeys", lambda r, i: r.user or i.user),
    "ListAPIKeys": ("list", "apikeys", lambda r, i: r.user or i.user),
    # Key ids are "<user>.<random>": the owner is the part before the dot.
    "DeleteAPIKey": ("delete", "apikeys", lambda r, i: r.id.partition(".")[0]),
    "Logout": ("logout", "tokens", lambda r, i: i.user),
}


def _kubeconfig_verb(request: Any) -> str:
    return "get-admin-kubeconfig" if getattr(request, "admin", False) else "get-kubeconfig"


def attributes_for(method_name: str, request: Any, identity: Identity) -> Attributes:
    """The Attributes of a call made by `identity`."""
    service, _, method = method_name.lstrip("/").rpartition("/")
    name, tenant = name_and_tenant(request)
    if service == "tke.auth.v1.AuthService" and method in _AUTH_SERVICE:
        verb, resource, name_of = _AUTH_SERVICE[method]
        name = name_of(request, identity) if isinstance(request, Message) else ""
    elif service == "tke.platform.v1.ClusterService" and method == "GetKubeconfig":
        verb, resource = _kubeconfig_verb(request), "clusters"
    else:
        verb, resource = verb_and_resource(method_name)
    return Attributes(identity, verb, resource, name, tenant or identity.tenant_id)


def oversized(attributes: Attributes, request: Any) -> FieldViolation | None:
    """A violation when the name or tenant `attributes` hold from `request` is longer than
    ATTRIBUTE_CHARS, naming the request's field that holds it; else None."""
    for value, what in ((attributes.name, "name"), (attributes.tenant, "tenant")):
        if len(value) > ATTRIBUTE_CHARS:
            field = _field_of(request, value) if isinstance(request, Message) else ""
            return FieldViolation(field or what, f"{len(value)} characters: no {what} is longer than {ATTRIBUTE_CHARS}")
    return None


def recorded(attributes: Attributes) -> Attributes:
    """`attributes` with the name and tenant cut to ATTRIBUTE_CHARS, for the audit record."""
    if len(attributes.name) <= ATTRIBUTE_CHARS and len(attributes.tenant) <= ATTRIBUTE_CHARS:
        return attributes
    return Attributes(
        attributes.identity,
        attributes.verb,
        attributes.resource,
        attributes.name[:ATTRIBUTE_CHARS],
        attributes.tenant[:ATTRIBUTE_CHARS],
    )


def _field_of(message: Message, value: str, prefix: str = "") -> str:
    """The path of the string field of `message` that holds `value` (or, for a name built from
    several fields, the longest string field over ATTRIBUTE_CHARS); empty when none does."""
    longest, longest_len = "", ATTRIBUTE_CHARS
    for fd, field_value in message.ListFields():
        path = f"{prefix}{fd.name}"
        items = list(field_value) if fd.is_repeated else [field_value]
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]" if fd.is_repeated else path
            if isinstance(item, Message):
                found = _field_of(item, value, f"{item_path}.")
                if found:
                    return found
            elif isinstance(item, str):
                if item == value:
                    return item_path
                if len(item) > longest_len:
                    longest, longest_len = item_path, len(item)
    return longest

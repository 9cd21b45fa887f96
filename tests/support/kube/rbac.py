"""Who is calling, and may they: kube-apiserver's authentication and RBAC authorization.

Authentication, in kube-apiserver's order: a client certificate signed by the client CA (user =
CN, groups = O), then a bearer token from the static token file (`token,user,uid,"g1,g2"`, the
format of --token-auth-file), then (when enabled, kube-apiserver's --enable-bootstrap-token-auth)
a bootstrap token of a Secret in kube-system (registry.py: bootstrap_token_user); a request
with none is system:anonymous (anonymous auth is on by default, as in kube-apiserver) and an
unknown token is 401. Every authenticated user is
also in system:authenticated.

Authorization is RBAC: system:masters may do everything; otherwise a request is allowed when a
rule of a ClusterRole bound by a ClusterRoleBinding, or of a Role or ClusterRole bound by a
RoleBinding of the request's namespace, matches its verb, API group, resource (with
subresource, as `pods/eviction`), name, or non-resource path. The bootstrap roles and bindings
that make discovery, health and SelfSubjectReview open to everyone are created at start-up
(registry.py), as the real server does. Aggregated ClusterRoles are not aggregated."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tests.support.kube.errors import StatusError, unauthorized


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        return out


ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))


def parse_tokens(text: str) -> dict[str, User]:
    out = {}
    for row in csv.reader(io.StringIO(text)):
        if not row or row[0].startswith("#"):
            continue
        if len(row) < 3:
            raise ValueError(f"token file line needs at least token,user,uid: {row!r}")
        groups = tuple(g for g in row[3].split(",") if g) if len(row) > 3 else ()
        out[row[0]] = User(row[1], groups, row[2])
    return out


class Authenticator:
    def __init__(
        self,
        tokens: dict[str, User] | None = None,
        anonymous: bool = True,
        bootstrap: Callable[[str], User | None] | None = None,
    ) -> None:
        self.tokens = tokens or {}
        self.anonymous = anonymous
        # Who a bootstrap token is, or None (not one, unknown, expired); None: not enabled.
        self.bootstrap = bootstrap

    def authenticate(self, authorization: str | None, peer_cert: dict[str, Any] | None) -> User:
        if peer_cert:
            names: dict[str, list[str]] = {}
            for rdn in peer_cert.get("subject", ()):
                for key, value in rdn:
                    names.setdefault(key, []).append(value)
            cn = names.get("commonName", [""])[0]
            if cn:
                return _authenticated(User(cn, tuple(names.get("organizationName", []))))
        if authorization:
            scheme, _, token = authorization.partition(" ")
            user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if user is None and self.bootstrap is not None and scheme.lower() == "bearer":
                user = self.bootstrap(token.strip())
            if user is None:
                raise unauthorized()
            return _authenticated(user)
        if not self.anonymous:
            raise unauthorized()
        return ANONYMOUS


def _authenticated(user: User) -> User:
    groups = user.groups if "system:authenticated" in user.groups else (*user.groups, "system:authenticated")
    return User(user.name, groups, user.uid)


@dataclass(frozen=True)
class Request:
    """What is asked: a verb on a resource (group, plural, subresource, namespace, name), or a
    verb on a non-resource path."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)


def _subject_matches(subject: dict[str, Any], user: User, namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        return user.name == f"system:serviceaccount:{subject.get('namespace') or namespace}:{name}"
    return False


def _has(values: list[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)  # type: ignore[operator]


def rule_allows(rule: dict[str, Any], req: Request) -> bool:
    if not _has(rule.get("verbs"), req.verb):
        return False
    if not req.is_resource:
        urls = rule.get("nonResourceURLs") or []
        return any(u in (req.path, "*") or (u.endswith("*") and req.path.startswith(u[:-1])) for u in urls)
    if not _has(rule.get("apiGroups"), req.group):
        return False
    resources = rule.get("resources") or []
    full = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
    if not any(
        r in ("*", full) or (req.subresource and r in (f"{req.resource}/*", f"*/{req.subresource}")) for r in resources
    ):
        return False
    names = rule.get("resourceNames") or []
    return not names or req.name in names


Rules = list[dict[str, Any]]


def rules_for(user: User, namespace: str, bindings: Iterable[tuple[dict[str, Any], Rules]]) -> Iterable[dict[str, Any]]:
    """The rules of the roles bound to `user` by `bindings` ((binding, rules of its role))."""
    for binding, rules in bindings:
        where = binding["metadata"].get("namespace", namespace)
        if any(_subject_matches(s, user, where) for s in binding.get("subjects") or []):
            yield from rules


def forbidden(user: User, req: Request) -> StatusError:
    if not req.is_resource:
        return StatusError(403, "Forbidden", f'forbidden: User "{user.name}" cannot {req.verb} path "{req.path}"', {})
    full = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
    what = f'{full} "{req.name}"' if req.name else full
    where = f'in the namespace "{req.namespace}"' if req.namespace else "at the cluster scope"
    qualified = f"{what}.{req.group}" if req.group and not req.name else what
    message = (
        f'{qualified} is forbidden: User "{user.name}" cannot {req.verb} resource "{full}" '
        f'in API group "{req.group}" {where}'
    )
    details: dict[str, Any] = {"kind": req.resource}
    if req.name:
        details = {"name": req.name, **({"group": req.group} if req.group else {}), "kind": req.resource}
    elif req.group:
        details = {"group": req.group, "kind": req.resource}
    return StatusError(403, "Forbidden", message, details)

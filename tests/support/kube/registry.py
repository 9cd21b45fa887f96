"""The API's semantics over the store, kind-independent as kube-apiserver's generic registry is:

- create: name or generateName, namespace from the URL (it must exist and not be terminating),
  uid, creationTimestamp, resourceVersion, generation 1 for kinds with a spec, status cleared
  for kinds whose controller writes it, a few defaults (below); validated (validation.py).
- update (PUT) and patch: 409 Conflict on a stale metadata.resourceVersion; the main resource
  keeps the old status and the status subresource keeps everything but status; generation goes
  up when spec changes; a write that changes nothing changes no resourceVersion either.
- delete: an object with finalizers gets deletionTimestamp (generation + 1) and stays until
  its last finalizer is removed; otherwise it goes at once, and objects it owns
  (ownerReferences) are deleted after it (propagationPolicy Background or Foreground) or
  released (Orphan). Pods go at once too: there is no kubelet to end them gracefully.
- namespaces: deleting one makes it Terminating, deletes everything in it, and removes it when
  it is empty (the namespace controller's work); every namespace gets a `default`
  ServiceAccount (the service account controller's).
- Pod Security Admission, enforce mode: creating a pod that violates its namespace's
  `pod-security.kubernetes.io/enforce` level is 403 Forbidden (tests/support/pss.py); updates
  are not checked (a pod's spec is all but immutable), nor warn and audit.
- PodDisruptionBudgets' status is kept current (disruption.py), and pods/eviction honours it.
- Defaults: Pod status.phase Pending; Service type ClusterIP with a cluster IP from the service
  CIDR, targetPort and protocol, node ports for NodePort and LoadBalancer services; Namespace
  phase Active. Nothing else is defaulted (a real server fills in many more fields).
"""

from __future__ import annotations

import base64
import copy
import datetime
import ipaddress
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from tests.support import pss
from tests.support.kube import disruption, managed, patches
from tests.support.kube.catalog import BY_KIND, BY_PATH, Resource
from tests.support.kube.errors import (
    STALE,
    StatusError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
)
from tests.support.kube.rbac import Request, User, rule_allows, rules_for
from tests.support.kube.store import Object, Store
from tests.support.kube.validation import Validator

NAMESPACES = BY_PATH[("", "v1", "namespaces")]
PODS = BY_PATH[("", "v1", "pods")]
SERVICES = BY_PATH[("", "v1", "services")]
SERVICE_ACCOUNTS = BY_PATH[("", "v1", "serviceaccounts")]
SECRETS = BY_PATH[("", "v1", "secrets")]
PDBS = BY_PATH[("policy", "v1", "poddisruptionbudgets")]
REPLICA_SETS = BY_PATH[("apps", "v1", "replicasets")]
DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]
STATEFUL_SETS = BY_PATH[("apps", "v1", "statefulsets")]
RBAC = "rbac.authorization.k8s.io"
CLUSTER_ROLES = BY_PATH[(RBAC, "v1", "clusterroles")]
CLUSTER_ROLE_BINDINGS = BY_PATH[(RBAC, "v1", "clusterrolebindings")]
ROLES = BY_PATH[(RBAC, "v1", "roles")]
ROLE_BINDINGS = BY_PATH[(RBAC, "v1", "rolebindings")]
# What kube-apiserver's bootstrap policy creates that matters here.
BOOTSTRAP_ROLES: dict[str, list[dict[str, Any]]] = {
    "cluster-admin": [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"nonResourceURLs": ["*"], "verbs": ["*"]},
    ],
    "system:discovery": [
        {
            "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                                "/readyz", "/version", "/version/"],
            "verbs": ["get"],
        }
    ],
    "system:public-info-viewer": [
        {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}
    ],
    "system:basic-user": [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
    ],
}  # fmt: skip
BOOTSTRAP_BINDINGS = {
    "cluster-admin": ["system:masters"],
    "system:discovery": ["system:authenticated"],
    "system:public-info-viewer": ["system:authenticated", "system:unauthenticated"],
    "system:basic-user": ["system:authenticated"],
}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _drop_nulls(value: Any) -> Any:
    """JSON null means "not set" to Kubernetes, which never writes it back."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _untimed(obj: Object) -> Object:
    """The object with the times of its managedFields left out."""
    meta = obj.get("metadata") or {}
    entries = [{k: v for k, v in e.items() if k != "time"} for e in meta.get("managedFields") or []]
    return {**obj, "metadata": {**meta, "managedFields": entries}}


def _check_name(in_body: Any, in_url: str) -> None:
    if in_body != in_url:
        raise bad_request(f"the name of the object ({in_body}) does not match the name on the URL ({in_url})")


def _name_suffix() -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(5))


@dataclass
class Page:
    items: list[Object]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None


class Registry:
    def __init__(
        self,
        validator: Validator,
        *,
        history: int = 5000,
        service_cidr: str = "10.96.0.0/12",
        node_ports: tuple[int, int] = (30000, 32767),
    ) -> None:
        self.store = Store(history)
        self.validator = validator
        self.service_cidr = ipaddress.ip_network(service_cidr)
        self.node_ports = node_ports
        self._sweeping = False
        self._bootstrap()

    # --- reading --------------------------------------------------------------------------

    def bootstrap_token_user(self, token: str) -> User | None:
        """The user a bootstrap token authenticates as (kube-apiserver's bootstrap token
        authenticator): "ID.SECRET" matching the Secret kube-system/bootstrap-token-ID of type
        bootstrap.kubernetes.io/token, usable for authentication and not expired, is
        system:bootstrap:ID in system:bootstrappers and the Secret's auth-extra-groups."""
        token_id, dot, secret = token.partition(".")
        if not dot or len(token_id) != 6 or len(secret) != 16:
            return None
        obj = self.store.get(SECRETS, "kube-system", f"bootstrap-token-{token_id}")
        if obj is None or obj.get("type") != "bootstrap.kubernetes.io/token":
            return None
        try:
            data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        except ValueError:
            return None
        if data.get("token-secret") != secret or data.get("usage-bootstrap-authentication") != "true":
            return None
        expires = data.get("expiration")
        now = datetime.datetime.now(datetime.UTC)
        if expires and datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")) <= now:
            return None
        extra = tuple(g for g in data.get("auth-extra-groups", "").split(",") if g)
        return User(f"system:bootstrap:{token_id}", ("system:bootstrappers", *extra, "system:authenticated"))

    def get(self, resource: Resource, namespace: str, name: str) -> Object:
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource.plural, resource.group, name)
        return self.render(resource, obj)

    @staticmethod
    def render(resource: Resource, obj: Object) -> Object:
        out = copy.deepcopy(obj)
        return {"apiVersion": resource.api_version, "kind": resource.kind, **out}

    def list_page(
        self, resource: Resource, namespace: str, matches: Callable[[Object], bool], limit: int, token: str
    ) -> Page:
        items = [o for o in self.store.items(resource, namespace) if matches(o)]
        rv = self.store.rv
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                start, rv = (state["start"][0], state["start"][1]), int(state["rv"])
            except (ValueError, KeyError, TypeError, IndexError):
                raise bad_request("continue key is not valid: incorrect encoded start resourceVersion") from None
            if rv < self.store.compacted:
                raise StatusError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a "
                    "new list without the continue parameter.",
                )
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start]
        page = Page([copy.deepcopy(o) for o in items], str(rv))
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            state = {"rv": rv, "start": [last.get("namespace", ""), last["name"]]}
            page = Page(
                page.items[:limit],
                str(rv),
                base64.urlsafe_b64encode(json.dumps(state).encode()).decode(),
                len(items) - limit,
            )
        return page

    # --- authorization --------------------------------------------------------------------

    def allowed(self, user: User, req: Request) -> bool:
        if "system:masters" in user.groups:
            return True

        def role_rules(ref: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
            kind, name = ref.get("kind"), ref.get("name", "")
            if kind == "ClusterRole":
                role = self.store.get(CLUSTER_ROLES, "", name)
            else:
                role = self.store.get(ROLES, namespace, name)
            return list((role or {}).get("rules") or [])

        def bindings() -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
            for b in self.store.items(CLUSTER_ROLE_BINDINGS):
                yield b, role_rules(b.get("roleRef") or {}, "")
            if req.namespace:
                for b in self.store.items(ROLE_BINDINGS, req.namespace):
                    yield b, role_rules(b.get("roleRef") or {}, req.namespace)

        return any(rule_allows(rule, req) for rule in rules_for(user, req.namespace, bindings()))

    # --- writing --------------------------------------------------------------------------

    def create(
        self,
        resource: Resource,
        namespace: str,
        body: Any,
        *,
        manager: str,
        dry_run: bool = False,
        fields: list[dict[str, Any]] | None = None,
    ) -> Object:
        """Create; `fields`: the managedFields of a create by apply."""
        obj = self._decode(resource, body)
        meta = obj.setdefault("metadata", {})
        self._check_namespace(resource, namespace, meta)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _name_suffix()
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "managedFields", "generation", "selfLink"):  # fmt: skip
            meta.pop(key, None)
        self.validator.check(resource, obj)
        if resource is PODS:
            self._pod_security(namespace, obj)
        if self.store.get(resource, namespace, meta["name"]) is not None:
            raise already_exists(resource.plural, resource.group, meta["name"])
        obj.pop("apiVersion")
        obj.pop("kind")
        if resource.clear_status_on_create:
            obj.pop("status", None)
        self._default(resource, obj, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now())
        if resource.generation:
            meta["generation"] = 1
        if fields is not None:
            if fields:
                meta["managedFields"] = fields
        else:
            managed.record_update(None, obj, manager=manager, now=now(), api_version=resource.api_version)
        if dry_run:
            return self.render(resource, obj)
        stored = self.store.put(resource, obj)
        self._after(resource, stored)
        return self.render(resource, stored)

    def update(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        body: Any,
        *,
        manager: str,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Object:
        old = self.store.get(resource, namespace, name)
        if old is None:
            raise not_found(resource.plural, resource.group, name)
        new = self._decode(resource, body)
        meta = new.setdefault("metadata", {})
        _check_name(meta.get("name", name), name)
        if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(resource.plural, resource.group, name, STALE)
        return self._replace(resource, old, new, manager=manager, subresource=subresource, dry_run=dry_run)

    def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        *,
        content_type: str,
        body: bytes,
        manager: str,
        force: bool = False,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Object:
        old = self.store.get(resource, namespace, name)
        if content_type == "application/apply-patch+yaml":
            if subresource:
                raise bad_request("apply to a subresource is not supported by this stand-in")
            return self._apply(resource, namespace, name, old, body, manager=manager, force=force, dry_run=dry_run)
        if old is None:
            raise not_found(resource.plural, resource.group, name)
        try:
            patch = json.loads(body)
        except ValueError as err:
            raise bad_request(f"error decoding patch: {err}") from None
        current = self.render(resource, old)
        if content_type == "application/merge-patch+json":
            new = patches.merge_patch(current, patch)
        elif content_type == "application/json-patch+json":
            new = patches.json_patch(current, patch)
        elif content_type == "application/strategic-merge-patch+json":
            new = patches.strategic_merge_patch(current, patch)
        else:
            raise StatusError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, "
                f"application/strategic-merge-patch+json ({content_type})",
            )
        if not isinstance(new, dict):
            raise bad_request("the patch does not result in an object")
        meta = new.get("metadata") or {}
        _check_name(meta.get("name"), name)
        if meta.get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise conflict(resource.plural, resource.group, name, STALE)
        return self._replace(resource, old, new, manager=manager, subresource=subresource, dry_run=dry_run)

    def _apply(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        old: Object | None,
        body: bytes,
        *,
        manager: str,
        force: bool,
        dry_run: bool,
    ) -> Object:
        if not manager:
            raise bad_request("fieldManager is required for apply requests (PATCH with application/apply-patch+yaml)")
        try:
            applied = yaml.safe_load(body)
        except yaml.YAMLError as err:
            raise bad_request(f"error decoding YAML: {err}") from None
        applied = self._decode(resource, applied)
        meta = applied.setdefault("metadata", {})
        _check_name(meta.get("name"), name)
        if resource.namespaced:
            meta.setdefault("namespace", namespace)
        if meta.get("resourceVersion") and old and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise conflict(resource.plural, resource.group, name, STALE)
        applied.pop("status", None)
        self.validator.check(resource, applied)
        if old is None:
            result = managed.apply(None, applied, manager, force, now())
            fields = result["metadata"].pop("managedFields", [])
            return self.create(resource, namespace, result, manager=manager, dry_run=dry_run, fields=fields)
        result = managed.apply(self.render(resource, old), applied, manager, force, now())
        return self._replace(resource, old, result, manager=manager, dry_run=dry_run, fields_recorded=True)

    def _replace(
        self,
        resource: Resource,
        old: Object,
        new: Object,
        *,
        manager: str,
        subresource: str = "",
        dry_run: bool = False,
        fields_recorded: bool = False,
    ) -> Object:
        new = _drop_nulls(new)
        new.pop("apiVersion", None)
        new.pop("kind", None)
        old_meta = old["metadata"]
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            meta = new.setdefault("metadata", {})
            for key in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation"):  # fmt: skip
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            if not fields_recorded:
                meta.pop("managedFields", None)
            if "status" in resource.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        self._default(resource, new, old)
        self.validator.check(resource, {"apiVersion": resource.api_version, "kind": resource.kind, **new})
        if resource.generation and new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old_meta.get("generation", 1) + 1
        if not fields_recorded:
            if "managedFields" in old_meta:
                new["metadata"]["managedFields"] = copy.deepcopy(old_meta["managedFields"])
            managed.record_update(
                old, new, manager=manager, now=now(), api_version=resource.api_version, subresource=subresource
            )
        if new == old or _untimed(new) == _untimed(old):
            # As kube-apiserver (its managed fields timestamp transformer): a write that changes
            # nothing but the time in managedFields is no change, and no new resourceVersion.
            return self.render(resource, old)
        if dry_run:
            return self.render(resource, new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(resource, new, "Background")
            return self.render(resource, new)
        stored = self.store.put(resource, new)
        self._after(resource, stored)
        return self.render(resource, stored)

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        options: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> tuple[Object, bool]:
        """Delete, or start deleting: (the object, whether it is gone already)."""
        options = options or {}
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource.plural, resource.group, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            uid = obj["metadata"]["uid"]
            why = f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {uid}"
            raise conflict(resource.plural, resource.group, name, why)
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            why = (
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {obj['metadata']['resourceVersion']}"
            )
            raise conflict(resource.plural, resource.group, name, why)
        if dry_run:
            return self.render(resource, obj), False
        propagation = str(options.get("propagationPolicy") or "Background")
        if obj["metadata"].get("deletionTimestamp"):
            return self.render(resource, obj), False
        if obj["metadata"].get("finalizers") or resource is NAMESPACES:
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            if "generation" in marked["metadata"]:
                marked["metadata"]["generation"] += 1
            if resource is NAMESPACES:
                marked.setdefault("status", {})["phase"] = "Terminating"
            stored = self.store.put(resource, marked)
            if resource is NAMESPACES:
                self._sweep_namespaces()
            gone = self.store.get(resource, namespace, name) is None
            return self.render(resource, stored), gone
        self._remove(resource, obj, propagation)
        return self.render(resource, obj), True

    def _remove(self, resource: Resource, obj: Object, propagation: str) -> None:
        self.store.remove(resource, obj)
        self._collect_dependents(obj["metadata"]["uid"], propagation)
        self._after(resource, obj)

    def _collect_dependents(self, uid: str, propagation: str) -> None:
        """The garbage collector: dependents of a deleted owner go too, unless another owner of
        theirs is still there; with Orphan they only lose the reference."""
        for resource, dep in list(self.store.all_items()):
            refs = dep["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == uid for r in refs):
                continue
            current = self.store.get(resource, dep["metadata"].get("namespace", ""), dep["metadata"]["name"])
            if current is None:
                continue
            others = [r for r in refs if r.get("uid") != uid]
            if propagation == "Orphan" or any(self.store.find(r.get("uid", "")) for r in others):
                released = copy.deepcopy(current)
                if others:
                    released["metadata"]["ownerReferences"] = others
                else:
                    released["metadata"].pop("ownerReferences", None)
                self.store.put(resource, released)
            elif not current["metadata"].get("deletionTimestamp"):
                self.delete(resource, current["metadata"].get("namespace", ""), current["metadata"]["name"])

    def evict(self, namespace: str, name: str, body: Any) -> None:
        if not isinstance(body, dict):
            raise bad_request("the body of an eviction must be an Eviction object")
        api_version, kind = body.get("apiVersion", "policy/v1"), body.get("kind", "Eviction")
        if kind != "Eviction" or api_version not in ("policy/v1", "policy/v1beta1"):
            raise bad_request(f"the body of an eviction must be a policy/v1 Eviction, not {api_version} {kind}")
        self.validator.check(PODS, {**body, "apiVersion": "policy/v1"}, "policy/v1", "Eviction")
        if body.get("metadata", {}).get("name") != name:
            raise bad_request("name in URL does not match name in Eviction object")
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            raise not_found("pods", "", name)
        pdbs = self.store.items(PDBS, namespace)
        pdb = disruption.check_eviction(pod, pdbs, self._budget)
        if pdb is not None:
            used = copy.deepcopy(pdb)
            status = used.setdefault("status", {})
            status["disruptionsAllowed"] = max(0, int(status.get("disruptionsAllowed", 0)) - 1)
            status.setdefault("disruptedPods", {})[name] = now()
            self.store.put(PDBS, used)
        options = body.get("deleteOptions") or {}
        self.delete(PODS, namespace, name, options)

    # --- what controllers would do ----------------------------------------------------------

    def _after(self, resource: Resource, obj: Object) -> None:
        namespace = obj["metadata"].get("namespace", "")
        name = obj["metadata"]["name"]
        if (
            resource is NAMESPACES
            and self.store.get(NAMESPACES, "", name) is not None
            and not obj["metadata"].get("deletionTimestamp")
            and self.store.get(SERVICE_ACCOUNTS, name, "default") is None
        ):
            self._seed(SERVICE_ACCOUNTS, {"metadata": {"name": "default", "namespace": name}})
        if resource in (PODS, PDBS, REPLICA_SETS, DEPLOYMENTS, STATEFUL_SETS) and namespace:
            self._refresh_budgets(namespace)
        if namespace:
            ns = self.store.get(NAMESPACES, "", namespace)
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                self._sweep_namespaces()

    def _scale_of(self, pod: Object) -> tuple[str, int] | None:
        namespace = pod["metadata"].get("namespace", "")
        ref = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
        if ref is None:
            return None
        if ref.get("kind") == "ReplicaSet":
            rs = self.store.get(REPLICA_SETS, namespace, ref.get("name", ""))
            if rs is None:
                return None
            owner = next((r for r in rs["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
            if owner is not None and owner.get("kind") == "Deployment":
                deployment = self.store.get(DEPLOYMENTS, namespace, owner.get("name", ""))
                if deployment is not None:
                    return deployment["metadata"]["uid"], int((deployment.get("spec") or {}).get("replicas", 1))
            return rs["metadata"]["uid"], int((rs.get("spec") or {}).get("replicas", 1))
        if ref.get("kind") == "StatefulSet":
            sts = self.store.get(STATEFUL_SETS, namespace, ref.get("name", ""))
            if sts is not None:
                return sts["metadata"]["uid"], int((sts.get("spec") or {}).get("replicas", 1))
        return None

    def _budget(self, pdb: Object) -> disruption.Budget:
        pods = [p for p in self.store.items(PODS, pdb["metadata"]["namespace"]) if disruption.matches(pdb, p)]
        return disruption.budget(pdb, pods, self._scale_of)

    def _refresh_budgets(self, namespace: str) -> None:
        for pdb in self.store.items(PDBS, namespace):
            status = disruption.status(pdb, self._budget(pdb), now())
            old = pdb.get("status") or {}
            if {k: v for k, v in old.items() if k != "disruptedPods"} != status:
                fresh = copy.deepcopy(pdb)
                fresh["status"] = status
                self.store.put(PDBS, fresh)

    def _sweep_namespaces(self) -> None:
        """The namespace controller: empty every Terminating namespace, then remove it."""
        if self._sweeping:
            return
        self._sweeping = True
        try:
            for ns in self.store.items(NAMESPACES):
                if not ns["metadata"].get("deletionTimestamp"):
                    continue
                name = ns["metadata"]["name"]
                left = [
                    (r, o) for r, o in self.store.all_items() if r.namespaced and o["metadata"].get("namespace") == name
                ]
                for resource, obj in left:
                    meta = obj["metadata"]
                    if not meta.get("deletionTimestamp") and self.store.get(resource, name, meta["name"]):
                        self.delete(resource, name, meta["name"])
                if any(o["metadata"].get("namespace") == name for r, o in self.store.all_items() if r.namespaced):
                    continue
                current = self.store.get(NAMESPACES, "", name)
                if current is not None and not current["metadata"].get("finalizers"):
                    self.store.remove(NAMESPACES, current)
        finally:
            self._sweeping = False

    # --- helpers ----------------------------------------------------------------------------

    def _decode(self, resource: Resource, body: Any) -> Object:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request must be a {resource.kind} object")
        # Like kube-apiserver, the URL supplies a missing apiVersion or kind; a different one is wrong.
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **body}
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if (api_version, kind) != (resource.api_version, resource.kind):
            if BY_KIND.get((str(api_version), str(kind))) is None and kind == resource.kind:
                raise bad_request(
                    f"the API version in the data ({api_version}) does not match the expected API version "
                    f"({resource.api_version})"
                )
            raise bad_request(
                f"the object provided is unrecognized ({api_version}, Kind={kind}): "
                f"expected {resource.api_version}, Kind={resource.kind}"
            )
        obj: Object = _drop_nulls(copy.deepcopy(body))
        obj.setdefault("metadata", {})
        return obj

    def _check_namespace(self, resource: Resource, namespace: str, meta: dict[str, Any]) -> None:
        if not resource.namespaced:
            meta.pop("namespace", None)
            return
        if meta.get("namespace", namespace) != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = namespace
        ns = self.store.get(NAMESPACES, "", namespace)
        if ns is None:
            raise not_found("namespaces", "", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise StatusError(
                403,
                "Forbidden",
                f'{resource.plural} "{meta.get("name", "")}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                {
                    "name": meta.get("name", ""),
                    "kind": resource.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def _pod_security(self, namespace: str, pod: Object) -> None:
        """Pod Security Admission's enforce mode: a pod that violates the level of its namespace's
        `pod-security.kubernetes.io/enforce` label (at `enforce-version`) is refused, 403 Forbidden
        as kube-apiserver words it (tests/support/pss.py evaluates the Pod Security Standards)."""
        ns = self.store.get(NAMESPACES, "", namespace)
        refusal = pss.admission((ns or {}).get("metadata", {}).get("labels") or {}, pod)
        if refusal is not None:
            name = pod["metadata"].get("name", "")
            raise StatusError(403, "Forbidden", f'pods "{name}" is forbidden: {refusal}',
                              {"name": name, "kind": "pods"})  # fmt: skip

    def _default(self, resource: Resource, obj: Object, old: Object | None) -> None:
        if resource is PODS and old is None:
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        elif resource is NAMESPACES:
            if old is None:
                obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif resource is SERVICES:
            self._default_service(obj, old)

    def _default_service(self, obj: Object, old: Object | None) -> None:
        spec = obj.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            if old_spec.get("clusterIP") and "clusterIP" not in spec:
                spec["clusterIP"] = old_spec["clusterIP"]
            if "clusterIP" not in spec:
                spec["clusterIP"] = self._free_cluster_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            if spec["clusterIP"] != "None":
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        used = self._used_node_ports(obj)
        causes: list[tuple[str, str, str]] = []
        old_ports = {p.get("port"): p for p in old_spec.get("ports") or []}
        for i, port in enumerate(spec.get("ports") or []):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
            if spec["type"] not in ("NodePort", "LoadBalancer"):
                continue
            if "nodePort" not in port and old_ports.get(port.get("port"), {}).get("nodePort"):
                port["nodePort"] = old_ports[port.get("port")]["nodePort"]
            if "nodePort" in port:
                low, high = self.node_ports
                if not low <= port["nodePort"] <= high:
                    causes.append(
                        (
                            "FieldValueInvalid",
                            f"spec.ports[{i}].nodePort",
                            f"Invalid value: {port['nodePort']}: provided port is not in the valid range. "
                            f"The range of valid ports is {low}-{high}",
                        )
                    )
                elif port["nodePort"] in used:
                    causes.append(
                        (
                            "FieldValueInvalid",
                            f"spec.ports[{i}].nodePort",
                            f"Invalid value: {port['nodePort']}: provided port is already allocated",
                        )
                    )
            else:
                port["nodePort"] = next(p for p in range(self.node_ports[0], self.node_ports[1] + 1) if p not in used)
            used.add(port["nodePort"])
        if causes:
            raise invalid("Service", "", obj["metadata"].get("name", ""), causes)

    def _free_cluster_ip(self) -> str:
        used = {(s.get("spec") or {}).get("clusterIP") for s in self.store.items(SERVICES)}
        for host in self.service_cidr.hosts():
            if str(host) not in used:
                return str(host)
        message = "Internal error occurred: failed to allocate a serviceIP: range is full"
        raise StatusError(500, "InternalError", message)

    def _used_node_ports(self, obj: Object) -> set[int]:
        me = (obj["metadata"].get("namespace"), obj["metadata"].get("name"))
        return {
            p["nodePort"]
            for s in self.store.items(SERVICES)
            if (s["metadata"].get("namespace"), s["metadata"]["name"]) != me
            for p in (s.get("spec") or {}).get("ports") or []
            if "nodePort" in p
        }

    def _seed(self, resource: Resource, obj: Object) -> None:
        body = {"apiVersion": resource.api_version, "kind": resource.kind, **obj}
        self.create(resource, obj["metadata"].get("namespace", ""), body, manager="kube-apiserver")

    def _bootstrap(self) -> None:
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._seed(NAMESPACES, {"metadata": {"name": name}})
        for name, rules in BOOTSTRAP_ROLES.items():
            labels = {"kubernetes.io/bootstrapping": "rbac-defaults"}
            self._seed(CLUSTER_ROLES, {"metadata": {"name": name, "labels": labels}, "rules": rules})
            subjects = [{"kind": "Group", "apiGroup": RBAC, "name": g} for g in BOOTSTRAP_BINDINGS[name]]
            self._seed(
                CLUSTER_ROLE_BINDINGS,
                {
                    "metadata": {"name": name, "labels": labels},
                    "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
                    "subjects": subjects,
                },
            )
        self._seed(
            SERVICES,
            {
                "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver"}},
                "spec": {
                    "clusterIP": str(next(self.service_cidr.hosts())),
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                },
            },
        )

"""The resources the stand-in serves, as kube-apiserver describes them in discovery: group,
version, kind, plural, scope, short names, subresources and the field labels a field selector
may use. Everything else (routing, validation, discovery documents) is driven by this table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # "status" (spec and status written apart), "eviction" (pods).
    subresources: tuple[str, ...] = ()
    # metadata.generation is kept and bumped when spec changes (the kinds with a spec).
    generation: bool = False
    # A create starts from an empty status (what the object's controller would write later).
    clear_status_on_create: bool = False
    # Field labels of field selectors beyond metadata.name and metadata.namespace.
    fields: tuple[str, ...] = ()
    # How names are checked: "subdomain" (RFC 1123), "label" (RFC 1123 label), "segment" (RBAC:
    # any path segment).
    names: str = "subdomain"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


_ALL = ("all",)
_POD_FIELDS = (
    "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
    "status.phase", "status.podIP", "status.nominatedNodeName",
)  # fmt: skip
_EVENT_FIELDS = (
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
    "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
    "reportingComponent", "source", "type",
)  # fmt: skip


def _workload(
    group: str, kind: str, plural: str, short: tuple[str, ...], categories: tuple[str, ...] = _ALL
) -> Resource:
    """A kind with a spec its controller acts on and a status it reports."""
    return Resource(group, "v1", kind, plural, True, short, categories, ("status",), True, True)


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "Namespace", "namespaces", False, ("ns",), subresources=("status",), fields=("status.phase",),
             names="label"),
    Resource("", "v1", "Node", "nodes", False, ("no",), subresources=("status",), fields=("spec.unschedulable",)),
    Resource("", "v1", "Pod", "pods", True, ("po",), _ALL, ("status", "eviction"), clear_status_on_create=True,
             fields=_POD_FIELDS),
    Resource("", "v1", "Service", "services", True, ("svc",), _ALL, ("status",), clear_status_on_create=True,
             names="label"),
    Resource("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    Resource("", "v1", "Secret", "secrets", True, fields=("type",)),
    Resource("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Resource("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    Resource("", "v1", "Event", "events", True, ("ev",), fields=_EVENT_FIELDS),
    _workload("apps", "Deployment", "deployments", ("deploy",)),
    _workload("apps", "StatefulSet", "statefulsets", ("sts",)),
    _workload("apps", "DaemonSet", "daemonsets", ("ds",)),
    _workload("apps", "ReplicaSet", "replicasets", ("rs",)),
    _workload("batch", "Job", "jobs", ()),
    _workload("policy", "PodDisruptionBudget", "poddisruptionbudgets", ("pdb",), ()),
    Resource("rbac.authorization.k8s.io", "v1", "Role", "roles", True, names="segment"),
    Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True, names="segment"),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, names="segment"),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False, names="segment"),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True),
    Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",), generation=True),
)  # fmt: skip

# Not stored: a request that answers with who the caller is.
SELF_SUBJECT_REVIEW = Resource("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False)

BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in RESOURCES}


def groups() -> dict[str, list[str]]:
    """Group name -> its versions, in the order they appear ("" is the core group)."""
    out: dict[str, list[str]] = {}
    for r in (*RESOURCES, SELF_SUBJECT_REVIEW):
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def in_group_version(group: str, version: str) -> Iterator[Resource]:
    for r in (*RESOURCES, SELF_SUBJECT_REVIEW):
        if r.group == group and r.version == version:
            yield r


def api_resource_list(group: str, version: str) -> dict[str, object]:
    """The APIResourceList discovery answers for GROUP/VERSION."""
    items: list[dict[str, object]] = []
    for r in in_group_version(group, version):
        if r is SELF_SUBJECT_REVIEW:
            items.append(_entry(r.plural, r, ["create"]))
            continue
        entry = _entry(r.plural, r, list(VERBS))
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        items.append(entry)
        if "status" in r.subresources:
            items.append(_entry(f"{r.plural}/status", r, ["get", "patch", "update"], singular=""))
        if "eviction" in r.subresources:
            eviction = _entry(f"{r.plural}/eviction", r, ["create"], singular="")
            eviction.update(group="policy", version="v1", kind="Eviction")
            items.append(eviction)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": items,
    }


def _entry(name: str, r: Resource, verbs: list[str], singular: str | None = None) -> dict[str, object]:
    return {
        "name": name,
        "singularName": r.singular if singular is None else singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs,
    }

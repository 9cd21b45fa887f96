"""Who a container's address is for, from CNI_ARGS: the pod (K8S_POD_NAMESPACE, K8S_POD_NAME,
K8S_POD_UID, as kubelet sends them) and its workload (TKE_WORKLOAD_KIND, TKE_WORKLOAD_NAME, as
cni-switch adds them after it found the pod's binding, or as a runtime sets them). Every other
key is accepted and ignored.

Values are held to tke-ipamd's rules for Kubernetes names before anything is asked of it, so a
value no Kubernetes object can have never fails a verb (ipamd would refuse the request, and a
DEL that fails is retried by the runtime for ever): a pod namespace or name that is not a
DNS-1123 name (podman sends its container or pod name, which may hold capitals or '_') is no
Kubernetes pod, as if no name came; an invalid pod uid or workload is ignored. Each is said on
stderr. A bare pod named after a container id that is no DNS-1123 name gets a stable name
derived from the id.

Pure data: tke-ipamc turns it into tke.ipam.v1.Owner, cni-switch into a LookupBinding.
"""

from __future__ import annotations

from tke.internal.cni.record import Record
from tke.internal.cni.skel import warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


POD_NAMESPACE = "K8S_POD_NAMESPACE"
POD_NAME = "K8S_POD_NAME"
POD_UID = "K8S_POD_UID"
WORKLOAD_KIND = "TKE_WORKLOAD_KIND"
WORKLOAD_NAME = "TKE_WORKLOAD_NAME"
DEFAULT_NAMESPACE = "default"
# tke-ipamd's rules (tke.internal.ipamd.bindings and .service), without `re` (start-up time).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
_KIND_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_UID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_ALNUM = _NAME_CHARS - {"-", "."}


def kubernetes_name(value: str) -> bool:
    """A DNS-1123 subdomain: 1-253 of a-z, 0-9, '-', '.', alphanumeric at both ends."""
    return 0 < len(value) <= 253 and value[0] in _ALNUM and value[-1] in _ALNUM and all(c in _NAME_CHARS for c in value)


def kubernetes_kind(value: str) -> bool:
    return 0 < len(value) <= 63 and value[0].isascii() and value[0].isalpha() and all(c in _KIND_CHARS for c in value)


def kubernetes_uid(value: str) -> bool:
    return len(value) <= 128 and all(c in _UID_CHARS for c in value)


def bare_pod_name(container_id: str) -> str:
    """The name of the bare pod a container without a pod identity is: its id when that is a
    DNS-1123 name (runtimes use 64 hex digits), else one derived from the whole id."""
    if kubernetes_name(container_id):
        return container_id
    import hashlib  # only for ids no runtime of ours sends

    return "container-" + hashlib.sha256(container_id.encode()).hexdigest()[:40]


class PodOwner(Record):
    namespace: str
    pod_name: str
    pod_uid: str = ""
    workload_kind: str = ""
    workload_name: str = ""

    @classmethod
    def from_args(cls, pairs: Mapping[str, str]) -> PodOwner | None:
        """The pod named by CNI_ARGS; None without K8S_POD_NAME. A runtime that sends a pod
        name but no namespace (podman) gets namespace "default"."""
        name = pairs.get(POD_NAME, "")
        if not name:
            return None
        namespace = pairs.get(POD_NAMESPACE, "") or DEFAULT_NAMESPACE
        if not kubernetes_name(namespace) or not kubernetes_name(name):
            warn(f"CNI_ARGS {POD_NAMESPACE}/{POD_NAME} {namespace!r}/{name!r} is no Kubernetes pod: ignored")
            return None
        uid = pairs.get(POD_UID, "")
        if not kubernetes_uid(uid):
            warn(f"CNI_ARGS {POD_UID} {uid!r} is no Kubernetes uid: ignored")
            uid = ""
        kind, workload = pairs.get(WORKLOAD_KIND, ""), pairs.get(WORKLOAD_NAME, "")
        # As ipamd: a kind needs a name; a name alone finds the namespace's binding of that name.
        if (
            (kind and not kubernetes_kind(kind))
            or (workload and not kubernetes_name(workload))
            or (kind and not workload)
        ):
            warn(f"CNI_ARGS {WORKLOAD_KIND}/{WORKLOAD_NAME} {kind!r}/{workload!r} is no workload: ignored")
            kind = workload = ""
        return cls(namespace=namespace, pod_name=name, pod_uid=uid, workload_kind=kind, workload_name=workload)

    @property
    def knows_workload(self) -> bool:
        return bool(self.workload_kind and self.workload_name)

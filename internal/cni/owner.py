"""Who a container's address is for, from CNI_ARGS: the pod (K8S_POD_NAMESPACE, K8S_POD_NAME,
K8S_POD_UID, as kubelet sends them) and its workload (TKE_WORKLOAD_KIND, TKE_WORKLOAD_NAME, as
cni-switch adds them after it found the pod's binding, or as a runtime sets them). Every other
key is accepted and ignored.

Pure data: tke-ipamc turns it into tke.ipam.v1.Owner, cni-switch into a LookupBinding.
"""

from __future__ import annotations

from tke.internal.cni.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


POD_NAMESPACE = "K8S_POD_NAMESPACE"
POD_NAME = "K8S_POD_NAME"
POD_UID = "K8S_POD_UID"
WORKLOAD_KIND = "TKE_WORKLOAD_KIND"
WORKLOAD_NAME = "TKE_WORKLOAD_NAME"
DEFAULT_NAMESPACE = "default"


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
        return cls(
            namespace=pairs.get(POD_NAMESPACE, "") or DEFAULT_NAMESPACE,
            pod_name=name,
            pod_uid=pairs.get(POD_UID, ""),
            workload_kind=pairs.get(WORKLOAD_KIND, ""),
            workload_name=pairs.get(WORKLOAD_NAME, ""),
        )

    @property
    def knows_workload(self) -> bool:
        return bool(self.workload_kind and self.workload_name)

"""What a Machine's status says about its Node, read from the Node object (status.nodeInfo,
status.addresses, status.conditions), never copied from the cluster's spec:

- node_info: kubelet and container runtime versions, OS image, kernel, architecture, machine,
  system and boot ids;
- addresses: the Node's, in its order;
- a condition per Node condition, typed "Node" + the Node's type (NodeReady,
  NodeMemoryPressure, ...), with its status, reason, message and times (the step conditions
  of a provider never start with "Node").
Pure functions of the Node.

The Node is written by the cluster's kubelets (its tenant's: they are cluster-admin and own the
machines), and what is copied from it lands in a Machine the platform writes and stores: at
most MAX_CONDITIONS conditions and MAX_ADDRESSES addresses are copied (and in a report, which
an imported cluster's status lists, MAX_ROLES roles), each text clipped
(MAX_TEXT, a message MAX_MESSAGE) and made printable (tke.internal.logs.printable), so a Node
cannot make a Machine's status large (past the apiserver's object limit, every write of it
failed) or carry terminal escapes to whoever reads it."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from lightkube.resources.core_v1 import Node

from tke.internal.logs import printable
from tke.internal.rpc.errors import clip
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import machine_pb2

_STATUS = {
    "True": meta_pb2.CONDITION_STATUS_TRUE,
    "False": meta_pb2.CONDITION_STATUS_FALSE,
}


# What of a Node a Machine's status keeps: Kubernetes sets five conditions, node-problem-detector
# adds about ten; a machine has a few addresses (dual stack, several interfaces).
MAX_CONDITIONS = 32
MAX_ADDRESSES = 16
MAX_ROLES = 16
MAX_TEXT = 256
MAX_MESSAGE = 1024


def _clip(value: object, limit: int = MAX_TEXT) -> str:
    """`value` as printable text of at most `limit` characters: a server decoded by lightkube
    may put any JSON value where a string belongs."""
    return clip(printable(value if isinstance(value, str) else "" if value is None else str(value)), limit)


@dataclass(frozen=True)
class NodeReport:
    name: str
    ready: bool
    # The Ready condition's reason and message ("KubeletNotReady: ..."), or why it is unknown.
    ready_reason: str
    unschedulable: bool
    kubelet_version: str
    roles: tuple[str, ...]
    internal_ip: str

    @property
    def summary(self) -> str:
        state = "Ready" if self.ready else f"NotReady ({self.ready_reason})"
        return f"node {self.name} {state}" + (", unschedulable" if self.unschedulable else "")


def _timestamp(value: datetime.datetime | None) -> timestamp_pb2.Timestamp | None:
    if not isinstance(value, datetime.datetime):
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(datetime.UTC).replace(tzinfo=None))
    return ts


def report(node: Node) -> NodeReport:
    meta, spec, status = node.metadata, node.spec, node.status
    ready = next((c for c in (status.conditions if status else None) or [] if c.type == "Ready"), None)
    if ready is None:
        reason = "no Ready condition yet"
    else:
        reason = ": ".join(p for p in (_clip(ready.reason), _clip(ready.message, MAX_MESSAGE)) if p) or (
            f"Ready is {_clip(ready.status)}"
        )
    labels = (meta.labels if meta else None) or {}
    roles = sorted(_clip(k.split("/", 1)[1]) for k in labels if k.startswith("node-role.kubernetes.io/"))
    addresses = (status.addresses if status else None) or []
    internal = next((a.address for a in addresses if a.type == "InternalIP"), addresses[0].address if addresses else "")
    return NodeReport(
        name=_clip((meta.name if meta else None) or ""),
        ready=ready is not None and ready.status == "True",
        ready_reason=reason,
        unschedulable=bool(spec and spec.unschedulable),
        kubelet_version=_clip(status.nodeInfo.kubeletVersion if status and status.nodeInfo else ""),
        roles=tuple(roles[:MAX_ROLES]),
        internal_ip=_clip(internal),
    )


def write_machine_status(node: Node, status: machine_pb2.MachineStatus) -> NodeReport:
    """Copy what the Node reports into a Machine's status; return its summary."""
    info = node.status.nodeInfo if node.status else None
    if info is not None:
        status.node_info.CopyFrom(
            machine_pb2.MachineSystemInfo(
                machine_id=_clip(info.machineID),
                system_uuid=_clip(info.systemUUID),
                boot_id=_clip(info.bootID),
                kernel_version=_clip(info.kernelVersion),
                os_image=_clip(info.osImage),
                container_runtime_version=_clip(info.containerRuntimeVersion),
                kubelet_version=_clip(info.kubeletVersion),
                architecture=_clip(info.architecture),
            )
        )
    if node.status and node.status.addresses:
        del status.addresses[:]
        for a in node.status.addresses[:MAX_ADDRESSES]:
            status.addresses.add(type=_clip(a.type), address=_clip(a.address))
    # The node name is how later steps find the Node (drain, delete), without logging in.
    name = node.metadata.name if node.metadata else None
    if name and not any(a.type == "Hostname" for a in status.addresses):
        status.addresses.add(type="Hostname", address=_clip(name))
    for c in ((node.status.conditions if node.status else None) or [])[:MAX_CONDITIONS]:
        name = f"Node{_clip(c.type)}"
        kept = next((k for k in status.conditions if k.type == name), None) or status.conditions.add(type=name)
        kept.status = _STATUS.get(c.status if isinstance(c.status, str) else "", meta_pb2.CONDITION_STATUS_UNKNOWN)
        kept.reason = _clip(c.reason)
        kept.message = _clip(c.message, MAX_MESSAGE)
        if (ts := _timestamp(c.lastTransitionTime)) is not None:
            kept.last_transition_time.CopyFrom(ts)
        if (ts := _timestamp(c.lastHeartbeatTime)) is not None:
            kept.last_probe_time.CopyFrom(ts)
    return report(node)

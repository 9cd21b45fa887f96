"""Bindings: validating them, and which workload a pod probably belongs to when the caller
does not say (cni-switch knows only the pod's namespace and name)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tke.internal.rpc.errors import FieldViolation
from tke.ipam.v1 import ipam_pb2

# Kubernetes object names: DNS-1123 subdomains (no '/', which our keys use as separator).
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,62}$")
_ORDINAL = re.compile(r"^(?P<name>.+)-(?P<ordinal>\d+)$")
# Generated suffixes: ReplicaSet pod-template hash and the 5-character pod suffix.
_DEPLOYMENT = re.compile(r"^(?P<name>.+)-[a-z0-9]{6,10}-[a-z0-9]{5}$")
_SUFFIX = re.compile(r"^(?P<name>.+)-[a-z0-9]{5}$")


def validate_workload(w: ipam_pb2.WorkloadRef, field: str) -> list[FieldViolation]:
    v = []
    if not NAME.match(w.namespace):
        v.append(FieldViolation(f"{field}.namespace", "required; a DNS-1123 name"))
    if not KIND.match(w.kind):
        v.append(FieldViolation(f"{field}.kind", "required; a Kubernetes kind such as StatefulSet"))
    if not NAME.match(w.name):
        v.append(FieldViolation(f"{field}.name", "required; a DNS-1123 name"))
    return v


def validate_binding(b: ipam_pb2.Binding) -> list[FieldViolation]:
    v = validate_workload(b.workload, "binding.workload")
    if b.pool and not NAME.match(b.pool):
        v.append(FieldViolation("binding.pool", "must be a pool name"))
    if b.network and not re.match(r"^[A-Za-z0-9_.\-]{1,128}$", b.network):
        v.append(FieldViolation("binding.network", "must be a CNI network name"))
    if b.release_policy not in ipam_pb2.ReleasePolicy.values():
        v.append(FieldViolation("binding.release_policy", "unknown release policy"))
    return v


def candidate_workloads(pod_name: str) -> list[str]:
    """Workload names a pod of this name may belong to, most specific first: the
    Deployment's, a StatefulSet's, a DaemonSet's or Job's, then the pod itself."""
    out = []
    for pattern in (_DEPLOYMENT, _ORDINAL, _SUFFIX):
        m = pattern.match(pod_name)
        if m and m["name"] not in out:
            out.append(m["name"])
    if pod_name not in out:
        out.append(pod_name)
    return out


def ordinal(pod_name: str, workload: str) -> int | None:
    """The ordinal of a StatefulSet-style pod name "<workload>-<n>", else None."""
    m = _ORDINAL.match(pod_name)
    if m and m["name"] == workload:
        return int(m["ordinal"])
    return None


def choose_binding(
    bindings: Sequence[ipam_pb2.Binding], pod_name: str, kind: str, name: str
) -> ipam_pb2.Binding | None:
    """The binding, among its namespace's, that applies to a pod: its workload's when the
    caller names it (kind and name), else the first workload of candidate_workloads(pod_name)
    (or of `name` alone) that has one."""
    if name and kind:
        return next((b for b in bindings if (b.workload.kind, b.workload.name) == (kind, name)), None)
    for candidate in [name] if name else candidate_workloads(pod_name):
        for b in bindings:
            if b.workload.name == candidate:
                return b
    return None

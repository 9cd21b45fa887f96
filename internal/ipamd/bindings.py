"""Bindings: validating them, and the ordinal of a StatefulSet's pod (the StatefulSet
controller names its pods "<statefulset>-<ordinal>"). Which workload a pod belongs to is never
guessed from its name: see tke.internal.ipamd.workloads."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tke.internal.rpc.errors import FieldViolation
from tke.ipam.v1 import ipam_pb2

# Kubernetes object names: DNS-1123 subdomains (no '/', which our keys use as separator).
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,62}$")
_ORDINAL = re.compile(r"^(?P<name>.+)-(?P<ordinal>\d+)$")


def validate_workload(w: ipam_pb2.WorkloadRef, field: str) -> list[FieldViolation]:
    v = []
    if not NAME.fullmatch(w.namespace):
        v.append(FieldViolation(f"{field}.namespace", "required; a DNS-1123 name"))
    if not KIND.fullmatch(w.kind):
        v.append(FieldViolation(f"{field}.kind", "required; a Kubernetes kind such as StatefulSet"))
    if not NAME.fullmatch(w.name):
        v.append(FieldViolation(f"{field}.name", "required; a DNS-1123 name"))
    return v


def validate_binding(b: ipam_pb2.Binding) -> list[FieldViolation]:
    v = validate_workload(b.workload, "binding.workload")
    if b.pool and not NAME.fullmatch(b.pool):
        v.append(FieldViolation("binding.pool", "must be a pool name"))
    if b.network and not re.fullmatch(r"^[A-Za-z0-9_.\-]{1,128}$", b.network):
        v.append(FieldViolation("binding.network", "must be a CNI network name"))
    if b.release_policy not in ipam_pb2.ReleasePolicy.values():
        v.append(FieldViolation("binding.release_policy", "unknown release policy"))
    return v


def ordinal(pod_name: str, workload: str) -> int | None:
    """The ordinal of pod `pod_name` of StatefulSet `workload` ("<workload>-<n>"), else None."""
    m = _ORDINAL.fullmatch(pod_name)
    if m and m["name"] == workload:
        return int(m["ordinal"])
    return None


def choose_binding(bindings: Sequence[ipam_pb2.Binding], kind: str, name: str) -> ipam_pb2.Binding | None:
    """The binding, among its namespace's, of the workload `kind`/`name`; a name without a
    kind finds the first binding of a workload of that name."""
    for b in bindings:
        if b.workload.name == name and (not kind or b.workload.kind == kind):
            return b
    return None

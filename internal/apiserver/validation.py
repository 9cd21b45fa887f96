"""Validation of every field a user sets on a Cluster or a Machine. Pure functions that return
the list of FieldViolations (empty when valid); field paths are the request's JSON paths, for
example "cluster.spec.network.pod_cidr", so a user can find the field.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping

from tke.internal.meta.labels import dns1123_label_error, label_value_error, qualified_name_error
from tke.internal.rpc.errors import FieldViolation
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, machine_pb2

MAX_ANNOTATIONS_BYTES = 256 * 1024
# Control-plane machines of a cluster: each is a member of the cluster's etcd (kubeadm's stacked
# etcd, where more than 7 members only slows every write) and a claim in the object's etcd
# transaction (etcd's --max-txn-ops is 128 by default: 130 machines were an INTERNAL error).
MAX_CONTROL_PLANE_MACHINES = 7
# status.control_plane holds those and the masters being removed after a change of the spec.
MAX_INSTALLED_MASTERS = 4 * MAX_CONTROL_PLANE_MACHINES
# One component's extra args, as `--flag=value` together. kube-proxy's reach every command on
# every machine of the cluster as one variable (TKE_KUBE_PROXY_ARGS, provider.nodes.environment),
# and Linux takes at most 128 KiB in one variable or argument: 40 flags of 4 KiB (a 164 KB
# cluster, within the object limit) made every command "Argument list too long", and 250 ones
# made sshd drop the connection; the cluster went Failed, naming no field. Real extra args take
# a few KiB.
MAX_COMPONENT_ARGS_BYTES = 16 * 1024
# A version goes into every command's environment (TKE_VERSION), package names and image tags (at
# most 128 characters); its suffix had no bound, and a 200 KB version broke every command as
# kube-proxy's extra args did.
MAX_VERSION_CHARS = 64
COMPONENTS = frozenset({"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "etcd"})
TAINT_EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})
# Every pattern is checked with fullmatch (`$` also matches before a final newline), and names
# its digits [0-9]: Python's \d is any Unicode digit, and "1.30.\uff12" (a full-width 2) passed
# as a version, went into apt-get's package names, kubeadm's kubernetesVersion and a hosted
# control plane's image tags, and failed there.
_VERSION = re.compile(r"^v?[0-9]+\.[0-9]+(\.[0-9]+)?([-+][0-9A-Za-z.-]+)?$")
_FLAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PROVIDER = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_CAMEL = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,127}$")


def _printable(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if not value.isprintable():
        return "must not contain control characters"
    return None


def validate_metadata(meta: meta_pb2.ObjectMeta, path: str) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if err := dns1123_label_error(meta.name):
        out.append(FieldViolation(f"{path}.name", err))
    if meta.tenant_id and (err := dns1123_label_error(meta.tenant_id)):
        out.append(FieldViolation(f"{path}.tenant_id", err))
    out += validate_labels(meta.labels, f"{path}.labels")
    size = 0
    for key, value in meta.annotations.items():
        if err := qualified_name_error(key):
            out.append(FieldViolation(f"{path}.annotations[{key!r}]", err))
        size += len(key) + len(value)
    if size > MAX_ANNOTATIONS_BYTES:
        out.append(FieldViolation(f"{path}.annotations", "must be at most 256 KiB in total"))
    seen: set[str] = set()
    for i, finalizer in enumerate(meta.finalizers):
        if err := qualified_name_error(finalizer):
            out.append(FieldViolation(f"{path}.finalizers[{i}]", err))
        if finalizer in seen:
            out.append(FieldViolation(f"{path}.finalizers[{i}]", f"duplicate finalizer {finalizer!r}"))
        seen.add(finalizer)
    return out


def validate_labels(labels: Mapping[str, str], path: str) -> list[FieldViolation]:
    out = []
    for key, value in labels.items():
        if (err := qualified_name_error(key)) or (err := label_value_error(value)):
            out.append(FieldViolation(f"{path}[{key!r}]", err))
    return out


# The labels a kubelet may give its own Node (--node-labels, where a machine's labels go): in
# the kubernetes.io and k8s.io namespaces only these and the two namespaces below (kubelet's
# IsKubeletLabel). With any other, such as node-role.kubernetes.io/worker, the kubelet refuses
# to start ("unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels"): NodeRestriction
# keeps a node from naming itself a control-plane node. Such a machine's joins failed until it went Failed.
KUBELET_LABELS = frozenset(
    {
        "kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
    }
)  # fmt: skip
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _node_label_error(key: str) -> str | None:
    namespace, slash, _ = key.partition("/")
    if not slash or key in KUBELET_LABELS:
        return None
    if not any(namespace == d or namespace.endswith("." + d) for d in ("kubernetes.io", "k8s.io")):
        return None
    if any(namespace == n or namespace.endswith("." + n) for n in KUBELET_LABEL_NAMESPACES):
        return None
    return (
        "a kubelet may not set this label on its Node (it refuses to start): under kubernetes.io and k8s.io only "
        "kubelet.kubernetes.io/, node.kubernetes.io/ and the well-known topology, os and arch labels"
    )


def validate_node_labels(labels: Mapping[str, str], path: str) -> list[FieldViolation]:
    """A machine's labels, which its kubelet sets on its Node (--node-labels)."""
    out = validate_labels(labels, path)
    bad = {v.field for v in out}
    for key in labels:
        if f"{path}[{key!r}]" not in bad and (err := _node_label_error(key)):
            out.append(FieldViolation(f"{path}[{key!r}]", err))
    return out


def _ip_error(value: str) -> str | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IPv4 or IPv6 address"
    # Python takes any text after "%" as an IPv6 zone ("fe80::1%eth0"), newlines and shell
    # characters included; the address goes into commands, configuration files and the
    # one-object-per-address claim, so it must be the bare address.
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return f"{value!r} has a zone (%...): give the address alone"
    return None


def _machine_ip_error(value: str) -> str | None:
    """A machine's address: a bare unicast address (0.0.0.0 and :: reach the controller's own
    host; a multicast or broadcast address is no machine)."""
    if err := _ip_error(value):
        return err
    ip = ipaddress.ip_address(value)
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return f"{value!r} is not a machine's address (unspecified, multicast or broadcast)"
    return None


# The longest CIDR is an IPv6 one with a dotted-quad tail: 49 characters.
_CIDR_CHARS = 64


def _cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str:
    """The network, or an error message."""
    if "/" not in value or len(value) > _CIDR_CHARS:
        return f"{value!r} is not a CIDR such as 10.244.0.0/16"
    return _parsed_cidr(value)


# Parsing is most of a Create's validation, and most clusters name the same few networks: the
# answers for the last 1,024 short strings are kept (a few hundred KiB at most).
@functools.lru_cache(maxsize=1024)
def _parsed_cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        if "host bits" in str(err):
            return f"{value!r} has host bits set"
        return f"{value!r} is not a CIDR such as 10.244.0.0/16"


def _port_error(port: int) -> str | None:
    return None if 0 <= port <= 65535 else "must be between 1 and 65535 (0 means 22)"


def _provider_error(value: str) -> str | None:
    if not value:
        return "is required: the provider name, for example 'baremetal'"
    if not _PROVIDER.fullmatch(value):
        return "must be lowercase letters, digits, '.', '_' or '-'"
    return None


def validate_network(net: cluster_pb2.ClusterNetwork, path: str, required: bool) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    nets = {}
    for field in ("pod_cidr", "service_cidr"):
        value = getattr(net, field)
        if not value:
            if required:
                out.append(FieldViolation(f"{path}.{field}", "is required"))
            continue
        parsed = _cidr(value)
        if isinstance(parsed, str):
            out.append(FieldViolation(f"{path}.{field}", parsed))
        else:
            nets[field] = parsed
    pod, svc = nets.get("pod_cidr"), nets.get("service_cidr")
    if svc is not None and (err := _service_range_error(svc)):
        out.append(FieldViolation(f"{path}.service_cidr", err))
    if pod is not None and svc is not None and pod.version == svc.version and pod.overlaps(svc):
        out.append(FieldViolation(f"{path}.service_cidr", f"{svc} overlaps pod_cidr {pod}"))
    if net.mode not in cluster_pb2.NetworkMode.values():
        out.append(FieldViolation(f"{path}.mode", f"unknown network mode {net.mode}"))
    if net.dns_domain and (err := _domain_error(net.dns_domain)):
        out.append(FieldViolation(f"{path}.dns_domain", err))
    return out


# kubeadm's bounds of the service range (MinimumAddressesInServiceSubnet,
# MaximumBitsForServiceSubnet): the cluster DNS Service takes its tenth address, and the API
# server's allocator holds at most 2^20 addresses.
SERVICE_RANGE_MIN_ADDRESSES = 10
SERVICE_RANGE_MAX_BITS = 20


def _service_range_error(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    bits = net.max_prefixlen - net.prefixlen
    if net.num_addresses < SERVICE_RANGE_MIN_ADDRESSES:
        return f"{net} is too small: the cluster DNS Service takes its tenth address (/{net.max_prefixlen - 4} at most)"
    if bits > SERVICE_RANGE_MAX_BITS:
        return f"{net} is too large: a service range holds at most 2^20 addresses (/{net.max_prefixlen - 20} at least)"
    return None


def _domain_error(value: str) -> str | None:
    parts = value.split(".")
    if len(value) > 253 or any(dns1123_label_error(p) for p in parts):
        return f"{value!r} is not a DNS domain such as cluster.local"
    return None


def _validate_login(
    ip: str, port: int, username: str, credential_ref: str, path: str, *, ip_required: bool = True
) -> list[FieldViolation]:
    out = []
    if not ip and ip_required:
        out.append(FieldViolation(f"{path}.ip", "is required"))
    elif ip and (err := _machine_ip_error(ip)):
        out.append(FieldViolation(f"{path}.ip", err))
    if err := _port_error(port):
        out.append(FieldViolation(f"{path}.ssh_port", err))
    if username and (err := _printable(username, 64)):
        out.append(FieldViolation(f"{path}.username", err))
    if credential_ref and (err := dns1123_label_error(credential_ref)):
        out.append(FieldViolation(f"{path}.credential_ref", err))
    return out


def validate_cluster_spec(spec: cluster_pb2.ClusterSpec, path: str) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if err := _provider_error(spec.type):
        out.append(FieldViolation(f"{path}.type", err))
    if spec.display_name and (err := _printable(spec.display_name, 256)):
        out.append(FieldViolation(f"{path}.display_name", err))
    if len(spec.version) > MAX_VERSION_CHARS:
        out.append(FieldViolation(f"{path}.version", f"must be at most {MAX_VERSION_CHARS} characters"))
    elif spec.version and not _VERSION.fullmatch(spec.version):
        out.append(FieldViolation(f"{path}.version", f"{spec.version!r} is not a version such as 1.30.2"))
    imported = bool(spec.api_server_url)
    out += validate_network(spec.network, f"{path}.network", required=not imported)
    if len(spec.machines) > MAX_CONTROL_PLANE_MACHINES:
        out.append(
            FieldViolation(
                f"{path}.machines", f"at most {MAX_CONTROL_PLANE_MACHINES} control-plane machines (etcd members)"
            )
        )
    seen_ips: set[str] = set()
    for i, m in enumerate(spec.machines[:MAX_CONTROL_PLANE_MACHINES]):
        mpath = f"{path}.machines[{i}]"
        out += _validate_login(m.ip, m.ssh_port, m.username, m.credential_ref, mpath)
        out += validate_node_labels(m.labels, f"{mpath}.labels")
        if m.ip in seen_ips:
            out.append(FieldViolation(f"{mpath}.ip", f"duplicate machine {m.ip}"))
        seen_ips.add(m.ip)
    for component, args in spec.extra_args.items():
        if component not in COMPONENTS:
            out.append(
                FieldViolation(
                    f"{path}.extra_args[{component!r}]", f"unknown component; one of {', '.join(sorted(COMPONENTS))}"
                )
            )
        for flag, value in args.args.items():
            if not _FLAG.fullmatch(flag):
                out.append(FieldViolation(f"{path}.extra_args[{component!r}].args[{flag!r}]", "is not a flag name"))
            elif err := _printable(value, 4096):
                out.append(FieldViolation(f"{path}.extra_args[{component!r}].args[{flag!r}]", err))
        size = sum(len(f"--{flag}={value}".encode()) for flag, value in args.args.items())
        if size > MAX_COMPONENT_ARGS_BYTES:
            out.append(
                FieldViolation(
                    f"{path}.extra_args[{component!r}]",
                    f"the flags take {size} bytes as --flag=value; at most {MAX_COMPONENT_ARGS_BYTES} per component",
                )
            )
    if imported:
        url = spec.api_server_url
        if not re.fullmatch(r"^https://[^\s/]+(:\d+)?(/\S*)?$", url):
            out.append(FieldViolation(f"{path}.api_server_url", f"{url!r} is not an https:// URL"))
    if spec.credential_ref and (err := dns1123_label_error(spec.credential_ref)):
        out.append(FieldViolation(f"{path}.credential_ref", err))
    # A name of the controller's configuration ([...options.profiles.NAME]), echoed in conditions.
    if spec.install_profile and (err := label_value_error(spec.install_profile)):
        out.append(FieldViolation(f"{path}.install_profile", f"is not a profile name: {err}"))
    return out


def validate_conditions(conditions: Iterable[meta_pb2.Condition], path: str) -> list[FieldViolation]:
    out = []
    seen: set[str] = set()
    for i, c in enumerate(conditions):
        if not _CAMEL.fullmatch(c.type):
            out.append(FieldViolation(f"{path}[{i}].type", "must be a CamelCase name"))
        elif c.type in seen:
            out.append(FieldViolation(f"{path}[{i}].type", f"duplicate condition {c.type!r}"))
        seen.add(c.type)
        if c.reason and not _CAMEL.fullmatch(c.reason):
            out.append(FieldViolation(f"{path}[{i}].reason", "must be a CamelCase word"))
        if c.status not in meta_pb2.ConditionStatus.values():
            out.append(FieldViolation(f"{path}[{i}].status", f"unknown status {c.status}"))
    return out


def validate_cluster(cluster: cluster_pb2.Cluster, path: str = "cluster") -> list[FieldViolation]:
    return validate_metadata(cluster.metadata, f"{path}.metadata") + validate_cluster_spec(cluster.spec, f"{path}.spec")


def validate_cluster_status(status: cluster_pb2.ClusterStatus, path: str) -> list[FieldViolation]:
    out = validate_conditions(status.conditions, f"{path}.conditions")
    # The installed masters: scaling in and teardown log in to them (see kinds.cluster_machine_ips).
    if len(status.control_plane) > MAX_INSTALLED_MASTERS:
        out.append(FieldViolation(f"{path}.control_plane", f"at most {MAX_INSTALLED_MASTERS} masters"))
    for i, member in enumerate(status.control_plane[:MAX_INSTALLED_MASTERS]):
        mpath = f"{path}.control_plane[{i}].machine"
        m = member.machine
        out += _validate_login(m.ip, m.ssh_port, m.username, m.credential_ref, mpath)
    if status.phase not in cluster_pb2.ClusterPhase.values():
        out.append(FieldViolation(f"{path}.phase", f"unknown phase {status.phase}"))
    return out


def validate_machine_spec(spec: machine_pb2.MachineSpec, path: str) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if not spec.cluster_name:
        out.append(FieldViolation(f"{path}.cluster_name", "is required"))
    elif err := dns1123_label_error(spec.cluster_name):
        out.append(FieldViolation(f"{path}.cluster_name", err))
    if err := _provider_error(spec.type):
        out.append(FieldViolation(f"{path}.type", err))
    # A machine the provider makes (a cloud instance, spec.<provider>) gets its address from
    # it; the provider checks its own part of the spec (admission.py).
    made = spec.WhichOneof("provider_config") is not None
    out += _validate_login(spec.ip, spec.ssh_port, spec.username, spec.credential_ref, path, ip_required=not made)
    if spec.role not in machine_pb2.MachineRole.values():
        out.append(FieldViolation(f"{path}.role", f"unknown role {spec.role}"))
    out += validate_node_labels(spec.labels, f"{path}.labels")
    for i, taint in enumerate(spec.taints):
        if err := qualified_name_error(taint.key):
            out.append(FieldViolation(f"{path}.taints[{i}].key", err))
        if err := label_value_error(taint.value):
            out.append(FieldViolation(f"{path}.taints[{i}].value", err))
        if taint.effect not in TAINT_EFFECTS:
            out.append(
                FieldViolation(f"{path}.taints[{i}].effect", f"must be one of {', '.join(sorted(TAINT_EFFECTS))}")
            )
    return out


def validate_machine(machine: machine_pb2.Machine, path: str = "machine") -> list[FieldViolation]:
    return validate_metadata(machine.metadata, f"{path}.metadata") + validate_machine_spec(machine.spec, f"{path}.spec")


def validate_machine_status(status: machine_pb2.MachineStatus, path: str) -> list[FieldViolation]:
    out = validate_conditions(status.conditions, f"{path}.conditions")
    if status.phase not in machine_pb2.MachinePhase.values():
        out.append(FieldViolation(f"{path}.phase", f"unknown phase {status.phase}"))
    for i, addr in enumerate(status.addresses):
        if addr.type in ("InternalIP", "ExternalIP") and (err := _ip_error(addr.address)):
            out.append(FieldViolation(f"{path}.addresses[{i}].address", err))
    return out

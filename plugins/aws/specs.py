"""The AWS parts of Machine and Cluster specs: their checks (the apiserver asks the providers
before storing an object) and what a launch takes from them.

Two kinds of check: syntax (an instance type, an image id), and the operator's spending limits
(options allowed_instance_types, max_root_volume_gib, allowed_volume_types and, for clusters,
max_control_plane_count and allow_load_balancer). Every tenant launches into accounts whose
bill and EC2 quotas (vCPUs per instance family, per region) the operator answers for, so what
one tenant may launch is the operator's to say, not the tenant's. The same checks run where the
apiserver validates a spec and again in the controller before anything is made in EC2 (an
object stored before a limit was set, or by an apiserver configured otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from tke.internal.provider import nodeprep
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import machine_pb2
from tke.plugins.aws.client import ClientOptions
from tke.plugins.aws.instances import LaunchSpec, Volume

# Checked with fullmatch (`$` also matches before a final newline).
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
_ID = {
    "image": re.compile(r"^ami-[0-9a-f]{8,17}$"),
    "subnet": re.compile(r"^subnet-[0-9a-f]{8,17}$"),
    "sg": re.compile(r"^sg-[0-9a-f]{8,17}$"),
    "vpc": re.compile(r"^vpc-[0-9a-f]{8,17}$"),
}
# [0-9], not \d (any Unicode digit): "eu-west-\u0661" passed the apiserver, and only the
# controller found out, when botocore refused to make a client for it (InvalidRegionError).
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
_ZONE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9][a-z]$")
VOLUME_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1")
# What a tenant may launch unless the operator says otherwise: general-purpose instances of at
# most 8 vCPUs and 32 GiB (t3 and t3a top out at 2xlarge), so that no tenant takes GPU, metal,
# memory-optimised or large instances, or a family's vCPU quota, without the operator's word.
DEFAULT_INSTANCE_TYPES = (
    "t3.*",
    "t3a.*",
    *(f"{family}.{size}" for family in ("m5", "m6i", "m6a", "m7i") for size in ("large", "xlarge", "2xlarge")),
)
# Root volumes: general-purpose SSD only (io1 and io2 are billed per provisioned IOPS; st1 and
# sc1 cannot boot an instance), of at most 200 GiB.
DEFAULT_VOLUME_TYPES = ("gp3", "gp2")
DEFAULT_MAX_ROOT_VOLUME_GIB = 200
# An instance-type pattern: "*" (any), a family's every size ("m6i.*"), or one type ("m6i.large").
_INSTANCE_PATTERN = re.compile(r"^\*$|^[a-z][a-z0-9-]*\.(\*|[a-z0-9-]+)$")


def started(status: Any) -> bool:
    """Whether the controller has begun making an object's AWS resources: a step has run (each
    is recorded in status.conditions before it runs) or status names what it made."""
    made = "aws" in status.DESCRIPTOR.fields_by_name and status.HasField("aws")  # a cluster's network
    return bool(status.conditions) or bool(getattr(status, "provider_id", "")) or made


def moved(field_path: str, before: str, after: str, what: str) -> list[FieldViolation]:
    """A refusal of changing where an object's AWS resources are, once they are being made: the
    teardown looks for them there (by their tags), and elsewhere finds nothing and leaves them
    running in the account they were made in."""
    if before == after:
        return []
    return [
        FieldViolation(
            field_path,
            f"cannot change from {before!r} to {after!r} once the platform started making it: {what} are "
            f"there, and its teardown would not find them elsewhere; delete it and create another",
        )
    ]


def id_error(kind: str, value: str) -> str | None:
    if _ID[kind].fullmatch(value):
        return None
    return f"{value!r} is not a {kind} id such as {kind if kind != 'image' else 'ami'}-0123456789abcdef0"


def region_error(value: str) -> str | None:
    return None if not value or _REGION.fullmatch(value) else f"{value!r} is not a region such as eu-west-1"


def zone_error(value: str) -> str | None:
    return None if _ZONE.fullmatch(value) else f"{value!r} is not an availability zone such as eu-west-1a"


@dataclass(frozen=True)
class Limits:
    """What one machine may cost: the operator's options, checked on every AWSMachineSpec."""

    instance_types: tuple[str, ...] = DEFAULT_INSTANCE_TYPES
    volume_types: tuple[str, ...] = DEFAULT_VOLUME_TYPES
    max_root_volume_gib: int = DEFAULT_MAX_ROOT_VOLUME_GIB

    def instance_type_allowed(self, value: str) -> bool:
        family = value.partition(".")[0]
        return any(p in ("*", value, f"{family}.*") for p in self.instance_types)

    def violations(self, spec: machine_pb2.AWSMachineSpec, path: str) -> list[FieldViolation]:
        out = []
        if not self.instance_type_allowed(spec.instance_type):
            out.append(_refused(f"{path}.instance_type", spec.instance_type, self.instance_types, "instance_types"))
        v = spec.root_volume
        if v.size_gib > self.max_root_volume_gib:
            out.append(
                FieldViolation(
                    f"{path}.root_volume.size_gib",
                    f"{v.size_gib} GiB is more than allowed here: at most {self.max_root_volume_gib} "
                    "(aws option max_root_volume_gib)",
                )
            )
        # Without a type the platform asks for gp3 whenever it maps the root volume at all.
        volume_type = v.type or ("gp3" if v.size_gib or v.encrypted else "")
        if volume_type and volume_type not in self.volume_types:
            out.append(_refused(f"{path}.root_volume.type", volume_type, self.volume_types, "volume_types"))
        return out


def _refused(field_path: str, value: str, allowed: tuple[str, ...], option: str) -> FieldViolation:
    return FieldViolation(
        field_path, f"{value!r} is not allowed here; allowed: {', '.join(allowed)} (aws option allowed_{option})"
    )


def machine_violations(
    spec: machine_pb2.AWSMachineSpec, path: str, limits: Limits, *, placement: bool = True
) -> list[FieldViolation]:
    """Checks of an AWSMachineSpec, the operator's `limits` among them; `placement`: subnet and
    security groups are its own."""
    out = []
    if not _INSTANCE_TYPE.fullmatch(spec.instance_type):
        out.append(FieldViolation(f"{path}.instance_type", "is required: an instance type such as t3.medium"))
    if not spec.image_id:
        out.append(FieldViolation(f"{path}.image_id", "is required: an AMI id such as ami-0123456789abcdef0"))
    elif err := id_error("image", spec.image_id):
        out.append(FieldViolation(f"{path}.image_id", err))
    if placement and spec.subnet_id and (err := id_error("subnet", spec.subnet_id)):
        out.append(FieldViolation(f"{path}.subnet_id", err))
    if not placement and (spec.subnet_id or spec.security_group_ids):
        out.append(FieldViolation(f"{path}.subnet_id", "the control plane's subnets and groups are the cluster's"))
    for i, group in enumerate(spec.security_group_ids if placement else []):
        if err := id_error("sg", group):
            out.append(FieldViolation(f"{path}.security_group_ids[{i}]", err))
    if len(spec.key_name) > 255 or not spec.key_name.isprintable():
        out.append(FieldViolation(f"{path}.key_name", "must be a key pair name of at most 255 printable characters"))
    v = spec.root_volume
    if v.size_gib and not 8 <= v.size_gib <= 16384:
        out.append(FieldViolation(f"{path}.root_volume.size_gib", "must be between 8 and 16384"))
    if v.type and v.type not in VOLUME_TYPES:
        out.append(FieldViolation(f"{path}.root_volume.type", f"must be one of {', '.join(VOLUME_TYPES)}"))
    malformed = {v.field for v in out}
    return out + [v for v in limits.violations(spec, path) if v.field not in malformed]


def launch_spec(spec: machine_pb2.AWSMachineSpec) -> LaunchSpec:
    v = spec.root_volume
    return LaunchSpec(
        instance_type=spec.instance_type,
        image_id=spec.image_id,
        key_name=spec.key_name,
        root_volume=Volume(v.size_gib, v.type, v.encrypted),
    )


@dataclass
class CommonOptions:
    """Options of both AWS providers ([cluster_providers.aws.options], the same under
    machine_providers: configure both alike)."""

    region: str = ""
    endpoint_url: str = ""
    retry_mode: str = "standard"
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    # The value of the tke.cloud/platform tag: one AWS account may serve several platforms.
    platform: str = "tke"
    # Objects without credential_ref use the controller's own AWS credentials (the standard
    # chain). A multi-tenant platform sets this false, so every cluster names its tenant's.
    default_credentials: bool = True
    # Install profiles, as the baremetal providers' (tke.internal.provider.nodeprep).
    profiles: dict[str, object] | None = None
    # Seconds a bootstrap token in a node's user data lives: long enough for the instance to
    # boot, install its packages and join.
    bootstrap_token_ttl: float = 3600.0
    drain_timeout: float = 300.0
    # What one machine (a worker, or a cluster's master) may cost; see Limits and the defaults
    # above. ["*"] allows every instance type.
    allowed_instance_types: list[str] = field(default_factory=lambda: list(DEFAULT_INSTANCE_TYPES))
    max_root_volume_gib: int = DEFAULT_MAX_ROOT_VOLUME_GIB
    allowed_volume_types: list[str] = field(default_factory=lambda: list(DEFAULT_VOLUME_TYPES))

    def __post_init__(self) -> None:
        problems = []
        if not self.allowed_instance_types:
            problems.append('allowed_instance_types is empty: name instance types, families ("m6i.*"), or "*"')
        problems += [
            f"allowed_instance_types: {p!r} is not an instance type, a family such as 'm6i.*', or '*'"
            for p in self.allowed_instance_types
            if not isinstance(p, str) or not _INSTANCE_PATTERN.fullmatch(p)
        ]
        if not 8 <= self.max_root_volume_gib <= 16384:
            problems.append("max_root_volume_gib must be between 8 and 16384")
        if not self.allowed_volume_types:
            problems.append(f"allowed_volume_types is empty: name some of {', '.join(VOLUME_TYPES)}")
        problems += [
            f"allowed_volume_types: {t!r} is not one of {', '.join(VOLUME_TYPES)}"
            for t in self.allowed_volume_types
            if t not in VOLUME_TYPES
        ]
        if problems:
            raise ValueError("aws provider options: " + "; ".join(problems))

    def limits(self) -> Limits:
        return Limits(tuple(self.allowed_instance_types), tuple(self.allowed_volume_types), self.max_root_volume_gib)

    def client_options(self) -> ClientOptions:
        names = {f.name for f in fields(ClientOptions)}
        return ClientOptions(**{k: v for k, v in vars(self).items() if k in names})

    def install_profiles(self) -> dict[str, nodeprep.Profile]:
        return nodeprep.profiles_from(self.profiles)


@dataclass
class ClusterOptions(CommonOptions):
    """The cluster provider's options: the common ones and the network add-on's."""

    # tke.internal.provider.addons.network.NetworkAddonOptions, as the baremetal provider's.
    network_addon: dict[str, Any] = field(default_factory=dict)
    # What one cluster may cost besides its masters' instances: at most this many masters (1, 3
    # or 5), and whether it may have a network load balancer (billed by the hour).
    max_control_plane_count: int = 5
    allow_load_balancer: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_control_plane_count not in (1, 3, 5):
            raise ValueError("aws provider options: max_control_plane_count must be 1, 3 or 5")

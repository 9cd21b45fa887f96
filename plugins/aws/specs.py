"""The AWS parts of Machine and Cluster specs: their checks (the apiserver asks the providers
before storing an object) and what a launch takes from them."""

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
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_ZONE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
VOLUME_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1")


def id_error(kind: str, value: str) -> str | None:
    if _ID[kind].fullmatch(value):
        return None
    return f"{value!r} is not a {kind} id such as {kind if kind != 'image' else 'ami'}-0123456789abcdef0"


def region_error(value: str) -> str | None:
    return None if not value or _REGION.fullmatch(value) else f"{value!r} is not a region such as eu-west-1"


def zone_error(value: str) -> str | None:
    return None if _ZONE.fullmatch(value) else f"{value!r} is not an availability zone such as eu-west-1a"


def machine_violations(spec: machine_pb2.AWSMachineSpec, path: str, *, placement: bool = True) -> list[FieldViolation]:
    """Checks of an AWSMachineSpec; `placement`: subnet and security groups are its own."""
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
    return out


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

"""The platform's tags on AWS resources: how it finds again what it made (after a controller
restart in the middle of a step, or by another controller), and what it may delete.

Every resource the platform creates carries:
  tke.cloud/platform     the platform's name (the providers' `platform` option, "tke")
  tke.cloud/tenant       the tenant of the object it was made for
  tke.cloud/cluster      the cluster's name, and tke.cloud/cluster-uid its uid
  tke.cloud/role         what it is: vpc, subnet, internet-gateway, route-table,
                         control-plane-sg, node-sg, load-balancer, target-group, master, worker
  tke.cloud/machine      for a machine's instance and interface: the Machine's name, and
                         tke.cloud/machine-uid its uid (masters: tke.cloud/master-index)
  Name                   "<cluster>-<role>[-<machine>]", for the console
Resources found by uid are the object's own: a cluster deleted and created again under the same
name never adopts the old one's. Adopted resources (spec.aws.vpc_id, subnet ids, security
groups) are not tagged and never deleted.

The aws-eni IP provider also writes `tke.cloud/ip/<address>` on a node's interface: the owner
of a secondary address it assigned (plugins/ip_providers/aws_eni.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PLATFORM = "tke.cloud/platform"
TENANT = "tke.cloud/tenant"
CLUSTER = "tke.cloud/cluster"
CLUSTER_UID = "tke.cloud/cluster-uid"
ROLE = "tke.cloud/role"
MACHINE = "tke.cloud/machine"
MACHINE_UID = "tke.cloud/machine-uid"
MASTER_INDEX = "tke.cloud/master-index"
IP_PREFIX = "tke.cloud/ip/"


def of(platform: str, tenant: str, cluster: str, cluster_uid: str, role: str, **more: str) -> dict[str, str]:
    """The tags of a resource made for a cluster (`more`: machine tags, by key)."""
    name = "-".join(p for p in (cluster, role, more.get(MACHINE, "")) if p)
    return {
        PLATFORM: platform,
        TENANT: tenant or "default",
        CLUSTER: cluster,
        CLUSTER_UID: cluster_uid,
        ROLE: role,
        "Name": name[:255],
        **more,
    }


def aws(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """Tags as the API takes them."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def specification(resource_type: str, tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """TagSpecifications for a create call: the resource is tagged as it is made."""
    return [{"ResourceType": resource_type, "Tags": aws(tags)}]


def filters(tags: Mapping[str, str], **more: list[str]) -> list[dict[str, Any]]:
    """Describe filters matching every tag (and `more` filters, by name with "_" for "-")."""
    out: list[dict[str, Any]] = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    out += [{"Name": k.replace("_", "-"), "Values": v} for k, v in more.items()]
    return out


def read(tag_set: list[dict[str, str]] | None) -> dict[str, str]:
    """A resource's TagSet (or Tags) as a mapping."""
    return {t["Key"]: t["Value"] for t in tag_set or []}


def identity(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags that identify a resource (the rest, such as Name, describe it)."""
    return {k: v for k, v in tags.items() if k in (PLATFORM, CLUSTER_UID, ROLE, MACHINE_UID, MASTER_INDEX)}

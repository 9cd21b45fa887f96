"""Provider checks as the apiserver would run them (a Registry whose kind asks the providers):
a spec the provider cannot work with is refused field by field before it is stored, on create
and update; unknown types pass (the controller may have more plugins)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from tests.support.apiserver import cluster
from tests.support.memory_store import MemoryStore
from tke.internal.apiserver.admission import with_provider_validation
from tke.internal.apiserver.kinds import CLUSTERS
from tke.internal.apiserver.registry import Registry
from tke.internal.provider.credentials import publish_catalogue
from tke.internal.rpc.errors import ApiError
from tke.platform.v1 import cluster_pb2


@pytest.fixture
def registry() -> Registry[cluster_pb2.Cluster]:
    return Registry(with_provider_validation(CLUSTERS, "tke.cluster_providers"), MemoryStore(), "/t")


async def test_the_provider_refuses_what_it_cannot_work_with(registry: Registry[cluster_pb2.Cluster]) -> None:
    c = cluster("bm")
    c.spec.machines.add(ip="192.0.2.1")
    with pytest.raises(ApiError) as err:
        await registry.create("default", c)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cluster.spec.machines[0].credential_ref" in err.value.message

    c.spec.machines[0].credential_ref = "ops-key"
    await publish_catalogue(registry.store, registry.prefix, [("default", "ops-key")])
    created = await registry.create("default", c)
    update = cluster_pb2.Cluster()
    update.CopyFrom(created)
    update.spec.version = ""
    with pytest.raises(ApiError) as err:
        await registry.update("default", update, field_mask_pb2.FieldMask(paths=["spec.version"]))
    assert "cluster.spec.version" in err.value.message


async def test_imported_needs_a_credential_and_unknown_types_pass(registry: Registry[cluster_pb2.Cluster]) -> None:
    imported = cluster_pb2.Cluster()
    imported.metadata.name = "edge"
    imported.spec.type = "imported"
    imported.spec.api_server_url = "https://203.0.113.5:6443"
    with pytest.raises(ApiError) as err:
        await registry.create("default", imported)
    assert "cluster.spec.credential_ref" in err.value.message
    # Without machines a baremetal cluster is accepted: it waits for them.
    await registry.create("default", cluster("later"))
    await registry.create("default", cluster("elsewhere", type="some-cloud"))


async def test_aws_names_and_ids_are_whole_values(registry: Registry[cluster_pb2.Cluster]) -> None:
    # A pattern's `$` also matches before a final newline: "m6i.large\n" is no instance type.
    c = cluster("cloud", type="aws")
    c.spec.version = "1.31.2"
    c.spec.aws.region = "eu-west-1\n"
    c.spec.aws.subnets.add(zone="eu-west-1a\n", cidr="10.0.1.0/24")
    c.spec.aws.control_plane.count = 1
    c.spec.aws.control_plane.machine.instance_type = "m6i.large\n"
    c.spec.aws.control_plane.machine.image_id = "ami-0123456789abcdef0\n"
    with pytest.raises(ApiError) as err:
        await registry.create("default", c)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    [bad_request] = err.value.details
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    fields = ("region", "subnets[0].zone", "control_plane.machine.instance_type", "control_plane.machine.image_id")
    assert {v.field for v in bad_request.field_violations} == {f"cluster.spec.aws.{f}" for f in fields}

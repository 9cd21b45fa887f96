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
from tke.internal.plugin import loader
from tke.internal.provider import nodeprep
from tke.internal.provider.credentials import publish_catalogue
from tke.internal.provider.errors import PermanentError
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


async def test_an_install_profile_offered_to_some_tenants_is_refused_to_the_others() -> None:
    """A profile may hold one tenant's mirror and its credentials (`tenants`): another tenant's
    cluster naming it is refused field by field at the apiserver, and tke-controller never
    installs it there; a profile this apiserver does not know is left to the controller."""
    profiles = {"team-a-mirror": {"repository": "https://mirror.team-a.example/v{minor}/", "tenants": ["team-a"]}}
    configured = {"baremetal": loader.ProviderConfig(options={"profiles": profiles})}
    registry = Registry(with_provider_validation(CLUSTERS, "tke.cluster_providers", configured), MemoryStore(), "/t")
    await publish_catalogue(registry.store, registry.prefix, [("team-a", "ops-key"), ("team-b", "ops-key")])

    ips = iter(f"192.0.2.{i}" for i in range(10, 20))

    def named(profile: str) -> cluster_pb2.Cluster:
        c = cluster(f"bm-{profile or 'default'}")
        c.spec.machines.add(ip=next(ips), credential_ref="ops-key")
        c.spec.install_profile = profile
        return c

    with pytest.raises(ApiError) as err:
        await registry.create("team-b", named("team-a-mirror"))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    violation = err.value.details[0]
    assert isinstance(violation, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in violation.field_violations] == [
        ("cluster.spec.install_profile", "install profile 'team-a-mirror' is not offered to tenant 'team-b'")
    ]
    await registry.create("team-a", named("team-a-mirror"))
    await registry.create("team-b", named(""))  # the default profile is everyone's
    await registry.create("team-b", named("only-the-controller-knows"))

    chosen = nodeprep.profiles_from(profiles)
    assert nodeprep.choose(chosen, "team-a-mirror", "team-a").repository.startswith("https://mirror.team-a")
    with pytest.raises(
        PermanentError, match=r"'team-a-mirror' is not offered to tenant 'team-b' \(profiles it may use: default\)"
    ):
        nodeprep.choose(chosen, "team-a-mirror", "team-b")
    with pytest.raises(ValueError, match="tenants must be a list of tenant names"):
        nodeprep.profiles_from({"x": {"tenants": "team-a"}})

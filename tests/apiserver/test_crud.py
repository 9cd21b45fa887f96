"""Create, Get, List, Update, UpdateStatus and Delete of clusters and machines, with their errors."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from tests.support.apiserver import Running, cluster, machine
from tests.support.controller import publish_credentials
from tests.support.rpc import bad_request_fields, detail_of, expect_error
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, machine_pb2

Code = grpc.StatusCode


async def create(api: Running, c: cluster_pb2.Cluster) -> cluster_pb2.Cluster:
    return await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))


async def test_create_sets_server_fields_and_ignores_client_ones(api: Running) -> None:
    c = cluster("alpha", {"env": "dev"})
    c.metadata.uid = "client-uid"
    c.metadata.resource_version = "999"
    c.metadata.generation = 42
    c.metadata.deletion_timestamp.seconds = 1
    c.status.phase = cluster_pb2.CLUSTER_PHASE_RUNNING
    created = await create(api, c)
    assert created.metadata.uid and created.metadata.uid != "client-uid"
    assert created.metadata.generation == 1
    assert int(created.metadata.resource_version) > 0
    assert created.metadata.resource_version != "999"
    assert created.metadata.creation_timestamp.seconds > 0
    assert not created.metadata.HasField("deletion_timestamp")
    assert created.status.phase == cluster_pb2.CLUSTER_PHASE_UNSPECIFIED
    assert created.metadata.tenant_id == "default"
    got = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="alpha"))
    assert got == created


async def test_create_twice_is_already_exists(api: Running) -> None:
    await create(api, cluster("dup"))
    err = await expect_error(create(api, cluster("dup")), Code.ALREADY_EXISTS)
    assert detail_of(err, error_details_pb2.ResourceInfo).resource_name == "dup"


async def test_get_missing_is_not_found(api: Running) -> None:
    err = await expect_error(api.clusters.Get(cluster_pb2.GetClusterRequest(name="nope")), Code.NOT_FOUND)
    assert "nope" in (err.details() or "")
    await expect_error(api.clusters.Get(cluster_pb2.GetClusterRequest(name="")), Code.INVALID_ARGUMENT)


async def test_create_without_object_or_with_bad_fields_is_invalid_argument(api: Running) -> None:
    err = await expect_error(api.clusters.Create(cluster_pb2.CreateClusterRequest()), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["cluster"]
    bad = cluster("Bad_Name")
    bad.spec.network.service_cidr = "10.244.128.0/17"  # inside pod_cidr
    bad.spec.version = "latest"
    bad.spec.machines.add(ip="300.1.1.1")
    err = await expect_error(create(api, bad), Code.INVALID_ARGUMENT)
    assert set(bad_request_fields(err)) == {
        "cluster.metadata.name",
        "cluster.spec.network.service_cidr",
        "cluster.spec.version",
        "cluster.spec.machines[0].ip",
    }


async def test_update_replaces_spec_and_bumps_generation(api: Running) -> None:
    created = await create(api, cluster("upd", {"a": "1"}))
    created.spec.version = "1.31.0"
    created.metadata.labels["b"] = "2"
    updated = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=created))
    assert updated.spec.version == "1.31.0"
    assert dict(updated.metadata.labels) == {"a": "1", "b": "2"}
    assert updated.metadata.generation == 2
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    # A metadata-only change keeps the generation.
    updated.metadata.labels["c"] = "3"
    again = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=updated))
    assert again.metadata.generation == 2
    # Nothing changed: no write, same resource_version.
    same = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=again))
    assert same.metadata.resource_version == again.metadata.resource_version


async def test_update_with_field_mask_changes_only_the_masked_fields(api: Running) -> None:
    await create(api, cluster("masked", {"keep": "me"}))
    patch = cluster_pb2.Cluster()
    patch.metadata.name = "masked"
    patch.spec.version = "1.32.1"
    patch.spec.display_name = "ignored, not in the mask"
    mask = field_mask_pb2.FieldMask(paths=["spec.version"])
    updated = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=patch, update_mask=mask))
    assert updated.spec.version == "1.32.1"
    assert updated.spec.display_name == ""
    assert updated.spec.network.pod_cidr == "10.244.0.0/16"
    assert dict(updated.metadata.labels) == {"keep": "me"}


async def test_a_masked_field_is_replaced_whole_and_cleared_when_the_request_leaves_it_empty(api: Running) -> None:
    c = cluster("clear", {"keep": "me"})
    c.spec.machines.add(ip="192.0.2.10", credential_ref="ops-key")
    c.spec.extra_args["kubelet"].args["max-pods"] = "200"
    c.spec.display_name = "Clear me"
    await publish_credentials(api.apiserver.config.etcd, "default/ops-key")
    await create(api, c)

    # A named repeated field is replaced, not appended to.
    patch = cluster_pb2.Cluster()
    patch.metadata.name = "clear"
    patch.spec.machines.add(ip="192.0.2.11", credential_ref="ops-key")
    mask = field_mask_pb2.FieldMask(paths=["spec.machines"])
    updated = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=patch, update_mask=mask))
    assert [m.ip for m in updated.spec.machines] == ["192.0.2.11"]

    # Named and left empty (the request's spec is then absent on the wire): cleared.
    patch = cluster_pb2.Cluster()
    patch.metadata.name = "clear"
    paths = ["spec.machines", "spec.extra_args", "spec.display_name", "metadata.labels"]
    mask = field_mask_pb2.FieldMask(paths=paths)
    updated = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=patch, update_mask=mask))
    assert list(updated.spec.machines) == [] and dict(updated.spec.extra_args) == {}
    assert updated.spec.display_name == "" and dict(updated.metadata.labels) == {}
    # What the mask does not name stays.
    assert (updated.spec.version, updated.spec.network.pod_cidr) == ("1.30.2", "10.244.0.0/16")
    assert updated.metadata.generation == 3
    assert await api.clusters.Get(cluster_pb2.GetClusterRequest(name="clear")) == updated


async def test_update_mask_rejects_status_and_unknown_paths(api: Running) -> None:
    await create(api, cluster("mask-bad"))
    patch = cluster("mask-bad")
    for path in ("status.phase", "metadata.uid", "spec.nope"):
        mask = field_mask_pb2.FieldMask(paths=[path])
        err = await expect_error(
            api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=patch, update_mask=mask)),
            Code.INVALID_ARGUMENT,
        )
        assert bad_request_fields(err) == ["update_mask.paths[0]"]


async def test_update_of_immutable_or_invalid_fields_is_refused(api: Running) -> None:
    created = await create(api, cluster("immut"))
    created.spec.type = "imported"
    err = await expect_error(
        api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=created)), Code.INVALID_ARGUMENT
    )
    assert "cluster.spec.type" in bad_request_fields(err)
    created.spec.type = "baremetal"
    created.spec.network.pod_cidr = "not-a-cidr"
    err = await expect_error(
        api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=created)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.spec.network.pod_cidr"]


async def test_a_baremetal_machines_host_cannot_change_once_its_install_began(api: Running) -> None:
    """Its delete resets the host at spec.ip: a changed address would reset another host and
    leave the installed one joined. Before the install, and for the SSH user, it may change."""
    await create(api, cluster("hosts"))
    stored = await api.machines.Create(
        machine_pb2.CreateMachineRequest(machine=machine("w1", "hosts", ip="192.0.2.41"))
    )
    stored.spec.ip = "192.0.2.42"  # not installed yet: the tenant may correct its address
    stored = await api.machines.Update(machine_pb2.UpdateMachineRequest(machine=stored))
    stored.status.conditions.add(type="Preflight", status=meta_pb2.CONDITION_STATUS_TRUE, reason="Succeeded")
    stored = await api.machines.UpdateStatus(machine_pb2.UpdateMachineStatusRequest(machine=stored))
    stored.spec.ip = "192.0.2.43"
    err = await expect_error(
        api.machines.Update(machine_pb2.UpdateMachineRequest(machine=stored)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["machine.spec.ip"]
    assert "delete the machine and create a new one" in (err.details() or "")
    stored.spec.ip, stored.spec.username = "192.0.2.42", "admin"
    updated = await api.machines.Update(machine_pb2.UpdateMachineRequest(machine=stored))
    assert (updated.spec.ip, updated.spec.username) == ("192.0.2.42", "admin")


async def test_update_missing_is_not_found(api: Running) -> None:
    await expect_error(api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=cluster("ghost"))), Code.NOT_FOUND)


async def test_update_status_writes_only_status(api: Running) -> None:
    created = await create(api, cluster("stat"))
    created.spec.version = "9.9.9"  # ignored
    created.metadata.labels["x"] = "y"  # ignored
    created.status.phase = cluster_pb2.CLUSTER_PHASE_RUNNING
    created.status.conditions.add(type="EnsureCertificates", status=meta_pb2.CONDITION_STATUS_TRUE, reason="Done")
    updated = await api.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=created))
    assert updated.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING
    assert updated.status.conditions[0].type == "EnsureCertificates"
    assert updated.spec.version == "1.30.2"
    assert "x" not in updated.metadata.labels
    assert updated.metadata.generation == 1
    created.status.conditions.add(type="not camel")
    err = await expect_error(
        api.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=created)), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["cluster.status.conditions[1].type"]


async def test_stale_resource_version_is_aborted(api: Running) -> None:
    created = await create(api, cluster("stale"))
    first = cluster_pb2.Cluster()
    first.CopyFrom(created)
    first.spec.version = "1.31.0"
    await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=first))
    second = cluster_pb2.Cluster()
    second.CopyFrom(created)  # still at the old resource_version
    second.spec.version = "1.32.0"
    err = await expect_error(api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=second)), Code.ABORTED)
    assert detail_of(err, error_details_pb2.PreconditionFailure).violations[0].type == "RESOURCE_VERSION"
    await expect_error(
        api.clusters.Delete(
            cluster_pb2.DeleteClusterRequest(name="stale", resource_version=created.metadata.resource_version)
        ),
        Code.ABORTED,
    )
    bad = cluster("stale")
    bad.metadata.resource_version = "abc"
    await expect_error(api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=bad)), Code.INVALID_ARGUMENT)


async def test_two_concurrent_writers_with_the_same_version_one_wins(api: Running) -> None:
    created = await create(api, cluster("race"))

    async def write(version: str) -> str:
        c = cluster_pb2.Cluster()
        c.CopyFrom(created)
        c.spec.version = version
        try:
            await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c))
        except grpc.aio.AioRpcError as err:
            return err.code().name
        return "OK"

    results = await asyncio.gather(*(write(f"1.{30 + i}.0") for i in range(8)))
    assert results.count("OK") == 1
    assert results.count("ABORTED") == 7


async def test_concurrent_writers_without_version_all_apply_on_the_latest_state(api: Running) -> None:
    await publish_credentials(api.apiserver.config.etcd, "default/ops-key")
    await create(api, cluster("merge"))
    changes = {"spec.version": "1.31.0", "spec.display_name": "Merged", "spec.credential_ref": "ops-key"}

    async def write(path: str, value: str) -> None:
        patch = cluster("merge")
        setattr(patch.spec, path.split(".")[1], value)
        mask = field_mask_pb2.FieldMask(paths=[path])
        await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=patch, update_mask=mask))

    # Each write reads, changes one field and CASes; the losers of a race read again inside the
    # server, so no write is lost and none is reported as a conflict.
    for _ in range(3):
        await asyncio.gather(*(write(p, v) for p, v in changes.items()))
    got = await api.clusters.Get(cluster_pb2.GetClusterRequest(name="merge"))
    assert (got.spec.version, got.spec.display_name, got.spec.credential_ref) == ("1.31.0", "Merged", "ops-key")


async def test_delete_without_finalizers_removes(api: Running) -> None:
    await create(api, cluster("bye"))
    gone = await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="bye"))
    assert gone.metadata.name == "bye"
    await expect_error(api.clusters.Get(cluster_pb2.GetClusterRequest(name="bye")), Code.NOT_FOUND)
    await expect_error(api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="bye")), Code.NOT_FOUND)


async def test_delete_with_finalizers_marks_then_removes_with_the_last_finalizer(api: Running) -> None:
    c = cluster("fin")
    c.metadata.finalizers.extend(["tke.cloud/teardown", "tke.cloud/billing"])
    await create(api, c)
    marked = await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="fin"))
    assert marked.metadata.HasField("deletion_timestamp")
    # Deleting again is idempotent.
    again = await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="fin"))
    assert again.metadata.deletion_timestamp == marked.metadata.deletion_timestamp
    # No new finalizers on an object being deleted.
    grow = cluster_pb2.Cluster()
    grow.CopyFrom(marked)
    grow.metadata.finalizers.append("tke.cloud/late")
    err = await expect_error(api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=grow)), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["cluster.metadata.finalizers"]
    mask = field_mask_pb2.FieldMask(paths=["metadata.finalizers"])
    patch = cluster_pb2.Cluster()
    patch.metadata.name = "fin"
    patch.metadata.finalizers.append("tke.cloud/billing")
    one_left = await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=patch, update_mask=mask))
    assert list(one_left.metadata.finalizers) == ["tke.cloud/billing"]
    await api.clusters.Get(cluster_pb2.GetClusterRequest(name="fin"))
    del patch.metadata.finalizers[:]
    await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=patch, update_mask=mask))
    await expect_error(api.clusters.Get(cluster_pb2.GetClusterRequest(name="fin")), Code.NOT_FOUND)


async def test_machine_needs_an_existing_cluster_that_is_not_being_deleted(api: Running) -> None:
    err = await expect_error(
        api.machines.Create(machine_pb2.CreateMachineRequest(machine=machine("m1", "no-such"))),
        Code.FAILED_PRECONDITION,
    )
    assert "no-such" in (err.details() or "")
    c = cluster("host")
    c.metadata.finalizers.append("tke.cloud/teardown")
    await create(api, c)
    m = await api.machines.Create(machine_pb2.CreateMachineRequest(machine=machine("m1", "host")))
    assert m.spec.cluster_name == "host"
    await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="host"))
    await expect_error(
        api.machines.Create(machine_pb2.CreateMachineRequest(machine=machine("m2", "host"))),
        Code.FAILED_PRECONDITION,
    )


async def test_machine_validation_and_immutable_cluster(api: Running) -> None:
    await create(api, cluster("c1"))
    await create(api, cluster("c2"))
    bad = machine("Bad", "c1", ip="1.2.3")
    bad.spec.ssh_port = 70000
    bad.spec.taints.add(key="k", value="v", effect="Sometimes")
    err = await expect_error(api.machines.Create(machine_pb2.CreateMachineRequest(machine=bad)), Code.INVALID_ARGUMENT)
    assert set(bad_request_fields(err)) == {
        "machine.metadata.name",
        "machine.spec.ip",
        "machine.spec.ssh_port",
        "machine.spec.taints[0].effect",
    }
    m = await api.machines.Create(machine_pb2.CreateMachineRequest(machine=machine("m", "c1")))
    m.spec.cluster_name = "c2"
    err = await expect_error(api.machines.Update(machine_pb2.UpdateMachineRequest(machine=m)), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["machine.spec.cluster_name"]


async def test_list_machines_by_cluster_and_selector(api: Running) -> None:
    await create(api, cluster("ca"))
    await create(api, cluster("cb"))
    for i in range(3):
        await api.machines.Create(
            machine_pb2.CreateMachineRequest(
                machine=machine(f"a{i}", "ca", labels={"role": "worker" if i else "master"})
            )
        )
        await api.machines.Create(machine_pb2.CreateMachineRequest(machine=machine(f"b{i}", "cb")))
    of_a = await api.machines.List(machine_pb2.ListMachinesRequest(cluster_name="ca"))
    assert [m.metadata.name for m in of_a.items] == ["a0", "a1", "a2"]
    workers = await api.machines.List(machine_pb2.ListMachinesRequest(label_selector="role=worker"))
    assert [m.metadata.name for m in workers.items] == ["a1", "a2"]
    err = await expect_error(
        api.machines.List(machine_pb2.ListMachinesRequest(label_selector="role in (")), Code.INVALID_ARGUMENT
    )
    assert bad_request_fields(err) == ["label_selector"]


async def test_the_provider_refuses_what_it_cannot_build(api: Running) -> None:
    c = cluster("no-login")
    c.spec.machines.add(ip="192.0.2.7")  # the baremetal provider needs a credential for it
    err = await expect_error(create(api, c), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["cluster.spec.machines[0].credential_ref"]
    c.spec.machines[0].credential_ref = "ops-key"
    await publish_credentials(api.apiserver.config.etcd, "default/ops-key")
    await create(api, c)


async def test_a_trailing_newline_makes_no_name_version_or_label(api: Running) -> None:
    # `$` in a pattern also matches before a final newline: "prod\n" would be a second cluster
    # that prints like "prod", and no DNS label where it lands (Kubernetes objects, tags).
    await create(api, cluster("prod"))
    bad = cluster("prod\n", {"team\n": "a\n"})
    bad.spec.type = "baremetal\n"
    bad.spec.version = "1.30.2\n"
    bad.spec.network.dns_domain = "cluster.local\n"
    bad.spec.extra_args["kubelet"].args["max-pods\n"] = "200"
    bad.spec.credential_ref = "ops-key\n"
    bad.spec.install_profile = "default\n"
    err = await expect_error(create(api, bad), Code.INVALID_ARGUMENT)
    assert set(bad_request_fields(err)) == {
        "cluster.metadata.name",
        "cluster.metadata.labels['team\\n']",
        "cluster.spec.type",
        "cluster.spec.version",
        "cluster.spec.network.dns_domain",
        "cluster.spec.extra_args['kubelet'].args['max-pods\\n']",
        "cluster.spec.credential_ref",
        "cluster.spec.install_profile",
    }
    listed = await api.clusters.List(cluster_pb2.ListClustersRequest())
    assert [c.metadata.name for c in listed.items] == ["prod"]
    bad_machine = machine("w1\n", "prod\n", labels={"pool": "general\n"})
    err = await expect_error(
        api.machines.Create(machine_pb2.CreateMachineRequest(machine=bad_machine)), Code.INVALID_ARGUMENT
    )
    assert set(bad_request_fields(err)) == {
        "machine.metadata.name",
        "machine.spec.cluster_name",
        "machine.metadata.labels['pool']",
    }


async def test_addresses_are_bare_unicast_addresses(api: Running) -> None:
    # Any text after "%" is an IPv6 zone to Python, newlines included; 0.0.0.0 and :: reach
    # the controller's own host.
    bad = cluster("zoned")
    bad.spec.machines.add(ip="0.0.0.0", credential_ref="ops-key")
    bad.spec.machines.add(ip="::", credential_ref="ops-key")
    bad.spec.machines.add(ip="224.0.0.1", credential_ref="ops-key")
    bad.spec.machines.add(ip="fe80::1%eth0\nserver evil 203.0.113.9:6443", credential_ref="ops-key")
    err = await expect_error(create(api, bad), Code.INVALID_ARGUMENT)
    assert set(bad_request_fields(err)) == {f"cluster.spec.machines[{i}].ip" for i in range(4)}
    vip = cluster("vip")
    vip.spec.machines.add(ip="192.0.2.31", credential_ref="ops-key")
    vip.spec.control_plane_vip.address = "fe80::5%x\n}"
    vip.spec.control_plane_vip.interface = "eth0"
    await publish_credentials(api.apiserver.config.etcd, "default/ops-key")
    err = await expect_error(create(api, vip), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["cluster.spec.control_plane_vip.address"]
    endpoint = cluster("endpoint")
    endpoint.spec.machines.add(ip="192.0.2.32", credential_ref="ops-key")
    endpoint.spec.machines.add(ip="192.0.2.33", credential_ref="ops-key")
    endpoint.spec.control_plane_endpoint.host = "fe80::2%x\ny"
    err = await expect_error(create(api, endpoint), Code.INVALID_ARGUMENT)
    assert bad_request_fields(err) == ["cluster.spec.control_plane_endpoint.host"]


async def test_a_service_range_has_kubeadms_size(api: Running) -> None:
    # At least 10 addresses (the cluster DNS Service takes the tenth), at most 2^20.
    for service, ok in [
        ("10.96.0.0/32", False),
        ("10.96.0.0/29", False),
        ("10.96.0.0/28", True),
        ("10.0.0.0/8", False),
        ("10.96.0.0/12", True),
        ("fd00:10:96::/64", False),
        ("fd00:10:96::/108", True),
        ("fd00:10:96::/125", False),
    ]:
        c = cluster(f"svc-{len(service)}-{service[-2:].strip('/')}-{int(ok)}")
        c.spec.network.service_cidr = service
        c.spec.network.pod_cidr = "fd00:10:244::/56" if ":" in service else "172.16.0.0/16"
        if ok:
            await create(api, c)
        else:
            err = await expect_error(create(api, c), Code.INVALID_ARGUMENT)
            assert bad_request_fields(err) == ["cluster.spec.network.service_cidr"], service


async def test_a_cluster_names_at_most_seven_control_plane_machines(api: Running) -> None:
    # Each is an etcd member and a claim in the object's etcd transaction: 130 of them were
    # over etcd's --max-txn-ops and answered INTERNAL.
    await publish_credentials(api.apiserver.config.etcd, "default/ops-key")
    for count, ok in [(7, True), (8, False), (130, False)]:
        c = cluster(f"masters-{count}")
        for i in range(count):
            c.spec.machines.add(ip=f"198.51.{count}.{i + 1}", credential_ref="ops-key")
        c.spec.control_plane_endpoint.host = "lb.example.com"
        if ok:
            await create(api, c)
        else:
            err = await expect_error(create(api, c), Code.INVALID_ARGUMENT)
            assert bad_request_fields(err) == ["cluster.spec.machines"], count


async def test_recorded_masters_without_a_credential_are_records_not_claims(api: Running) -> None:
    # A cloud's masters: private addresses that repeat from one VPC to the next. The
    # controller records them in status without a credential; two clusters may each have one.
    for name in ("vpc-a", "vpc-b"):
        created = await create(api, cluster(name, type="some-cloud"))
        created.status.control_plane.add(node_name="ip-10-0-1-4.ec2.internal").machine.ip = "10.0.1.4"
        await api.clusters.UpdateStatus(cluster_pb2.UpdateClusterStatusRequest(cluster=created))

"""The provider framework against a real apiserver and etcd, with a provider whose steps
record what they do: conditions advance to Running, a step that fails twice then succeeds,
a permanent failure and spent retries end in Failed with the reason, a controller stopped in
the middle resumes without redoing finished steps, and delete runs teardown then removes the
finalizer. Events are recorded through the EventService."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from lightkube.resources.core_v1 import Node

from tests.support.apiserver import Running, cluster
from tests.support.controller import RecordingProvider, controller_config, credentials_published
from tests.support.fake_ssh import FakeDialer
from tests.support.waiting import wait_for
from tke.internal.controller.manager import Controller
from tke.internal.controller.progress import FAILED, RETRYING, SUCCEEDED, TRUE, find
from tke.internal.provider import nodeprep
from tke.internal.provider.clusterapi import Rollout
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.kube.access import ClusterAccess
from tke.internal.provider.ssh import Result
from tke.internal.storage.etcd import EtcdConfig
from tke.platform.v1 import cluster_pb2, credential_pb2, credential_pb2_grpc, event_pb2, event_pb2_grpc

pytestmark = pytest.mark.timeout(90)


@contextlib.asynccontextmanager
async def running_controller(
    api: Running, etcd_config: EtcdConfig, provider: Any, **changes: Any
) -> AsyncIterator[Controller]:
    config = controller_config(api.address, etcd_config, **changes)
    controller = Controller(config, cluster_providers={"recording": provider}, machine_providers={"none": provider})
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def get(api: Running, name: str) -> cluster_pb2.Cluster:
    return await api.clusters.Get(cluster_pb2.GetClusterRequest(name=name))


async def change_spec(api: Running, name: str, change: Callable[[cluster_pb2.Cluster], None]) -> None:
    """Get, change and Update the cluster as a client does: the controller writes its status
    meanwhile, so an ABORTED (a newer resource version) means get it again and retry."""

    async def updated() -> bool:
        c = await get(api, name)
        change(c)
        try:
            await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c))
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.ABORTED:
                raise
            return False
        return True

    await wait_for(updated)


async def create(api: Running, name: str) -> None:
    c = cluster(name, type="recording")
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))


def phase_is(api: Running, name: str, phase: int) -> Any:
    async def check() -> cluster_pb2.Cluster | None:
        c = await get(api, name)
        return c if c.status.phase == phase else None

    return check


async def test_steps_advance_to_running_with_conditions_and_events(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    provider = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=3)
    await create(api, "c1")
    async with running_controller(api, etcd_config, provider):
        c = await wait_for(phase_is(api, "c1", cluster_pb2.CLUSTER_PHASE_RUNNING))
    assert "tke.cloud/cluster-provider" in c.metadata.finalizers
    for step in ("Step1", "Step2", "Step3"):
        cond = find(c.status.conditions, step)
        assert cond is not None and cond.status == TRUE and cond.reason == SUCCEEDED
        assert cond.retries == 0 and cond.last_transition_time.seconds > 0
    ready = find(c.status.conditions, "Ready")
    assert ready is not None and ready.status == TRUE
    assert c.status.version == "1.30.2" and c.status.observed_generation == c.metadata.generation
    assert [r["step"] for r in provider.records() if r["event"] == "end"] == ["Step1", "Step2", "Step3"]
    events = event_pb2_grpc.EventServiceStub(api.channel)

    async def reasons() -> set[str] | None:
        out = await events.List(event_pb2.ListEventsRequest(involved_object_kind="Cluster", involved_object_name="c1"))
        found = {e.spec.reason for e in out.items}
        return found if {"StepSucceeded", "PhaseChanged"} <= found else None

    await wait_for(reasons)


async def test_a_step_that_fails_twice_then_succeeds_records_its_retries(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    provider = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=3, failures={"Step2": 2})
    await create(api, "c2")
    async with running_controller(api, etcd_config, provider):
        c = await wait_for(phase_is(api, "c2", cluster_pb2.CLUSTER_PHASE_RUNNING))
    cond = find(c.status.conditions, "Step2")
    assert cond is not None and cond.status == TRUE and cond.retries == 2
    assert cond.last_error == ""  # cleared by the success
    starts = [r["step"] for r in provider.records() if r["event"] == "start"]
    assert starts == ["Step1", "Step2", "Step2", "Step2", "Step3"]
    events = event_pb2_grpc.EventServiceStub(api.channel)
    listed = await events.List(event_pb2.ListEventsRequest(involved_object_name="c2"))
    retrying = [e for e in listed.items if e.spec.reason == "StepRetrying"]
    assert len(retrying) == 1 and retrying[0].spec.count == 2  # one event, counted
    assert retrying[0].spec.type == event_pb2.EVENT_TYPE_WARNING


async def test_a_permanent_failure_ends_in_failed_with_the_reason_and_stays(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    provider = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=3, permanent=["Step2"])
    await create(api, "c3")
    async with running_controller(api, etcd_config, provider):
        c = await wait_for(phase_is(api, "c3", cluster_pb2.CLUSTER_PHASE_FAILED))
        await asyncio.sleep(1.0)  # nothing more runs while the spec is unchanged
    assert c.status.reason == "StepFailed" and "Step2" in c.status.message and "cannot work here" in c.status.message
    cond = find(c.status.conditions, "Step2")
    assert cond is not None and cond.reason == FAILED and "cannot work here" in cond.last_error
    assert [r["step"] for r in provider.records() if r["event"] == "start"] == ["Step1", "Step2"]


async def test_spent_retries_end_in_failed(api: Running, etcd_config: EtcdConfig, tmp_path: Path) -> None:
    provider = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=2, failures={"Step1": 100})
    await create(api, "c4")
    async with running_controller(api, etcd_config, provider, max_retries=2):
        c = await wait_for(phase_is(api, "c4", cluster_pb2.CLUSTER_PHASE_FAILED))
    cond = find(c.status.conditions, "Step1")
    assert cond is not None and cond.reason == FAILED and cond.retries == 3
    assert "gave up after 3 attempts" in cond.message
    assert len([r for r in provider.records() if r["event"] == "start"]) == 3


async def test_a_controller_stopped_mid_create_resumes_without_redoing_finished_steps(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    log = tmp_path / "steps.jsonl"
    provider = RecordingProvider(str(log), steps=4, step_seconds=0.4)
    await create(api, "c5")
    async with running_controller(api, etcd_config, provider):

        async def step3_started() -> bool:
            return any(r["step"] == "Step3" and r["event"] == "start" for r in provider.records())

        await wait_for(step3_started)
    c = await get(api, "c5")
    assert c.status.phase == cluster_pb2.CLUSTER_PHASE_INITIALIZING
    step3 = find(c.status.conditions, "Step3")
    assert step3 is not None and step3.reason == "Running"  # it was interrupted
    async with running_controller(api, etcd_config, RecordingProvider(str(log), steps=4)):
        await wait_for(phase_is(api, "c5", cluster_pb2.CLUSTER_PHASE_RUNNING))
    ends = [r["step"] for r in provider.records() if r["event"] == "end"]
    assert ends.count("Step1") == 1 and ends.count("Step2") == 1  # finished steps were not redone
    assert ends.count("Step3") == 1 and ends.count("Step4") == 1


async def test_delete_runs_teardown_then_removes_the_finalizer(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    provider = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=1)
    await create(api, "c6")
    async with running_controller(api, etcd_config, provider):
        await wait_for(phase_is(api, "c6", cluster_pb2.CLUSTER_PHASE_RUNNING))
        deleted = await api.clusters.Delete(cluster_pb2.DeleteClusterRequest(name="c6"))
        assert deleted.metadata.HasField("deletion_timestamp")  # held by the finalizer

        async def gone() -> bool:
            try:
                await get(api, "c6")
            except grpc.aio.AioRpcError as err:
                return err.code() == grpc.StatusCode.NOT_FOUND
            return False

        await wait_for(gone)
    steps = [r["step"] for r in provider.records() if r["event"] == "end"]
    assert steps == ["Step1", "Teardown"]


async def test_a_spec_change_gives_a_failed_cluster_a_fresh_retry_budget(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    provider = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=2, failures={"Step2": 2})
    await create(api, "c7")
    async with running_controller(api, etcd_config, provider, max_retries=1):
        await wait_for(phase_is(api, "c7", cluster_pb2.CLUSTER_PHASE_FAILED))
        await change_spec(api, "c7", lambda c: setattr(c.spec, "display_name", "try again"))
        c = await wait_for(phase_is(api, "c7", cluster_pb2.CLUSTER_PHASE_RUNNING))
    cond = find(c.status.conditions, "Step2")
    assert cond is not None and cond.status == TRUE and cond.reason == SUCCEEDED
    assert cond.reason != RETRYING


async def test_a_version_change_upgrades_and_another_spec_change_scales(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    provider = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=1)
    await create(api, "c8")
    async with running_controller(api, etcd_config, provider):
        await wait_for(phase_is(api, "c8", cluster_pb2.CLUSTER_PHASE_RUNNING))
        await change_spec(api, "c8", lambda c: setattr(c.spec, "version", "1.31.0"))

        async def upgraded() -> cluster_pb2.Cluster | None:
            got = await get(api, "c8")
            running = got.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING
            return got if running and got.status.version == "1.31.0" else None

        await wait_for(upgraded)
        await change_spec(api, "c8", lambda c: setattr(c.spec, "display_name", "bigger"))

        async def scaled() -> cluster_pb2.Cluster | None:
            got = await get(api, "c8")
            done = got.status.observed_generation == got.metadata.generation
            return got if done and got.status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING else None

        c = await wait_for(scaled)
    ends = [r["step"] for r in provider.records() if r["event"] == "end"]
    assert ends == ["Step1", "Upgrade", "ScaleOut"]
    upgrade = find(c.status.conditions, "Upgrade")
    assert upgrade is not None and upgrade.status == TRUE


async def test_an_unknown_provider_type_is_failed_with_the_reason(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    c = cluster("c9", type="nosuchcloud")
    await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=c))
    async with running_controller(api, etcd_config, RecordingProvider(str(tmp_path / "steps.jsonl"))):
        got = await wait_for(phase_is(api, "c9", cluster_pb2.CLUSTER_PHASE_FAILED))
    assert got.status.reason == "UnknownProvider" and "nosuchcloud" in got.status.message


class APIAfterInit:
    """The cluster's Kubernetes API, as far as the install needs it: ready once a fake machine
    ran kubeadm init (connection refused before), with the version kubeadm was asked for. (A
    fake: these machines are FakeDialer's, with no address an API stand-in could serve on.)"""

    def __init__(self, dialer: FakeDialer) -> None:
        self.dialer = dialer
        self.accessed: list[ClusterAccess] = []
        self.applied: list[list[str]] = []

    @contextlib.asynccontextmanager
    async def connect(self, access: ClusterAccess) -> AsyncIterator[APIAfterInit]:
        self.accessed.append(access)
        yield self

    async def ready(self) -> str:
        for channel in self.dialer.machines.values():
            config = channel.files.get("/etc/kubernetes/kubeadm-init.yaml")
            if config is not None and any("kubeadm init --config" in c for c in channel.commands):
                docs = {d["kind"]: d for d in yaml.safe_load_all(config)}
                return str(docs["ClusterConfiguration"]["kubernetesVersion"]).removeprefix("v")
        raise TemporaryError("connection refused: no API server yet")

    async def node(self, name: str) -> Node | None:
        return None

    async def drain(self, name: str, timeout: float) -> None:  # noqa: ASYNC109 - the Protocol's
        raise AssertionError("an install drains nothing")

    async def uncordon(self, name: str) -> None:
        raise AssertionError("an install uncordons nothing")

    async def delete_node(self, name: str) -> None:
        raise AssertionError("an install deletes no node")

    async def create_bootstrap_token(self, token: str, ttl_seconds: float, description: str) -> None:
        raise AssertionError("a baremetal install creates its tokens with kubeadm")

    async def apply(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self.applied.append([f"{o['kind']}/{o['metadata']['name']}" for o in objects])

    async def rollout(self, kind: str, namespace: str, name: str) -> Rollout | None:
        return Rollout(desired=1, updated=1, ready=1, available=1, observed=True)  # the one master's pod


async def test_a_baremetal_cluster_without_machines_waits_then_installs_on_fake_machines(
    api: Running, etcd_config: EtcdConfig
) -> None:
    dialer = FakeDialer({"hostname": Result(0, "fake-master\n", "")})
    apis = APIAfterInit(dialer)
    credentials = ConfiguredCredentials({"default/ops-key": CredentialConfig(password_env="TKE_TEST_UNUSED")})
    config = controller_config(api.address, etcd_config)
    controller = Controller(config, dialer=dialer, credentials=credentials, cluster_apis=apis)
    task = asyncio.create_task(controller.run())
    try:
        await api.clusters.Create(cluster_pb2.CreateClusterRequest(cluster=cluster("later")))

        async def waiting() -> cluster_pb2.Cluster | None:
            got = await get(api, "later")
            return got if got.status.reason == "Waiting" else None

        c = await wait_for(waiting)
        assert c.status.phase == cluster_pb2.CLUSTER_PHASE_INITIALIZING
        assert "spec.machines" in c.status.message
        assert not any(cond.retries for cond in c.status.conditions)  # waiting spends no retries
        assert dialer.machines == {}
        await credentials_published(etcd_config, "default/ops-key")
        c.spec.machines.add(ip="192.0.2.50", credential_ref="ops-key")
        c.metadata.resource_version = ""
        await api.clusters.Update(cluster_pb2.UpdateClusterRequest(cluster=c))
        c = await wait_for(phase_is(api, "later", cluster_pb2.CLUSTER_PHASE_RUNNING))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    master = dialer.machines["192.0.2.50"]
    # Prepared by the default profile, then one kubeadm init with the platform's own CAs.
    commands = [cmd.rsplit("; ", 1)[-1] for cmd in master.commands]
    inits = [i for i, cmd in enumerate(commands) if cmd.startswith("kubeadm init --config")]
    assert len(inits) == 1
    assert any(cmd.startswith("DEBIAN_FRONTEND=noninteractive apt-get install") for cmd in commands[: inits[0]])
    repository = nodeprep.COMMUNITY_REPOSITORY.replace("{minor}", "1.30").encode()
    assert repository in master.files["/etc/apt/sources.list.d/kubernetes.list"]
    creds = credential_pb2_grpc.ClusterCredentialServiceStub(api.channel)
    stored = await creds.Get(credential_pb2.GetClusterCredentialRequest(name="later"))
    assert master.files["/etc/kubernetes/pki/ca.crt"].decode() == stored.spec.ca.cert_pem
    assert {"/etc/kubernetes/pki/sa.key", "/etc/kubernetes/.tke-installed"} <= set(master.files)
    # A single master is its own endpoint.
    docs = {d["kind"]: d for d in yaml.safe_load_all(master.files["/etc/kubernetes/kubeadm-init.yaml"])}
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "192.0.2.50:6443"
    assert docs["InitConfiguration"]["nodeRegistration"]["name"] == "fake-master"
    assert c.status.control_plane_endpoint == "192.0.2.50:6443"
    assert [(m.machine.ip, m.node_name) for m in c.status.control_plane] == [("192.0.2.50", "fake-master")]
    assert [(a.type, a.host, a.port) for a in c.status.addresses] == [
        ("Advertise", "192.0.2.50", 6443),
        ("Internal", "192.0.2.50", 6443),
    ]
    assert {a.server for a in apis.accessed} == {"https://192.0.2.50:6443"}
    # The network add-on of the default (bridge) mode, applied once the control plane answered.
    assert apis.applied[-1] == [
        "ServiceAccount/tke-cni", "ClusterRole/tke:cni", "ClusterRoleBinding/tke:cni", "ConfigMap/tke-cni",
        "DaemonSet/tke-cni",
    ]  # fmt: skip
    addons = find(c.status.conditions, "AddonsReady")
    assert addons is not None and addons.status == TRUE


async def test_many_clusters_share_a_bounded_number_of_workers(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    provider = RecordingProvider(str(tmp_path / "steps.jsonl"), steps=2, step_seconds=0.1)
    names = [f"many-{i}" for i in range(8)]
    for name in names:
        await create(api, name)
    # One tenant's clusters, allowed every worker (by default a tenant gets half of them).
    async with running_controller(api, etcd_config, provider, workers=3, tenant_workers=3):

        async def all_running() -> bool:
            got = await api.clusters.List(cluster_pb2.ListClustersRequest())
            phases = {c.metadata.name: c.status.phase for c in got.items}
            return all(phases.get(n) == cluster_pb2.CLUSTER_PHASE_RUNNING for n in names)

        await wait_for(all_running, within=40)
    spans: list[tuple[float, float]] = []
    started: dict[tuple[str, str], float] = {}
    for r in provider.records():
        key = (r["cluster"], r["step"])
        if r["event"] == "start":
            started[key] = r["t"]
        else:
            spans.append((started.pop(key), r["t"]))
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert 2 <= peak <= 3  # work ran in parallel, never beyond the 3 workers


class ConvergingProvider(RecordingProvider):
    """A provider whose objects drift once: its first `converge` applies them again (says so),
    the later ones find nothing to do."""

    def __init__(self, log_file: str) -> None:
        super().__init__(log_file, steps=1)
        self.converged = 0

    async def converge(self, ctx: Any) -> str | None:
        self.converged += 1
        return "applied again as this platform renders them" if self.converged == 1 else None


async def test_a_running_object_is_converged_before_each_health_check_and_an_event_says_when_it_changed(
    api: Running, etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    provider = ConvergingProvider(str(tmp_path / "steps.jsonl"))
    await create(api, "drifted")
    events = event_pb2_grpc.EventServiceStub(api.channel)

    async def converged_events() -> list[event_pb2.Event]:
        out = await events.List(
            event_pb2.ListEventsRequest(involved_object_kind="Cluster", involved_object_name="drifted")
        )
        return [e for e in out.items if e.spec.reason == "Converged"]

    async with running_controller(api, etcd_config, provider, health_interval=0.2):
        await wait_for(lambda: provider.converged >= 3, what="three health checks of the running cluster")
        found = await wait_for(converged_events, what="the Converged event")
    assert [e.spec.message for e in found] == ["applied again as this platform renders them"]
    assert (await get(api, "drifted")).status.phase == cluster_pb2.CLUSTER_PHASE_RUNNING

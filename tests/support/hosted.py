"""A meta cluster for the hosted provider's tests and demos: the Kubernetes API stand-in
(tests/support/kube) as the meta cluster, reached by the platform through a kubeconfig file as
an operator configures it, and the meta cluster's controllers, played by `MetaControllers`
since no pod runs there:

- the cloud's load-balancer controller: a LoadBalancer Service gets `ingress_ip` as its
  address (a loopback address the test owns);
- the StatefulSet and Deployment controllers and the kubelets: once every Secret a workload's
  pods mount exists and the meta cluster admits its pod (a dry-run create of the pod the
  controller would make of the template: the stand-in's Pod Security Admission refuses one that
  violates the namespace's `enforce` level, as a real meta cluster refuses the controller's
  pods), its status says every replica is ready and updated (status subresource); a refusal is
  kept in `refused` (namespace/name -> the API's message) and the workload is never ready;
- the kube-apiserver pods: once the kube-apiserver Deployment is ready, a second API stand-in
  serves at the endpoint Service's address, with the flags of the Deployment read as
  kube-apiserver reads them: --tls-cert-file, --tls-private-key-file and --client-ca-file are
  files of the Secret mounted at their directory, --enable-bootstrap-token-auth is honoured,
  and the Kubernetes version is the image's. A PKI that does not hang together (a serving
  certificate without the endpoint's address, a client CA that is not the cluster's) fails the
  platform's calls to it;
- kube-controller-manager's bootstrapsigner: cluster-info in the hosted API carries the JWS of
  every bootstrap token (tests/support/jws.py);
- the workers' kubelets: a machine the stand-in kubeadm joined to the endpoint (the world's
  "hosted" section, tests/support/standins.py) gets its Node registered, Ready while its
  kubelet runs (as system:masters: the stand-in has no Node authorizer).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.core_v1 import ConfigMap, Secret, Service
from lightkube.types import PatchType

from tests.support import jws, pss
from tests.support.installed import masters
from tests.support.kube import objects
from tests.support.kube.running import StandIn, running
from tests.support.kubeadm_world import World
from tests.support.pki import CertFiles, TestCA
from tke.internal.provider.kube.api import ClusterAPI

TICK = 0.1
APISERVER = "kube-apiserver"
META_USER = "tke-platform"
# The meta cluster's pod and service networks, as an operator configures the provider with
# them (its control planes' NetworkPolicies keep their pods out of them).
META_NETWORKS: dict[str, Any] = {"meta_pod_cidrs": ["10.244.0.0/16"], "meta_service_cidrs": ["10.96.0.0/12"]}


@contextlib.contextmanager
def meta_cluster(directory: Path, version: str = "1.31.0") -> Iterator[tuple[StandIn, Path]]:
    """The meta cluster's API and a kubeconfig file of the platform's (a cluster admin)."""
    with running(directory / "meta", kubernetes_version=version) as standin:
        kubeconfig = directory / "meta-kubeconfig.yaml"
        kubeconfig.write_text(standin.kubeconfig(user=META_USER, groups=("system:masters",)))
        kubeconfig.chmod(0o600)
        yield standin, kubeconfig


def _flags(command: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def _secret_files(secret: Any) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


class MetaControllers:
    def __init__(self, meta: StandIn, directory: Path, *, ingress_ip: str = "127.0.0.1", world: World | None = None):
        self.meta = meta
        self.directory = directory
        self.ingress_ip = ingress_ip
        self.world = world
        # Namespace -> the hosted API stand-in serving for it.
        self.hosted: dict[str, StandIn] = {}
        # "namespace/workload" -> why the meta cluster refused its pod (Pod Security Admission).
        self.refused: dict[str, str] = {}
        self._registered: dict[str, set[str]] = {}

    async def run(self, stack: contextlib.ExitStack) -> None:
        async with contextlib.AsyncExitStack() as clients:
            client = await clients.enter_async_context(masters(self.meta))
            hosted: dict[str, ClusterAPI] = {}  # a client of each hosted API server, kept
            while True:
                await self._load_balancers(client)
                await self._workloads(client)
                for namespace, standin in self.hosted.items():
                    if namespace not in hosted:
                        hosted[namespace] = await clients.enter_async_context(masters(standin))
                    await self._sign_cluster_info(hosted[namespace])
                    await self._kubelets(hosted[namespace], namespace)
                await self._start_apiservers(client, stack)
                await asyncio.sleep(TICK)

    # -- the meta cluster's controllers --------------------------------------------------------

    async def _load_balancers(self, client: ClusterAPI) -> None:
        services: list[Any] = (await client.list_objects(Service))[0]
        for s in services:
            if s.spec.type != "LoadBalancer" or (s.status and s.status.loadBalancer and s.status.loadBalancer.ingress):
                continue
            status = {"status": {"loadBalancer": {"ingress": [{"ip": self.ingress_ip}]}}}
            await client.client.patch(
                Service.Status, s.metadata.name, status, namespace=s.metadata.namespace, patch_type=PatchType.MERGE
            )

    async def _workloads(self, client: ClusterAPI) -> None:
        for kind in (StatefulSet, Deployment):
            items: list[Any] = (await client.list_objects(kind))[0]
            for w in items:
                wanted = w.spec.replicas if w.spec.replicas is not None else 1
                generation = w.metadata.generation or 0
                if w.status and (w.status.observedGeneration or 0) >= generation and w.status.readyReplicas == wanted:
                    continue
                mounted = [v.secret.secretName for v in w.spec.template.spec.volumes or [] if v.secret]
                missing = [name for name in mounted if await client.get(Secret, name, w.metadata.namespace) is None]
                if missing:
                    continue  # its pods cannot start: a Secret they mount is missing
                refusal = await self._admission(client, w)
                if refusal is not None:
                    self.refused[f"{w.metadata.namespace}/{w.metadata.name}"] = refusal
                    continue  # its controller's pods are refused: no replica ever runs
                status: dict[str, Any] = {
                    "observedGeneration": generation,
                    "replicas": wanted,
                    "readyReplicas": wanted,
                    "updatedReplicas": wanted,
                    "availableReplicas": wanted,
                }
                if kind is StatefulSet:
                    status["currentReplicas"] = wanted
                await client.client.patch(
                    kind.Status,
                    w.metadata.name,
                    {"status": status},
                    namespace=w.metadata.namespace,
                    patch_type=PatchType.MERGE,
                )

    @staticmethod
    async def _admission(client: ClusterAPI, workload: Any) -> str | None:
        """None if the meta cluster admits the pod the workload's controller makes, else why not."""
        pod = pss.pod_of(workload.to_dict())
        assert pod is not None
        try:
            obj: Any = from_dict(pod)  # the pod carries its namespace
            await client.client.create(obj, dry_run=True)
        except ApiError as err:
            if err.status.code != 403:
                raise
            return str(err.status.message)
        return None

    # -- the hosted clusters' API servers -------------------------------------------------------

    async def _start_apiservers(self, client: ClusterAPI, stack: contextlib.ExitStack) -> None:
        deployments: list[Any] = (await client.list_objects(Deployment, labels=f"app.kubernetes.io/name={APISERVER}"))[
            0
        ]
        for d in deployments:
            namespace = d.metadata.namespace
            if namespace in self.hosted or not d.status or not d.status.readyReplicas:
                continue
            service: Any = await client.get(Service, APISERVER, namespace)
            if service is None or not (service.status and service.status.loadBalancer.ingress):
                continue
            pod = d.spec.template.spec
            container = pod.containers[0]
            flags = _flags(container.command or [])
            mounts = {m.name: m.mountPath for m in container.volumeMounts or []}
            secrets = {v.name: v.secret.secretName for v in pod.volumes or [] if v.secret}
            directory = self.directory / namespace
            files: dict[str, Path] = {}
            for volume, secret_name in secrets.items():
                secret = await client.get(Secret, secret_name, namespace)
                assert secret is not None, f"{namespace}/{secret_name} is mounted but missing"
                for name, data in _secret_files(secret).items():
                    path = directory / "pki" / volume / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                    files[f"{mounts[volume]}/{name}"] = path
            # The platform's CA key is not the API server's; the stand-in's helpers only need a
            # CA object, so the controller-manager's Secret (which carries it) lends it.
            cm = await client.get(Secret, "kube-controller-manager-pki", namespace)
            assert cm is not None
            ca_files = _secret_files(cm)
            ca = TestCA.load(directory / "helper-ca", ca_files["ca.crt"], ca_files["ca.key"])
            version = (container.image or "").rsplit(":v", 1)[1]
            standin = stack.enter_context(
                running(
                    directory / "hosted",
                    kubernetes_version=version,
                    ca=ca,
                    host=service.status.loadBalancer.ingress[0].ip,
                    port=service.spec.ports[0].port,
                    serving=CertFiles(str(files[flags["tls-cert-file"]]), str(files[flags["tls-private-key-file"]])),
                    client_ca_file=str(files[flags["client-ca-file"]]),
                    bootstrap_token_auth=flags.get("enable-bootstrap-token-auth") == "true",
                )
            )
            self.hosted[namespace] = standin

    async def _sign_cluster_info(self, hosted: ClusterAPI) -> None:
        info: Any = await hosted.get(ConfigMap, "cluster-info", "kube-public")
        if info is None:
            return
        secrets, _ = await hosted.list_objects(
            Secret, namespace="kube-system", fields="type=bootstrap.kubernetes.io/token"
        )
        data = dict(info.data or {})
        wanted = {}
        for s in secrets:
            token = {k: v.decode() for k, v in _secret_files(s).items()}
            if token.get("usage-bootstrap-signing") == "true":
                wanted[f"jws-kubeconfig-{token['token-id']}"] = jws.detached(
                    data.get("kubeconfig", ""), token["token-id"], token["token-secret"]
                )
        have = {k: v for k, v in data.items() if k.startswith("jws-kubeconfig-")}
        if have != wanted:
            patch: dict[str, Any] = {k: None for k in have if k not in wanted}
            patch.update(wanted)
            await hosted.client.patch(
                ConfigMap, "cluster-info", {"data": patch}, namespace="kube-public", patch_type=PatchType.MERGE
            )

    async def _kubelets(self, hosted: ClusterAPI, namespace: str) -> None:
        if self.world is None:
            return
        standin = self.hosted[namespace]
        state = self.world.read()
        endpoint = f"{self.ingress_ip}:{standin.url.rsplit(':', 1)[1]}"
        joined = (state.get("hosted") or {}).get(endpoint)
        if joined is None:
            return
        registered = self._registered.setdefault(namespace, set())
        for name, node in joined["nodes"].items():
            machine = state["machines"].get(node["ip"], {})
            if name in registered or machine.get("member") != name:
                continue
            ready = machine.get("services", {}).get("kubelet") == "active"
            kubelet = "v" + machine.get("kubelet_version", joined["version"])
            try:
                await hosted.client.create(from_dict(objects.node(name, ready=ready, ip=node["ip"], kubelet=kubelet)))
            except ApiError as err:
                if err.status.code != 409:
                    raise
            registered.add(name)


@contextlib.asynccontextmanager
async def meta_controllers(
    meta: StandIn, directory: Path, *, ingress_ip: str = "127.0.0.1", world: World | None = None
) -> AsyncIterator[MetaControllers]:
    """The meta cluster's controllers (and the hosted API servers they start), for the block."""
    controllers = MetaControllers(meta, directory, ingress_ip=ingress_ip, world=world)
    with contextlib.ExitStack() as stack:
        task = asyncio.create_task(controllers.run(stack))
        try:
            yield controllers
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # raises what broke the controllers, if anything did

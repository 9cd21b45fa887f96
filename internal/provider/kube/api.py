"""A cluster's Kubernetes API, for providers: lightkube (typed models, asyncio, server-side
apply) on httpx, with the TLS and credentials of a ClusterAccess (access.py).

The server may be a tenant's (their cluster, where they are cluster-admin; an imported
cluster's URL), so what it can make a call cost is bounded (kube.transport.BoundedTransport):
each request ends within `request_timeout` seconds (a watch: its own length plus `timeout`),
whatever pace the server sends at, each network step within `timeout`; a response's body
within `max_response_bytes`, and so are a list's pages together and each watch event, and a
list holds at most `max_list_items` objects (more is PermanentError naming the option: the
same call would get as much again). JSON nested too deeply to decode is an answer that is not
JSON, and JSON of another shape than the object asked for is a TemporaryError, not a library's
TypeError.

Every failure comes out as a provider error (errors.py), never as a library exception or a
traceback:
- TemporaryError: the server cannot be reached or timed out, answered 5xx or 429, a conflict
  that a retry resolves (409 on a stale object), a watch whose resource version expired (410,
  WatchExpired: list again), or a missing object a later attempt may find (404);
- PermanentError: the credential is refused (401) or lacks permission (403), the server's
  host is an address the access's policy refuses (kube.transport: checked at each connection),
  the server's certificate is not trusted, the request is invalid (400, 422: the message names
  the field), an apply conflicts with another field manager (without force), or the object's
  kind is unknown.
Operations that treat "not found" as an answer (get, node, delete_node, delete) say so.

Use as `async with ClusterAPI(access) as api: ...`; `api.client` is the lightkube client for
anything else, to be called inside `api.translated(what)` so that its failures map the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx
import lightkube
from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import Cluster, Context, User
from lightkube.core import resource as lk_resource
from lightkube.core.exceptions import ApiError, ConfigError, LoadResourceError
from lightkube.core.resource_registry import resource_registry
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node, Pod, PodEviction
from lightkube.types import CascadeType, PatchType

from tke.internal.provider.addresses import AddressRefused
from tke.internal.provider.errors import PermanentError, StepError, TemporaryError
from tke.internal.provider.kube.access import BearerSource, ClusterAccess
from tke.internal.provider.kube.transport import (
    STREAMED,
    BoundedTransport,
    CheckedTransport,
    ResponseTooLarge,
    ResponseTooSlow,
)

log = logging.getLogger(__name__)
R = TypeVar("R", bound=lk_resource.Resource)
# TLS alerts (OpenSSL reason names) by which a server refuses the client's certificate.
_CREDENTIAL_ALERTS = ("CERTIFICATE", "UNKNOWN_CA")
FIELD_MANAGER = "tke-platform"
MiB = 1 << 20
# Bytes of one response's body (of a list's pages together, of one watch event).
MAX_RESPONSE_BYTES = 64 * MiB
# Objects of one list, its pages together (a cluster's Nodes: Kubernetes supports 5,000).
MAX_LIST_ITEMS = 10_000
# Seconds one request may take in all, from connecting to the body's last byte.
REQUEST_TIMEOUT = 60.0


class WatchExpired(TemporaryError):
    """The resource version a watch started from is no longer kept by the server: list again
    and watch from the list's resource version."""


@dataclass(frozen=True)
class Readiness:
    """GET /readyz?verbose: whether the API server is ready, and the checks that fail."""

    ready: bool
    failed: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        return "ready" if self.ready else "not ready: " + (", ".join(self.failed) or "unknown checks") + " failed"


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED (with the object), or BOOKMARK (only the
    resource version, from which a later watch resumes)."""

    type: str
    object: Any
    resource_version: str


class _AuthenticatedTransport(httpx.AsyncBaseTransport):
    """Adds the bearer header (static or from an exec plugin, refreshed once on 401) and the
    TLS server name to every request."""

    def __init__(self, inner: httpx.AsyncBaseTransport, bearer: BearerSource, server_name: str) -> None:
        self.inner = inner
        self.bearer = bearer
        self.server_name = server_name

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.server_name:
            request.extensions["sni_hostname"] = self.server_name
        header = await self.bearer.header()
        if header:
            request.headers["Authorization"] = header
        response = await self.inner.handle_async_request(request)
        if response.status_code == 401 and self.bearer.refreshable:
            await response.aclose()
            request.headers["Authorization"] = await self.bearer.header(refresh=True) or ""
            response = await self.inner.handle_async_request(request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __deepcopy__(self, memo: dict[int, Any]) -> _AuthenticatedTransport:
        # lightkube deep-copies its connection parameters (dataclasses.asdict), transport
        # included; a transport holds sockets and an SSLContext and is shared, not copied.
        return self


def _cause_chain(err: BaseException) -> Iterable[BaseException]:
    seen: BaseException | None = err
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _message(response: httpx.Response) -> str:
    """The message of a Status answer, or the start of any other body."""
    try:
        return str(response.json()["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _api_path(kind: type[Any], namespace: str | None) -> str:
    info = lk_resource.api_info(kind)
    base = info.parent or info.resource
    prefix = f"/apis/{base.group}/{base.version}" if base.group else f"/api/{base.version}"
    if namespace and issubclass(kind, lk_resource.NamespacedResource):
        prefix += f"/namespaces/{namespace}"
    return f"{prefix}/{info.plural}"


class ClusterAPI:
    def __init__(
        self,
        access: ClusterAccess,
        *,
        timeout: float = 10.0,
        field_manager: str = FIELD_MANAGER,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_list_items: int = MAX_LIST_ITEMS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.access = access
        self.timeout = timeout
        self.field_manager = field_manager
        self.max_response_bytes = max_response_bytes
        self.max_list_items = max_list_items
        tls = access.ssl_context()
        transport = BoundedTransport(
            _AuthenticatedTransport(
                httpx.AsyncHTTPTransport(verify=tls, retries=0)
                if access.addresses is None
                else CheckedTransport(tls, access.addresses),
                BearerSource(access),
                access.tls_server_name,
            ),
            max_bytes=max_response_bytes,
            deadline=max(request_timeout, timeout),
        )
        config = SingleConfig(
            context_name="tke", context=Context(cluster="cluster"), cluster=Cluster(server=access.server), user=User()
        )
        self.client = lightkube.AsyncClient(
            config, timeout=httpx.Timeout(timeout), trust_env=False, transport=transport, field_manager=field_manager
        )
        self._http = httpx.AsyncClient(base_url=access.server, transport=transport, timeout=timeout, trust_env=False)

    async def __aenter__(self) -> ClusterAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.close()  # closes the shared transport too

    # --- errors -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def translated(self, what: str) -> AsyncIterator[None]:
        """Map failures of the calls inside to TemporaryError or PermanentError about `what`."""
        try:
            yield
        except StepError:
            raise
        except AddressRefused as err:
            raise PermanentError(f"{what}: {self.access.server}: {err}") from None
        except ResponseTooLarge as err:
            raise PermanentError(
                f"{what}: {self.access.server} {err} (the cluster API's {err.option}, "
                "tke-controller's [cluster_api.options])"
            ) from None
        except ResponseTooSlow as err:
            raise TemporaryError(
                f"{what}: {self.access.server}: {err} (the cluster API's request_timeout, "
                "tke-controller's [cluster_api.options])"
            ) from None
        except RecursionError:
            raise TemporaryError(f"{what}: {self.access.server} answered JSON nested too deeply to read") from None
        except ApiError as err:
            raise self._status_error(
                what, err.status.code or err.response.status_code, err.status.message or ""
            ) from None
        except httpx.HTTPStatusError as err:
            raise self._status_error(what, err.response.status_code, _message(err.response)) from None
        except httpx.TimeoutException:
            raise TemporaryError(f"{what}: {self.access.server} did not answer within {self.timeout:g}s") from None
        except httpx.TransportError as err:
            for cause in _cause_chain(err):
                if isinstance(cause, ssl.SSLCertVerificationError):
                    reason = cause.verify_message or cause.reason
                    raise PermanentError(
                        f"{what}: the certificate of {self.access.server} is not trusted: {reason}"
                    ) from None
                if isinstance(cause, ssl.SSLError) and any(a in str(cause.reason) for a in _CREDENTIAL_ALERTS):
                    # The server refused our certificate (or wants one): a credential problem. Other
                    # TLS failures (a connection closed mid-handshake) may pass.
                    raise PermanentError(f"{what}: TLS with {self.access.server} failed: {cause.reason}") from None
            raise TemporaryError(f"{what}: cannot reach {self.access.server}: {err or type(err).__name__}") from None
        except (ConfigError, LoadResourceError) as err:
            raise PermanentError(f"{what}: {err}") from None
        except json.JSONDecodeError:
            # A server that answers, but not as a Kubernetes API server (a wrong URL or port).
            raise TemporaryError(
                f"{what}: {self.access.server} answered with something that is not JSON: is it a Kubernetes API server?"
            ) from None
        except (TypeError, AttributeError, KeyError, ValueError) as err:
            # JSON of another shape than the object asked for (a list for an object, a string
            # for a field's object): lightkube's decoding fails with any of these. The server's
            # doing, not a bug of ours to log a traceback for on every attempt.
            log.debug("%s: %s answered JSON of another shape", what, self.access.server, exc_info=True)
            raise TemporaryError(
                f"{what}: {self.access.server} answered JSON that is not the Kubernetes object asked for "
                f"({type(err).__name__}: {err})"
            ) from None

    def _status_error(self, what: str, code: int, message: str) -> StepError:
        text = f"{what}: {message}" if message else f"{what}: HTTP {code}"
        if code == 401:
            return PermanentError(f"{what}: {self.access.server}: credential refused (401) for {self.access.identity}")
        if code == 403:
            return PermanentError(f"{text} (403 Forbidden)")
        if code in (400, 405, 413, 415, 422):
            return PermanentError(text)
        if code == 409 and message.startswith("Apply failed"):
            return PermanentError(text)
        if code == 410:
            return WatchExpired(text)
        return TemporaryError(f"{text} (HTTP {code})" if code >= 500 or code == 429 else text)

    # --- the API server -----------------------------------------------------------------------

    async def version(self) -> str:
        """The server's Kubernetes version without the "v" (GET /version gitVersion)."""
        async with self.translated("GET /version"):
            response = await self._http.get("/version")
            response.raise_for_status()
        try:
            return str(response.json()["gitVersion"]).removeprefix("v")
        except (ValueError, KeyError, TypeError):
            raise TemporaryError(
                f"GET /version: {self.access.server} did not answer with a Kubernetes version"
            ) from None

    async def readiness(self) -> Readiness:
        """GET /readyz?verbose. A server that answers 500 is not ready (with its failed checks);
        one that cannot be reached raises TemporaryError."""
        async with self.translated("GET /readyz"):
            response = await self._http.get("/readyz", params={"verbose": ""})
            if response.status_code not in (200, 500):
                response.raise_for_status()
        lines = response.text.splitlines()
        failed = tuple(line[3:].split(" ", 1)[0] for line in lines if line.startswith("[-]"))
        return Readiness(response.status_code == 200, failed)

    # --- objects ------------------------------------------------------------------------------

    async def get(self, kind: type[R], name: str, namespace: str | None = None) -> R | None:
        """The object, or None when there is none."""
        async with self.translated(f"get {kind.__name__} {name}"):
            try:
                obj: R = await self.client.get(cast(Any, kind), name, namespace=namespace)
                return obj
            except ApiError as err:
                if err.status.code == 404:
                    return None
                raise

    async def list_objects(
        self, kind: type[R], *, namespace: str | None = None, labels: str = "", fields: str = ""
    ) -> tuple[list[R], str]:
        """Every matching object (all pages) and the list's resource version; namespace None
        for a namespaced kind lists all namespaces."""
        params = {"labelSelector": labels or None, "fieldSelector": fields or None, "limit": "500"}
        items: list[R] = []
        token = ""
        size = 0
        async with self.translated(f"list {kind.__name__}"):
            while True:
                page = await self._http.get(_api_path(kind, namespace), params={**params, "continue": token or None})
                page.raise_for_status()
                # The pages together, not only each: a server can answer `continue` for ever.
                size += len(page.content)
                if size > self.max_response_bytes:
                    raise ResponseTooLarge(f"answered more than {self.max_response_bytes} bytes in its pages")
                data = page.json()
                items += [self._decode(kind, obj) for obj in data.get("items") or []]
                if len(items) > self.max_list_items:
                    raise ResponseTooLarge(f"listed more than {self.max_list_items} objects", "max_list_items")
                token = (data.get("metadata") or {}).get("continue") or ""
                if not token:
                    return items, str((data.get("metadata") or {}).get("resourceVersion", ""))

    @staticmethod
    def _decode(kind: type[R], obj: dict[str, Any]) -> R:
        info = lk_resource.api_info(kind).resource
        obj.setdefault("apiVersion", info.api_version)
        obj.setdefault("kind", info.kind)
        decoded: R = kind.from_dict(obj, lazy=False)  # type: ignore[attr-defined]
        return decoded

    async def watch(
        self,
        kind: type[R],
        *,
        namespace: str | None = None,
        resource_version: str = "",
        labels: str = "",
        fields: str = "",
        timeout_seconds: int = 300,
    ) -> AsyncGenerator[WatchEvent]:
        """One watch request with bookmarks: the events until the server ends it (after
        `timeout_seconds`). Resume with the resource_version of the last event or bookmark; a
        too old one raises WatchExpired. Without a resource version it starts with an ADDED
        event per existing object."""
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
            "resourceVersion": resource_version or None,
            "labelSelector": labels or None,
            "fieldSelector": fields or None,
        }
        what = f"watch {kind.__name__}"
        timeout = httpx.Timeout(self.timeout, read=timeout_seconds + self.timeout)
        request = self._http.stream(
            "GET", _api_path(kind, namespace), params=params, timeout=timeout, extensions={STREAMED: True}
        )
        async with self.translated(what), request as response:
            if response.status_code != 200:
                await response.aread()
                response.raise_for_status()
            async for line in self._lines(response):
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise self._status_error(what, int(obj.get("code", 500)), str(obj.get("message", "")))
                rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                if event.get("type") == "BOOKMARK":
                    yield WatchEvent("BOOKMARK", None, rv)
                else:
                    yield WatchEvent(str(event.get("type")), self._decode(kind, obj), rv)

    async def _lines(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The lines of a streamed body, each at most max_response_bytes (httpx's aiter_lines
        keeps a line that never ends, all of it)."""
        pending = bytearray()
        async for chunk in response.aiter_bytes():
            *lines, rest = chunk.split(b"\n")
            for line in lines:
                pending += line
                yield bytes(pending)
                pending.clear()
            pending += rest
            if len(pending) > self.max_response_bytes:
                raise ResponseTooLarge(f"sent a watch event of more than {self.max_response_bytes} bytes")
        if pending:
            yield bytes(pending)

    async def apply(self, objects: Iterable[Mapping[str, Any]], *, force: bool = True) -> list[Any]:
        """Server-side apply each object (dicts, as rendered from manifests) as the field
        manager: created when missing, else changed only where the manifest differs; applying
        the same manifests again changes nothing. Namespaces go first. `force` takes over fields
        another manager set, as Kubernetes recommends for controllers."""
        ordered = sorted(objects, key=lambda o: o.get("kind") != "Namespace")
        out = []
        for obj in ordered:
            kind, name, namespace = self._locate(obj)
            async with self.translated(f"apply {obj.get('kind')} {name}"):
                out.append(
                    await self.client.patch(
                        kind,
                        name,
                        dict(obj),
                        namespace=namespace,
                        patch_type=PatchType.APPLY,
                        field_manager=self.field_manager,
                        force=force,
                    )
                )
        return out

    async def annotate(
        self, kind: type[Any], name: str, annotations: Mapping[str, str], namespace: str | None = None
    ) -> None:
        """Set annotations of an object with a merge patch: an update of its own, so that the
        field manager's server-side applies of the object neither own nor remove them."""
        async with self.translated(f"annotate {kind.__name__} {name}"):
            await self.client.patch(kind, name, {"metadata": {"annotations": dict(annotations)}}, namespace=namespace,
                                    patch_type=PatchType.MERGE)  # fmt: skip

    async def delete(self, objects: Iterable[Mapping[str, Any]]) -> list[str]:
        """Delete each object (in reverse order; its dependents in the background); one already
        gone is fine. Returns those still there, waiting for finalizers ("Kind/namespace/name")."""
        remaining = []
        for obj in reversed(list(objects)):
            kind, name, namespace = self._locate(obj)
            label = f"{obj.get('kind')}/{namespace + '/' if namespace else ''}{name}"
            async with self.translated(f"delete {label}"):
                try:
                    await self.client.delete(kind, name, namespace=namespace, cascade=CascadeType.BACKGROUND)
                except ApiError as err:
                    if err.status.code != 404:
                        raise
                    continue
            if await self.get(kind, name, namespace) is not None:
                remaining.append(label)
        return remaining

    def _locate(self, obj: Mapping[str, Any]) -> tuple[type[Any], str, str | None]:
        try:
            kind = resource_registry.load(str(obj.get("apiVersion")), str(obj.get("kind")))
        except LoadResourceError:
            raise PermanentError(f"unknown kind {obj.get('apiVersion')} {obj.get('kind')}") from None
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            raise PermanentError(f"a {obj.get('kind')} without metadata.name cannot be applied")
        namespace = None
        if issubclass(kind, lk_resource.NamespacedResource):
            namespace = str(meta.get("namespace") or "default")
        return kind, name, namespace

    # --- nodes --------------------------------------------------------------------------------

    async def node(self, name: str) -> Node | None:
        return await self.get(Node, name)

    async def nodes(self) -> list[Node]:
        items, _ = await self.list_objects(Node)
        return items

    async def set_unschedulable(self, name: str, unschedulable: bool = True) -> None:
        """Cordon (True) or uncordon (False) a node."""
        async with self.translated(f"{'cordon' if unschedulable else 'uncordon'} node {name}"):
            await self.client.patch(Node, name, {"spec": {"unschedulable": unschedulable or None}},
                                    patch_type=PatchType.MERGE)  # fmt: skip

    async def pods_on(self, node: str) -> list[Pod]:
        items, _ = await self.list_objects(Pod, fields=f"spec.nodeName={node}")
        return items

    async def evict(self, pod: Pod) -> str | None:
        """Ask the Eviction API (policy/v1) to evict a pod: None when accepted or the pod is
        gone, else why not yet (the budget's message from a 429)."""
        meta = pod.metadata or ObjectMeta()
        name, namespace = meta.name or "", meta.namespace or "default"
        eviction = PodEviction(metadata=ObjectMeta(name=name, namespace=namespace))
        async with self.translated(f"evict pod {namespace}/{name}"):
            try:
                await self.client.create(eviction, name=name, namespace=namespace)
            except ApiError as err:
                if err.status.code == 404:
                    return None
                if err.status.code == 429 or (
                    err.status.code == 500 and "DisruptionBudget" in (err.status.message or "")
                ):
                    causes = (err.status.details.causes if err.status.details else None) or []
                    return "; ".join(c.message for c in causes if c.message) or err.status.message or "429"
                raise
        return None

    async def delete_node(self, name: str) -> bool:
        """Delete the Node object; False when there was none."""
        async with self.translated(f"delete node {name}"):
            try:
                await self.client.delete(Node, name)
            except ApiError as err:
                if err.status.code == 404:
                    return False
                raise
        return True

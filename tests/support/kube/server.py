"""The stand-in's HTTPS front: kube-apiserver's URL layout, verbs and wire format over aiohttp.

- /version, /healthz, /livez, /readyz (with ?verbose, ?exclude= and /readyz/CHECK); checks can
  be made to fail (`failing`) to test a client's health handling.
- discovery: /api, /apis, /api/v1, /apis/GROUP, /apis/GROUP/VERSION (the legacy documents;
  clients that ask for aggregated discovery fall back to them, as with an older server).
- /api/v1/... and /apis/GROUP/VERSION/...: list (labelSelector, fieldSelector, limit,
  continue), watch (resourceVersion, allowWatchBookmarks, timeoutSeconds, selectors), get,
  create, update, patch (merge, JSON, strategic merge, apply with fieldManager and force),
  delete (DeleteOptions: preconditions, propagationPolicy), deletecollection, the status
  subresource, pods/eviction, dryRun=All; authentication.k8s.io/v1 selfsubjectreviews.
Every answer is JSON as the real server writes it (errors are Status objects with
Content-Type application/json); a watch is a chunked stream of one JSON event per line.
Protobuf, tables (as=Table), OpenAPI documents, CRDs and other kinds are not served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from tests.support.kube import catalog
from tests.support.kube.catalog import BY_PATH, SELF_SUBJECT_REVIEW, Resource
from tests.support.kube.errors import StatusError, bad_request, method_not_allowed
from tests.support.kube.rbac import Authenticator, Request, User, forbidden
from tests.support.kube.registry import PODS, Registry
from tests.support.kube.selectors import Predicate, predicate
from tests.support.kube.store import Change, Watcher

CHECKS = (
    "ping", "log", "etcd", "etcd-readiness", "informer-sync", "poststarthook/start-apiserver-admission-initializer",
    "poststarthook/rbac/bootstrap-roles", "shutdown",
)  # fmt: skip
LIVEZ_CHECKS = ("ping", "log", "etcd", "poststarthook/rbac/bootstrap-roles")
MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's request body limit


@dataclass
class Options:
    kubernetes_version: str = "1.30.2"
    # Seconds between BOOKMARK events of watches that allow them (a real server: about a minute).
    bookmark_interval: float = 60.0
    # The longest watch when the client gives no timeoutSeconds (a real server: 30-60 minutes).
    max_watch: float = 1800.0
    public_address: str = ""
    # Health checks that fail (names from CHECKS), for tests of clients' health handling.
    failing: set[str] = field(default_factory=set)


def version_document(version: str) -> dict[str, str]:
    major, minor, *_ = version.lstrip("v").split(".")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{version.lstrip('v')}",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-06-11T20:20:00Z",
        "goVersion": "go1.22.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def _error(err: StatusError) -> web.Response:
    response = _json(err.status(), err.code)
    retry = (err.details or {}).get("retryAfterSeconds")
    if retry:
        response.headers["Retry-After"] = str(retry)
    return response


def _flag(params: Any, name: str) -> bool:
    return str(params.get(name, "")).lower() in ("true", "1")


def _int(params: Any, name: str, default: int = 0) -> int:
    text = params.get(name)
    if text in (None, ""):
        return default
    try:
        return int(text)
    except ValueError:
        raise bad_request(f"invalid value {text!r} for {name}: must be an integer") from None


@dataclass(frozen=True)
class Target:
    """A resource request's target, from its URL."""

    resource: Resource
    namespace: str = ""
    name: str = ""
    subresource: str = ""


class KubeAPIServer:
    def __init__(self, registry: Registry, authenticator: Authenticator, options: Options) -> None:
        self.registry = registry
        self.authenticator = authenticator
        self.options = options
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self._stopping = asyncio.Event()

    def stop_watches(self) -> None:
        self._stopping.set()

    # --- entry ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            user = self.authenticator.authenticate(request.headers.get("Authorization"), peer)
            return await self._route(request, user)
        except StatusError as err:
            return _error(err)
        except web.HTTPRequestEntityTooLarge:
            return _error(StatusError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728"))

    async def _route(self, request: web.Request, user: User) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis") or (parts[0] == "api" and len(parts) < 3):
            return self._non_resource(request, user, parts)
        if parts[0] == "apis" and len(parts) < 4:
            return self._non_resource(request, user, parts)
        group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        target = self._target(group, version, rest)
        return await self._resource(request, user, target)

    # --- non-resource paths ---------------------------------------------------------------------

    def _non_resource(self, request: web.Request, user: User, parts: list[str]) -> web.StreamResponse:
        path = "/" + "/".join(parts)
        verb = {"GET": "get", "HEAD": "get", "POST": "post", "PUT": "put", "PATCH": "patch", "DELETE": "delete"}.get(
            request.method, request.method.lower()
        )
        if not self.registry.allowed(user, Request(verb, path=path)):
            raise forbidden(user, Request(verb, path=path))
        if request.method != "GET":
            raise method_not_allowed(request.method)
        if parts == ["version"]:
            return _json(version_document(self.options.kubernetes_version))
        if parts and parts[0] in ("healthz", "livez", "readyz"):
            return self._health(request, parts)
        if parts == ["api"]:
            address = self.options.public_address or request.host
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
                }
            )
        if parts == ["apis"]:
            groups = [self._group(g, vs) for g, vs in catalog.groups().items() if g]
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if len(parts) == 2 and parts[0] == "api" and parts[1] == "v1":
            return _json(catalog.api_resource_list("", "v1"))
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in catalog.groups():
            return _json({"kind": "APIGroup", "apiVersion": "v1", **self._group(parts[1], catalog.groups()[parts[1]])})
        if len(parts) == 3 and parts[0] == "apis" and parts[2] in catalog.groups().get(parts[1], []):
            return _json(catalog.api_resource_list(parts[1], parts[2]))
        if not parts:
            paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]
            paths += [f"/apis/{g}/{v}" for g, vs in catalog.groups().items() if g for v in vs]
            return _json({"paths": sorted(paths)})
        raise StatusError(404, "NotFound", "the server could not find the requested resource", {})

    @staticmethod
    def _group(name: str, versions: list[str]) -> dict[str, Any]:
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": entries, "preferredVersion": entries[0]}

    def _health(self, request: web.Request, parts: list[str]) -> web.Response:
        kind = parts[0]
        checks = CHECKS if kind == "readyz" else LIVEZ_CHECKS
        excluded = set(request.query.getall("exclude", []))
        if len(parts) > 1:
            name = "/".join(parts[1:])
            if name not in checks:
                raise StatusError(404, "NotFound", "the server could not find the requested resource", {})
            if name in self.options.failing:
                return web.Response(text=f"internal server error: {name} failed\n", status=500)
            return web.Response(text="ok")
        lines, failed = [], False
        for name in checks:
            if name in excluded:
                lines.append(f"[+]{name} excluded: ok")
            elif name in self.options.failing:
                lines.append(f"[-]{name} failed: reason withheld")
                failed = True
            else:
                lines.append(f"[+]{name} ok")
        if failed:
            return web.Response(text="\n".join(lines) + f"\n{kind} check failed\n", status=500)
        if "verbose" in request.query:
            return web.Response(text="\n".join(lines) + f"\n{kind} check passed\n")
        return web.Response(text="ok")

    # --- resources ----------------------------------------------------------------------------

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        missing = StatusError(404, "NotFound", "the server could not find the requested resource", {})
        if group not in catalog.groups() or version not in catalog.groups()[group]:
            raise missing
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_PATH:
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise missing
        if BY_PATH.get((group, version, rest[0])) is None and rest[0] == SELF_SUBJECT_REVIEW.plural:
            if len(rest) > 1:
                raise missing
            return Target(SELF_SUBJECT_REVIEW)
        resource = BY_PATH.get((group, version, rest[0]))
        if resource is None or (namespace and not resource.namespaced):
            raise missing
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in resource.subresources:
            raise missing
        if name and resource.namespaced and not namespace:
            raise missing
        return Target(resource, namespace, name, sub)

    async def _resource(self, request: web.Request, user: User, t: Target) -> web.StreamResponse:
        params = request.query
        method = request.method
        if t.resource is SELF_SUBJECT_REVIEW:
            return await self._self_subject_review(request, user)
        watch = method == "GET" and _flag(params, "watch")
        if method == "GET":
            verb = "watch" if watch else ("get" if t.name else "list")
        elif method == "POST":
            verb = "create"
            if t.name and t.subresource != "eviction":
                raise method_not_allowed(method)
        else:
            verbs = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}
            if method not in verbs:
                raise method_not_allowed(method)
            verb = verbs[method] if t.name else ("deletecollection" if method == "DELETE" else "")
            if not verb:
                raise method_not_allowed(method)
        req = Request(verb, t.resource.group, t.resource.plural, t.subresource, t.namespace, t.name)
        if not self.registry.allowed(user, req):
            raise forbidden(user, req)
        if t.subresource == "eviction" and method != "POST":
            raise method_not_allowed(method)
        if "force" in params and request.content_type != "application/apply-patch+yaml":
            raise bad_request("force is only allowed for apply (PATCH with application/apply-patch+yaml)")
        dry_run = params.get("dryRun", "") == "All"
        manager = params.get("fieldManager", "")
        if not manager and request.content_type != "application/apply-patch+yaml":  # apply must name its manager
            manager = request.headers.get("User-Agent", "unknown").split("/")[0]
        if len(manager) > 128:
            raise bad_request("fieldManager: Too long: must have at most 128 bytes")
        registry, r = self.registry, t.resource
        if watch:
            return await self._watch(request, t)
        if method == "GET" and t.name:
            return _json(registry.get(r, t.namespace, t.name))
        if method == "GET":
            matches = predicate(r, t.namespace, params.get("labelSelector", ""), params.get("fieldSelector", ""))
            page = registry.list_page(r, t.namespace, matches, _int(params, "limit"), params.get("continue", ""))
            meta: dict[str, Any] = {"resourceVersion": page.resource_version}
            if page.continue_token:
                meta["continue"] = page.continue_token
                meta["remainingItemCount"] = page.remaining
            items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in page.items]
            return _json({"kind": f"{r.kind}List", "apiVersion": r.api_version, "metadata": meta, "items": items})
        if method == "POST" and t.subresource == "eviction":
            registry.evict(t.namespace, t.name, await self._body(request))
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)
        if method == "POST":
            return _json(
                registry.create(r, t.namespace, await self._body(request), manager=manager, dry_run=dry_run), 201
            )
        if method == "PUT":
            body = await self._body(request)
            return _json(
                registry.update(
                    r, t.namespace, t.name, body, manager=manager, subresource=t.subresource, dry_run=dry_run
                )
            )
        if method == "PATCH":
            existed = registry.store.get(r, t.namespace, t.name) is not None
            out = registry.patch(
                r,
                t.namespace,
                t.name,
                content_type=request.content_type,
                body=await request.read(),
                manager=manager,
                force=_flag(params, "force"),
                subresource=t.subresource,
                dry_run=dry_run,
            )
            return _json(out, 200 if existed else 201)
        options = await self._delete_options(request)
        if t.name:
            obj, gone = registry.delete(r, t.namespace, t.name, options, dry_run)
            if not gone:
                return _json(obj, 202)
            if r is PODS:
                return _json(obj)
            details = {"name": t.name, "kind": r.plural, "uid": obj["metadata"]["uid"]}
            if r.group:
                details["group"] = r.group
            return _json(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"} | {"details": details}
            )
        matches = predicate(r, t.namespace, params.get("labelSelector", ""), params.get("fieldSelector", ""))
        deleted = []
        for obj in [o for o in registry.store.items(r, t.namespace) if matches(o)]:
            meta = obj["metadata"]
            with contextlib.suppress(StatusError):
                deleted.append(registry.delete(r, meta.get("namespace", ""), meta["name"], options)[0])
        items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in deleted]
        meta = {"resourceVersion": str(registry.store.rv)}
        return _json({"kind": f"{r.kind}List", "apiVersion": r.api_version, "metadata": meta, "items": items})

    async def _body(self, request: web.Request) -> Any:
        data = await request.read()
        ctype = request.content_type
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                return yaml.safe_load(data)
            if ctype in ("application/json", "", "application/octet-stream"):
                return json.loads(data)
        except (ValueError, yaml.YAMLError) as err:
            raise bad_request(f"the body of the request could not be decoded: {err}") from None
        raise StatusError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: application/json, "
            f"application/yaml ({ctype})",
        )

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.can_read_body:
            body = await self._body(request)
            if isinstance(body, dict):
                options = body
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        policy = options.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise bad_request(f'propagationPolicy: Unsupported value: "{policy}"')
        return options

    async def _self_subject_review(self, request: web.Request, user: User) -> web.Response:
        if request.method != "POST":
            raise method_not_allowed(request.method)
        req = Request("create", "authentication.k8s.io", "selfsubjectreviews")
        if not self.registry.allowed(user, req):
            raise forbidden(user, req)
        body = await self._body(request)
        if not isinstance(body, dict) or body.get("kind") != "SelfSubjectReview":
            raise bad_request("the body must be an authentication.k8s.io/v1 SelfSubjectReview")
        # A review has no name: check its schema only.
        named = {**body, "metadata": {**(body.get("metadata") or {}), "name": "review"}}
        self.registry.validator.check(SELF_SUBJECT_REVIEW, named)
        return _json(
            {
                "kind": "SelfSubjectReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "status": {"userInfo": user.info()},
            },
            201,
        )

    # --- watch ------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        params, r, store = request.query, t.resource, self.registry.store
        matches = predicate(r, t.namespace, params.get("labelSelector", ""), params.get("fieldSelector", ""))
        if t.name:
            name_matches, base = t.name, matches
            matches = lambda o: o["metadata"]["name"] == name_matches and base(o)  # noqa: E731
        since = params.get("resourceVersion", "")
        timeout = min(float(_int(params, "timeoutSeconds", int(self.options.max_watch))), self.options.max_watch)
        bookmarks = _flag(params, "allowWatchBookmarks")
        if since not in ("", "0") and not since.isdigit():
            raise bad_request(f"invalid resource version {since!r}")
        watcher = store.subscribe(r)
        try:
            first: list[tuple[str, dict[str, Any]]] = []
            expired = ""
            if since in ("", "0"):
                first = [("ADDED", self.registry.render(r, o)) for o in store.items(r, t.namespace) if matches(o)]
            else:
                changes = store.since(int(since), r)
                if changes is None:
                    expired = f"too old resource version: {since} ({store.compacted + 1})"
                else:
                    first = [e for c in changes if (e := _event(c, matches)) is not None]
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            if expired:
                status = StatusError(410, "Expired", expired).status()
                await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                return response
            for kind, obj in first:
                await _send(response, kind, obj)
            await self._stream(response, watcher, matches, r, until=time.monotonic() + timeout, bookmarks=bookmarks)
            return response
        finally:
            store.unsubscribe(watcher)

    async def _stream(
        self,
        response: web.StreamResponse,
        watcher: Watcher,
        matches: Predicate,
        r: Resource,
        *,
        until: float,
        bookmarks: bool,
    ) -> None:
        """Send the watcher's changes until the monotonic time `until`."""
        deadline = until
        next_bookmark = time.monotonic() + self.options.bookmark_interval
        store = self.registry.store
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not watcher.overflowed or not watcher.queue.empty():
                wake = min(deadline, next_bookmark) if bookmarks else deadline
                getter = asyncio.ensure_future(watcher.queue.get())
                done, _ = await asyncio.wait({getter, stopping}, timeout=max(0.0, wake - time.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if getter in done:
                    change = getter.result()
                    if (event := _event(change, matches)) is not None:
                        await _send(response, *event)
                else:
                    getter.cancel()
                if stopping in done or time.monotonic() >= deadline:
                    return
                if bookmarks and time.monotonic() >= next_bookmark:
                    rv = store.rv
                    while not watcher.queue.empty():
                        if (event := _event(watcher.queue.get_nowait(), matches)) is not None:
                            await _send(response, *event)
                    bookmark = {"kind": r.kind, "apiVersion": r.api_version,
                                "metadata": {"resourceVersion": str(rv), "creationTimestamp": None}}  # fmt: skip
                    await _send(response, "BOOKMARK", bookmark)
                    next_bookmark = time.monotonic() + self.options.bookmark_interval
        except (ConnectionResetError, asyncio.CancelledError):
            return
        finally:
            stopping.cancel()


def _event(change: Change, matches: Callable[[dict[str, Any]], bool]) -> tuple[str, dict[str, Any]] | None:
    """A change as this watch sees it: filtered by its selectors, with an object that starts or
    stops matching reported as ADDED or DELETED (the watch cache's rule)."""
    r = change.resource
    now_matches = matches(change.obj)
    if change.type == "MODIFIED":
        before = change.old is not None and matches(change.old)
        if now_matches and not before:
            return "ADDED", Registry.render(r, change.obj)
        if before and not now_matches:
            assert change.old is not None
            old = Registry.render(r, change.old)
            old["metadata"]["resourceVersion"] = str(change.rv)
            return "DELETED", old
    if not now_matches:
        return None
    return change.type, Registry.render(r, change.obj)


async def _send(response: web.StreamResponse, kind: str, obj: dict[str, Any]) -> None:
    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")


def tls_context(cert_file: str, key_file: str, client_ca_file: str = "") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context

"""The auth step of a server's call chain, after the request step (request id, logging, error
mapping), metrics and the in-flight limit: authentication, authorization and audit in one pass
around the handler, each through its own seam (Authenticator, Authorizer, the Auditor's sinks).

- Authentication: every call but the health service (and reflection or other methods the
  configuration opens) must be claimed by an authenticator, else UNAUTHENTICATED.
- Authorization: the call's Attributes go to the authorizer union; anything but ALLOW is
  refused with the reason: NOT_FOUND when the call names an object of a tenant the caller has
  no rights in (the same answer whether the object exists or not), else PERMISSION_DENIED
  (tke.internal.auth.authority). The Authority is handed to the handlers for the call.
- Audit: one event per call, when it ends (for streams, when the stream ends), with the
  decision and the status code; open calls carry what they name too (the user name a Login
  tried). A call refused before the handler is audited with its refusal, so every call is
  recorded exactly once.
Unary and streaming calls (Watch) go through the same steps. Whether a method is open is
decided once per method, when the chain wraps it.
- Open streams: with `reauthorize_interval`, a stream that is not open to everyone is checked
  again while it lasts, with the credential and request it opened with (StreamChecks,
  recheck.py); one that fails ends with the refusal it would get if opened now, audited with
  that code, decision and reason. Unary calls pay nothing for it.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

import grpc

from tke.internal.auth.attributes import attributes_for, oversized, recorded
from tke.internal.auth.audit import AuditEvent, Auditor
from tke.internal.auth.authn import AuthenticationError, Authenticator, Credentials
from tke.internal.auth.authority import Authority, current_authority
from tke.internal.auth.authz import Attributes, Authorizer, Decision
from tke.internal.auth.identity import Identity, current_identity
from tke.internal.auth.recheck import OpenStream, Refusal, StreamChecks
from tke.internal.logs import request_id_var
from tke.internal.metrics import AUTHN, AUTHZ
from tke.internal.rpc import errors
from tke.internal.rpc.interceptors import Call, Method, call_metadata
from tke.internal.storage.store import Unavailable

HEALTH_PREFIX = "/grpc.health.v1.Health/"
# Who an open call (Login) is made by: nobody yet, in no tenant.
NOBODY = Identity(user="", tenant_id="")
REFLECTION_PREFIX = "/grpc.reflection."


@dataclass
class CallRecord:
    """What the chain learned about a call, for its audit event (a PendingEvent: `finish` notes
    how and when the call ended, on the call's path; the lane builds the AuditEvent later)."""

    method: str
    started: float
    peer: str
    identity: Identity | None = None
    attributes: Attributes | None = None
    decision: str = ""
    reason: str = ""
    # Set by `finish`.
    code: grpc.StatusCode = grpc.StatusCode.OK
    ended: float = 0.0  # wall clock
    latency: float = 0.0  # seconds
    request_id: str = ""
    _event: AuditEvent | None = None

    def finish(self, code: grpc.StatusCode) -> CallRecord:
        self.latency = time.perf_counter() - self.started
        self.ended = time.time()
        self.code = code
        self.request_id = request_id_var.get()  # (the lane runs outside the call's context)
        return self

    def audit_event(self) -> AuditEvent:
        if self._event is None:
            ident = self.identity
            attrs = self.attributes
            self._event = AuditEvent(
                time=datetime.datetime.fromtimestamp(self.ended, datetime.UTC).isoformat(timespec="milliseconds"),
                request_id=self.request_id,
                method=self.method,
                user=ident.user if ident else "",
                uid=ident.uid if ident else "",
                groups=list(ident.groups) if ident else [],
                tenant=attrs.tenant if attrs else (ident.tenant_id if ident else ""),
                verb=attrs.verb if attrs else "",
                resource=attrs.resource if attrs else "",
                name=attrs.name if attrs else "",
                decision=self.decision,
                reason=self.reason,
                code=self.code.name,
                latency_ms=round(self.latency * 1000, 3),
                peer=self.peer,
            )
        return self._event


# Headers that carry credentials: a call sends each at most once.
_SINGLE_HEADERS = frozenset({"authorization"})


def _credentials(context: grpc.aio.ServicerContext[Any, Any], peer_certificates: bool) -> Credentials:
    raw = call_metadata.get()
    if raw is None:  # (no request step before this one)
        raw = tuple(context.invocation_metadata() or ())
    metadata: dict[str, str] = {}
    for name, value in raw:
        if not isinstance(value, str):
            continue
        key = name.lower()
        if key in _SINGLE_HEADERS and key in metadata:
            # Two credentials are ambiguous: a proxy in front may check one and we the other.
            raise AuthenticationError(f"more than one {key!r} header: send one")
        metadata[key] = value
    pem = b""
    if peer_certificates:
        auth = context.auth_context() or {}
        pem = b"".join(auth.get("x509_pem_cert", []))
    return Credentials(metadata=metadata, peer_certificate_pem=pem)


_AUTHENTICATED = AUTHN.labels("authenticated")
_DECISIONS = {d: AUTHZ.labels(d.name.lower()) for d in Decision}


class AuthInterceptor:
    """Authentication, authorization and audit of a call, in one step."""

    def __init__(
        self,
        authenticator: Authenticator,
        authorizer: Authorizer,
        auditor: Auditor,
        authority: Authority,
        *,
        attributes: Callable[[str, Any, Identity], Attributes] = attributes_for,
        open_methods: Collection[str] = (),
        open_reflection: bool = False,
        peer_certificates: bool = True,
        reauthorize_interval: float | None = None,
    ) -> None:
        """`peer_certificates`: a listener of the server asks clients for certificates (mutual
        TLS), so calls may carry one; without, grpc's auth context is not read per call.
        `reauthorize_interval`: seconds between checks of an open stream (None: never)."""
        self.peer_certificates = peer_certificates
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.auditor = auditor
        self.authority = authority
        self.attributes = attributes
        self.open_methods = set(open_methods)
        self.open_reflection = open_reflection
        self.checks = StreamChecks(self._recheck, reauthorize_interval) if reauthorize_interval else None

    def _open(self, method_name: str) -> bool:
        return (
            method_name.startswith(HEALTH_PREFIX)
            or method_name in self.open_methods
            or (self.open_reflection and method_name.startswith(REFLECTION_PREFIX))
        )

    def wrap(self, call: Call, method: Method) -> Call:
        name, streaming = method.name, method.streaming
        admit = self._admit_open if self._open(name) else self._admit

        async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            record = CallRecord(method=name, started=time.perf_counter(), peer=context.peer() or "")
            admitted = await admit(record, request, context)
            try:
                response = await call(request, context)
            except BaseException as err:
                self.auditor.emit(record.finish(_code_of(err)))
                raise
            if streaming:
                if admitted is not None and self.checks is not None:
                    credentials, attributes = admitted
                    stream = OpenStream(name, request, credentials, attributes.identity, attributes.tenant)
                    return self._checked_stream(response, record, stream, self.checks)
                return self._stream(response, record)
            self.auditor.emit(record.finish(grpc.StatusCode.OK))
            return response

        return checked

    async def _admit_open(self, record: CallRecord, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """An open call: recorded as nobody's (no credential, so no later check either)."""
        record.decision = "open"
        record.attributes = recorded(attributes_for(record.method, request, NOBODY))
        # Nobody, not the default (a platform administrator's, for servers without authentication):
        # the steps after this one count the call as no tenant's (inflight_shares.py).
        current_identity.set(NOBODY)

    async def _admit(
        self, record: CallRecord, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[Credentials, Attributes]:
        """Authenticate and authorize the call, or refuse it (audited here); what it was
        admitted with (for a stream's later checks)."""
        try:
            credentials = _credentials(context, self.peer_certificates)
            identity = await self.authenticator.authenticate(credentials)
        except AuthenticationError as err:
            AUTHN.labels("invalid").inc()
            record.decision, record.reason = "unauthenticated", str(err)
            self.auditor.emit(record.finish(grpc.StatusCode.UNAUTHENTICATED))
            raise errors.unauthenticated(f"invalid credentials: {err}") from None
        if identity is None:
            AUTHN.labels("unclaimed").inc()
            record.decision, record.reason = "unauthenticated", "no authenticator claimed the call"
            self.auditor.emit(record.finish(grpc.StatusCode.UNAUTHENTICATED))
            raise errors.unauthenticated(
                "no valid credentials: send 'authorization: Bearer <token>' or a client certificate"
            )
        _AUTHENTICATED.inc()
        record.identity = identity
        current_identity.set(identity)
        attributes = self.attributes(record.method, request, identity)
        record.attributes = recorded(attributes)
        if (violation := oversized(attributes, request)) is not None:
            # Before any authorizer: they keep decisions keyed by the name and tenant.
            refusal = errors.invalid([violation])
            record.decision, record.reason = "deny", refusal.message
            self.auditor.emit(record.finish(refusal.code))
            raise refusal
        decision, reason = await self.authorizer.authorize(attributes)
        _DECISIONS[decision].inc()
        record.reason = reason
        if decision is not Decision.ALLOW:
            record.decision = "deny"
            refusal = self.authority.refusal(attributes, reason)
            self.auditor.emit(record.finish(refusal.code))
            raise refusal
        record.decision = "allow"
        current_authority.set(self.authority)
        return credentials, attributes

    async def _recheck(self, stream: OpenStream) -> Refusal | None:
        """`stream` checked as if it were opened now (the steps of `_admit`, without the audit
        event, which the stream's end records): None while it may go on, else its Refusal."""
        try:
            identity = await self.authenticator.authenticate(stream.credentials)
        except AuthenticationError as err:
            return Refusal(errors.unauthenticated(f"invalid credentials: {err}"), "unauthenticated", str(err))
        if identity is None:
            error = errors.unauthenticated("no valid credentials: the stream's credential is no longer recognised")
            return Refusal(error, "unauthenticated", "no authenticator claimed the call")
        attributes = self.attributes(stream.method, stream.request, identity)
        decision, reason = await self.authorizer.authorize(attributes)
        if decision is not Decision.ALLOW:
            return Refusal(self.authority.refusal(attributes, reason), "deny", reason)
        return None

    async def _stream(self, responses: AsyncIterator[Any], record: CallRecord) -> AsyncIterator[Any]:
        code = grpc.StatusCode.OK
        try:
            async for item in responses:
                yield item
        except BaseException as err:
            code = _code_of(err)
            raise
        finally:
            self.auditor.emit(record.finish(code))

    async def _checked_stream(
        self, responses: AsyncIterator[Any], record: CallRecord, stream: OpenStream, checks: StreamChecks
    ) -> AsyncIterator[Any]:
        """`_stream`, for a stream checked again while open (recheck.py): a failed check ends
        it with its refusal, at once when it waits for its next response (StreamChecks cancels
        the task there; the cancellation becomes the refusal), else before its next response."""
        code = grpc.StatusCode.OK
        task = asyncio.current_task()
        assert task is not None
        stream.task = task
        checks.add(stream)
        iterator = aiter(responses)
        try:
            while stream.refusal is None:
                stream.waiting = True
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    # Ours (and no one else's too, such as the client going away): the refusal.
                    if not stream.cancelled or task.uncancel() > 0:
                        raise
                    stream.cancelled = False
                finally:
                    stream.waiting = False
                if stream.cancelled:  # the handler swallowed our cancellation
                    task.uncancel()
                    stream.cancelled = False
                if stream.refusal is not None:
                    break
                yield item
            if (refusal := stream.refusal) is not None:
                await _close(iterator)
                record.decision = refusal.decision
                record.reason = f"checked again while open: {refusal.reason}"
                raise refusal.error
        except BaseException as err:
            code = _code_of(err)
            raise
        finally:
            checks.remove(stream)
            self.auditor.emit(record.finish(code))


async def _close(iterator: AsyncIterator[Any]) -> None:
    """End the handler's responses now (its watch and quota released), not when collected."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _code_of(err: BaseException) -> grpc.StatusCode:
    if isinstance(err, errors.ApiError):
        return err.code
    if isinstance(err, Unavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(err, (GeneratorExit, asyncio.CancelledError)):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL

"""Builds the auth part of a server's interceptor chain from configuration: authenticators,
authorizers and audit sinks, each a plugin named by entry point (groups tke.authn, tke.authz,
tke.audit) or "module:Class", with its own options.

A plugin is constructed as `Plugin(context, **options)`; `context` (PluginContext) gives it the
store and key prefix, and once every authorizer is built the Authority over them (who may act on
whom, where a caller has rights). A plugin whose answers change with what it stores (the accounts'
users and revocations, the policy centre's bindings) calls `context.access_changed(user=...)` or
`(tenant=...)`, or with neither for everything, when they change, so that open streams those
answers concern are checked again at once (tke.internal.auth.recheck). A plugin may also offer
gRPC services (`services()`, e.g. the accounts plugin's AuthService) and have
`start()`/`stop()` coroutines; the server calls them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from tke.internal.auth import authn, authz
from tke.internal.auth.attributes import attributes_for
from tke.internal.auth.audit import Auditor
from tke.internal.auth.authority import Authority
from tke.internal.auth.identity import Identity
from tke.internal.auth.interceptors import AuthInterceptor
from tke.internal.auth.recheck import StreamChecks
from tke.internal.plugin.loader import PluginError, find
from tke.internal.rpc.interceptors import Interceptor
from tke.internal.storage.store import Store

log = logging.getLogger("tke.auth")

OPEN_METHODS = frozenset({"/tke.auth.v1.AuthService/Login"})


@dataclass(frozen=True)
class PluginConfig:
    """One plugin: `plugin` is an entry point name or "module:Class"; `options` its own."""

    plugin: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthConfig:
    # Tried in order; the first that claims a call wins. Empty: authentication off (every
    # caller acts as platform administrator; development only).
    authenticators: list[PluginConfig] = field(default_factory=list)
    # Asked in order until one allows or denies; required when authenticators are set.
    authorizers: list[PluginConfig] = field(default_factory=list)
    # Audit sinks; every call is recorded in each.
    audit: list[PluginConfig] = field(default_factory=list)
    # Let unauthenticated callers use server reflection (grpcurl list/describe).
    open_reflection: bool = False
    # Events queued per audit sink before new ones are dropped (and counted).
    audit_queue: int = 10_000


@dataclass
class PluginContext:
    """What plugins may use from the server."""

    store: Store
    prefix: str
    # Set by `build` once the authorizers exist; plugins read it when they handle a call.
    authority: Authority | None = None
    # For a plugin that stores objects of tenants (the policy centre's roles and bindings, the
    # accounts' users and API keys): their share of the tenants' quotas, from (plural, name,
    # key root[, tenant_of]) to the kind's usage (tke.internal.apiserver.quota.KindUsage),
    # which the plugin checks on its writes and its watch feeds. None: no quotas.
    quota_kind: Callable[..., Any] | None = None
    # Set by `build` when open streams are checked again (StreamChecks.changed).
    stream_checks: StreamChecks | None = None

    def access_changed(self, *, user: str | None = None, tenant: str | None = None) -> None:
        """What a plugin decides on changed, for `user`, in `tenant`, or (neither) anywhere: the
        open streams it concerns are checked again now."""
        if self.stream_checks is not None:
            self.stream_checks.changed(user=user, tenant=tenant)


Service = tuple[str, Callable[[grpc.aio.Server], None]]


@dataclass
class AuthChain:
    interceptors: list[Interceptor]
    services: list[Service]
    plugins: list[Any]
    auditor: Auditor
    enabled: bool
    # Open streams checked again (None: authentication off, or no re-check interval).
    stream_checks: StreamChecks | None = None

    @property
    def records_calls(self) -> bool:
        """Whether an audit sink receives an event for every call (the chain is on and audits)."""
        return self.enabled and bool(self.auditor.lanes)

    async def start(self) -> None:
        for plugin in self.plugins:
            if hasattr(plugin, "start"):
                await plugin.start()
        self.auditor.start()
        if self.stream_checks is not None:
            self.stream_checks.start()

    async def stop(self) -> None:
        if self.stream_checks is not None:
            await self.stream_checks.stop()
        await self.auditor.close()
        for plugin in self.plugins:
            if hasattr(plugin, "stop"):
                await plugin.stop()


def _construct(group: str, config: PluginConfig, context: PluginContext) -> Any:
    factory = find(group, config.plugin)
    try:
        return factory(context, **config.options)
    except (TypeError, ValueError, OSError) as err:
        raise PluginError(f"{group} plugin {config.plugin!r}: {err}") from None


def build(
    config: AuthConfig,
    context: PluginContext,
    *,
    attributes: Callable[[str, Any, Identity], authz.Attributes] = attributes_for,
    peer_certificates: bool = True,
    reauthorize_interval: float | None = None,
) -> AuthChain:
    """Load every configured plugin (PluginError names the one that fails). `attributes` turns
    a call into what the authorizers decide on (a server with its own tenancy rules, such as
    ipamd's, gives its own). `peer_certificates`: whether any listener of the server asks for
    client certificates (mutual TLS); without, calls carry none and none is looked for.
    `reauthorize_interval`: seconds between checks of an open stream (recheck.py); None: a
    stream is checked only when it opens."""
    authenticators = [_construct("tke.authn", c, context) for c in config.authenticators]
    authorizers = [_construct("tke.authz", c, context) for c in config.authorizers]
    sinks = [_construct("tke.audit", c, context) for c in config.audit]
    if authenticators and not authorizers:
        raise PluginError("auth.authorizers is empty: configure at least one (for example 'policy')")
    authority = Authority(authorizers)
    context.authority = authority
    plugins: list[Any] = []
    for p in [*authenticators, *authorizers, *sinks]:
        if not any(p is q for q in plugins):
            plugins.append(p)
    services: list[Service] = []
    for plugin in plugins:
        if hasattr(plugin, "services"):
            services += plugin.services()
    auditor = Auditor(sinks, capacity=config.audit_queue)
    if not authenticators:
        log.warning(
            "AUTHENTICATION IS OFF: every caller acts as platform administrator. "
            "Configure [[auth.authenticators]] before exposing this server."
        )
        return AuthChain([], services, plugins, auditor, enabled=False)
    if any(type(a).__name__ == "AllowAll" for a in authorizers):
        log.warning("AUTHORIZATION ALLOWS EVERYTHING (allow-all authorizer): development only.")
    step = AuthInterceptor(
        authn.Union(authenticators),
        authz.Union([SelfService(), *authorizers]),
        auditor,
        authority,
        attributes=attributes,
        open_methods=OPEN_METHODS,
        open_reflection=config.open_reflection,
        peer_certificates=peer_certificates,
        reauthorize_interval=reauthorize_interval,
    )
    context.stream_checks = step.checks
    return AuthChain([step], services, plugins, auditor, enabled=True, stream_checks=step.checks)


class SelfService:
    """Everyone may manage their own account: change its password, list, create and delete
    their own API keys, and revoke their own token."""

    OWN = frozenset(
        {
            ("update", "passwords"),
            ("create", "apikeys"),
            ("list", "apikeys"),
            ("delete", "apikeys"),
            ("logout", "tokens"),
        }
    )

    async def authorize(self, attributes: authz.Attributes) -> tuple[authz.Decision, str]:
        if attributes.name == attributes.identity.user and (attributes.verb, attributes.resource) in self.OWN:
            return authz.Decision.ALLOW, "own account"
        return authz.Decision.NO_OPINION, ""

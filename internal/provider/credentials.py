"""Credentials by reference: objects name a credential (credential_ref), the controller's
configuration says what it is. Secrets come from files or environment variables, never from
the API (objects and events are readable by tenants).

Every credential belongs to one tenant: the configuration names it `TENANT/NAME`, and a
reference is resolved in the tenant of the object that makes it, so no object can reach
another tenant's credential (the reference is a bare name; the tenant is never the object's
to choose). Providers see only their object's tenant: `ctx.tools.credentials` is that tenant's
view, and the SSH dialer resolves in it as well.

The catalogue: the controller publishes which credentials exist (no secrets) under
`<etcd prefix>/credentials/<tenant>/<name>`, and the apiserver refuses a reference to a
credential that is not in its object's tenant (FAILED_PRECONDITION naming the field), so a
wrong reference fails when it is written rather than when a provider runs. Each entry is
`{"servers": [...]}`: the Kubernetes API servers the credential is pinned to (its `servers`,
else its kubeconfig's server; none for other credentials), so the apiserver also refuses an
imported cluster whose URL is not one of them (tke.internal.provider.kube.access checks it
again before sending anything). An entry of `{}` (a controller from before the pin) is not
checked by the apiserver.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tke.internal.meta.labels import dns1123_label_error
from tke.internal.provider.addresses import server_key
from tke.internal.provider.errors import PermanentError
from tke.internal.storage.store import AlreadyExists, Conflict, NotFound, Store

CATALOGUE = "credentials"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CredentialConfig:
    # SSH: a private key file (OpenSSH or PEM), and/or a password from an environment variable.
    private_key_file: str = ""
    password_env: str = ""
    # Passphrase of the private key, from an environment variable.
    passphrase_env: str = ""
    # A Kubernetes API server (imported clusters): bearer token from an environment variable,
    # and the CA certificate that signed its serving certificate.
    token_env: str = ""
    ca_file: str = ""
    # Or a kubeconfig file (client certificates, tokens, exec plugins, CA data; relative paths
    # in it are relative to its folder), and the context to use (empty: its current-context).
    # An operator's file: its exec plugins may run.
    kubeconfig_file: str = ""
    kubeconfig_context: str = ""
    # The Kubernetes API servers (https URLs) this credential may be sent to. An imported
    # cluster's spec.api_server_url must be one of them: a tenant cannot send the credential
    # anywhere else. Empty: a kubeconfig's own server; a token_env credential then goes nowhere.
    servers: list[str] = field(default_factory=list)
    # An AWS access key (cloud providers): its id, secret and optional session token, each
    # from an environment variable.
    aws_access_key_id_env: str = ""
    aws_secret_access_key_env: str = ""
    aws_session_token_env: str = ""


@dataclass(frozen=True)
class Credential:
    name: str
    private_key: bytes = field(default=b"", repr=False)
    passphrase: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    ca_cert: bytes = b""
    # A kubeconfig's text, the folder its relative paths start from, and its context.
    kubeconfig: str = field(default="", repr=False)
    kubeconfig_dir: str = ""
    kubeconfig_context: str = ""
    # The configured servers (CredentialConfig.servers); tke.internal.provider.kube.access
    # adds a kubeconfig's own.
    servers: tuple[str, ...] = ()
    aws_access_key_id: str = field(default="", repr=False)
    aws_secret_access_key: str = field(default="", repr=False)
    aws_session_token: str = field(default="", repr=False)


class Credentials(Protocol):
    """Credentials as a provider step sees them: those of its object's tenant."""

    def get(self, ref: str) -> Credential:
        """The credential named `ref`. Raises PermanentError when unknown or unreadable."""
        ...


class CredentialError(ValueError):
    """The configuration names a credential badly (message for the operator)."""


def split_name(configured: str) -> tuple[str, str]:
    """(tenant, name) of a configured credential `TENANT/NAME`; CredentialError otherwise."""
    tenant, slash, name = configured.partition("/")
    if not slash or dns1123_label_error(tenant) or dns1123_label_error(name):
        raise CredentialError(
            f"credentials.{configured!r}: name it TENANT/NAME, the tenant whose clusters and machines may "
            f'use it and the name they give in credential_ref (for example [credentials."default/ops-key"])'
        )
    return tenant, name


def catalogue_key(prefix: str, tenant: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{CATALOGUE}/{tenant}/{name}"


class ConfiguredCredentials:
    """Every tenant's credentials from the controller's configuration, read when used (so a
    rotated key file or token is picked up without a restart)."""

    def __init__(self, configs: dict[str, CredentialConfig]) -> None:
        self.configs: dict[tuple[str, str], CredentialConfig] = {split_name(k): v for k, v in configs.items()}
        for name, config in configs.items():
            for i, server in enumerate(config.servers):
                if server_key(server) is None or not server.startswith("https://"):
                    raise CredentialError(f"credentials.{name!r}.servers[{i}]: {server!r} is not an https:// URL")

    def names(self) -> list[tuple[str, str]]:
        """(tenant, name) of every credential."""
        return sorted(self.configs)

    def for_tenant(self, tenant: str) -> Credentials:
        return TenantCredentials(self, tenant)

    def read(self, tenant: str, ref: str) -> Credential:
        """The credential `ref` of `tenant`. PermanentError when it has none of that name."""
        config = self.configs.get((tenant, ref)) if tenant and not dns1123_label_error(ref) else None
        if config is None:
            known = ", ".join(n for t, n in self.configs if t == tenant) or "none"
            raise PermanentError(f"tenant {tenant!r} has no credential {ref!r} (its credentials: {known})")
        try:
            return Credential(
                name=ref,
                private_key=Path(config.private_key_file).read_bytes() if config.private_key_file else b"",
                passphrase=_env(config.passphrase_env, ref),
                password=_env(config.password_env, ref),
                token=_env(config.token_env, ref),
                ca_cert=Path(config.ca_file).read_bytes() if config.ca_file else b"",
                kubeconfig=Path(config.kubeconfig_file).read_text() if config.kubeconfig_file else "",
                kubeconfig_dir=str(Path(config.kubeconfig_file).parent) if config.kubeconfig_file else "",
                kubeconfig_context=config.kubeconfig_context,
                servers=tuple(config.servers),
                aws_access_key_id=_env(config.aws_access_key_id_env, ref),
                aws_secret_access_key=_env(config.aws_secret_access_key_env, ref),
                aws_session_token=_env(config.aws_session_token_env, ref),
            )
        except UnicodeDecodeError:
            raise PermanentError(f"credential {ref!r}: {config.kubeconfig_file} is not a text file") from None
        except OSError as err:
            raise PermanentError(f"credential {ref!r}: cannot read {err.filename}: {err.strerror}") from None

    def catalogue(self) -> dict[tuple[str, str], bytes]:
        """The catalogue entry of every credential: which Kubernetes API servers it may be sent
        to (not secret; the apiserver refuses an imported cluster naming it with another URL)."""
        return {
            (tenant, name): json.dumps({"servers": self.servers(config, name)}, separators=(",", ":")).encode()
            for (tenant, name), config in sorted(self.configs.items())
        }

    @staticmethod
    def servers(config: CredentialConfig, name: str) -> list[str]:
        """The API servers `config` may be sent to: its `servers`, else its kubeconfig's."""
        if config.servers or not config.kubeconfig_file:
            return list(config.servers)
        from tke.internal.provider.kube.access import from_kubeconfig

        try:
            path = Path(config.kubeconfig_file)
            access = from_kubeconfig(
                path.read_text(), context=config.kubeconfig_context, base_dir=path.parent, allow_exec=True
            )
        except (PermanentError, OSError, UnicodeDecodeError) as err:
            log.warning("credential %r: its kubeconfig's server is not known (%s): it is pinned to none", name, err)
            return []
        return [access.server]


class TenantCredentials:
    """One tenant's credentials: the view a reconcile of that tenant's object gets."""

    def __init__(self, credentials: ConfiguredCredentials, tenant: str) -> None:
        self.credentials = credentials
        self.tenant = tenant

    def get(self, ref: str) -> Credential:
        return self.credentials.read(self.tenant, ref)


def _env(name: str, ref: str) -> str:
    if not name:
        return ""
    value = os.environ.get(name)
    if value is None:
        raise PermanentError(f"credential {ref!r}: environment variable {name} is not set")
    return value


async def publish_catalogue(
    store: Store, prefix: str, names: Iterable[tuple[str, str]] | Mapping[tuple[str, str], bytes]
) -> None:
    """Make the catalogue under `<prefix>/credentials/` list exactly `names` ((tenant, name)
    pairs, or a mapping of them to their entries, see ConfiguredCredentials.catalogue): add
    what is missing, update what changed, remove what is no longer configured. Idempotent; a
    key someone else changed meanwhile is left for the next publication."""
    root = f"{prefix.rstrip('/')}/{CATALOGUE}/"
    present = {item.key: item for item in (await store.list(root)).items}
    entries = names if isinstance(names, Mapping) else dict.fromkeys(names, b"{}")
    wanted = {catalogue_key(prefix, tenant, name): value for (tenant, name), value in entries.items()}
    for key in sorted(wanted.keys() - present.keys()):
        with contextlib.suppress(AlreadyExists):
            await store.create(key, wanted[key])
    for key in sorted(wanted.keys() & present.keys()):
        if present[key].value != wanted[key]:
            with contextlib.suppress(NotFound, Conflict):
                await store.update(key, wanted[key], expected_revision=present[key].mod_revision)
    for key in sorted(present.keys() - wanted):
        with contextlib.suppress(NotFound, Conflict):
            await store.delete(key, expected_revision=present[key].mod_revision)

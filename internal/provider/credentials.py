"""Credentials by reference: objects name a credential (credential_ref), the controller's
configuration says what it is. Secrets come from files or environment variables, never from
the API (objects and events are readable by tenants).

Every credential belongs to one tenant: the configuration names it `TENANT/NAME`, and a
reference is resolved in the tenant of the object that makes it, so no object can reach
another tenant's credential (the reference is a bare name; the tenant is never the object's
to choose). Providers see only their object's tenant: `ctx.tools.credentials` is that tenant's
view, and the SSH dialer resolves in it as well.

The catalogue: the controller publishes which credentials exist (names only, no secrets)
under `<etcd prefix>/credentials/<tenant>/<name>`, and the apiserver refuses a reference to a
credential that is not in its object's tenant (FAILED_PRECONDITION naming the field), so a
wrong reference fails when it is written rather than when a provider runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tke.internal.meta.labels import dns1123_label_error
from tke.internal.provider.errors import PermanentError
from tke.internal.storage.store import AlreadyExists, Conflict, NotFound, Store

CATALOGUE = "credentials"


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
                aws_access_key_id=_env(config.aws_access_key_id_env, ref),
                aws_secret_access_key=_env(config.aws_secret_access_key_env, ref),
                aws_session_token=_env(config.aws_session_token_env, ref),
            )
        except UnicodeDecodeError:
            raise PermanentError(f"credential {ref!r}: {config.kubeconfig_file} is not a text file") from None
        except OSError as err:
            raise PermanentError(f"credential {ref!r}: cannot read {err.filename}: {err.strerror}") from None


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


async def publish_catalogue(store: Store, prefix: str, names: Iterable[tuple[str, str]]) -> None:
    """Make the catalogue under `<prefix>/credentials/` list exactly `names` ((tenant, name)
    pairs): add what is missing, remove what is no longer configured. Idempotent; a key
    someone else changed meanwhile is left for the next publication."""
    root = f"{prefix.rstrip('/')}/{CATALOGUE}/"
    present = {item.key: item for item in (await store.list(root)).items}
    wanted = {catalogue_key(prefix, tenant, name) for tenant, name in names}
    for key in sorted(wanted - present.keys()):
        with contextlib.suppress(AlreadyExists):
            await store.create(key, b"{}")
    for key in sorted(present.keys() - wanted):
        with contextlib.suppress(NotFound, Conflict):
            await store.delete(key, expected_revision=present[key].mod_revision)

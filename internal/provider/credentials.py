"""Credentials by reference: objects name a credential (credential_ref), the controller's
configuration says what it is. Secrets come from files or environment variables, never from
the API (objects and events are readable by tenants)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tke.internal.provider.errors import PermanentError


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
    # The tenants whose objects may name this credential; empty means every tenant. A cloud
    # account's credential belongs to its tenant: another tenant naming it is refused.
    tenants: list[str] = field(default_factory=list)


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
    tenants: tuple[str, ...] = ()

    def check_tenant(self, tenant: str) -> None:
        """PermanentError unless an object of `tenant` may use this credential."""
        if self.tenants and tenant not in self.tenants:
            raise PermanentError(f"credential {self.name!r} does not belong to tenant {tenant!r}")


class Credentials(Protocol):
    def get(self, ref: str) -> Credential:
        """The credential named `ref`. Raises PermanentError when unknown or unreadable."""
        ...


class ConfiguredCredentials:
    """Credentials from the controller's configuration, read when used (so a rotated key file
    or token is picked up without a restart)."""

    def __init__(self, configs: dict[str, CredentialConfig]) -> None:
        self.configs = configs

    def get(self, ref: str) -> Credential:
        config = self.configs.get(ref)
        if config is None:
            known = ", ".join(sorted(self.configs)) or "none configured"
            raise PermanentError(f"unknown credential {ref!r} (known: {known})")
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
                tenants=tuple(config.tenants),
            )
        except UnicodeDecodeError:
            raise PermanentError(f"credential {ref!r}: {config.kubeconfig_file} is not a text file") from None
        except OSError as err:
            raise PermanentError(f"credential {ref!r}: cannot read {err.filename}: {err.strerror}") from None


def _env(name: str, ref: str) -> str:
    if not name:
        return ""
    value = os.environ.get(name)
    if value is None:
        raise PermanentError(f"credential {ref!r}: environment variable {name} is not set")
    return value

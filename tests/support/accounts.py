"""An apiserver configuration with the built-in accounts and the policy centre, as a private
cloud runs it, for tests of clients that log in (tkectl, the Node.js example)."""

from __future__ import annotations

from dataclasses import replace

from tests.support.apiserver import local_config
from tke.internal.apiserver.app import ApiserverConfig
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.storage.etcd import EtcdConfig

SECRET_ENV = "TKE_TEST_CLIENT_SECRET"
PASSWORD_ENV = "TKE_TEST_CLIENT_ADMIN_PASSWORD"
SECRET = "c" * 40
ADMIN = "admin"
ADMIN_PASSWORD = "client test admin password"


def environment() -> dict[str, str]:
    """The variables the accounts plugin reads at start: set them before starting."""
    return {SECRET_ENV: SECRET, PASSWORD_ENV: ADMIN_PASSWORD}


def accounts_config(etcd_config: EtcdConfig) -> ApiserverConfig:
    auth = AuthConfig(
        authenticators=[
            PluginConfig(
                "accounts",
                {"secret_env": SECRET_ENV, "bootstrap_admin": ADMIN, "bootstrap_password_env": PASSWORD_ENV},
            )
        ],
        authorizers=[PluginConfig("policy")],
    )
    return replace(local_config(etcd_config), auth=auth)

"""tkectl over mutual TLS, as the x509 authenticator expects: the context's CA, client
certificate and key, and the name the server certificate is checked against."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

from tests.support.apiserver import ThreadedApiserver, local_config
from tests.support.pki import TestCA
from tke.internal.auth.chain import AuthConfig, PluginConfig
from tke.internal.rpc.server import ListenConfig, TLSConfig
from tke.internal.storage.etcd import EtcdConfig

from .conftest import TKECTL


def test_mutual_tls_with_a_client_certificate(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", common_name="tke-apiserver", hosts=("tke-apiserver",))
    me = ca.issue("ops", common_name="ops", organizations=("tke:platform-admins",), client=True)
    tls = TLSConfig(server.cert_file, server.key_file, client_ca_file=ca.ca_file)
    config = replace(
        local_config(etcd_config),
        listen=ListenConfig(address="127.0.0.1:0", tls=tls),
        auth=AuthConfig(authenticators=[PluginConfig("x509")], authorizers=[PluginConfig("allow-all")]),
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "TKECONFIG": str(tmp_path / "c")}

    def tkectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TKECTL, *args], capture_output=True, text=True, env=env, timeout=60, check=False)

    with ThreadedApiserver(config) as api:
        address = f"127.0.0.1:{api.port}"
        setup = tkectl(
            "config", "set-context", "tls", "--server", address, "--ca-file", ca.ca_file,
            "--cert-file", me.cert_file, "--key-file", me.key_file, "--tls-server-name", "tke-apiserver", "--use",
        )  # fmt: skip
        assert setup.returncode == 0, setup.stderr
        ok = tkectl("get", "clusters", "-o", "json")
        assert ok.returncode == 0, ok.stderr

        tkectl("config", "set-context", "anonymous", "--server", address, "--ca-file", ca.ca_file,
               "--tls-server-name", "tke-apiserver")  # fmt: skip
        refused = tkectl("get", "clusters", "--context", "anonymous")
        assert refused.returncode == 6 and refused.stderr.startswith("tkectl: UNAVAILABLE: "), refused.stderr

        tkectl("config", "set-context", "broken", "--server", address, "--ca-file", str(tmp_path / "nope.crt"))
        broken = tkectl("get", "clusters", "--context", "broken")
        assert broken.returncode == 2 and "cannot read a TLS file" in broken.stderr, broken.stderr

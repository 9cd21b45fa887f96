"""TOML configuration into typed dataclasses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tke.internal.apiserver.app import ApiserverConfig
from tke.internal.config.loader import ConfigError, load


def test_defaults_and_nested_tables(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(
        '[listen]\naddress = ""\nunix_socket = "/run/x.sock"\nunix_socket_mode = 0o660\n'
        '[listen.tls]\ncert_file = "c"\nkey_file = "k"\n'
        '[etcd]\nendpoints = ["10.0.0.1:2379", "10.0.0.2:2379"]\nrequest_timeout = 2\n'
    )
    config = load(path, ApiserverConfig)
    assert config.listen.unix_socket_mode == 0o660
    assert config.listen.tls is not None and config.listen.tls.client_ca_file == ""
    assert config.etcd.request_timeout == 2.0
    assert config.etcd.prefix == "/tke"
    assert config.watch.bookmark_interval == 10.0
    assert load(None, ApiserverConfig) == ApiserverConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope = 1", "unknown option nope"),
        ("[etcd]\nendpoints = 1", "etcd.endpoints: expected a list"),
        ("[etcd]\nendpoints = [1]", "etcd.endpoints[0]: expected str"),
        ("[listen]\nunix_socket_mode = true", "listen.unix_socket_mode: expected int"),
        ("[listen.tls]\ncert_file = 'c'", "listen.tls.key_file is required"),
        ("= broken", "a.toml"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path, ApiserverConfig)
    assert message in str(info.value)

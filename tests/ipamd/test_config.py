"""The shipped ipamd.toml loads, every plugin it names is installed, and mistakes are errors
that name the key or the plugin."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.memory_ip_storage import MemoryIPStorage
from tke.cmd.ipamd import main
from tke.internal.config.loader import ConfigError, load
from tke.internal.ipamd.config import IpamdConfig
from tke.internal.ipamd.server import ConfigurationError, build_providers, build_storage, own_node
from tke.internal.plugin.loader import PluginError, available, find
from tke.plugins.ip_providers.aws_eni import AWSENIProvider

EXAMPLE = Path(__file__).parents[2] / "deploy" / "ipamd" / "ipamd.toml"


def test_example_config_loads_and_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(EXAMPLE, IpamdConfig)
    assert config.socket_mode == 0o600
    assert config.storage.plugin == "etcd"
    assert not config.kubernetes.configured and not config.extender.address
    providers = build_providers(config)
    assert set(providers) == {"static", "aws-eni"} and isinstance(providers["aws-eni"], AWSENIProvider)


def test_entry_points_are_registered() -> None:
    assert available("tke.ip_storage") == ["etcd"]
    assert {"static", "vpc", "aws-eni"} <= set(available("tke.ip_providers"))
    assert find("tke.ip_storage", "tests.support.memory_ip_storage:MemoryIPStorage") is MemoryIPStorage


@pytest.fixture
def root_logger_restored() -> Iterator[None]:
    """main() configures the root logger (a handler on the stderr captured for this test): put it
    back, or every later test of the session logs into that closed stream ("Logging error")."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logger_restored")
def test_mistakes_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('sockett = "/x"\n')
    with pytest.raises(ConfigError, match="sockett"):
        load(bad, IpamdConfig)
    bad.write_text('[storage]\nplugin = "nosuch"\n')
    with pytest.raises(PluginError, match="nosuch"):
        build_storage(load(bad, IpamdConfig))
    bad.write_text('[storage]\nplugin = "etcd"\n[storage.options]\nendpointz = ["x"]\n')
    with pytest.raises(PluginError, match="endpointz"):
        build_storage(load(bad, IpamdConfig))
    assert main(["--config", str(bad)]) == 2


@pytest.mark.parametrize("profile", ["private-cloud", "public-cloud"])
async def test_cloud_profiles_load_and_their_plugins_build(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.memory_store import MemoryStore
    from tke.internal.auth.chain import PluginContext, build

    for name in ("TKE_TOKEN_SECRET", "TKE_GATEWAY_SECRET"):
        monkeypatch.setenv(name, "x" * 40)
    config = load(EXAMPLE.parent / f"{profile}.toml", IpamdConfig)
    assert config.tcp.auth.authenticators and config.tcp.cert_file
    build_providers(config)
    # In a running event loop, as in the daemon: some plugins open gRPC channels.
    chain = build(config.tcp.auth, PluginContext(MemoryStore(), "/tke"))
    assert chain.enabled
    for plugin in chain.plugins:
        if hasattr(plugin, "close"):
            await plugin.close()


@pytest.mark.usefixtures("root_logger_restored")
def test_tcp_without_tls_is_refused_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Only the TCP listener, over a storage that loads (the in-memory fake, by module path): the
    # refusal must be the TLS check's, not a plugin that cannot be found or a socket directory
    # that is refused (both also stop tke-ipamd).
    config = tmp_path / "plain.toml"
    config.write_text(
        'socket = ""\n[tcp]\naddress = "127.0.0.1:0"\n'
        '[storage]\nplugin = "tests.support.memory_ip_storage:MemoryIPStorage"\n'
    )
    assert main(["--config", str(config)]) == 2
    assert "[tcp] needs cert_file and key_file (or insecure = true for development)" in capsys.readouterr().err


def test_the_node_comes_from_node_name_or_the_variable_node_name_env_names() -> None:
    assert own_node(IpamdConfig()) == ""  # every node: a hosted or central tke-ipamd
    assert own_node(IpamdConfig(node_name="n1")) == "n1"
    config = IpamdConfig(node_name_env="NODE_NAME")
    assert own_node(config, {"NODE_NAME": "ip-10-0-1-4.ec2.internal"}) == "ip-10-0-1-4.ec2.internal"
    for environ, says in (({}, "$NODE_NAME is empty or not set"), ({"NODE_NAME": "a/b"}, "$NODE_NAME is 'a/b'")):
        with pytest.raises(ConfigurationError, match=re.escape(says)):
            own_node(config, environ)
    with pytest.raises(ValueError, match="not both"):
        IpamdConfig(node_name="n1", node_name_env="NODE_NAME")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        # A negative time is a typo (a pool's cooldown_seconds refuses one too); a zero API
        # timeout fails every call, a zero cursor interval saves in a busy loop.
        ("release_cooldown = -5\n", "release_cooldown and shutdown_grace must not be negative"),
        ("[kubernetes]\ntimeout = 0\n", "kubernetes: timeout and cursor_interval must be positive"),
    ],
)
def test_times_that_cannot_work_are_refused(tmp_path: Path, text: str, named: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(named)):
        load(bad, IpamdConfig)


@pytest.mark.parametrize(
    ("plugin", "options", "named"),
    [
        # Accepted before, and failed at the first call (UNAVAILABLE per allocation), or with
        # Python's "'<=' not supported between instances of 'int' and 'str'".
        ("vpc", 'endpoint = "http://127.0.0.1:1"\ntimeout = "3s"\n', "timeout must be a positive number of seconds"),
        ("vpc", 'endpoint = "http://127.0.0.1:1"\nretries = -1\n', "retries must be a whole number >= 0"),
        ("aws-eni", 'max_attempts = "5"\n', "options.max_attempts: expected int, got str"),
        ("aws-eni", "connect_timeout = 0\n", "connect_timeout and read_timeout must be positive"),
    ],
)
def test_provider_options_of_the_wrong_type_are_refused_at_start(
    tmp_path: Path, plugin: str, options: str, named: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[providers.p]\nplugin = "{plugin}"\n[providers.p.options]\n{options}')
    with pytest.raises(PluginError, match=re.escape(named)):
        build_providers(load(bad, IpamdConfig))

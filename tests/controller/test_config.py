"""The example configuration loads, its providers construct, and every provider's plans have
valid, unique step names; the binary refuses a bad configuration with exit code 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO
from tke.internal.config.loader import load
from tke.internal.controller.config import ControllerConfig
from tke.internal.controller.manager import CLUSTER_GROUP, MACHINE_GROUP, load_cluster_apis, load_providers
from tke.internal.plugin.loader import PluginError, ProviderConfig
from tke.internal.provider.addons import network
from tke.internal.provider.clusterapi import KubeClusterAPIs
from tke.internal.provider.credentials import ConfiguredCredentials
from tke.internal.provider.steps import Step, check_plans

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_configuration_loads_with_its_providers() -> None:
    config = load(ROOT / "deploy/controller/controller.toml", ControllerConfig)
    assert config.leader.ttl == 10 and config.apiserver.token_env == "TKE_CONTROLLER_TOKEN"
    clusters = load_providers(CLUSTER_GROUP, config.cluster_providers)
    machines = load_providers(MACHINE_GROUP, config.machine_providers)
    assert set(clusters) == {"baremetal", "imported", "aws"} and set(machines) == {"baremetal", "aws"}
    assert [s.name for s in clusters["baremetal"].create_steps] == [
        "Preflight",
        "EnsureClusterCredential",
        "PrepareMachines",
        "WriteControlPlaneFiles",
        "InitControlPlane",
        "WaitAPIReady",
        "JoinControlPlane",
        "RecordAddresses",
        "AddonsReady",
    ]
    addon = clusters["baremetal"].network
    assert addon.image == "registry.example.internal/tke/network:" + network.platform_version()
    assert list(addon.etcd_endpoints) == ["10.0.0.5:2379"] and addon.extender_port == 9040
    # Both providers install from the example's mirror, per minor version, with its key.
    mirror = "https://mirror.example.internal/kubernetes/core:/stable:/v1.31/deb/"
    for provider in (clusters["baremetal"], machines["baremetal"], clusters["aws"], machines["aws"]):
        profile = provider.profiles["default"]
        assert profile.repository_of("1.31.2") == mirror
        assert profile.environment("1.31.2", "")["TKE_PACKAGE_KEY_URL"] == mirror + "Release.key"
    assert config.credentials["default/ops-password"].password_env == "TKE_OPS_PASSWORD"
    assert ("team-a", "edge-cluster") in ConfiguredCredentials(config.credentials).names()
    # The clusters' Kubernetes API client: the built-in one, with the example's options.
    apis = load_cluster_apis(config.cluster_api)
    assert isinstance(apis, KubeClusterAPIs) and (apis.timeout, apis.drain_poll) == (10.0, 1.0)
    assert config.credentials["team-a/aws"].aws_access_key_id_env == "TKE_TEAM_A_AWS_ACCESS_KEY_ID"
    assert clusters["aws"].options.retry_mode == "adaptive" and not machines["aws"].options.default_credentials
    aws_steps = [s.name for s in clusters["aws"].create_steps]
    assert aws_steps[aws_steps.index("WaitAPIReady") + 1] == "AddonsReady"
    assert clusters["aws"].network.image == addon.image and list(clusters["aws"].network.etcd_endpoints) == [
        "10.0.0.5:2379"
    ]


def test_step_names_must_be_explicit_camel_case_and_unique_across_plans() -> None:
    async def noop(ctx: object) -> None:
        return None

    check_plans("ok", {"create": [Step("A", noop)], "delete": [Step("B", noop)]})
    with pytest.raises(ValueError, match="unique"):
        check_plans("dup", {"create": [Step("A", noop)], "delete": [Step("A", noop)]})
    with pytest.raises(ValueError, match="CamelCase"):
        check_plans("bad", {"create": [Step("ensure_ca", noop)]})
    with pytest.raises(ValueError, match="CamelCase"):
        check_plans("reserved", {"create": [Step("Ready", noop)]})


def test_a_bad_configuration_exits_2_with_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[leader]\nttll = 3\n")
    done = subprocess.run(
        [sys.executable, "-m", "tke.cmd.controller", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "leader.ttll" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[machine_providers.worse]\nplugin = "tests.support.controller:NoSuchProvider"\n', "NoSuchProvider"),
        ("[cluster_api.options]\ntimeout = 10.0\nretries = 3\n", "retries"),
        ("[cluster_providers.baremetal.options.network_addon]\nimage = 'x'\n", "unknown option 'image'"),
        ('[cluster_providers.baremetal.options]\ncommand_timeout = "10m"\n', "options.command_timeout: expected float"),
    ],
)
def test_an_unknown_plugin_or_option_is_refused_at_start(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "tke.cmd.controller", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("group", "name", "options", "named"),
    [
        # Each was accepted, and failed only when a step ran: a string for seconds, a string
        # iterated as a list (modprobe "o", "v", ...; an etcd endpoint per character), a port
        # or a pull policy the cluster's API server refuses in every manifest, retried for ever.
        (CLUSTER_GROUP, "baremetal", {"command_timeout": "10m"}, "options.command_timeout: expected float, got str"),
        (CLUSTER_GROUP, "baremetal", {"extra_sans": "api.example"}, "options.extra_sans: expected a list"),
        (CLUSTER_GROUP, "baremetal", {"bootstrap_token_ttl": 0}, "bootstrap_token_ttl must be a positive number"),
        (
            CLUSTER_GROUP,
            "baremetal",
            {"profiles": {"default": {"modules": "overlay"}}},
            "profiles.default.modules: expected a list",
        ),
        (
            CLUSTER_GROUP,
            "baremetal",
            {"network_addon": {"etcd_endpoints": "10.0.0.5:2379"}},
            "network_addon.etcd_endpoints: expected a list",
        ),
        (CLUSTER_GROUP, "baremetal", {"network_addon": {"extender_port": "x"}}, "extender_port: expected int"),
        (
            CLUSTER_GROUP,
            "baremetal",
            {"network_addon": {"image_pull_policy": "Sometimes", "extender_port": 70000}},
            "image_pull_policy must be one of Always, IfNotPresent, Never; extender_port must be between 1 and 65535",
        ),
        (MACHINE_GROUP, "baremetal", {"drain_timeout": -1}, "drain_timeout must be a positive number of seconds"),
        (MACHINE_GROUP, "aws", {"max_attempts": "5"}, "options.max_attempts: expected int, got str"),
        (CLUSTER_GROUP, "aws", {"read_timeout": 0}, "connect_timeout and read_timeout must be positive"),
    ],
)
def test_a_provider_option_that_cannot_work_is_refused_at_start(
    group: str, name: str, options: dict[str, object], named: str
) -> None:
    with pytest.raises(PluginError, match=re.escape(named)):
        load_providers(group, {name: ProviderConfig(options=options)})


def test_provider_options_of_the_right_types_are_read_as_the_defaults_are() -> None:
    # TOML arrays become the tuples the defaults are; whole numbers are seconds too.
    options = {"preflight_commands": ["true"], "command_timeout": 60, "network_addon": {"etcd_endpoints": ["a:1"]}}
    provider = load_providers(CLUSTER_GROUP, {"baremetal": ProviderConfig(options=options)})["baremetal"]
    assert provider.options.preflight_commands == ("true",) and provider.options.command_timeout == 60.0
    assert provider.network.etcd_endpoints == ("a:1",)


def test_a_tenants_share_of_workers_defaults_to_half_and_is_never_negative() -> None:
    assert ControllerConfig().tenant_share == 2
    assert ControllerConfig(workers=1).tenant_share == 1
    assert ControllerConfig(workers=8, tenant_workers=3).tenant_share == 3
    with pytest.raises(ValueError, match="tenant_workers"):
        ControllerConfig(tenant_workers=-1)

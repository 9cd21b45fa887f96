"""Fixtures of the CNI tests: a node namespace per test (the "host" the plugins run in), container
namespaces on demand, state and lease directories under the test's tmp_path, and builders of
cni-switch configurations over Debian's bridge, host-local and macvlan."""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.cni import (
    DEBIAN_CNI,
    IpamdDaemon,
    Runtime,
    bin_dir,
    console_script,
    netns,
    running_ipamd,
    sh,
    unique,
)
from tke.internal.storage.etcd import EtcdConfig


@functools.cache
def cannot_run() -> str:
    """What keeps the CNI tests from running here ('' when nothing does); checked once."""
    if os.geteuid() != 0:
        return "the CNI tests need root (network namespaces); run the suite as root, as CI does"
    if shutil.which("ip") is None:
        return "ip is missing: `make setup` installs it (Debian package iproute2)"
    for plugin in ("bridge", "host-local", "macvlan", "tuning"):
        if not os.access(os.path.join(DEBIAN_CNI, plugin), os.X_OK):
            return f"{DEBIAN_CNI}/{plugin} is missing: `make setup` installs Debian's containernetworking-plugins"
    probe = unique("tkp")
    made = sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create network namespaces here: {made.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return ""


@pytest.fixture(autouse=True)
def _remove_state(tmp_path: Path) -> Iterator[None]:
    """State directories, leases and launchers live under tmp_path: gone after every test,
    passed or failed (set up first, so torn down after the namespaces and daemons)."""
    try:
        yield
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def namespaces() -> Iterator[Callable[[], str]]:
    """Call it for a new container namespace; all are deleted at the end of the test."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(netns("tkc"))


@pytest.fixture
def node() -> Iterator[str]:
    """The node: every plugin runs in this namespace, so its bridges live and die with it."""
    if cannot_run():
        pytest.fail(cannot_run(), pytrace=False)  # never a skip: CI must not pass without them
    with netns("tkn") as name:
        yield name


@pytest.fixture
def cni_bin(tmp_path: Path) -> str:
    return bin_dir(tmp_path, "cni-switch", "tke-ipamc")


@pytest.fixture
def switch(node: str, cni_bin: str) -> Runtime:
    return Runtime(binary=console_script("cni-switch"), node=node, path=[cni_bin, DEBIAN_CNI])


@pytest.fixture
def ipamd(etcd_config: EtcdConfig) -> Iterator[IpamdDaemon]:
    """A real tke-ipamd over the session's etcd (a fresh key prefix), on a unix socket."""
    with running_ipamd(list(etcd_config.endpoints), etcd_config.prefix) as daemon:
        yield daemon

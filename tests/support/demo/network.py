"""The demo's network: a bridge in the root namespace holding the first address of a private
/24 (10.200.N.0/24, the first N with no address or route on this host), and a network
namespace per machine joined to it by a veth pair (eth0 inside, with the machine's address).
The root namespace reaches the machines (the platform connects over SSH and calls the VIP),
the machines reach each other, and nothing else: the namespaces have no default route.

Invariants:
- Names carry N (bridge tkdemoN, namespaces tkdemoN-NAME, veths tkdNhHOST), and N is chosen
  and its bridge made under a file lock, so two demos on one host (`make demo-cluster` next to
  the test suite's) never share anything.
- `close()` removes everything it made, also after a half-done setup: the processes still in
  the namespaces, the namespaces (their veths go with them), the bridge and its iptables rule.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BASE = ipaddress.IPv4Network("10.200.0.0/16")
LOCK = Path("/run/lock/tke-demo-network.lock")
GATEWAY_HOST = 1
VIP_HOST = 100


def run(*argv: str) -> str:
    """The command's output, or RuntimeError with what it printed."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def ip(*argv: str) -> str:
    return run("ip", *argv)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """This host's IPv4 addresses (as /32) and routed networks (every table)."""
    out: list[ipaddress.IPv4Network] = []
    for link in json.loads(ip("-j", "-4", "addr", "show")):
        for a in link.get("addr_info", []):
            out.append(ipaddress.IPv4Network(f"{a['local']}/32"))
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all")):
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                out.append(ipaddress.IPv4Network(dst, strict=False))
    return out


@dataclass
class Network:
    index: int
    namespaces: list[str] = field(default_factory=list)
    rule: list[str] = field(default_factory=list)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.200.{self.index}.0/24")

    @property
    def bridge(self) -> str:
        return f"tkdemo{self.index}"

    def address(self, host: int) -> str:
        return str(self.subnet[host])

    @property
    def vip(self) -> str:
        return self.address(VIP_HOST)

    def namespace(self, name: str) -> str:
        return f"tkdemo{self.index}-{name}"

    def add_machine(self, name: str, host: int) -> str:
        """A namespace for machine `name` with address .`host` on its eth0; its name."""
        ns = self.namespace(name)
        veth = f"tkd{self.index}h{host}"  # at most 15 characters, as Linux wants
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("-n", ns, "addr", "add", f"{self.address(host)}/{self.subnet.prefixlen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def close(self) -> None:
        """Remove everything this network made; what could not be removed is raised after the rest."""
        failures = []
        for ns in reversed(self.namespaces):
            try:
                for pid in ip("netns", "pids", ns).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                ip("netns", "del", ns)
            except RuntimeError as err:
                failures.append(err)
        self.namespaces.clear()
        if self.rule:
            try:
                run("iptables", "-w", "-D", *self.rule)
            except RuntimeError as err:
                failures.append(err)
            self.rule = []
        with contextlib.suppress(RuntimeError):  # gone already when setup failed before it
            ip("link", "del", self.bridge)
        if failures:
            raise failures[0]


def _create(index: int) -> Network:
    net = Network(index)
    ip("link", "add", net.bridge, "type", "bridge")
    try:
        ip("addr", "add", f"{net.address(GATEWAY_HOST)}/{net.subnet.prefixlen}", "dev", net.bridge)
        ip("link", "set", net.bridge, "up")
        # Bridged traffic between the machines passes the FORWARD chain when br_netfilter is
        # loaded: let it through whatever the host's policy is.
        rule = ["FORWARD", "-i", net.bridge, "-o", net.bridge, "-j", "ACCEPT"]
        run("iptables", "-w", "-I", *rule)
        net.rule = rule
    except RuntimeError:
        net.close()
        raise
    return net


@contextlib.contextmanager
def network(prefer: int = 0) -> Iterator[Network]:
    """A fresh demo network (10.200.`prefer`.0/24 when free, else the next free /24); removed
    on exit."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = _used_networks()
        for index in [prefer, *range(256)]:
            candidate = ipaddress.IPv4Network(f"10.200.{index}.0/24")
            # A broader route (10.0.0.0/8) is no conflict: the bridge's /24 is more specific.
            if not any(candidate.overlaps(n) for n in used if n.prefixlen >= candidate.prefixlen):
                break
        else:
            raise RuntimeError(f"no free /24 left in {BASE} for the demo's machines")
        net = _create(index)
    try:
        yield net
    finally:
        net.close()

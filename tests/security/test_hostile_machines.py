"""Security model: a tenant's machines cannot take down the shared tke-controller.

The tenant owns their machines, sshd and shell: any command can print anything. Against a real
sshd, what a machine prints reaches conditions and events as one line of printable text,
clipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.security.hostile import Context, assert_reported, failed_step
from tests.support.sshd import LAB_ADDRESSES, Machines, ssh_machines
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.ssh import Channel, SSHDialer, SSHOptions, Target

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machines]:
    with ssh_machines(tmp_path / "ssh", 1) as m:
        yield m


@pytest.fixture
async def channel(machine: Machines) -> AsyncIterator[Channel]:
    creds = ConfiguredCredentials({"t1/key": CredentialConfig(private_key_file=str(machine.key.private_key_file))})
    dialer = SSHDialer(creds, SSHOptions(known_hosts_file=str(machine.known_hosts)), LAB_ADDRESSES)
    server = machine.servers[0]
    async with dialer.connect(Target(server.host, server.port, "root", "key", "t1")) as ch:
        yield ch


async def test_what_a_machine_prints_reaches_conditions_and_events_as_one_clipped_line(channel: Channel) -> None:
    async def hostile(ctx: Context) -> None:
        await channel.run("printf '\\033[2J\\033]0;owned\\007\\nERROR forged line\\n%.0s' $(seq 1000) >&2; exit 1")

    assert_reported(*await failed_step(hostile), "\\x1b[2J\\x1b]0;owned\\x07\\nERROR forged line")

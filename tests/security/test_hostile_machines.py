"""Security model: a tenant's machines cannot take down the shared tke-controller.

The tenant owns their machines, sshd and shell: any command can print anything, for ever, and
any file can be any size. Against a real sshd, what one call may cost this process stays
bounded: a command's output is cut at `ssh.max_output_bytes` and the command ended, a file is
not read past `ssh.max_file_bytes` (the peak RSS growth is measured, with a large margin);
output that is not UTF-8 keeps its exit status and text; what a machine prints reaches
conditions and events as one line of printable text, clipped; and one tenant's hung machines
hold at most their share of the controller's workers, so other tenants' machines move on; and
a marker file or an etcdctl member list a machine answers with is read without a traceback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.security.hostile import MEMORY_BOUND, Context, MiB, PeakGrowth, assert_reported, failed_step
from tests.support.sshd import LAB_ADDRESSES, Machines, ssh_machines
from tests.support.waiting import wait_for
from tke.internal.controller.config import ControllerConfig
from tke.internal.controller.queue import WorkQueue
from tke.internal.controller.workers import run_workers
from tke.internal.provider import nodes
from tke.internal.provider.credentials import ConfiguredCredentials, CredentialConfig
from tke.internal.provider.errors import TemporaryError
from tke.internal.provider.ssh import Channel, OutputTooLarge, SSHDialer, SSHOptions, Target
from tke.plugins.cluster_providers.baremetal import etcd_member_ids

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


async def test_a_command_that_prints_half_a_gigabyte_is_ended_at_the_output_limit(channel: Channel) -> None:
    with PeakGrowth() as growth, pytest.raises(OutputTooLarge, match=r"ssh\.max_output_bytes") as caught:
        await channel.exec("yes tenant | head -c 512M")
    assert "more than 16777216 bytes" in str(caught.value)
    assert "tenant\ntenant\nt" in str(caught.value)  # the end of what it printed, for people
    assert growth.bytes < MEMORY_BOUND, f"grew by {growth.bytes // MiB} MiB"
    # The same connection's next command is fine, and so is output within the limit.
    assert (await channel.exec("head -c 1000000 /dev/zero | tr '\\0' x")).stdout == "x" * 1_000_000


async def test_a_file_larger_than_the_file_limit_is_not_read(channel: Channel, tmp_path: Path) -> None:
    big = tmp_path / "admin.conf"
    big.touch()
    os.truncate(big, 1 << 30)  # sparse: a GiB that costs the machine nothing
    with PeakGrowth() as growth, pytest.raises(OutputTooLarge, match=r"larger than 16777216 bytes .*max_file_bytes"):
        await channel.read_file(str(big))
    assert growth.bytes < MEMORY_BOUND, f"grew by {growth.bytes // MiB} MiB"


async def test_output_that_is_not_utf8_keeps_its_exit_status_and_text(channel: Channel) -> None:
    result = await channel.exec("printf 'ok \\377\\376\\n'; printf 'bad \\300\\n' >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, "ok \ufffd\ufffd\n", "bad \ufffd\n")


async def test_what_a_machine_prints_reaches_conditions_and_events_as_one_clipped_line(channel: Channel) -> None:
    async def hostile(ctx: Context) -> None:
        await channel.run("printf '\\033[2J\\033]0;owned\\007\\nERROR forged line\\n%.0s' $(seq 1000) >&2; exit 1")

    assert_reported(*await failed_step(hostile), "\\x1b[2J\\x1b]0;owned\\x07\\nERROR forged line")


async def test_a_tenants_hung_machines_leave_workers_for_the_other_tenants(machine: Machines) -> None:
    # Eight machines of one tenant whose commands hang (until their 300 s limit), queued first:
    # with every worker on them, the other tenant's machine waited minutes for its turn.
    config = ControllerConfig()
    queue = WorkQueue(tenant_share=config.tenant_share)
    creds = ConfiguredCredentials(
        {f"{t}/key": CredentialConfig(private_key_file=str(machine.key.private_key_file)) for t in ("slow", "other")}
    )
    dialer = SSHDialer(creds, SSHOptions(known_hosts_file=str(machine.known_hosts)), LAB_ADDRESSES)
    server = machine.servers[0]
    hung: set[str] = set()
    done: set[str] = set()

    async def reconcile(key: str) -> None:
        tenant = key.partition("/")[0]
        async with dialer.connect(Target(server.host, server.port, "root", "key", tenant)) as ch:
            if tenant == "slow":
                hung.add(key)
                await ch.exec("sleep 300")
            else:
                await ch.run("true")
        done.add(key)

    for i in range(8):
        queue.add(f"slow/m{i}")
    queue.add("other/m0")
    workers = asyncio.create_task(run_workers("machine", queue, reconcile, config.workers))
    try:
        await wait_for(lambda: "other/m0" in done, within=60, what="the other tenant's machine reconciled")
        assert len(hung) == config.tenant_share == 2  # half the workers, while the slow ones hang
    finally:
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)


async def test_what_a_machine_answers_in_place_of_a_marker_or_a_member_list_is_a_clean_answer(
    channel: Channel, tmp_path: Path
) -> None:
    paths = nodes.Paths(str(tmp_path))
    await channel.run(f"mkdir -p {paths.config_dir} && printf 'v1.30\\377\\376' > {nodes.marker(paths, 'installed')}")
    assert await nodes.done_marker(channel, paths, "installed") == "v1.30\ufffd\ufffd"  # compared, never raised
    # What a machine's etcdctl prints is the tenant's: deep JSON, other shapes, other ids.
    for printed in (
        await channel.run("printf '%.0s[' $(seq 100000)"),
        await channel.run("""echo '{"members": [1]}'"""),
        await channel.run("""echo '{"members": [{"ID": "zz", "name": "m1"}]}'"""),
    ):
        with pytest.raises(TemporaryError, match="printed no member list"):
            etcd_member_ids(printed, "m1", "10.0.0.1")
    listed = await channel.run("""echo '{"members": [{"ID": 255, "name": "m1"}, {"ID": 1, "name": "m2"}]}'""")
    assert etcd_member_ids(listed, "m1", "10.0.0.1") == ["ff"]

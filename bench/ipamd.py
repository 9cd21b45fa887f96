"""The IPAM part of `make bench`: numbers printed as ratios to what the same machine's etcd does.

1. Raw etcd: compare-and-swap transactions per second from 32 concurrent clients (create a key
   with create_revision == 0, delete it with mod_revision ==), through the same client library.
2. tke-ipamd: Allocate+Release calls per second from 32 concurrent gRPC clients to one real
   tke-ipamd process over its unix socket, as a ratio of (1). (1) and (2) alternate for
   `--rounds` rounds (3); each number is the median of its rounds, the ratios the medians of the
   rounds' own ratios.
   Beside both: the CPU time per operation of each process (the clients, etcd, tke-ipamd; user +
   system, from /proc), and the ratio of (1) to (2) by CPU (what the throughput ratio is when
   the machine's CPU is the limit and other work takes some of it: the steadier number on a
   shared machine).
3. Two tke-ipamd replicas of the same pools, the same clients spread over both, as a ratio
   of one replica (on 2 cores the replicas share the CPU with etcd and the clients).
4. Allocation latency at 5% and at 95% fill of a /16 (in process, over etcd), as a ratio.
   Fill is laid down directly as owned bits in the blocks (an allocation reads and writes only
   its block, so the records of the other 62 000 addresses would not be on its path).

`--profile PATH` samples the single tke-ipamd with py-spy during (2)'s first round and writes its collapsed
stacks to PATH (py-spy takes CPU too: the ratios of such a run are not the bench's).

Usage: python -m bench.ipamd [--seconds 5] [--rounds 3] [--profile bench-results/profile-ipamd.txt] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

from bench.procs import cpu_seconds
from bench.profile import record
from tests.support.etcd import EtcdProcess
from tke.internal.ipamd.allocator import BLOCK_SIZE, Block
from tke.internal.ipamd.ipam import IPAM
from tke.internal.ipamd.pools import pool_layout
from tke.internal.storage.etcd.connection import EtcdConfig, EtcdConnection
from tke.ipam.v1 import ipam_pb2, ipam_pb2_grpc
from tke.plugins.ip_providers.static import StaticProvider
from tke.plugins.ip_storage.etcd import EtcdIPStorage, EtcdIPStorageConfig, encode_block

CLIENTS = 32


class CpuMeter:
    """CPU seconds used by this process and by `pids` between start() and per_op()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {"client": time.process_time(), **{name: cpu_seconds(pid) for name, pid in self.pids.items()}}

    def start(self) -> None:
        self._start = self._now()

    def per_op(self, ops: int) -> dict[str, float]:
        """Microseconds of CPU per operation, by process."""
        now = self._now()
        return {name: (now[name] - self._start[name]) * 1e6 / max(ops, 1) for name in now}


def _cpu(per_op: dict[str, float]) -> str:
    return ", ".join(f"{name} {us:.0f} us" for name, us in per_op.items())


async def raw_etcd_rate(endpoint: str, seconds: float, cpu: CpuMeter) -> tuple[float, dict[str, float]]:
    conn = EtcdConnection(EtcdConfig(endpoints=[endpoint]))
    done = 0
    stop = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            key = f"/bench/raw/{n}/{i}".encode()
            created = await conn.call(
                conn.kv.Txn,
                rpc.TxnRequest(
                    compare=[
                        rpc.Compare(
                            key=key,
                            result=rpc.Compare.CompareResult.EQUAL,
                            target=rpc.Compare.CompareTarget.CREATE,
                            create_revision=0,
                        )
                    ],
                    success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=b"x" * 200))],
                ),
                idempotent=False,
            )
            rev = created.header.revision
            await conn.call(
                conn.kv.Txn,
                rpc.TxnRequest(
                    compare=[rpc.Compare(key=key, result=rpc.Compare.CompareResult.EQUAL,
                                         target=rpc.Compare.CompareTarget.MOD, mod_revision=rev)],
                    success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))],
                ),
                idempotent=False,
            )  # fmt: skip
            done += 2
            i += 1

    cpu.start()
    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(CLIENTS)))
    elapsed = time.monotonic() - started
    used = cpu.per_op(done)
    await conn.close()
    return done / elapsed, used


async def ipamd_rate(
    sockets: list[str], seconds: float, cpu: CpuMeter, pool: str = "bench", cidr: str = "10.200.0.0/16"
) -> tuple[float, dict[str, float]]:
    """Allocate+Release calls per second from CLIENTS clients spread over the daemons (pools never
    overlap: each run gets its own subnet)."""
    channels = [grpc.aio.insecure_channel(f"unix:{sockets[i % len(sockets)]}") for i in range(CLIENTS)]
    admin = ipam_pb2_grpc.IPAMServiceStub(channels[0])
    await admin.CreatePool(ipam_pb2.CreatePoolRequest(pool=ipam_pb2.Pool(name=pool, cidr=cidr)))
    done = 0
    stop = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        stub = ipam_pb2_grpc.IPAMServiceStub(channels[n])
        i = 0
        while time.monotonic() < stop:
            container = f"bench-{n}-{i}"
            await stub.Allocate(
                ipam_pb2.AllocateRequest(
                    owner=ipam_pb2.Owner(namespace="bench", pod_name=f"pod-{n}-{i}"),
                    container_id=container, ifname="eth0", node="node-1", pool=pool,
                )
            )  # fmt: skip
            await stub.Release(ipam_pb2.ReleaseRequest(container_id=container, ifname="eth0"))
            done += 2
            i += 1

    cpu.start()
    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(CLIENTS)))
    elapsed = time.monotonic() - started
    used = cpu.per_op(done)
    for ch in channels:
        await ch.close()
    return done / elapsed, used


async def fill_latency(endpoint: str, fill: float, samples: int) -> list[float]:
    """Allocate (then release) `samples` times, one at a time, in a /16 filled to `fill`."""
    prefix = f"/bench-fill-{int(fill * 100)}"
    storage = EtcdIPStorage(EtcdIPStorageConfig(endpoints=[endpoint], prefix=prefix))
    ipam = IPAM(storage, {"static": StaticProvider()}, cooldown=0)
    pool = await ipam.create_pool(ipam_pb2.Pool(name="fill", cidr="10.100.0.0/16"))
    layout = pool_layout(pool)
    conn = EtcdConnection(EtcdConfig(endpoints=[endpoint]))
    rnd = random.Random(1)
    puts = []
    for index in range(layout.block_count):
        span = layout.block_span(index)
        used = 0
        for bit in rnd.sample(range(span), round(span * fill)):
            used |= 1 << bit
        key = f"{prefix}/ipam/blocks/fill/{index:06d}".encode()
        puts.append(rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=encode_block(Block("fill", index, used)))))
    for i in range(0, len(puts), 100):
        await conn.call(conn.kv.Txn, rpc.TxnRequest(success=puts[i : i + 100]), idempotent=False)
    await conn.close()
    latencies = []
    for i in range(samples + 20):
        request = ipam_pb2.AllocateRequest(
            owner=ipam_pb2.Owner(namespace="bench", pod_name=f"p{i}"), container_id=f"c{i}", ifname="eth0", node="n"
        )
        started = time.perf_counter()
        await ipam.allocate(request)
        if i >= 20:  # the first calls load the block states
            latencies.append(time.perf_counter() - started)
        await ipam.release(f"c{i}", "eth0")
    blocks = await storage.blocks("fill")
    owned = sum(b.count() for b in blocks)
    assert abs(owned / layout.size - fill) < 0.01, (owned, layout.size)
    await storage.close()
    return latencies


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))]


async def measure(
    etcd_endpoint: str,
    sockets: list[str],
    seconds: float,
    samples: int,
    pids: dict[str, int],
    *,
    rounds: int = 3,
    profile_to: str = "",
) -> dict[str, Any]:
    """Prints each figure as it is measured; returns them all (the keys `make bench` reads).
    (1) and (2) alternate for `rounds` rounds; each figure is the median of its rounds, the
    ratios medians of the rounds' own ratios (a baseline and its figure measured side by side)."""
    etcd_pid = {"etcd": pids["etcd"]}
    raws: list[float] = []
    rates: list[float] = []
    raw_cpus: list[dict[str, float]] = []
    cpus: list[dict[str, float]] = []
    for r in range(rounds):
        raw, raw_cpu = await raw_etcd_rate(etcd_endpoint, seconds, CpuMeter(etcd_pid))
        spy = record(pids["ipamd-1"], max(1.0, seconds - 1), Path(profile_to)) if profile_to and r == 0 else None
        meter = CpuMeter({"ipamd": pids["ipamd-1"], **etcd_pid})
        # Each round its own pool: they never overlap, with each other or with (3)'s.
        rate, cpu = await ipamd_rate(sockets[:1], seconds, meter, pool=f"bench-{r}", cidr=f"10.{210 + r}.0.0/16")
        if spy is not None:
            spy.wait(seconds + 30)
        print(f"round {r + 1}: etcd CAS {raw:.0f}/s, tke-ipamd {rate:.0f} calls/s = {rate / raw:.2f} x", flush=True)
        raws.append(raw)
        rates.append(rate)
        raw_cpus.append(raw_cpu)
        cpus.append(cpu)
    raw, rate = statistics.median(raws), statistics.median(rates)
    ratio = statistics.median(b / a for a, b in zip(raws, rates, strict=True))
    by_cpu = statistics.median(sum(a.values()) / sum(b.values()) for a, b in zip(raw_cpus, cpus, strict=True))
    raw_cpu = {name: statistics.median(c[name] for c in raw_cpus) for name in raw_cpus[0]}
    cpu = {name: statistics.median(c[name] for c in cpus) for name in cpus[0]}
    print(f"etcd CAS transactions, {CLIENTS} clients:      {raw:8.0f}/s")
    print(f"tke-ipamd Allocate+Release, {CLIENTS} clients:  {rate:8.0f} calls/s = {ratio:.2f} x etcd CAS rate")
    print(f"CPU per etcd CAS:                          {_cpu(raw_cpu)}")
    print(f"CPU per Allocate or Release:               {_cpu(cpu)}")
    print(f"ratio by CPU (all processes):              {by_cpu:.2f} x etcd CAS")
    both, _ = await ipamd_rate(sockets, seconds, CpuMeter({}), pool="bench-two", cidr="10.201.0.0/16")
    print(f"two ipamd replicas, {CLIENTS} clients over both: {both:8.0f} calls/s = {both / rate:.2f} x one replica")
    low = await fill_latency(etcd_endpoint, 0.05, samples)
    high = await fill_latency(etcd_endpoint, 0.95, samples)
    p50s = {}
    for name, values in (("5% full", low), ("95% full", high)):
        p50, p99 = statistics.median(values) * 1000, _pct(values, 0.99) * 1000
        p50s[name] = p50
        print(f"Allocate latency, /16 {name:>8}:          p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    fill_ratio = statistics.median(high) / statistics.median(low)
    print(f"latency ratio 95% / 5% fill (p50):         {fill_ratio:.2f}")
    return {
        "etcd_cas_per_s": raw,
        "ipamd_calls_per_s": rate,
        "ratio_to_etcd": ratio,
        "ratio_rounds": [b / a for a, b in zip(raws, rates, strict=True)],
        "ratio_by_cpu": by_cpu,
        "cpu_us_per_cas": raw_cpu,
        "cpu_us_per_call": cpu,
        "p50_5pct_ms": p50s["5% full"],
        "p50_95pct_ms": p50s["95% full"],
        "fill_latency_ratio": fill_ratio,
        "two_replicas_vs_one": both / rate,
    }


def start_ipamd(tmp: str, etcd_endpoint: str, name: str = "ipamd") -> tuple[subprocess.Popen[bytes], str]:
    socket = f"{tmp}/{name}.sock"
    config = Path(tmp) / f"{name}.toml"
    config.write_text(
        f'socket = "{socket}"\nrelease_cooldown = 0.0\nlog_level = "warning"\n'
        f'[storage]\nplugin = "etcd"\n[storage.options]\nendpoints = ["{etcd_endpoint}"]\nprefix = "/bench"\n'
    )
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "tke-ipamd"), "--config", str(config)])
    deadline = time.monotonic() + 20
    while not os.path.exists(socket):
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("tke-ipamd did not start")
        time.sleep(0.05)
    time.sleep(0.3)
    return daemon, socket


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ipam-bench", description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (1) and (2), side by side")
    parser.add_argument("--samples", type=int, default=300, help="allocations per fill level")
    parser.add_argument("--profile", default="", help="py-spy's collapsed stacks of tke-ipamd during (2) to this file")
    parser.add_argument("--json", default="", help="also write the figures to this file, as one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ipam-bench-", dir="/tmp") as tmp:
        etcd = EtcdProcess(Path(tmp) / "etcd")
        daemons: list[subprocess.Popen[bytes]] = []
        try:
            etcd.start()
            sockets = []
            assert etcd.process is not None
            pids = {"etcd": etcd.process.pid}
            for name in ("ipamd-1", "ipamd-2"):  # two replicas of the same pools
                daemon, socket = start_ipamd(tmp, etcd.endpoint, name)
                daemons.append(daemon)
                sockets.append(socket)
                pids[name] = daemon.pid
            figures = asyncio.run(
                measure(
                    etcd.endpoint,
                    sockets,
                    args.seconds,
                    args.samples,
                    pids,
                    rounds=args.rounds,
                    profile_to=args.profile,
                )
            )
            if args.json:
                Path(args.json).write_text(json.dumps(figures))
        finally:
            for daemon in daemons:
                daemon.terminate()
                try:
                    daemon.wait(10)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
            etcd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["BLOCK_SIZE", "main"]

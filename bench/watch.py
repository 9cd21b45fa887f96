"""Figure 3: watch fan-out. `watchers` concurrent ClusterService/Watch streams (or, `batched`,
WatchBatches streams: the events that are ready in one message) on one apiserver
(through the full auth chain), spread over `tenants` tenants, while a writer changes clusters at
`rate` changes per second for `seconds`, straight into etcd in the apiserver's encoding.

Every change carries its send time (an annotation), so each watcher measures the delivery delay
of each event. Each watcher starts from one known revision, so it must see exactly the changes
of its tenant after it: the expected revisions are compared with what arrived, and the lost,
duplicated and unexpected events counted. A watcher ended for falling behind
(RESOURCE_EXHAUSTED) resumes from the last revision it saw, as an informer does; resumes are
counted too.

Watchers run in `processes` client processes (`python -m bench.watch --child`),
each with its share of the streams over a few channels. The apiserver's RSS and CPU time are
sampled while it runs. Delivering 1,000 x 100 = 100,000 messages/s from Python on two cores
also costs the receiving clients most of a core: the apiserver's CPU share is reported to say
which side ran out."""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench import profile
from bench.procs import ADMIN_TOKEN, PREFIX, ApiserverProcess, Processes, cpu_seconds, python, rss_bytes
from bench.stats import percentile
from tests.support.apiserver import cluster
from tke.internal.apiserver.kinds import CLUSTERS
from tke.internal.apiserver.registry import Registry
from tke.internal.storage.etcd import EtcdConfig, EtcdStore
from tke.meta.v1 import meta_pb2
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

SENT = "bench.tke.io/sent"
OBJECTS_PER_TENANT = 100
STREAMS_PER_CHANNEL = 50


def tenant_names(tenants: int) -> list[str]:
    return [f"w-{i:03d}" for i in range(tenants)]


# -- the watcher processes ----------------------------------------------------------------------


async def _child(args: argparse.Namespace) -> None:
    tenants = tenant_names(args.tenants)
    streams = list(range(args.first, args.first + args.count))
    channels = [grpc.aio.insecure_channel(args.address) for _ in range(max(1, len(streams) // STREAMS_PER_CHANNEL))]
    metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    seen: dict[int, list[int]] = {s: [] for s in streams}
    delays = array.array("d")
    resumes = 0
    ended: dict[str, int] = {}
    last_receive = 0.0
    started = 0

    async def watch(stream: int) -> None:
        nonlocal resumes, last_receive, started
        stub = cluster_pb2_grpc.ClusterServiceStub(channels[stream % len(channels)])
        tenant = tenants[stream % len(tenants)]
        position = args.revision
        first = True
        while True:
            request = cluster_pb2.WatchClustersRequest(tenant_id=tenant, resource_version=str(position))
            call = (stub.WatchBatches if args.batched else stub.Watch)(request, metadata=metadata)
            if first:
                started += 1
                first = False
            try:
                message: Any
                async for message in call:
                    now = time.time()
                    for event in message.events if args.batched else (message,):
                        meta = event.object.metadata
                        rev = int(meta.resource_version)
                        position = max(position, rev)
                        if event.type == meta_pb2.WATCH_EVENT_TYPE_BOOKMARK:
                            continue
                        seen[stream].append(rev)
                        sent = meta.annotations.get(SENT)
                        if sent:
                            delays.append(now - float(sent))
                    last_receive = now
                return
            except grpc.aio.AioRpcError as err:
                ended[err.code().name] = ended.get(err.code().name, 0) + 1
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    resumes += 1
                    continue
                if err.code() == grpc.StatusCode.CANCELLED:
                    return
                await asyncio.sleep(0.2)
                resumes += 1

    tasks = [asyncio.create_task(watch(s)) for s in streams]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)  # "done <expected file> <deadline>"
    _, expected_file, deadline_text = line.split()
    expected: dict[str, list[int]] = json.loads(Path(expected_file).read_text())
    deadline = float(deadline_text)
    # Wait until every stream has its tenant's last change, or the deadline.
    while time.time() < deadline:
        if all((expected[tenants[s % len(tenants)]] or [0])[-1] <= (seen[s][-1] if seen[s] else 0) for s in streams):
            break
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    lost = duplicated = unexpected = events = undelivered = 0
    for s in streams:
        want = set(expected[tenants[s % len(tenants)]])
        got = seen[s]
        events += len(got)
        unique = set(got)
        duplicated += len(got) - len(unique)
        # A gap before the last event a stream received is lost; what comes after it had not
        # arrived by the deadline (a stream that fell behind), which is counted apart.
        last = max(got, default=0)
        lost += len({r for r in want if r <= last} - unique)
        undelivered += len({r for r in want if r > last})
        unexpected += len(unique - want)
    delays_file = Path(expected_file).parent / f"delays-{args.first}.bin"
    delays_file.write_bytes(delays.tobytes())
    report = {"streams": len(streams), "started": started, "events": events, "lost": lost, "undelivered": undelivered,
              "duplicated": duplicated, "unexpected": unexpected, "resumes": resumes, "ended": ended,
              "last_receive": last_receive, "delays_file": str(delays_file)}  # fmt: skip
    print(json.dumps(report), flush=True)


# -- the writer and the driver ---------------------------------------------------------------


async def _seed(endpoint: str, tenants: list[str]) -> tuple[dict[str, tuple[int, cluster_pb2.Cluster]], int]:
    store = EtcdStore(EtcdConfig(endpoints=[endpoint], prefix=PREFIX))
    registry = Registry(CLUSTERS, store, PREFIX)
    objects: dict[str, tuple[int, cluster_pb2.Cluster]] = {}
    try:
        for tenant in tenants:
            for i in range(max(1, OBJECTS_PER_TENANT // len(tenants))):
                obj = await registry.create(tenant, cluster(f"w{i}"))
                objects[registry.key(tenant, obj.metadata.name)] = (int(obj.metadata.resource_version), obj)
        revision = await store.current_revision()
    finally:
        await store.close()
    return objects, revision


async def _write(
    endpoint: str, objects: dict[str, tuple[int, cluster_pb2.Cluster]], rate: float, seconds: float
) -> tuple[dict[str, list[int]], float, float]:
    """Change the objects round-robin at `rate`/s; returns the revisions written per tenant."""
    store = EtcdStore(EtcdConfig(endpoints=[endpoint], prefix=PREFIX))
    registry = Registry(CLUSTERS, store, PREFIX)
    keys = sorted(objects)
    written: dict[str, list[int]] = {}
    total = int(rate * seconds)
    began = time.monotonic()
    first_send = time.time()
    try:
        for n in range(total):
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            key = keys[n % len(keys)]
            revision, obj = objects[key]
            obj.metadata.annotations[SENT] = repr(time.time())
            item = await store.update(key, registry.encode(obj), expected_revision=revision)
            objects[key] = (item.mod_revision, obj)
            written.setdefault(obj.metadata.tenant_id, []).append(item.mod_revision)
    finally:
        await store.close()
    return written, first_send, time.monotonic() - began


def measure(
    work: Path,
    procs: Processes,
    etcd_endpoint: str,
    *,
    watchers: int = 1000,
    tenants: int = 1,
    rate: float = 100.0,
    seconds: float = 10.0,
    processes: int = 4,
    profile_to: Path | None = None,
    batched: bool = False,
) -> dict[str, Any]:
    names = tenant_names(tenants)
    objects, revision = asyncio.run(_seed(etcd_endpoint, names))
    api = ApiserverProcess(work, f"apiserver-watch-{watchers}-{tenants}-{batched}", etcd_endpoint, chain=True)
    api.start(procs)
    children = []
    per = watchers // processes
    for p in range(processes):
        count = per if p < processes - 1 else watchers - per * (processes - 1)
        argv = [*python(), "-m", "bench.watch", "--child", "--address", api.address,
                "--revision", str(revision), "--tenants", str(tenants), "--first", str(p * per),
                "--count", str(count), *(["--batched"] if batched else [])]  # fmt: skip
        children.append(
            procs.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, log=work / f"watch-child-{p}.log")
        )
    for child in children:
        assert child.stdout is not None
        child.stdout.readline()  # "ready"
    # Every stream subscribed on the server before the first change.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _watch_clients(api) < watchers:
        time.sleep(0.2)
    subscribed = _watch_clients(api)
    rss_before, cpu_before = rss_bytes(api.pid), cpu_seconds(api.pid)
    clients_before = sum(cpu_seconds(c.pid) for c in children)
    profiler = profile.record(api.pid, 15, work / "watch-profile.txt") if profile_to else None
    sampler = _Sampler(api.pid)
    sampler.start()
    written, first_send, wrote_for = asyncio.run(_write(etcd_endpoint, objects, rate, seconds))
    expected_file = work / "watch-expected.json"
    expected_file.write_text(json.dumps({t: written.get(t, []) for t in names}))
    finish_by = time.time() + 30
    for child in children:
        assert child.stdin is not None
        child.stdin.write(f"done {expected_file} {finish_by}\n".encode())
        child.stdin.flush()
    clients_cpu = sum(cpu_seconds(c.pid) for c in children) - clients_before
    reports: list[dict[str, Any]] = []
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline().decode().strip()
        reports.append(json.loads(line) if line else {"events": 0, "error": "no report"})
        procs.stop(child)
    sampler.stop()
    cpu_used = cpu_seconds(api.pid) - cpu_before
    delays: list[float] = []
    for r in reports:
        if "delays_file" in r:
            values = array.array("d")
            with open(r["delays_file"], "rb") as f:
                values.frombytes(f.read())
            delays.extend(values)
            os.unlink(r["delays_file"])
    events = sum(int(r.get("events", 0)) for r in reports)
    last = max((float(r.get("last_receive", 0)) for r in reports), default=first_send)
    delivery_window = max(last - first_send, wrote_for)
    changes = sum(len(v) for v in written.values())
    expected_events = sum(len(written.get(names[s % len(names)], [])) for s in range(watchers))
    if profiler is not None and profile_to is not None:
        profiler.wait(60)
        shutil.copy(work / "watch-profile.txt", profile_to)
    if api.child is not None:
        procs.stop(api.child)
    return {
        "watchers": watchers,
        "batched": batched,
        "subscribed": subscribed,
        "tenants": tenants,
        "rate": rate,
        "changes": changes,
        "write_seconds": round(wrote_for, 2),
        "expected_events": expected_events,
        "events": events,
        "events_per_second": events / delivery_window if delivery_window else 0.0,
        "delivery_window_s": round(delivery_window, 2),
        "delay_p50_ms": percentile(delays, 0.5) * 1000,
        "delay_p99_ms": percentile(delays, 0.99) * 1000,
        "delay_max_ms": max(delays, default=0.0) * 1000,
        "lost": sum(int(r.get("lost", 0)) for r in reports),
        "undelivered_by_deadline": sum(int(r.get("undelivered", 0)) for r in reports),
        "duplicated": sum(int(r.get("duplicated", 0)) for r in reports),
        "unexpected": sum(int(r.get("unexpected", 0)) for r in reports),
        "resumes": sum(int(r.get("resumes", 0)) for r in reports),
        "streams_ended": _merge([r.get("ended", {}) for r in reports]),
        "apiserver_rss_bytes_before": rss_before,
        "apiserver_rss_bytes_max": sampler.max_rss,
        "apiserver_cpu_share": cpu_used / delivery_window / (os.cpu_count() or 1) if delivery_window else 0.0,
        "apiserver_cpu_cores": cpu_used / delivery_window if delivery_window else 0.0,
        "apiserver_cpu_us_per_event": cpu_used / events * 1e6 if events else 0.0,
        "clients_cpu_cores": clients_cpu / delivery_window if delivery_window else 0.0,
    }


def _merge(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _watch_clients(api: ApiserverProcess) -> int:
    import re
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{api.metrics_port}/metrics", timeout=10).read().decode()
    m = re.search(r'^tke_watch_clients\{kind="clusters"\} (\S+)$', text, re.M)
    return int(float(m.group(1))) if m else 0


class _Sampler:
    """The apiserver's RSS, sampled every 0.2 s in a thread."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.max_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.max_rss = max(self.max_rss, rss_bytes(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.max_rss = max(self.max_rss, rss_bytes(self.pid))


def main() -> None:
    parser = argparse.ArgumentParser(description="watch fan-out bench: a watcher process (internal)")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--revision", type=int, required=True)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=250)
    parser.add_argument("--batched", action="store_true", help="WatchBatches instead of Watch")
    asyncio.run(_child(parser.parse_args()))


if __name__ == "__main__":
    main()

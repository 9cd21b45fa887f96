"""The `make bench` driver: every figure in one process tree on loopback, bounded in
time, each next to a baseline measured in the same run; a short table on stdout and
bench-results/latest.json (plus the profile of the slowest path beside it).

    python -m bench [--only 1,3,...] [--quick] [--out bench-results]

Figures: 1 unary Get/Create vs a bare grpc.aio server and etcd, 2 chain on/off, 3 watch
fan-out, 4 scale of the store, 5 IPAM, 6 CNI (root), 7 profile of the slowest path. Every etcd,
server and client process started here is stopped before it returns, also on failure or Ctrl-C."""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import apiserver, external, h2load, profile, report, scale, watch
from bench.procs import USER_TOKEN, ApiserverProcess, Processes, machine
from tests.support.etcd import EtcdProcess


def profile_slowest(
    work: Path, procs: Processes, etcd_endpoint: str, fig1: dict[str, Any], *, seconds: float, out: Path
) -> dict[str, Any]:
    """Profile the path furthest below its target (Get or Create at 32 in flight) with py-spy."""
    get = fig1["get"].get("32", {}).get("ratio_to_bare", {}).get("median", 1.0) / 0.5
    create = fig1["create"].get("32", {}).get("ratio_to_etcd", {}).get("median", 1.0) / 0.3
    path = "ClusterService/Get" if get <= create else "ClusterService/Create"
    api = ApiserverProcess(work, "apiserver-profile", etcd_endpoint, chain=True)
    api.start(procs)
    name = path.split("/")[1].lower()
    raw = out / f"profile-{name}.txt"
    svg = out / f"profile-{name}.svg"
    if path.endswith("Create"):
        # The first Create of a fresh apiserver imports the provider plugins (once): not the path.
        apiserver.create_run(procs, "apiserver", api.address, 1, 1.0, tag="warm", token=USER_TOKEN)
    spies = [profile.record(api.pid, seconds, raw, "raw"), profile.record(api.pid, seconds, svg, "flamegraph")]
    time.sleep(0.5)
    if path.endswith("Get"):
        load = apiserver.h2(api.address, apiserver.GET_PATH, apiserver.get_request(), 32, seconds - 1, token=USER_TOKEN)
    else:
        load = apiserver.create_run(procs, "apiserver", api.address, 32, seconds - 3, tag="prof", token=USER_TOKEN)
    for spy in spies:
        spy.wait(seconds + 30)
    if api.child is not None:
        procs.stop(api.child)
    summary = profile.summarize(raw) if raw.exists() else {"samples": 0}
    return {"path": f"{path} x32 through the chain", "file": raw.name, "flamegraph": svg.name, "load": load,
            "summary": summary}  # fmt: skip


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="comma-separated figures (2 comes with 1)")
    parser.add_argument("--quick", action="store_true", help="one short round of each, a smaller store")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per figure-1 measurement (default 3)")
    parser.add_argument("--seconds", type=float, default=0, help="seconds per load run (default 3)")
    parser.add_argument("--out", default="bench-results", help="directory of latest.json and the profile")
    args = parser.parse_args(argv)
    only = {int(x) for x in args.only.split(",") if x.strip()}
    n_rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 3.0)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if only & {1, 2, 7}:
        h2load.ensure()
    started = time.monotonic()
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"rounds": n_rounds, "seconds": seconds, "quick": args.quick},
        "errors": {},
    }
    # SIGTERM (a supervisor, `timeout`) stops the run like Ctrl-C: every child is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="tke-bench-", dir="/tmp"))
    procs = Processes()
    etcds: list[EtcdProcess] = []

    def etcd(name: str) -> EtcdProcess:
        e = EtcdProcess(work / name)
        etcds.append(e)
        e.start()
        return e

    def figure(key: str, title: str, fn: Callable[[], Any]) -> None:
        print(f"figure {key}: {title}", flush=True)
        t = time.monotonic()
        try:
            results[key] = fn()
        except Exception as err:
            traceback.print_exc()
            results["errors"][key] = f"{type(err).__name__}: {err}"
        results.setdefault("durations_s", {})[key] = round(time.monotonic() - t, 1)

    try:
        if only & {1, 2, 7}:
            e1 = etcd("etcd-unary")
            figure("apiserver", "unary Get and Create vs baselines, chain on/off", lambda: apiserver.measure(
                work, procs, e1.endpoint, in_flights=[1, 32, 256], n_rounds=n_rounds, seconds=seconds))  # fmt: skip
            if 7 in only and "apiserver" in results:
                length = 8.0 if args.quick else 12.0
                figure("profile", "profile of the slowest path", lambda: profile_slowest(
                    work, procs, e1.endpoint, results["apiserver"], seconds=length, out=out))  # fmt: skip
        if 3 in only:
            results["watch"] = []
            # (watchers, tenants, batched): the two targets (one tenant: 1,000 batched watchers,
            # 100 plain ones), then 1,000 plain watchers over 100 tenants for context.
            for watchers, tenants, batched in ((1000, 1, True), (100, 1, False), (1000, 100, False)):
                how = "batched" if batched else "plain"
                key = f"watch-{watchers}-{tenants}-{how}"
                e3 = etcd(f"etcd-{key}")
                run = functools.partial(watch.measure, work, procs, e3.endpoint, watchers=watchers, tenants=tenants,
                                        seconds=5.0 if args.quick else 10.0, batched=batched)  # fmt: skip
                figure(key, f"watch fan-out, {watchers} {how} watchers over {tenants} tenant(s)", run)
                if key in results:
                    results["watch"].append(results.pop(key))
                e3.stop()
        if 4 in only:
            e4 = etcd("etcd-scale")
            small = args.quick
            figure("scale", "10,000 clusters + 100,000 machines", lambda: scale.measure(
                work, procs, e4.endpoint, clusters=1000 if small else 10_000, machines=10_000 if small else 100_000,
                list_rounds=1 if small else 2))  # fmt: skip
            e4.stop()
        if 5 in only:
            figure("ipam", "IPAM (python -m bench.ipamd)",
                   lambda: external.ipam(seconds=2.0 if args.quick else 5.0))  # fmt: skip
        if 6 in only:
            figure("cni", "CNI (python -m bench.cni)",
                   lambda: external.cni(rounds=10 if args.quick else 30, concurrent=100))  # fmt: skip
    except KeyboardInterrupt:
        results["errors"]["interrupted"] = "Ctrl-C"
    finally:
        procs.stop_all()
        for e in etcds:
            e.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["total_s"] = round(time.monotonic() - started, 1)
    rows = report.rows(results)
    report.write(out / "latest.json", results, rows)
    print()
    print(f"machine: {results['machine']['nproc']} cores, {results['machine']['memory_gib']} GiB, "
          f"kernel {results['machine']['kernel']}, Python {results['machine']['python']}, "
          f"etcd {results['machine']['etcd']}; load average at start {results['machine']['loadavg_start'][0]:.1f}, "
          f"at end {results['machine']['loadavg_end'][0]:.1f}")  # fmt: skip
    print(report.table(rows))
    for key, err in results["errors"].items():
        print(f"figure {key} failed: {err}")
    print(f"\nresults: {out / 'latest.json'} ({results['total_s']:.0f} s)")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

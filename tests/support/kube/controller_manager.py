"""`python -m tests.support.kube.controller_manager KUBECONFIG`: kube-controller-manager's
stand-in for a live stand-in cluster (the demo's): every half second it brings the DaemonSets'
and Deployments' status up to date from the Nodes, as their controllers, the scheduler and the
kubelets would (tests/support/kube/rollouts.py), until SIGTERM or SIGINT. An API that does not
answer yet (the VIP not up, the API server restarting) is tried again, never fatal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from tests.support.kube import rollouts
from tke.internal.provider.kube.access import from_kubeconfig
from tke.internal.provider.kube.api import ClusterAPI

INTERVAL = 0.5


async def run(kubeconfig: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ClusterAPI(from_kubeconfig(Path(kubeconfig).read_text())) as api:
        last = ""
        while not stop.is_set():
            try:
                await rollouts.play(api)
                last = ""
            except Exception as err:  # a stand-in outlives any trouble of the API: said, retried
                if str(err) != last:  # one line per new trouble, not one per tick
                    print(f"kube-controller-manager: {err}", file=sys.stderr, flush=True)
                    last = str(err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), INTERVAL)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.kube.controller_manager KUBECONFIG", file=sys.stderr)
        return 2
    asyncio.run(run(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

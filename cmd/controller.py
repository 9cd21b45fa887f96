"""tke-controller: the cluster and machine controllers that drive providers.

Usage: tke-controller [--config FILE]

Exit codes: 0 after SIGINT/SIGTERM, 2 for a configuration error, 1 when it cannot run at all
(its metrics port taken, a certificate file missing). Nothing etcd or the apiserver does ends
it: it stops leading while etcd is away and leads again when it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tke.internal import logs, metrics
from tke.internal.config.loader import ConfigError, load
from tke.internal.controller.config import ControllerConfig
from tke.internal.controller.manager import Controller
from tke.internal.daemon import INTERRUPTED, cannot_run, run_until_stopped, tune_collector
from tke.internal.plugin.loader import PluginError
from tke.internal.provider.credentials import CredentialError


async def _serve(config: ControllerConfig) -> None:
    controller = Controller(config)
    await run_until_stopped(controller.run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tke-controller", description="Cluster and machine controllers.")
    parser.add_argument("--config", help="TOML configuration file (see deploy/controller/controller.toml)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config, ControllerConfig)
    except ConfigError as err:
        print(f"tke-controller: {err}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format)
    try:
        metrics.serve(config.metrics_address)
    except OSError as err:
        print(f"tke-controller: metrics on {config.metrics_address}: {err}", file=sys.stderr)
        return 1
    tune_collector()
    try:
        asyncio.run(_serve(config))
    except (PluginError, CredentialError) as err:
        print(f"tke-controller: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the process took SIGINT over: nothing to clean up yet
        return INTERRUPTED
    except Exception as err:
        return cannot_run("tke-controller", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())

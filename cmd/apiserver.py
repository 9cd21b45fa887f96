"""tke-apiserver: the platform's Cluster and Machine API over etcd.

Usage: tke-apiserver [--config FILE] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from tke.internal import logs
from tke.internal.apiserver.app import ApiserverConfig, serve
from tke.internal.config.loader import ConfigError, load
from tke.internal.daemon import INTERRUPTED, cannot_run, tune_collector
from tke.internal.plugin.loader import PluginError
from tke.internal.storage.store import StorageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tke-apiserver", description="The platform's Cluster and Machine API.")
    parser.add_argument("--config", help="TOML configuration file (see deploy/dev/apiserver.toml)")
    parser.add_argument(
        "--workers",
        type=int,
        help="processes sharing the TCP port (default: the configuration's `workers`, 1)",
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor of --workers
    args = parser.parse_args(argv)
    try:
        config = load(args.config, ApiserverConfig)
        if args.workers is not None:
            config = dataclasses.replace(config, workers=args.workers)
    except (ConfigError, ValueError) as err:
        print(f"tke-apiserver: {err}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format)
    if config.workers > 1 and args.worker is None:
        from tke.internal.apiserver.workers import supervise

        worker_argv = [sys.executable, "-m", "tke.cmd.apiserver", "--workers", str(config.workers)]
        if args.config:
            worker_argv += ["--config", args.config]
        return supervise(worker_argv, config.workers, config.shutdown_grace)
    tune_collector()
    try:
        asyncio.run(serve(config, args.worker))
    except PluginError as err:
        print(f"tke-apiserver: {err}", file=sys.stderr)
        return 2
    except StorageError as err:
        print(f"tke-apiserver: cannot start: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"tke-apiserver: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the process took SIGINT over: nothing to clean up yet
        return INTERRUPTED
    except Exception as err:
        return cannot_run("tke-apiserver", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())

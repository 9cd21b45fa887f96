"""tke-apiserver: the platform's Cluster and Machine API over etcd.

Usage: tke-apiserver [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tke.internal import logs
from tke.internal.apiserver.app import ApiserverConfig, serve
from tke.internal.config.loader import ConfigError, load
from tke.internal.daemon import INTERRUPTED, cannot_run
from tke.internal.plugin.loader import PluginError
from tke.internal.storage.store import StorageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tke-apiserver", description="The platform's Cluster and Machine API.")
    parser.add_argument("--config", help="TOML configuration file (see deploy/dev/apiserver.toml)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config, ApiserverConfig)
    except ConfigError as err:
        print(f"tke-apiserver: {err}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format)
    try:
        asyncio.run(serve(config))
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

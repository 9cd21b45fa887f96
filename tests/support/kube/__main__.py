"""`python -m tests.support.kube`: the Kubernetes API stand-in as a process, with
kube-apiserver's flag names where they exist. It prints `ready https://HOST:PORT` on stdout
(and writes the URL to --ready-file) once it serves, and stops on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web

from tests.support.kube.rbac import Authenticator, parse_tokens
from tests.support.kube.registry import Registry
from tests.support.kube.server import KubeAPIServer, Options, tls_context
from tests.support.kube.validation import Validator


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.support.kube", description=__doc__)
    p.add_argument("--bind-address", default="127.0.0.1", help="address to listen on")
    p.add_argument("--secure-port", type=int, default=6443, help="HTTPS port (0: any free port)")
    p.add_argument("--tls-cert-file", required=True, help="serving certificate (PEM)")
    p.add_argument("--tls-private-key-file", required=True, help="its private key (PEM)")
    p.add_argument("--client-ca-file", default="", help="CA of client certificates (user = CN, groups = O)")
    p.add_argument("--token-auth-file", default="", help='bearer tokens, CSV lines: token,user,uid,"group1,group2"')
    p.add_argument("--anonymous-auth", default="true", choices=("true", "false"))
    p.add_argument("--enable-bootstrap-token-auth", default="false", choices=("true", "false"),
                   help="authenticate the bootstrap tokens of kube-system's Secrets")  # fmt: skip
    p.add_argument("--kubernetes-version", default="1.30.2", help="version it reports and validates objects for")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12")
    p.add_argument("--bookmark-interval", type=float, default=60.0, help="seconds between watch bookmarks")
    p.add_argument("--watch-history", type=int, default=5000, help="changes kept for watches to resume from")
    p.add_argument("--ready-file", default="", help="write the URL here once serving")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    tokens = parse_tokens(Path(args.token_auth_file).read_text()) if args.token_auth_file else {}
    registry = Registry(
        Validator(args.kubernetes_version), history=args.watch_history, service_cidr=args.service_cluster_ip_range
    )
    options = Options(kubernetes_version=args.kubernetes_version, bookmark_interval=args.bookmark_interval)
    bootstrap = registry.bootstrap_token_user if args.enable_bootstrap_token_auth == "true" else None
    authenticator = Authenticator(tokens, anonymous=args.anonymous_auth == "true", bootstrap=bootstrap)
    server = KubeAPIServer(registry, authenticator, options)
    context = tls_context(args.tls_cert_file, args.tls_private_key_file, args.client_ca_file)
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, args.bind_address, args.secure_port, ssl_context=context)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.ready_file:
        Path(args.ready_file).write_text(url + "\n")
    print(f"ready {url}", flush=True)
    await stop.wait()
    server.stop_watches()
    await runner.cleanup()


def main(argv: list[str]) -> int:
    args = parse(argv)
    try:
        Validator(args.kubernetes_version)
    except ValueError as err:
        print(f"kube stand-in: {err}", file=sys.stderr)
        return 2
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

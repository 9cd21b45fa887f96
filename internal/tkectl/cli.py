"""tkectl's command line: the argparse parser (with argcomplete completion), the context with its
command-line overrides, and `main`, which turns every failure into one line and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tke.internal.tkectl import config as configfile
from tke.internal.tkectl.commands import configure, kubeconfig, quota, read, session, write
from tke.internal.tkectl.commands.runtime import Runtime, for_filter, query, split_names
from tke.internal.tkectl.connection import Connection
from tke.internal.tkectl.errors import CliError, Exit
from tke.internal.tkectl.kinds.base import Kind, Query
from tke.internal.tkectl.kinds.registry import lookup, names
from tke.internal.tkectl.output import FORMATS, terminal_text

DESCRIPTION = """\
The operator's command line of the TKE platform: clusters, machines and events (tke-apiserver),
pools, bindings and allocations (tke-ipamd), users, roles and role bindings.

Exit codes: 0 ok, 1 gRPC error (its code name starts the message), 2 usage or invalid file,
3 NOT_FOUND, 4 ALREADY_EXISTS or ABORTED (changed meanwhile), 5 UNAUTHENTICATED or
PERMISSION_DENIED, 6 UNAVAILABLE or DEADLINE_EXCEEDED (server unreachable), 130 interrupted."""

EXAMPLES = """\
examples:
  tkectl config set-context dev --server 127.0.0.1:50051 --ipamd unix:/run/tke/ipamd.sock --use
  tkectl login -u admin
  tkectl create -f cluster.yaml
  tkectl get clusters -l env=prod -o wide
  tkectl get clusters,machines
  tkectl describe cluster demo
  tkectl get kubeconfig demo > ~/.kube/config
  tkectl get quota -n team-a
  tkectl apply -f cluster.yaml
  tkectl watch machines --cluster demo
  tkectl delete cluster demo"""


def _resource_completer(**_: Any) -> list[str]:
    return names()


def _seconds(text: str, *, zero: str = "") -> float:
    """A positive number of seconds (or 0, when `zero` says what it means): a call given 0 or
    -1 s could only end DEADLINE_EXCEEDED (exit 6, "server unreachable"), blaming the server for
    a typo, and a watch given -5 s ended at once with exit code 0, having watched nothing."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value == 0 and zero:
        return value
    if not value > 0 or value == float("inf"):
        allowed = f"0 ({zero}) or a positive number" if zero else "a positive number"
        raise argparse.ArgumentTypeError(f"{text!r} must be {allowed} of seconds")
    return value


_watch_seconds = functools.partial(_seconds, zero="until Ctrl-C")


def _globals(parser: argparse.ArgumentParser, sub: bool) -> None:
    """Options accepted before and after the verb; after it they win."""
    d: Any = argparse.SUPPRESS if sub else None
    g = parser.add_argument_group("connection")
    g.add_argument("--config", default=d if sub else "", help="configuration file (default $TKECONFIG, ~/.tke/config)")
    g.add_argument("--context", default=d if sub else "", help="context to use instead of the current one")
    g.add_argument("--server", default=d, help="apiserver address (host:port or unix:/path) for this call")
    g.add_argument("--ipamd", default=d, help="tke-ipamd address for this call")
    g.add_argument("--token", default=d, help="bearer token for this call")
    g.add_argument("-n", "--tenant", default=d, help="tenant to act in (default: the context's, else the caller's)")
    g.add_argument("--request-timeout", type=_seconds, default=d if sub else 30.0, help="seconds per call (30)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tkectl",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _globals(top, sub=False)
    verbs = top.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    def verb(name: str, help_: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_, description=help_)
        _globals(p, sub=True)
        return p

    def listing(p: argparse.ArgumentParser, output: bool = True) -> None:
        p.add_argument("-l", "--selector", default="", help="label selector, e.g. 'env=prod,tier in (web,api)'")
        p.add_argument("-A", "--all-tenants", action="store_true", help="every tenant (platform administrators)")
        p.add_argument("--cluster", default="", help="machines: only those of this cluster")
        p.add_argument("--for", dest="for_", default="", metavar="KIND/NAME", help="events: only about this object")
        p.add_argument("--pool", default="", help="allocations: only this pool")
        p.add_argument("--node", default="", help="allocations: only this node")
        p.add_argument("--pod-namespace", default="", help="bindings, allocations: only this Kubernetes namespace")
        p.add_argument("--workload", default="", help="allocations: only this workload (with --pod-namespace)")
        p.add_argument("--pod", default="", help="allocations: only this pod (with --pod-namespace)")
        if output:
            p.add_argument(
                "-o", "--output", choices=FORMATS, default="table", help="table (default), wide, yaml, json, name"
            )

    def resource(p: argparse.ArgumentParser, nargs: str, what: str) -> None:
        arg = p.add_argument("args", nargs=nargs, metavar="TYPE [NAME...]", help=what)
        arg.completer = _resource_completer  # type: ignore[attr-defined]

    p = verb("get", "list objects, or show the named ones; or a kubeconfig for a cluster; or a tenant's quotas")
    resource(
        p,
        "+",
        f"resource type ({', '.join(names())}), then names; or TYPE/NAME; or kubeconfig CLUSTER; or quota",
    )
    listing(p)
    p.add_argument("--admin", action="store_true", help="kubeconfig: also be cluster-admin in the cluster")
    p.add_argument("--validity", default="", help="kubeconfig: how long it lasts, such as 8h or 30m (default: 8h)")
    p = verb("describe", "show objects in detail, with their conditions and events")
    resource(p, "+", "resource type, then names (none: every object that matches -l)")
    listing(p, output=False)
    p = verb("watch", "print changes as they happen (clusters, machines, events)")
    resource(p, "+", "resource type, then optionally one name")
    listing(p)
    p.add_argument("--timeout", type=_watch_seconds, default=0.0, help="stop after this many seconds (default: Ctrl-C)")
    for name, help_ in (
        ("create", "create objects from files"),
        ("apply", "create objects, or update them to match files"),
    ):
        p = verb(name, help_)
        p.add_argument("-f", "--filename", action="append", default=[], help="YAML or JSON file, - for stdin")
    p = verb("edit", "edit an object in $EDITOR (YAML) and update it")
    resource(p, "+", "resource type and name")
    p = verb("delete", "delete objects by name, label selector or file")
    resource(p, "*", "resource type, then names")
    p.add_argument("-f", "--filename", action="append", default=[], help="delete the objects of these files")
    p.add_argument("-l", "--selector", default="", help="delete every object that matches")
    p.add_argument("--ignore-not-found", action="store_true", help="a missing object is not an error")
    p = verb("login", "sign in (AuthService.Login) and keep the token in the context")
    p.add_argument("-u", "--username", default="", help="user name (default: the context's)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    verb("logout", "revoke the context's token (AuthService.Logout) and forget it")
    p = verb("completion", 'print the shell completion script: eval "$(tkectl completion bash)"')
    p.add_argument("shell", choices=("bash", "zsh", "fish", "tcsh"))
    _config_parser(verb("config", "manage contexts in the configuration file"))
    return top


def _config_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="config_verb", metavar="SUBCOMMAND", required=True)
    s = sub.add_parser("set-context", help="create or change a context (--server, --ipamd, --token, -n too)")
    _globals(s, sub=True)
    s.add_argument("name")
    s.add_argument("--use", action="store_true", help="also make it the current context")
    for f in configure.CONTEXT_FIELDS:
        if f in ("server", "token", "tenant"):
            continue  # the global --server, --token and --tenant
        s.add_argument(f"--{f.replace('_', '-')}", dest=f, default=None)
    s.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None, help="TLS with the system's roots")
    for f in configure.IPAMD_FIELDS:
        flag = "--ipamd" if f == "server" else f"--ipamd-{f.replace('_', '-')}"
        if f != "server":
            s.add_argument(flag, dest=f"ipamd_{f}", default=None)
    s.add_argument("--ipamd-tls", action=argparse.BooleanOptionalAction, default=None)
    # Every command takes the global options after its verb too (`tkectl config view --config FILE`).
    u = sub.add_parser("use-context", help="select the current context")
    _globals(u, sub=True)
    u.add_argument("name")
    d = sub.add_parser("delete-context", help="remove a context")
    _globals(d, sub=True)
    d.add_argument("name")
    _globals(sub.add_parser("get-contexts", help="list the contexts"), sub=True)
    _globals(sub.add_parser("current-context", help="print the current context's name"), sub=True)
    v = sub.add_parser("view", help="print the configuration (tokens redacted)")
    _globals(v, sub=True)
    v.add_argument("--show-secrets", action="store_true")


def runtime(args: argparse.Namespace) -> Runtime:
    cfg = configfile.load(configfile.config_path(args.config))
    if args.verb == "login" and args.context and args.context not in cfg.contexts:
        name, ctx = args.context, configfile.Context()  # login creates the context
    else:
        name, ctx = cfg.context(args.context)
    if args.server:
        ctx = replace(ctx, server=args.server)
    if args.ipamd:
        ctx = replace(ctx, ipamd=replace(ctx.ipamd, server=args.ipamd))
    if args.token:
        ctx = replace(ctx, token=args.token)
    conn = Connection(name, ctx, args.request_timeout)
    return Runtime(cfg, name, ctx, conn, tenant=args.tenant if args.tenant is not None else ctx.tenant)


async def run(args: argparse.Namespace) -> Exit:
    if args.verb == "config":
        return _config(args)
    if args.verb == "completion":
        from argcomplete.shell_integration import shellcode

        sys.stdout.write(shellcode(["tkectl"], shell=args.shell))
        return Exit.OK
    rt = runtime(args)
    try:
        return await _dispatch(rt, args)
    finally:
        await rt.conn.close()


async def _dispatch(rt: Runtime, args: argparse.Namespace) -> Exit:
    verb = args.verb
    if verb == "login":
        return await session.login(rt, args.username, args.password_stdin)
    if verb == "logout":
        return await session.logout(rt)
    if verb == "create":
        return await write.create(rt, args.filename)
    if verb == "apply":
        return await write.apply(rt, args.filename)
    if args.args and split_names(args.args)[0] in quota.TYPE_NAMES and verb != "get":
        raise CliError(
            Exit.USAGE, f"quotas are read-only, set by the apiserver's [quotas]: tkectl get quota, not {verb}"
        )
    if verb == "delete":
        kind = None
        names_: list[str] = []
        q = None
        if args.args:
            type_, names_ = split_names(args.args)
            kind = lookup(type_)
            q = query(kind, rt, selector=args.selector, all_tenants=False, filters={})
        return await write.delete(rt, kind, names_, files=args.filename, query=q, ignore_missing=args.ignore_not_found)
    type_, names_ = split_names(args.args)
    if verb == "get" and type_ in quota.TYPE_NAMES:
        _no_listing_options(args, "quotas")
        return await quota.get_quota(rt, names_, args.output)
    if verb == "get" and type_ in kubeconfig.TYPE_NAMES:
        return await kubeconfig.get_kubeconfig(rt, names_, admin=args.admin, validity=args.validity)
    if getattr(args, "admin", False) or getattr(args, "validity", ""):
        raise CliError(Exit.USAGE, "--admin and --validity are for `tkectl get kubeconfig CLUSTER`")
    if verb == "get" and "," in type_:
        return await _get_many(rt, type_.split(","), names_, args)
    kind = lookup(type_)
    if verb == "edit":
        if len(names_) != 1:
            raise CliError(Exit.USAGE, "edit takes one object: tkectl edit TYPE NAME")
        return await write.edit(rt, kind, names_[0])
    q = _query(kind, rt, args)
    if verb == "get":
        return await read.get(rt, kind, names_, q, args.output)
    if verb == "describe":
        return await read.describe_cmd(rt, kind, names_, q)
    if len(names_) > 1:
        raise CliError(Exit.USAGE, "watch takes at most one name")
    return await read.watch(rt, kind, names_[0] if names_ else "", q, fmt=args.output, seconds=args.timeout)


def _no_listing_options(args: argparse.Namespace, what: str) -> None:
    """Refuse the listing options (-l, -A, filters) for something that is not a list."""
    given = [
        flag
        for flag, value in (
            ("-l/--selector", args.selector),
            ("-A/--all-tenants", args.all_tenants),
            ("--cluster", args.cluster),
            ("--for", args.for_),
            ("--pool", args.pool),
            ("--node", args.node),
            ("--pod-namespace", args.pod_namespace),
            ("--workload", args.workload),
            ("--pod", args.pod),
            ("--admin", args.admin),
            ("--validity", args.validity),
        )
        if value
    ]
    if given:
        raise CliError(Exit.USAGE, f"{', '.join(given)} do not apply to {what} (one tenant: -n/--tenant)")


async def _get_many(rt: Runtime, types: list[str], names: list[str], args: argparse.Namespace) -> Exit:
    """`get clusters,machines`: several types at once, as kubectl takes them."""
    if names or not all(types):
        raise CliError(Exit.USAGE, "list several types as TYPE,TYPE without names: tkectl get clusters,machines")
    kinds = [lookup(t) for t in types]
    return await read.get_many(rt, [(k, _query(k, rt, args)) for k in kinds], args.output)


def _query(kind: Kind, rt: Runtime, args: argparse.Namespace) -> Query:
    """The listing options of get, describe and watch, for `kind`."""
    filters = {
        "cluster": args.cluster,
        "pool": args.pool,
        "node": args.node,
        "pod-namespace": args.pod_namespace,
        "workload": args.workload,
        "pod": args.pod,
        **for_filter(args.for_),
    }
    return query(kind, rt, selector=args.selector, all_tenants=args.all_tenants, filters=filters)


def _config(args: argparse.Namespace) -> Exit:
    cfg = configfile.load(configfile.config_path(args.config))
    v = args.config_verb
    if v == "set-context":
        values = vars(args) | {"ipamd_server": args.ipamd}
        text = configure.set_context(cfg, args.name, values, args.use)
    elif v == "use-context":
        text = configure.use_context(cfg, args.name)
    elif v == "delete-context":
        text = configure.delete_context(cfg, args.name)
    elif v == "get-contexts":
        text = configure.get_contexts(cfg)
    elif v == "current-context":
        if not cfg.current_context:
            raise CliError(Exit.NOT_FOUND, f"NOT_FOUND: no current context in {cfg.path}", "NOT_FOUND")
        text = cfg.current_context
    else:
        text = configure.view(cfg, args.show_secrets)
    print(terminal_text(text), flush=True)
    return Exit.OK


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    try:
        import argcomplete

        argcomplete.autocomplete(p)
    except ImportError:  # completion is a convenience; tkectl works without it
        pass
    args = p.parse_args(argv)
    try:
        return int(asyncio.run(run(args)))
    except CliError as err:
        print(f"tkectl: {terminal_text(err.message)}", file=sys.stderr, flush=True)
        return int(err.exit_code)
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED if args.verb != "watch" else Exit.OK)
    except BrokenPipeError:  # `tkectl get ... | head`
        return int(Exit.OK)
    except Exception as err:  # never a traceback: one line that says what broke
        print(f"tkectl: unexpected error: {type(err).__name__}: {terminal_text(str(err))}", file=sys.stderr, flush=True)
        return int(Exit.ERROR)

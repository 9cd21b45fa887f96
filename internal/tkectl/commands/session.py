"""login and logout (tke.auth.v1.AuthService): the token goes into the context."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import replace

from tke.auth.v1 import accounts_pb2, accounts_pb2_grpc
from tke.internal.tkectl.commands.runtime import Runtime
from tke.internal.tkectl.config import MAX_TOKEN, token_error
from tke.internal.tkectl.connection import APISERVER
from tke.internal.tkectl.errors import CliError, Exit, from_rpc, usage
from tke.internal.tkectl.kinds.base import time_text

DEFAULT_CONTEXT = "default"


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if os.environ.get("TKE_PASSWORD"):
        return os.environ["TKE_PASSWORD"]
    if not sys.stdin.isatty():
        raise usage("no password: pass --password-stdin, set $TKE_PASSWORD, or run in a terminal")
    try:
        return getpass.getpass("Password: ")
    except EOFError:
        raise usage("no password given") from None


async def login(rt: Runtime, username: str, password_stdin: bool) -> Exit:
    user = username or rt.context.username
    if not user:
        raise usage("no user name: pass -u/--username (or set username in the context)")
    password = _password(password_stdin)
    stub = accounts_pb2_grpc.AuthServiceStub(rt.conn.channel(APISERVER))
    try:
        resp = await stub.Login(accounts_pb2.LoginRequest(username=user, password=password), timeout=rt.conn.timeout)
    except Exception as err:
        if hasattr(err, "code") and hasattr(err, "details"):
            raise from_rpc(err, rt.conn.target(APISERVER)) from None
        raise
    # (a server's answer that is no header value would be saved, then break every later call)
    if not resp.token or token_error(resp.token):
        raise CliError(
            Exit.ERROR,
            f"{rt.conn.target(APISERVER)} answered the login with no usable token (one line of at most "
            f"{MAX_TOKEN} printable ASCII characters); the configuration is unchanged",
        )
    name = rt.context_name or DEFAULT_CONTEXT
    rt.config.contexts[name] = replace(rt.context, token=resp.token, username=user)
    if not rt.config.current_context:
        rt.config.current_context = name
    _save(rt)
    rt.print(f'logged in as {user} (context "{name}", token valid until {time_text(resp.expires_at)})')
    return Exit.OK


async def logout(rt: Runtime) -> Exit:
    if not rt.context.token:
        rt.print("not logged in")
        return Exit.OK
    stub = accounts_pb2_grpc.AuthServiceStub(rt.conn.channel(APISERVER))
    try:
        await stub.Logout(accounts_pb2.LogoutRequest(), metadata=rt.conn.metadata(APISERVER), timeout=rt.conn.timeout)
    except Exception as err:
        if not (hasattr(err, "code") and hasattr(err, "details")):
            raise
        problem = from_rpc(err, rt.conn.target(APISERVER))
        if problem.code != "UNAUTHENTICATED":  # an expired or revoked token is logged out already
            raise problem from None
    if rt.context_name:
        rt.config.contexts[rt.context_name] = replace(rt.config.contexts[rt.context_name], token="")
        _save(rt)
    rt.print("logged out")
    return Exit.OK


def _save(rt: Runtime) -> None:
    try:
        rt.config.save()
    except OSError as err:
        raise CliError(Exit.ERROR, f"cannot write {rt.config.path}: {err.strerror}") from None

"""Channels to the apiserver and tke-ipamd of a context, opened on first use, and the
credentials sent with every call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from tke.internal.tkectl.config import Context, Endpoint, token_error
from tke.internal.tkectl.errors import usage

APISERVER = "apiserver"
IPAMD = "ipamd"


class Connection:
    """Where calls go: `channel(APISERVER)` or `channel(IPAMD)`; `timeout` bounds each unary call."""

    def __init__(self, context_name: str, context: Context, timeout: float) -> None:
        self.context_name = context_name
        self.context = context
        self.timeout = timeout
        self._channels: dict[str, Any] = {}

    def endpoint(self, which: str) -> Endpoint:
        endpoint = self.context.ipamd if which == IPAMD else self.context
        if not endpoint.server:
            where = f'context "{self.context_name}"' if self.context_name else "the configuration"
            flag = "--ipamd" if which == IPAMD else "--server"
            raise usage(
                f"{where} names no {which} address: pass {flag} ADDRESS, or set it with "
                f"`tkectl config set-context NAME {flag} ADDRESS`"
            )
        return endpoint

    def target(self, which: str) -> str:
        """For messages: "the apiserver at 127.0.0.1:50051"."""
        endpoint = self.context.ipamd if which == IPAMD else self.context
        return f"the {which} at {endpoint.server}" if endpoint.server else f"the {which}"

    def channel(self, which: str) -> Any:
        if which not in self._channels:
            self._channels[which] = _open(self.endpoint(which))
        return self._channels[which]

    def metadata(self, which: str) -> tuple[tuple[str, str], ...]:
        token = (self.context.ipamd if which == IPAMD else self.context).token
        if not token:
            return ()
        if err := token_error(token):
            # (grpc would refuse the header with a traceback-like error; the token is never shown)
            where = f'context "{self.context_name}"' if self.context_name else "the configuration"
            flag = "--ipamd-token" if which == IPAMD else "--token"
            raise usage(f"the {which} token of {where} (or {flag}) {err}: set it again, or log in again")
        return (("authorization", f"Bearer {token}"),)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def _open(endpoint: Endpoint) -> Any:
    options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
    if not endpoint.secure:
        return grpc.aio.insecure_channel(endpoint.server, options=options)
    try:
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(endpoint.ca_file).read_bytes() if endpoint.ca_file else None,
            private_key=Path(endpoint.key_file).read_bytes() if endpoint.key_file else None,
            certificate_chain=Path(endpoint.cert_file).read_bytes() if endpoint.cert_file else None,
        )
    except OSError as err:
        raise usage(f"cannot read a TLS file: {err.filename}: {err.strerror}") from None
    if endpoint.tls_server_name:
        options.append(("grpc.ssl_target_name_override", endpoint.tls_server_name))
    return grpc.aio.secure_channel(endpoint.server, creds, options=options)

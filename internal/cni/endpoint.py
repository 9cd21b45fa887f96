"""Where tke-ipamd listens, as both cni-switch and tke-ipamc name it in their configuration:

"ipamd": "/run/tke/ipamd.sock"
"ipamd": {"address": "10.0.0.5:9443", "timeout": 2.0,
          "tls": {"caFile": "...", "certFile": "...", "keyFile": "...", "serverName": "..."}}
"""

from __future__ import annotations

import os

from tke.internal.cni.errors import INVALID_NETWORK_CONFIG, CNIError
from tke.internal.cni.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def invalid(msg: str, details: str = "") -> CNIError:
    return CNIError(INVALID_NETWORK_CONFIG, msg, details)


def path_option(value: str, where: str) -> str:
    """`value`, an option naming a file, socket or directory; code 7 when no path can be it.

    JSON strings may hold NUL, file system paths cannot: such a stateDir ended in an internal
    error (101), such an ipamd socket in "try again later" (11) and a DEL queueing a release
    that could never be replayed. Checked when the configuration is read, before anything."""
    if "\x00" in value:
        raise invalid(f"{where}: a path cannot hold a NUL character", repr(value))
    return value


class IpamdEndpoint(Record):
    """Where tke-ipamd listens: a unix socket path (or unix:///path) or host:port; TLS files for
    host:port. `timeout` is seconds per call."""

    address: str
    timeout: float = 2.0
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    @classmethod
    def from_json(cls, data: Any, where: str) -> IpamdEndpoint:
        if isinstance(data, str):
            data = {"address": data}
        if not isinstance(data, dict):
            raise invalid(f"{where}: expected an object or an address")
        known = {"address", "timeout", "tls"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise invalid(f"{where}.{unknown[0]}: unknown option", f"known: {', '.join(sorted(known))}")
        address = data.get("address")
        if not isinstance(address, str) or not address:
            raise invalid(f"{where}.address: the ipamd address is required")
        path_option(address, f"{where}.address")
        timeout = data.get("timeout", 2.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise invalid(f"{where}.timeout: expected a positive number of seconds")
        tls = data.get("tls") or {}
        if not isinstance(tls, dict):
            raise invalid(f"{where}.tls: expected an object")
        files = {}
        for key, attr in (("caFile", "ca_file"), ("certFile", "cert_file"), ("keyFile", "key_file")):
            value = tls.get(key, "")
            if not isinstance(value, str):
                raise invalid(f"{where}.tls.{key}: expected a path")
            files[attr] = path_option(value, f"{where}.tls.{key}")
        server_name = tls.get("serverName", "")
        if not isinstance(server_name, str):
            raise invalid(f"{where}.tls.serverName: expected a string")
        return cls(address=address, timeout=float(timeout), server_name=server_name, **files)

    @property
    def is_unix(self) -> bool:
        return self.address.startswith(("unix:", "/", "."))

    @property
    def socket_path(self) -> str:
        """The file system path of a unix socket address (`/p`, `unix:/p`, `unix:///p`)."""
        address = self.address
        if address.startswith("unix:"):
            address = "/" + address[len("unix:") :].lstrip("/")
        return os.path.abspath(address)

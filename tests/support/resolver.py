"""A DNS the tenant controls, for tests: each name answers its scripted addresses in turn, one per
lookup (the last answer repeats), which is how DNS rebinding looks to the controller: one
address to whoever checks, another to whoever connects.

`ScriptedResolver` is the Resolver seam (tke.internal.provider.addresses) and, through
`patched`, the host's getaddrinfo too, so that clients that look names up by themselves (httpx,
asyncssh, or code that checks first and lets them resolve again) get the same script. Names it
was not given are looked up by the real getaddrinfo; `asked` counts the lookups of each name.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from tke.internal.provider.addresses import IPAddress


class ScriptedResolver:
    def __init__(self, answers: Mapping[str, Sequence[str]]) -> None:
        """`answers`: name -> the address of its first lookup, its second, ... (the last
        repeats); an empty script: the name does not resolve."""
        self.answers = {name.lower(): [ipaddress.ip_address(a) for a in script] for name, script in answers.items()}
        self.asked: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()  # getaddrinfo runs in the loop's executor threads
        self._real = socket.getaddrinfo

    def answer(self, host: str) -> IPAddress | None:
        """The next answer for `host` (a lookup): None for a name that does not resolve."""
        name = host.lower().rstrip(".")
        with self._lock:
            script = self.answers[name]
            turn = self.asked[name]
            self.asked[name] += 1
        return script[min(turn, len(script) - 1)] if script else None

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        ip = self.answer(host)
        if ip is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ip]

    def getaddrinfo(  # noqa: PLR0917 - socket.getaddrinfo's signature
        self, host: str | bytes | None, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name.lower().rstrip(".") not in self.answers:
            return self._real(host, port, family, type, proto, flags)
        ip = self.answer(name)
        if ip is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        port_number = int(port or 0)
        if ip.version == 6:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (str(ip), port_number, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (str(ip), port_number))]

    @contextlib.contextmanager
    def patched(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedResolver]:
        """This script as the host's getaddrinfo for the block."""
        with monkeypatch.context() as m:
            m.setattr(socket, "getaddrinfo", self.getaddrinfo)
            yield self

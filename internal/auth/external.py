"""What the external authenticator and authorizer share: a channel to a service outside the
platform (plaintext, TLS or mutual TLS) and a short-lived cache of its answers, bounded in size
so that a flood of distinct credentials cannot grow memory."""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

from tke.internal.rpc.client import channel

MAX_CACHE = 10_000
MISSING = object()


class ExternalService:
    default_cache_ttl = 5.0

    def __init__(
        self,
        *,
        address: str,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        timeout: float = 2.0,
        cache_ttl: float | None = None,
    ) -> None:
        self.channel = channel(address, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        self.timeout = timeout
        self.cache_ttl = self.default_cache_ttl if cache_ttl is None else cache_ttl
        self._cache: dict[Hashable, tuple[float, Any]] = {}

    def cached(self, key: Hashable) -> Any:
        """The remembered answer for `key`, or MISSING."""
        entry = self._cache.get(key)
        if entry is None or entry[0] < time.monotonic():
            return MISSING
        return entry[1]

    def remember(self, key: Hashable, value: Any) -> None:
        if len(self._cache) >= MAX_CACHE:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + self.cache_ttl, value)

    async def stop(self) -> None:
        await self.channel.close()

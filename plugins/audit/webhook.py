"""Audit events POSTed as a JSON array to an HTTP endpoint (a SIEM, a log pipeline). Entry
point `webhook` of `tke.audit`; options `url`, `timeout` (seconds, default 5, for each of
connecting, sending and waiting for the answer), `headers` (a table of extra headers; for
secrets name an environment variable in `token_env`, sent as a bearer token). An answer other
than 2xx, redirects included, is a failure; failures drop the batch, and the Auditor counts
and logs them. The Auditor's bounded queue in front of the sink decides what a batch is."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Sequence
from typing import Any

import httpx

from tke.internal.auth.audit import AuditEvent


class Webhook:
    def __init__(
        self,
        context: Any = None,
        *,
        url: str,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        token_env: str = "",
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http:// or https://, got {url!r}")
        self.url = url
        self.timeout = timeout
        self.headers = {"content-type": "application/json", **(headers or {})}
        if token_env:
            token = os.environ.get(token_env)
            if not token:
                raise ValueError(f"environment variable {token_env} is not set")
            self.headers["authorization"] = f"Bearer {token}"
        # The system's trust store; proxies from the environment (HTTPS_PROXY, NO_PROXY), as
        # an operator's log pipeline may sit behind one.
        self._http = httpx.AsyncClient(
            headers=self.headers, timeout=timeout, verify=ssl.create_default_context(), trust_env=True
        )

    async def write(self, events: Sequence[AuditEvent]) -> None:
        body = json.dumps([e.to_dict() for e in events]).encode()
        # The answer's body is never read: whatever the endpoint sends back costs no memory.
        async with self._http.stream("POST", self.url, content=body) as response:
            response.raise_for_status()

    async def close(self) -> None:
        await self._http.aclose()

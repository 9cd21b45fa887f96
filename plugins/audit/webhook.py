"""Audit events POSTed as a JSON array to an HTTP endpoint (a SIEM, a log pipeline). Entry
point `webhook` of `tke.audit`; options `url`, `timeout` (seconds, default 5), `headers` (a
table of extra headers; for secrets name an environment variable in `token_env`, sent as a
bearer token). Failures drop the batch; the Auditor counts and logs them."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Sequence
from typing import Any

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

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()

    async def write(self, events: Sequence[AuditEvent]) -> None:
        body = json.dumps([e.to_dict() for e in events]).encode()
        await asyncio.to_thread(self._post, body)

    async def close(self) -> None:
        return None

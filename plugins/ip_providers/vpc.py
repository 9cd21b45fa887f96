"""A cloud-VPC IP provider: reserves, binds and releases addresses through a VPC's HTTP API.

The API it speaks (JSON over HTTP(S), bearer token):
  GET    /v1/subnets                                  {"subnets": [{"id", "cidr", "gateway", "zone"}]}
  PUT    /v1/subnets/<id>/addresses/<ip>           {"owner"}          reserve (200; 409: another owner's)
  PUT    /v1/subnets/<id>/addresses/<ip>/binding   {"node", "owner"}  bind (200; 409: not reserved for owner)
  DELETE /v1/subnets/<id>/addresses/<ip>?owner=...                    release (200; 404 unknown; 409 not
                                                                      the owner's: left alone, a success)

A cloud's real API is adapted to this shape by a small gateway, or by a plugin of its own
implementing IPProvider. Every call has a timeout; timeouts, connection errors, 429 and 5xx are
retried with exponential backoff within `retries`, then raise ProviderUnavailable; other 4xx
raise ProviderRefused. Every operation is idempotent on the server side, so a retry after a
timeout that did apply is harmless.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
from typing import Any
from urllib.parse import quote

import httpx

from tke.internal.ipamd.provider import ProviderRefused, ProviderUnavailable, Subnet

_RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# The largest answer read; a larger one is a failed attempt (memory stays bounded).
MAX_ANSWER = 16 * 1024 * 1024


class _AnswerTooLarge(Exception):
    def __str__(self) -> str:
        return f"answer larger than {MAX_ANSWER} bytes"


def _json_object(body: bytes) -> dict[str, Any]:
    """The answer's JSON object; {} for an empty, non-JSON or non-object answer."""
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class VPCProvider:
    """Options: endpoint (http(s)://host:port), token_env (name of the environment variable
    holding the bearer token), timeout (seconds per attempt), retries (attempts after the
    first), backoff (first delay, seconds, doubled per retry), ca_file (for https)."""

    def __init__(
        self,
        endpoint: str,
        *,
        token_env: str = "",
        timeout: float = 3.0,
        retries: int = 3,
        backoff: float = 0.2,
        ca_file: str = "",
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {endpoint!r} must start with http:// or https://")
        # "3s" or -1 would only fail at the first call, as an UNAVAILABLE per allocation.
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 0:
            raise ValueError(f"backoff must be a number of seconds >= 0, not {backoff!r}")
        token = os.environ.get(token_env, "") if token_env else ""
        if token_env and not token:
            raise ValueError(f"environment variable {token_env} (token_env) is not set")
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=endpoint.rstrip("/"),
            headers=headers,
            # The system's trust store, or only the given CA.
            verify=ssl.create_default_context(cafile=ca_file or None),
            # Each attempt has one deadline over the whole exchange (see _call).
            timeout=None,
            # No queue in front of a slow API: a burst opens connections, not a backlog.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
            # The VPC API is reached directly, whatever proxy the environment names.
            trust_env=False,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _exchange(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        async with self._http.stream(method, path, json=body) as resp:
            answer = bytearray()
            async for chunk in resp.aiter_bytes():
                answer += chunk
                if len(answer) > MAX_ANSWER:
                    raise _AnswerTooLarge()
        return resp.status_code, _json_object(bytes(answer))

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        delay = self._backoff
        last = ""
        for attempt in range(self._retries + 1):
            try:
                async with asyncio.timeout(self._timeout):
                    status, payload = await self._exchange(method, path, body)
            except (httpx.HTTPError, OSError, _AnswerTooLarge) as err:  # OSError: the deadline's TimeoutError too
                last = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            else:
                if status not in _RETRYABLE_STATUS:
                    return status, payload
                last = f"HTTP {status}"
            if attempt < self._retries:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay *= 2
        raise ProviderUnavailable(f"VPC API {method} {path}: {last} after {self._retries + 1} attempts")

    @staticmethod
    def _check(method: str, path: str, status: int, payload: dict[str, Any], ok: tuple[int, ...]) -> None:
        if status in ok:
            return
        message = payload.get("message") or payload.get("error") or ""
        raise ProviderRefused(f"VPC API {method} {path}: HTTP {status} {message}".rstrip())

    async def subnets(self) -> list[Subnet]:
        status, payload = await self._call("GET", "/v1/subnets")
        self._check("GET", "/v1/subnets", status, payload, (200,))
        return [
            Subnet(id=s["id"], cidr=s["cidr"], gateway=s.get("gateway", ""), zone=s.get("zone", ""))
            for s in payload.get("subnets", [])
        ]

    @staticmethod
    def _address(subnet_id: str, ip: str) -> str:
        return f"/v1/subnets/{quote(subnet_id, safe='')}/addresses/{quote(ip, safe='')}"

    async def reserve(self, subnet_id: str, ip: str, owner: str) -> None:
        path = self._address(subnet_id, ip)
        status, payload = await self._call("PUT", path, {"owner": owner})
        self._check("PUT", path, status, payload, (200, 201))

    async def bind(self, subnet_id: str, ip: str, node: str, owner: str) -> None:
        path = self._address(subnet_id, ip) + "/binding"
        status, payload = await self._call("PUT", path, {"node": node, "owner": owner})
        self._check("PUT", path, status, payload, (200, 201))

    async def release(self, subnet_id: str, ip: str, owner: str) -> None:
        path = self._address(subnet_id, ip)
        status, payload = await self._call("DELETE", f"{path}?owner={quote(owner, safe='')}")
        # 409: the address is reserved for another owner now; it is not ours to free.
        self._check("DELETE", path, status, payload, (200, 204, 404, 409))

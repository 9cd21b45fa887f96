"""The imported cluster provider: adopts an existing Kubernetes cluster, anywhere, by its API
server URL and a credential (bearer token and CA certificate). It installs nothing: it
verifies that the API server answers, records its version and address, and keeps checking
/healthz. Deleting an imported cluster only forgets it."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tke.internal.provider.contract import ClusterContext
from tke.internal.provider.errors import PermanentError, TemporaryError
from tke.internal.provider.steps import Step
from tke.internal.rpc.errors import FieldViolation
from tke.platform.v1 import cluster_pb2


class ImportedClusterProvider:
    name = "imported"

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.create_steps = [
            Step("VerifyAPIServer", self.verify, max_retries=10, description="the API server answers /version"),
            Step("RecordAddresses", self.record_addresses, description="status.addresses"),
        ]
        self.delete_steps: list[Step[ClusterContext]] = []
        self.scale_steps: list[Step[ClusterContext]] = []
        self.upgrade_steps: list[Step[ClusterContext]] = []

    def validate(self, cluster: cluster_pb2.Cluster) -> list[FieldViolation]:
        out = []
        if not cluster.spec.api_server_url:
            out.append(FieldViolation("cluster.spec.api_server_url", "is required for an imported cluster"))
        if not cluster.spec.credential_ref:
            out.append(FieldViolation("cluster.spec.credential_ref", "is required for an imported cluster"))
        return out

    def _get(self, ctx: ClusterContext, path: str) -> bytes:
        spec = ctx.cluster.spec
        violations = self.validate(ctx.cluster)
        if violations:
            raise PermanentError("; ".join(f"{v.field}: {v.description}" for v in violations))
        cred = ctx.tools.credentials.get(spec.credential_ref)
        context = ssl.create_default_context(cadata=cred.ca_cert.decode() if cred.ca_cert else None)
        request = urllib.request.Request(spec.api_server_url.rstrip("/") + path)
        if cred.token:
            request.add_header("Authorization", f"Bearer {cred.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise PermanentError(f"{spec.api_server_url}: credential refused ({err.code})") from None
            raise TemporaryError(f"{spec.api_server_url}{path}: HTTP {err.code}") from None
        except ssl.SSLCertVerificationError as err:
            raise PermanentError(f"{spec.api_server_url}: certificate not trusted: {err.verify_message}") from None
        except (urllib.error.URLError, OSError) as err:
            reason: Any = getattr(err, "reason", err)
            raise TemporaryError(f"{spec.api_server_url}: {reason}") from None

    async def verify(self, ctx: ClusterContext) -> None:
        body = await asyncio.to_thread(self._get, ctx, "/version")
        try:
            version = json.loads(body)["gitVersion"]
        except (ValueError, KeyError, TypeError):
            raise TemporaryError("/version did not return a Kubernetes version") from None
        ctx.obj.status.version = str(version).removeprefix("v")

    async def record_addresses(self, ctx: ClusterContext) -> None:
        url = urllib.parse.urlsplit(ctx.cluster.spec.api_server_url)
        status = ctx.obj.status
        del status.addresses[:]
        status.addresses.add(type="Advertise", host=url.hostname or "", port=url.port or 443, path=url.path)

    async def check_health(self, ctx: ClusterContext) -> str:
        body = await asyncio.to_thread(self._get, ctx, "/healthz")
        text = body.decode(errors="replace").strip()
        if text != "ok":
            raise TemporaryError(f"/healthz answered {text[:100]!r}")
        return "healthz ok"

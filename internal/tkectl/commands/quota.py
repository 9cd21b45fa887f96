"""get quota [-n TENANT] [-o yaml|json]: a tenant's quotas and what it uses of each
(QuotaService/Get), as `kubectl get resourcequota` shows used and hard. The table has a row per
resource: RESOURCE, USED, LIMIT and QUOTA (the option that sets the limit); -o yaml and -o json
print the answer in the proto's JSON mapping with `kind: Quota`, zero values included (a used
of 0 is an answer, not a missing field)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from tke.internal.tkectl.commands.runtime import Runtime
from tke.internal.tkectl.connection import APISERVER
from tke.internal.tkectl.documents import dump_json, dump_yaml
from tke.internal.tkectl.errors import Exit, from_rpc, usage
from tke.internal.tkectl.output import table
from tke.platform.v1 import quota_pb2, quota_pb2_grpc

TYPE_NAMES = ("quota", "quotas")
HEADERS = ("RESOURCE", "USED", "LIMIT", "QUOTA")


async def get_quota(rt: Runtime, names: list[str], fmt: str) -> Exit:
    if names:
        raise usage("get quota takes no name: it shows one tenant's quotas, the one -n/--tenant names")
    if rt.tenant == "*":
        raise usage("quotas are shown one tenant at a time: -n/--tenant cannot be '*'")
    if fmt == "name":
        raise usage("-o name does not apply to quotas: use table, yaml or json")
    stub = quota_pb2_grpc.QuotaServiceStub(rt.conn.channel(APISERVER))
    try:
        got = await stub.Get(
            quota_pb2.GetQuotaRequest(tenant_id=rt.tenant),
            metadata=rt.conn.metadata(APISERVER),
            timeout=rt.conn.timeout,
        )
    except Exception as err:
        if hasattr(err, "code") and hasattr(err, "details"):
            raise from_rpc(err, rt.conn.target(APISERVER)) from None
        raise
    if fmt in ("yaml", "json"):
        data: dict[str, Any] = {
            "kind": "Quota",
            **json_format.MessageToDict(got, always_print_fields_with_no_presence=True),
        }
        rt.print(dump_yaml(data).rstrip("\n") if fmt == "yaml" else dump_json(data))
        return Exit.OK
    if not got.enabled:
        rt.warn(f"quotas are off on this apiserver (quotas.enabled = false): tenant {got.tenant_id!r} is not limited")
        return Exit.OK
    rows = [[r.resource, str(r.used), str(r.limit), r.quota] for r in got.resources]
    rt.print(table(HEADERS, rows))
    return Exit.OK

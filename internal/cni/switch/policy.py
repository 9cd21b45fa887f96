"""The choice of a container's network, apart from any I/O.

In order: an explicit network in CNI_ARGS (`networkArg`, TKE_NETWORK by default); else the
binding tke-ipamd holds for the pod's workload; else the default network. When the pod could
have a binding (a pod identity in CNI_ARGS and an ipamd configured) but ipamd cannot be asked,
the choice fails with code 11 (try again later): a pod never lands silently on the wrong
network.
"""

from __future__ import annotations

from tke.internal.cni.errors import INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, TRY_AGAIN_LATER, CNIError
from tke.internal.cni.owner import PodOwner
from tke.internal.cni.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Protocol


class Binding(Record):
    """The part of a tke.ipam.v1.Binding cni-switch uses."""

    workload_kind: str
    workload_name: str
    network: str  # empty: the default network
    pool: str = ""


class BindingUnavailable(Exception):
    """ipamd could not be asked (down, timed out, refused the call)."""


if TYPE_CHECKING:

    class BindingSource(Protocol):
        def lookup(self, pod: PodOwner) -> Binding | None:
            """The binding that applies to `pod`, None when none does; BindingUnavailable when
            ipamd cannot answer."""
            ...


class Choice(Record):
    network: str
    reason: str
    binding: Binding | None = None


def choose_network(
    *,
    networks: Mapping[str, object],
    default: str,
    network_arg: str,
    pairs: Mapping[str, str],
    pod: PodOwner | None,
    bindings: BindingSource | None,
) -> Choice:
    explicit = pairs.get(network_arg)
    if explicit:
        if explicit not in networks:
            raise CNIError(
                INVALID_ENVIRONMENT,
                f"unknown network {explicit!r} in CNI_ARGS {network_arg}",
                f"known networks: {sorted(networks)}",
            )
        return Choice(explicit, f"CNI_ARGS {network_arg}")
    if pod is not None and bindings is not None:
        try:
            binding = bindings.lookup(pod)
        except BindingUnavailable as err:
            raise CNIError(
                TRY_AGAIN_LATER,
                "cannot read the pod's workload binding from tke-ipamd",
                f"pod {pod.namespace}/{pod.pod_name}: {err}",
            ) from None
        if binding is not None:
            network = binding.network or default
            if network not in networks:
                raise CNIError(
                    INVALID_NETWORK_CONFIG,
                    f"binding of {binding.workload_kind} {pod.namespace}/{binding.workload_name} "
                    f"names network {network!r}, which this node's cni-switch does not have",
                    f"known networks: {sorted(networks)}",
                )
            return Choice(network, f"binding {binding.workload_kind}/{binding.workload_name}", binding)
    return Choice(default, "default")

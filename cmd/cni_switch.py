"""cni-switch: the CNI meta plugin that picks a network per container and delegates to it.

Executed by the container runtime once per container and verb: VERSION imports only the CNI
skeleton; the other verbs import cni-switch itself, and the ipamd client (a small HTTP/2 gRPC
client; the TLS module only for a TLS address) when a pod's binding must be read.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _verb(name: str) -> Any:
    def run(request: Any) -> Any:
        from tke.internal.cni.switch.plugin import handlers

        return handlers()[name](request)

    return run


def main() -> None:
    from tke.internal.cni.skel import main as cni_main

    verbs = {name: _verb(name) for name in ("ADD", "DEL", "CHECK", "GC", "STATUS")}
    cni_main(verbs, about="cni-switch: TKE CNI meta plugin (delegates to the network chosen per container)")


if __name__ == "__main__":
    main()

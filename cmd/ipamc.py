"""tke-ipamc: the CNI IPAM plugin that takes container addresses from tke-ipamd.

Executed once per container and verb. VERSION imports the CNI skeleton alone; every other verb
imports the ipamd client (a small HTTP/2 gRPC client; the TLS module only for a TLS address).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _verb(name: str) -> Any:
    def run(request: Any) -> Any:
        from tke.internal.cni.ipamc.plugin import handlers

        return handlers()[name](request)

    return run


def main() -> None:
    from tke.internal.cni.skel import main as cni_main

    verbs = {name: _verb(name) for name in ("ADD", "DEL", "CHECK", "GC", "STATUS")}
    cni_main(verbs, about="tke-ipamc: TKE CNI IPAM plugin (addresses from tke-ipamd)")


if __name__ == "__main__":
    main()

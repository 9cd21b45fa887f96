"""tke-ipamc: the CNI IPAM plugin that takes container addresses from tke-ipamd.

Executed once per container and verb. VERSION is answered without importing grpc; every other
verb talks to ipamd and imports the client then.
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

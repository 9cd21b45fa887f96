"""cni-switch: the CNI meta plugin that picks a network per container and delegates to it.

Executed by the container runtime once per container and verb; it imports only the CNI
skeleton and cni-switch itself (grpc only when a pod's binding must be read from ipamd).
"""

from __future__ import annotations


def main() -> None:
    from tke.internal.cni.skel import main as cni_main
    from tke.internal.cni.switch.plugin import handlers

    cni_main(handlers(), about="cni-switch: TKE CNI meta plugin (delegates to the network chosen per container)")


if __name__ == "__main__":
    main()

"""tke-cni-install: installs cni-switch, tke-ipamc and the cluster's CNI configuration on a node,
as the network add-on's tke-cni DaemonSet runs it (tke.internal.provider.addons.nodeinstall).

Usage: tke-cni-install --config-dir DIR [--host /host] (--runtime DIR | --python PATH) [--wait]
"""

from __future__ import annotations

import sys

from tke.internal.provider.addons.nodeinstall import main

if __name__ == "__main__":
    sys.exit(main())

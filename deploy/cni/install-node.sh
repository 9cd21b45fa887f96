#!/bin/sh
# Installs cni-switch and tke-ipamc on a node: a launcher for each into the CNI bin directory,
# and optionally a configuration into the CNI configuration directory.
#
#   PYTHON=/opt/tke/venv/bin/python3 deploy/cni/install-node.sh [deploy/cni/10-tke-fixed-ip.conflist]
#
# PYTHON is the interpreter of the environment the platform is installed in (pip install
# tke...). CNI_BIN_DIR (default /opt/cni/bin) and CNI_CONF_DIR (default /etc/cni/net.d) are
# the directories the runtime (kubelet/containerd/CRI-O/podman) reads.
#
# Why launchers and not links to pip's console scripts: a launcher starts the interpreter
# isolated and without site (-IS: a plugin is a process per container and verb, and site's .pth
# files were most of its start-up) and names where the tke package is installed
# (tke.internal.cni.launcher); -I keeps a node's PYTHONPATH and user site out of a plugin that
# runs as root. Run this again after reinstalling the package elsewhere.
set -eu
PYTHON=${PYTHON:-/opt/tke/venv/bin/python3}
BIN_DIR=${CNI_BIN_DIR:-/opt/cni/bin}
CONF_DIR=${CNI_CONF_DIR:-/etc/cni/net.d}

"$PYTHON" -I -c 'import tke.cmd.cni_switch, tke.internal.cni.switch.plugin, tke.internal.cni.ipamc.plugin' || {
  echo "install-node.sh: $PYTHON cannot import the tke package; install it first" >&2
  exit 1
}
mkdir -p "$BIN_DIR"
for plugin in cni-switch:tke.cmd.cni_switch tke-ipamc:tke.cmd.ipamc; do
  name=${plugin%%:*}
  module=${plugin#*:}
  tmp=$(mktemp "$BIN_DIR/.$name.XXXXXX")
  "$PYTHON" -I -m tke.internal.cni.launcher "$module" "$PYTHON" >"$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$BIN_DIR/$name"  # atomic: a runtime never executes half a file
  echo "installed $BIN_DIR/$name"
done
if [ $# -gt 0 ]; then
  mkdir -p "$CONF_DIR"
  for conf in "$@"; do
    tmp=$(mktemp "$CONF_DIR/.tke.XXXXXX")
    cp "$conf" "$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$CONF_DIR/$(basename "$conf")"
    echo "installed $CONF_DIR/$(basename "$conf")"
  done
fi

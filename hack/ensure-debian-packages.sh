#!/usr/bin/env bash
# Installs the Debian packages the platform and its tests run when they are missing: etcd, the
# CNI plugins, iproute2, iptables (the partition tests), openssh-server (the SSH tests' sshd and
# the machines of make demo-cluster),
# podman with runc and catatonit (the real CNI runtime test), openssl (test certificates, and
# s_server for the CNI client's TLS tests),
# systemd (systemd-analyze verifies the units), procps (pgrep), and Node.js with npm (the Node
# client example) unless node and npm are already on PATH from elsewhere. apt-get runs only
# when something is missing. Tests fail, never skip, when one of these is missing.
set -euo pipefail
want=(etcd-server etcd-client containernetworking-plugins iproute2 iptables openssh-server openssl systemd procps)
# podman without its recommends (which bring crun, failing on hybrid cgroups, and netavark):
# runc and catatonit are what it needs with the CNI backend.
want+=(podman runc catatonit)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js may come from another source (nodesource ships npm inside its nodejs): only the
# commands matter.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts an etcd service on install; the platform runs its own etcd, so stop it.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
fi

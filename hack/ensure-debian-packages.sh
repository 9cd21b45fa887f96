#!/usr/bin/env bash
# Installs the Debian packages the platform and its tests run (etcd, CNI plugins, iproute2,
# iptables for the partition tests, openssl's s_server for the CNI client's TLS tests)
# when they are missing. apt-get runs only when something is missing.
set -euo pipefail
want=(etcd-server etcd-client containernetworking-plugins iproute2 iptables openssl)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
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

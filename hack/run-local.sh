#!/usr/bin/env bash
# `make run`: starts the platform on loopback with the development profile (deploy/dev/):
# etcd, tke-apiserver, tke-ipamd and tke-controller; prints how to talk to them, and on Ctrl-C
# stops exactly what it started. State lives in .run/ (etcd data, logs, sockets, the generated
# admin password and token secret); `make clean` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.run
mkdir -p "$RUN"
chmod go-w "$RUN"  # it holds the unix sockets: the servers refuse a directory others may write
BIN=.venv/bin
ETCD_CLIENT=127.0.0.1:12379
ETCD_PEER=127.0.0.1:12380
API=127.0.0.1:50051
pids=()

stop_all() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo
    echo "stopping: ${pids[*]}"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
for addr in $ETCD_CLIENT $ETCD_PEER $API; do
  if port_busy "$addr"; then
    echo "make run: $addr is already in use (another 'make run'?); stop it first" >&2
    exit 1
  fi
done

etcd --name tke-dev --data-dir "$RUN/etcd" \
  --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
  --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
  --initial-cluster "tke-dev=http://$ETCD_PEER" >"$RUN/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  "$BIN/python" -c "import urllib.request as u; u.urlopen('http://$ETCD_CLIENT/health', timeout=1)" 2>/dev/null && break
  sleep 0.1
done

# Secrets of this installation, made once: never a default password.
umask 077
[ -s "$RUN/admin-password" ] || "$BIN/python" -c "import secrets; print(secrets.token_urlsafe(18))" >"$RUN/admin-password"
[ -s "$RUN/token-secret" ] || "$BIN/python" -c "import secrets; print(secrets.token_urlsafe(48))" >"$RUN/token-secret"
umask 022
TKE_ADMIN_PASSWORD=$(cat "$RUN/admin-password") TKE_TOKEN_SECRET=$(cat "$RUN/token-secret") \
  "$BIN/tke-apiserver" --config deploy/dev/apiserver.toml >"$RUN/apiserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  "$BIN/grpcurl" -plaintext "$API" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  if ! kill -0 "${pids[-1]}" 2>/dev/null; then
    echo "tke-apiserver failed to start:" >&2
    tail -20 "$RUN/apiserver.log" >&2
    exit 1
  fi
  sleep 0.1
done

"$BIN/tke-ipamd" --config deploy/dev/ipamd.toml >"$RUN/ipamd.log" 2>&1 &
pids+=($!)
TKE_CONTROLLER_TOKEN=dev-controller-token "$BIN/tke-controller" --config deploy/dev/controller.toml \
  >"$RUN/controller.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ -S "$RUN/ipamd.sock" ] && break
  sleep 0.1
done

TOKEN=dev-admin-token
cat <<MSG

The platform is running (development profile, deploy/dev/):
  etcd            http://$ETCD_CLIENT                  data in $RUN/etcd
  tke-apiserver   $API (plaintext gRPC)         unix socket $RUN/apiserver.sock
  tke-ipamd       unix:$RUN/ipamd.sock
  tke-controller  leading through etcd
  metrics         http://127.0.0.1:9464/metrics
  logs            $RUN/*.log, audit in $RUN/audit.jsonl
  admin           user "admin", password in $RUN/admin-password (made for this installation)

With tkectl (in $BIN), in another terminal:
  export PATH=\$PWD/$BIN:\$PATH TKECONFIG=\$PWD/$RUN/tkeconfig
  tkectl config set-context dev --server $API --ipamd unix:\$PWD/$RUN/ipamd.sock --use
  tkectl login -u admin --password-stdin < $RUN/admin-password
  printf 'kind: Cluster\nmetadata: {name: demo}\nspec: {type: baremetal, version: 1.30.2, network: {podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12}}\n' | tkectl create -f -
  printf 'kind: Pool\nname: net-a\ncidr: 10.0.1.0/24\n' | tkectl create -f -
  tkectl get clusters; tkectl get pools
  curl -s http://127.0.0.1:9464/metrics | grep tke_grpc_server_handled_total

With grpcurl (a development token: $TOKEN):
  grpcurl -plaintext $API list
  grpcurl -plaintext $API describe tke.platform.v1.ClusterService
  grpcurl -plaintext -H 'authorization: Bearer $TOKEN' -d '{}' $API tke.platform.v1.ClusterService/List
  grpcurl -plaintext -H 'authorization: Bearer $TOKEN' -d '{}' $API tke.platform.v1.ClusterService/Watch

Ctrl-C stops all of them.
MSG
status=0
wait -n "${pids[@]}" || status=$?
# 130/143: the child was stopped by SIGINT/SIGTERM (Ctrl-C reaches the whole process group).
if [ "$status" -ne 130 ] && [ "$status" -ne 143 ]; then
  echo "a process exited (status $status); see the logs in $RUN/" >&2
  exit 1
fi

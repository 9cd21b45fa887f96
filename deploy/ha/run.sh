#!/usr/bin/env bash
# The HA test profile on one machine: a three-member etcd and two of each server (apiserver,
# ipamd, controller) on loopback, state in .run/ha. Prints the endpoints; SIGINT/SIGTERM stops
# exactly what it started. Run from the repository root after `make setup`:
#   deploy/ha/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=.run/ha
BIN=.venv/bin
mkdir -p "$RUN"
pids=()
stop_all() {
  trap - INT TERM EXIT
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

cluster="m1=http://127.0.0.1:22380,m2=http://127.0.0.1:22382,m3=http://127.0.0.1:22384"
for i in 1 2 3; do
  client=$((22377 + 2 * i)); peer=$((client + 1))
  etcd --name "m$i" --data-dir "$RUN/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-token tke-ha --initial-cluster-state new \
    --heartbeat-interval 100 --election-timeout 1000 >"$RUN/etcd-$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 200); do
  "$BIN/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:22379/health', timeout=1)" 2>/dev/null && break
  sleep 0.1
done

for i in 1 2; do
  "$BIN/tke-apiserver" --config "deploy/ha/apiserver-$i.toml" >"$RUN/apiserver-$i.log" 2>&1 &
  pids+=($!)
  "$BIN/tke-ipamd" --config "deploy/ha/ipamd-$i.toml" >"$RUN/ipamd-$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2; do
  for _ in $(seq 200); do
    "$BIN/grpcurl" -plaintext "127.0.0.1:5006$i" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
    sleep 0.1
  done
done
if [ -x "$BIN/tke-controller" ]; then
  for i in 1 2; do
    TKE_CONTROLLER_TOKEN=ha-controller-token "$BIN/tke-controller" --config "deploy/ha/controller-$i.toml" \
      >"$RUN/controller-$i.log" 2>&1 &
    pids+=($!)
  done
fi

cat <<MSG
HA profile running (state and logs in $RUN/):
  etcd           127.0.0.1:22379, 127.0.0.1:22381, 127.0.0.1:22383
  tke-apiserver  127.0.0.1:50061, 127.0.0.1:50062   (token: ha-admin-token)
  tke-ipamd      unix:$RUN/ipamd-1.sock, unix:$RUN/ipamd-2.sock
  tke-controller two replicas, one leading (etcd lease)
MSG
wait

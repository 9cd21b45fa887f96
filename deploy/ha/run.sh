#!/usr/bin/env bash
# The HA test profile on one machine: a three-member etcd and two of each server (apiserver,
# ipamd, controller) on loopback, state in .run/ha. Prints the endpoints; SIGINT/SIGTERM stops
# exactly what it started. Run from the repository root after `make setup`:
#   deploy/ha/run.sh
# The environment may move it elsewhere (the tests run it on free ports beside other servers):
#   TKE_HA_CONFIG      directory of the servers' configurations (default deploy/ha)
#   TKE_HA_RUN         state directory (default .run/ha)
#   TKE_HA_ETCD_PORTS  the etcd members' client and peer ports, six numbers
#                      (default "22379 22380 22381 22382 22383 22384"; the configurations name
#                      the client ports)
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=${TKE_HA_CONFIG:-deploy/ha}
RUN=${TKE_HA_RUN:-.run/ha}
read -r -a ports <<<"${TKE_HA_ETCD_PORTS:-22379 22380 22381 22382 22383 22384}"
if [ ${#ports[@]} -ne 6 ]; then
  echo "TKE_HA_ETCD_PORTS must name six ports (client and peer of three members)" >&2
  exit 2
fi
BIN=.venv/bin
mkdir -p "$RUN"
chmod go-w "$RUN"  # it holds the unix sockets: the servers refuse a directory others may write
pids=()
stop_all() {
  trap - INT TERM EXIT
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

# A value of a server's TOML configuration: setting FILE KEY [SUBKEY].
setting() {
  "$BIN/python" -c 'import sys, tomllib
value = tomllib.load(open(sys.argv[1], "rb"))
for key in sys.argv[2:]:
    value = value[key]
print(value)' "$@"
}

# etcd's limits as deploy/etcd/etcd.env has them: an 8 GiB quota (NOSPACE beyond), its own
# compaction of history older than an hour, behind the apiservers' every five minutes, and
# progress notifications every 5 s (what the apiserver relies on before etcd 3.4.25).
cluster="m1=http://127.0.0.1:${ports[1]},m2=http://127.0.0.1:${ports[3]},m3=http://127.0.0.1:${ports[5]}"
for i in 1 2 3; do
  client=${ports[2 * i - 2]}; peer=${ports[2 * i - 1]}
  etcd --name "m$i" --data-dir "$RUN/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-token tke-ha --initial-cluster-state new \
    --heartbeat-interval 100 --election-timeout 1000 \
    --quota-backend-bytes 8589934592 --auto-compaction-mode periodic --auto-compaction-retention 1h \
    --experimental-watch-progress-notify-interval 5s \
    >"$RUN/etcd-$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 300); do
  "$BIN/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:${ports[0]}/health', timeout=1)" \
    2>/dev/null && break
  sleep 0.1
done

for i in 1 2; do
  "$BIN/tke-apiserver" --config "$CONFIG/apiserver-$i.toml" >"$RUN/apiserver-$i.log" 2>&1 &
  pids+=($!)
  "$BIN/tke-ipamd" --config "$CONFIG/ipamd-$i.toml" >"$RUN/ipamd-$i.log" 2>&1 &
  pids+=($!)
done
apiservers=()
for i in 1 2; do
  address=$(setting "$CONFIG/apiserver-$i.toml" listen address)
  apiservers+=("$address")
  for _ in $(seq 300); do
    "$BIN/grpcurl" -plaintext "$address" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
    sleep 0.1
  done
done
if [ -x "$BIN/tke-controller" ]; then
  for i in 1 2; do
    TKE_CONTROLLER_TOKEN=ha-controller-token "$BIN/tke-controller" --config "$CONFIG/controller-$i.toml" \
      >"$RUN/controller-$i.log" 2>&1 &
    pids+=($!)
  done
fi

cat <<MSG
HA profile running (state and logs in $RUN/):
  etcd           127.0.0.1:${ports[0]}, 127.0.0.1:${ports[2]}, 127.0.0.1:${ports[4]}
  tke-apiserver  ${apiservers[0]}, ${apiservers[1]}   (token: ha-admin-token)
  tke-ipamd      unix:$(setting "$CONFIG/ipamd-1.toml" socket), unix:$(setting "$CONFIG/ipamd-2.toml" socket)
  tke-controller two replicas, one leading (etcd lease)
MSG
wait

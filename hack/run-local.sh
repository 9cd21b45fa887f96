#!/usr/bin/env bash
# `make run`: starts the platform on loopback with the development profile (deploy/dev/):
# etcd, tke-apiserver, tke-ipamd and tke-controller; prints how to talk to them, and on Ctrl-C
# stops exactly what it started. State lives in .run/ (etcd data, logs, sockets, the generated
# admin password and token secret); `make clean` removes it.
#
# It supervises: a component that exits is started again after a short backoff (1 s, doubling
# up to 30 s, back to 1 s once it ran for a minute), with a line saying so, instead of
# everything being torn down. Logs are appended to (never truncated) across restarts. Every
# file and socket it or the servers create is for the user only (umask 077: 0600, 0700).
#
# The environment may move it (the tests run it beside other servers):
#   TKE_RUN_DIR         state directory (default .run)
#   TKE_RUN_CONFIG      directory with apiserver.toml, ipamd.toml, controller.toml, tokens.csv
#                       (default deploy/dev)
#   TKE_RUN_ETCD_PORTS  etcd's client and peer ports (default "12379 12380"; the configurations
#                       name the client port)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${TKE_RUN_DIR:-.run}
CONFIG=${TKE_RUN_CONFIG:-deploy/dev}
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
read -r -a etcd_ports <<<"${TKE_RUN_ETCD_PORTS:-12379 12380}"
BIN=.venv/bin
umask 077
mkdir -p "$RUN"
chmod go-w "$RUN"  # it holds the unix sockets: the servers refuse a directory others may write
ETCD_CLIENT=127.0.0.1:${etcd_ports[0]}
ETCD_PEER=127.0.0.1:${etcd_ports[1]}
# etcd's limits: a 2 GiB quota (NOSPACE beyond: writes fail, reads work) and its own
# compaction of history older than an hour, behind the apiserver's every five minutes.
# Defragment with `etcdctl --endpoints $ETCD_CLIENT defrag` (README, "Storage").
ETCD_QUOTA_BYTES=${TKE_RUN_ETCD_QUOTA_BYTES:-2147483648}

# A value of a server's TOML configuration: setting FILE KEY [SUBKEY].
setting() {
  "$BIN/python" -c 'import sys, tomllib
value = tomllib.load(open(sys.argv[1], "rb"))
for key in sys.argv[2:]:
    value = value.get(key, "") if isinstance(value, dict) else ""
print(value)' "$@"
}
API=$(setting "$CONFIG/apiserver.toml" listen address)
API_SOCKET=$(setting "$CONFIG/apiserver.toml" listen unix_socket)
IPAMD_SOCKET=$(setting "$CONFIG/ipamd.toml" socket)
METRICS=$(setting "$CONFIG/apiserver.toml" metrics_address)
METRICS=${METRICS:-127.0.0.1:9464}

# supervise NAME COMMAND...: run COMMAND in a session of its own (Ctrl-C reaches this script,
# which stops it with SIGTERM), logging to $RUN/NAME.log, and start it again whenever it exits
# until this script stops it.
supervise() {
  local name=$1
  shift
  local log="$RUN/$name.log" delay=1 pid="" pause="" stopping=0 status started
  # Ctrl-C and a closed terminal reach the whole process group: this script stops the
  # supervisors with SIGTERM, which stop their component first.
  trap '' INT HUP
  # (Never `kill 0`: that is the whole process group, this script included.)
  trap 'stopping=1; for p in $pid $pause; do kill -TERM "$p" 2>/dev/null || true; done' TERM
  while [ "$stopping" -eq 0 ]; do
    started=$SECONDS
    setsid "$@" >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "make run: $name started (pid $pid, log $log)"
    while :; do
      status=0
      wait "$pid" 2>/dev/null || status=$?  # (no "Killed" from bash: the next line says it)
      # A trapped signal interrupts wait while the child still runs: wait again.
      kill -0 "$pid" 2>/dev/null || break
    done
    pid=""  # gone: its number may be another process's soon
    [ "$stopping" -eq 0 ] || break
    if [ $((SECONDS - started)) -ge 60 ]; then delay=1; fi
    echo "make run: $name exited (status $status); restarting it in ${delay}s (log $log)" >&2
    sleep "$delay" &
    pause=$!
    wait "$pause" || true
    pause=""
    delay=$((delay * 2 > 30 ? 30 : delay * 2))
  done
}

supervisors=()
stop_all() {
  trap - INT TERM HUP EXIT
  if [ ${#supervisors[@]} -gt 0 ]; then
    echo
    echo "make run: stopping"
    kill -TERM "${supervisors[@]}" 2>/dev/null || true
    wait "${supervisors[@]}" 2>/dev/null || true
  fi
}
trap 'stop_all; exit 0' INT TERM HUP
trap stop_all EXIT

port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
for addr in $ETCD_CLIENT $ETCD_PEER $API; do
  if port_busy "$addr"; then
    echo "make run: $addr is already in use (another 'make run'?); stop it first" >&2
    exit 1
  fi
done

supervise etcd etcd --name tke-dev --data-dir "$RUN/etcd" \
  --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
  --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
  --initial-cluster "tke-dev=http://$ETCD_PEER" \
  --quota-backend-bytes "$ETCD_QUOTA_BYTES" --auto-compaction-mode periodic --auto-compaction-retention 1h \
  --experimental-watch-progress-notify-interval 5s &
supervisors+=($!)
for _ in $(seq 100); do
  "$BIN/python" -c "import urllib.request as u; u.urlopen('http://$ETCD_CLIENT/health', timeout=1)" 2>/dev/null && break
  sleep 0.1
done

# Secrets of this installation, made once: never a default password.
[ -s "$RUN/admin-password" ] || "$BIN/python" -c "import secrets; print(secrets.token_urlsafe(18))" >"$RUN/admin-password"
[ -s "$RUN/token-secret" ] || "$BIN/python" -c "import secrets; print(secrets.token_urlsafe(48))" >"$RUN/token-secret"
supervise apiserver env TKE_ADMIN_PASSWORD="$(cat "$RUN/admin-password")" TKE_TOKEN_SECRET="$(cat "$RUN/token-secret")" \
  "$BIN/tke-apiserver" --config "$CONFIG/apiserver.toml" &
supervisors+=($!)
for _ in $(seq 300); do
  "$BIN/grpcurl" -plaintext "$API" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  sleep 0.1
done

supervise ipamd "$BIN/tke-ipamd" --config "$CONFIG/ipamd.toml" &
supervisors+=($!)
supervise controller env TKE_CONTROLLER_TOKEN=dev-controller-token \
  "$BIN/tke-controller" --config "$CONFIG/controller.toml" &
supervisors+=($!)
for _ in $(seq 100); do
  [ -S "$IPAMD_SOCKET" ] && break
  sleep 0.1
done

TOKEN=dev-admin-token
cat <<MSG

The platform is running (development profile, $CONFIG/):
  etcd            http://$ETCD_CLIENT                  data in $RUN/etcd
  tke-apiserver   $API (plaintext gRPC)         unix socket $API_SOCKET
  tke-ipamd       unix:$IPAMD_SOCKET
  tke-controller  leading through etcd
  metrics         http://$METRICS/metrics
  logs            $RUN/*.log, audit in $RUN/audit.jsonl
  admin           user "admin", password in $RUN/admin-password (made for this installation)

With tkectl (in $BIN), in another terminal:
  export PATH=$(absolute "$BIN"):\$PATH TKECONFIG=$(absolute "$RUN")/tkeconfig
  tkectl config set-context dev --server $API --ipamd unix:$(absolute "$IPAMD_SOCKET") --use
  tkectl login -u admin --password-stdin < $RUN/admin-password
  printf 'kind: Cluster\nmetadata: {name: demo}\nspec: {type: baremetal, version: 1.30.2, network: {podCidr: 10.244.0.0/16, serviceCidr: 10.96.0.0/12}}\n' | tkectl create -f -
  printf 'kind: Pool\nname: net-a\ncidr: 10.0.1.0/24\n' | tkectl create -f -
  tkectl get clusters; tkectl get pools
  curl -s http://$METRICS/metrics | grep tke_grpc_server_handled_total

With grpcurl (a development token: $TOKEN):
  grpcurl -plaintext $API list
  grpcurl -plaintext $API describe tke.platform.v1.ClusterService
  grpcurl -plaintext -H 'authorization: Bearer $TOKEN' -d '{}' $API tke.platform.v1.ClusterService/List
  grpcurl -plaintext -H 'authorization: Bearer $TOKEN' -d '{}' $API tke.platform.v1.ClusterService/Watch

A component that exits is started again (the line "make run: ... restarting" says so).
Ctrl-C stops all of them.
MSG
wait

#!/usr/bin/env bash
# bench/cluster-scale.sh: sidedns with 50 simulated hosts x 200 records in a 3-member etcd (DESIGN 7).
# Reports the time for a new instance to load everything and its RSS, and change -> answer p50/p99 over
# 100 changes (bench/clusterscale says how). Needs etcd on PATH (Debian's etcd-server). Loopback only.
#
# Env: HOSTS=50 RECORDS=200 CHANGES=100 BASE_PORT=15550 (sidedns DNS and HTTP; etcd takes the next six)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOSTS=${HOSTS:-50}
RECORDS=${RECORDS:-200}
CHANGES=${CHANGES:-100}
BASE_PORT=${BASE_PORT:-15550}

log() { printf '[cluster-scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v etcd >/dev/null || { log "etcd not found: apt-get install etcd-server"; exit 1; }

WORK=$(mktemp -d /tmp/sidedns-cluster-scale.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

log "building sidedns and clusterscale"
(cd "$ROOT" && go build -o "$WORK/sidedns" ./cmd/sidedns && go build -o "$WORK/clusterscale" ./bench/clusterscale)

INITIAL=() CLIENTS=()
for i in 0 1 2; do
  INITIAL+=("m$i=http://127.0.0.1:$((BASE_PORT + 2 + 2 * i + 1))")
  CLIENTS+=("http://127.0.0.1:$((BASE_PORT + 2 + 2 * i))")
done
for i in 0 1 2; do
  etcd --name "m$i" --data-dir "$WORK/m$i" \
    --listen-client-urls "${CLIENTS[$i]}" --advertise-client-urls "${CLIENTS[$i]}" \
    --listen-peer-urls "http://127.0.0.1:$((BASE_PORT + 2 + 2 * i + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((BASE_PORT + 2 + 2 * i + 1))" \
    --initial-cluster "$(IFS=,; echo "${INITIAL[*]}")" --initial-cluster-state new \
    --initial-cluster-token "scale-$$" >"$WORK/m$i.log" 2>&1 &
  PIDS+=($!)
done
for c in "${CLIENTS[@]}"; do
  for _ in $(seq 100); do
    curl -fsS "$c/health" 2>/dev/null | grep -q '"true"' && break
    sleep 0.2
  done
done
log "etcd up: $(IFS=,; echo "${CLIENTS[*]}")"
"$WORK/clusterscale" -etcd "$(IFS=,; echo "${CLIENTS[*]}")" -sidedns "$WORK/sidedns" \
  -hosts "$HOSTS" -records "$RECORDS" -changes "$CHANGES" -port "$BASE_PORT"

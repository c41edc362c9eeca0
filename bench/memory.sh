#!/usr/bin/env bash
# bench/memory.sh: sidedns's memory with 10,000 containers and 100,000 cache entries
# (DESIGN.md section 6: RSS < 150 MiB), and, with PROBE=1 (default), container start -> resolvable
# at that size (target p99 < 50 ms after the event).
#
# Everything runs on 127.0.0.1: a fake Docker daemon (bench/fakedocker) on a unix socket, the loopback
# authoritative server for test. (bench/authserver) as the only upstream, sidedns, and dnsperf.
#
# Env: CONTAINERS=10000 NAMES=100000 NETWORKS=4 BASE_PORT=15450 (authserver; sidedns DNS and HTTP take the
#      next two) PROBE=1 CHURN_RATE=5 CHURN_COUNT=100 MAX_SECONDS=300 (whole-run watchdog)
#      SIDEDNS_ARGS="extra flags"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONTAINERS=${CONTAINERS:-10000}
NAMES=${NAMES:-100000}
NETWORKS=${NETWORKS:-4}
BASE_PORT=${BASE_PORT:-15450}
PROBE=${PROBE:-1}
CHURN_RATE=${CHURN_RATE:-5}
CHURN_COUNT=${CHURN_COUNT:-100}
MAX_SECONDS=${MAX_SECONDS:-300}
SIDEDNS_ARGS=${SIDEDNS_ARGS:-}
TARGET_MIB=150

AUTH_PORT=$BASE_PORT
DNS_PORT=$((BASE_PORT + 1))
HTTP_PORT=$((BASE_PORT + 2))

log() { printf '[memory %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

WORK=$(mktemp -d /tmp/sidedns-memory.XXXXXX)
PIDS=()
WATCHDOG=

cleanup() {
  local pid i
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  [[ -n "$WATCHDOG" ]] && kill "$WATCHDOG" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The whole run is bounded: the watchdog ends this script, and the EXIT trap everything it started.
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$MAX_SECONDS" &
  s=$!
  wait "$s"
  log "FATAL: over MAX_SECONDS=$MAX_SECONDS, giving up"
  kill -TERM $$
) 2>/dev/null &
WATCHDOG=$!

port_busy() { ss -Hlnu "sport = :$1" 2>/dev/null | grep -q . || ss -Hlnt "sport = :$1" 2>/dev/null | grep -q .; }

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 50 ms.
wait_for() {
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 20; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  die "timed out after ${secs}s waiting for $what"
}

alive() { kill -0 "$1" 2>/dev/null || die "$2 exited; its log: $(tail -n 20 "$WORK/$2.log" 2>/dev/null)"; }

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# status_kb PID FIELD: a VmRSS-style field of /proc/PID/status, in kB.
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# metric NAME: a metric's value from sidedns's /metrics, or empty when it has none.
metric() {
  curl -fsS --max-time 5 "http://127.0.0.1:$HTTP_PORT/metrics" 2>/dev/null |
    awk -v m="$1" '$1 == m { printf "%.0f", $2; exit }' || true
}

# ---------- tools and builds ----------

if ! command -v dnsperf >/dev/null; then
  [[ $(id -u) == 0 ]] || die "dnsperf is missing; install it: apt-get install dnsperf"
  log "installing dnsperf from Debian's packages"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends dnsperf >/dev/null
fi
command -v curl >/dev/null || die "curl is missing"

for p in "$AUTH_PORT" "$DNS_PORT" "$HTTP_PORT"; do
  port_busy "$p" && die "port $p is already in use (set BASE_PORT)"
done

log "building sidedns, fakedocker and authserver"
(cd "$ROOT" && timeout 300 go build -o "$WORK/sidedns" ./cmd/sidedns &&
  timeout 300 go build -o "$WORK/fakedocker" ./bench/fakedocker &&
  timeout 300 go build -o "$WORK/authserver" ./bench/authserver) || die "build failed"

# ---------- processes ----------

SOCK=$WORK/docker.sock
churn_flags=()
if [[ "$PROBE" == 1 ]]; then
  churn_flags=(-churn "$CHURN_RATE" -churn-count "$CHURN_COUNT" -churn-on-signal -probe "127.0.0.1:$DNS_PORT")
fi
log "starting fakedocker with $CONTAINERS containers over $NETWORKS networks"
"$WORK/fakedocker" -socket "$SOCK" -containers "$CONTAINERS" -networks "$NETWORKS" "${churn_flags[@]}" \
  >"$WORK/fakedocker.out" 2>"$WORK/fakedocker.log" &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
wait_for 60 "fakedocker to serve" grep -qx ready "$WORK/fakedocker.out"

"$WORK/authserver" -listen "127.0.0.1:$AUTH_PORT" >"$WORK/authserver.log" 2>&1 &
PIDS+=("$!")
wait_for 10 "authserver to listen" port_busy "$AUTH_PORT"

log "starting sidedns"
started=$(date +%s.%N)
# shellcheck disable=SC2086 # SIDEDNS_ARGS is a list of flags.
# gctrace prints the live heap after every GC to stderr: the heap figure even without /metrics.
DOCKER_HOST=unix://$SOCK GODEBUG=${GODEBUG:+$GODEBUG,}gctrace=1 "$WORK/sidedns" \
  --listen "127.0.0.1:$DNS_PORT" --upstream "127.0.0.1:$AUTH_PORT" --http "127.0.0.1:$HTTP_PORT" \
  --cache-size 100000 --rate-limit 0 --log-level warn $SIDEDNS_ARGS >"$WORK/sidedns.log" 2>&1 &
SD_PID=$!
PIDS+=("$SD_PID")
wait_for 120 "sidedns /readyz (first Docker sync of $CONTAINERS containers)" \
  curl -fsS --max-time 2 "http://127.0.0.1:$HTTP_PORT/readyz"
alive "$SD_PID" sidedns
sync_s=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

# The last container must resolve: the table is complete, not just ready.
last=$(printf 'c%04d' $((CONTAINERS - 1)))
printf '%s.docker A\n' "$last" >"$WORK/last.txt"
local_ok() { timeout 10 dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/last.txt" -n 1 -t 1 2>&1 | grep -q 'NOERROR 1 '; }
if [[ "$CONTAINERS" -gt 0 ]]; then
  wait_for 30 "$last.docker to resolve" local_ok
fi
log "synced: /readyz after ${sync_s}s, $last.docker resolves"

# live_heap: "X MB live after GC n" from the last gctrace line (gc N @T s P%: ... A->B->C MB, ...).
live_heap() {
  grep '^gc [0-9]' "$WORK/sidedns.log" | tail -n 1 |
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /->.*->/) { split($i, a, "->"); printf "%s MB live after GC %s", a[3], $2; exit } }'
}

rss0=$(status_kb "$SD_PID" VmRSS)
# heap_mib prints a byte count from /metrics in MiB, or n/a.
heap_mib() { if [ -n "$1" ]; then echo "$(mib $(($1 / 1024))) MiB"; else echo n/a; fi; }
heap0=$(metric go_memstats_heap_inuse_bytes)
live0=$(live_heap)

# ---------- fill the cache ----------

awk -v n="$NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "mem-%d.test A\n", i }' >"$WORK/names.txt"
log "filling the cache with $NAMES unique names (dnsperf -n 1 -c 8)"
timeout 240 dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$WORK/names.txt" -n 1 -c 8 -t 5 >"$WORK/dnsperf.out" 2>&1 ||
  die "dnsperf failed: $(tail -n 5 "$WORK/dnsperf.out")"
alive "$SD_PID" sidedns
completed=$(awk '/Queries completed:/ { print $3 }' "$WORK/dnsperf.out")
noerror=$(grep -o 'NOERROR [0-9]*' "$WORK/dnsperf.out" | awk '{ print $2 }')
fill_qps=$(awk '/Queries per second:/ { printf "%.0f", $4 }' "$WORK/dnsperf.out")
[[ -n "$completed" ]] || die "no dnsperf summary: $(tail -n 5 "$WORK/dnsperf.out")"
sleep 1 # let in-flight inserts land

rss=$(status_kb "$SD_PID" VmRSS)
hwm=$(status_kb "$SD_PID" VmHWM)
heap=$(metric go_memstats_heap_inuse_bytes)
entries=$(metric sidedns_cache_entries)
live=$(live_heap)

echo "sidedns memory $(date -Iseconds)  commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty')"
echo "containers:       $CONTAINERS over $NETWORKS networks (fake daemon), first sync ${sync_s}s"
echo "cache fill:       $NAMES unique names, $completed answered ($noerror NOERROR) at ${fill_qps} qps; cache entries: ${entries:-n/a (no sidedns_cache_entries metric)}"
echo "after sync:       VmRSS $(mib "$rss0") MiB, Go heap in use $(heap_mib "$heap0"), gctrace: ${live0:-n/a}"
echo "after cache fill: VmRSS $(mib "$rss") MiB, VmHWM $(mib "$hwm") MiB, Go heap in use $(heap_mib "$heap"), gctrace: ${live:-n/a}"
if [[ -n "$heap" && -n "$heap0" && "$NAMES" -gt 0 ]]; then
  echo "per cached name:  $(((heap - heap0) / NAMES)) B of heap (unbound ~650 B)"
fi
verdict=PASS
((rss >= TARGET_MIB * 1024)) && verdict=FAIL
echo "verdict: VmRSS $(mib "$rss") MiB with $CONTAINERS containers and $completed cached names vs target < $TARGET_MIB MiB: $verdict"

# ---------- start -> resolvable ----------

if [[ "$PROBE" == 1 ]]; then
  log "churning $CHURN_COUNT containers at ${CHURN_RATE}/s, timing each until it resolves"
  kill -USR1 "$FAKE_PID"
  wait_for $((CHURN_COUNT / CHURN_RATE + 30)) "the start->resolvable summary" grep -q '^start->resolvable:' "$WORK/fakedocker.out"
  line=$(grep '^start->resolvable:' "$WORK/fakedocker.out")
  echo "$line (from StartContainer, which emits the event, to the first A answer; polled every 1 ms)"
  p99=$(sed -n 's/.* p99=\([0-9.]*\)ms.*/\1/p' <<<"$line")
  if [[ -n "$p99" ]]; then
    awk -v p="$p99" 'BEGIN { printf "verdict: start->resolvable p99 %.2f ms vs target < 50 ms: %s\n", p, (p < 50 ? "PASS" : "FAIL") }'
  fi
fi

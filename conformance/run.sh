#!/usr/bin/env bash
# conformance/run.sh: ask sidedns and unbound the same questions and print how their replies differ.
#
# Everything runs on 127.0.0.1 on free ports: bench/authserver is the upstream of both (it is authoritative
# for test. and refuses every other name), each reached through its own recorder (conformance recorder),
# which logs the questions it relays; unbound (Debian's package) forwards "." there and has the docker.
# zone as a static local zone; sidedns forwards there and reads the same containers from a fake Docker
# daemon (conformance docker). Exits 1 on a difference that no rule in conformance/rules.go explains, or on
# a zone name that sidedns sent upstream; 2 when the set-up fails.
#
# Usage: conformance/run.sh [-v] [-cases id,id]     (flags go to `conformance compare`)
# Env: DUMP=1 prints only unbound's replies (conformance dump), without building or starting sidedns.
#      KEEP_WORK=1 keeps the temp dir with the configs and logs.
#      SIDEDNS_SRC=DIR builds sidedns from another checkout (default: this one).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIDEDNS_SRC=${SIDEDNS_SRC:-$ROOT}
DUMP=${DUMP:-0}
# allow_snoop: unbound answers RD=0 from its cache, which is the rule sidedns keeps (plain allow REFUSEs RD=0).
UNBOUND_ACCESS=${UNBOUND_ACCESS:-allow_snoop}

log() { printf '[conformance %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 2; }

command -v unbound >/dev/null || die "unbound is missing: apt-get install unbound"

WORK=$(mktemp -d /tmp/sidedns-conformance.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ "${KEEP_WORK:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { ss -Hlnu "sport = :$1" 2>/dev/null | grep -q . || ss -Hlnt "sport = :$1" 2>/dev/null | grep -q .; }

# free_port: a port free on UDP and TCP, from a random start, not one handed out before.
USED=" "
free_port() {
  # Below the ephemeral range (32768-60999 on Linux), so that no outgoing socket holds it.
  local p=$((20000 + RANDOM % 12000)) i
  for i in $(seq 200); do
    if [[ "$USED" != *" $p "* ]] && ! port_busy "$p"; then
      USED+="$p "
      echo "$p"
      return
    fi
    p=$((p + 1))
  done
  die "no free port"
}


log "building into $WORK"
# In parallel: on a busy machine most of the time is linking.
build() { (cd "$ROOT" && go build -o "$WORK/$1" "./$2") >"$WORK/build-$1.log" 2>&1 || { cat "$WORK/build-$1.log" >&2; return 1; }; }
BUILDS=()
build authserver bench/authserver & BUILDS+=($!)
build conformance conformance & BUILDS+=($!)
[[ $DUMP == 1 ]] || { (cd "$SIDEDNS_SRC" && go build -o "$WORK/sidedns" ./cmd/sidedns) >"$WORK/build-sidedns.log" 2>&1 & BUILDS+=($!); }
for pid in "${BUILDS[@]}"; do wait "$pid" || { cat "$WORK"/build-*.log >&2; die "build failed"; }; done

# answers PORT NAME: true when the server on PORT answers NAME A with NOERROR and an A record.
answers() {
  "$WORK/conformance" probe -server "127.0.0.1:$1" -name "$2" >/dev/null 2>&1
}

# wait_for WHAT PID PORT NAME: 0 once the server answers NAME; 1 if it exited (e.g. its port was taken
# in the meantime by another process on this shared machine), after 10 s it gives up.
wait_for() {
  local i
  for i in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    answers "$3" "$4" && return 0
    sleep 0.1
  done
  cat "$WORK/$1.log" >&2
  die "$1 did not answer $4 on 127.0.0.1:$3 within 10 s"
}

# start WHAT NAME: runs start_WHAT PORT on a free port until the server answers NAME, three tries;
# sets PORT_<WHAT>.
start() {
  local what=$1 name=$2 try port pid
  for try in 1 2 3; do
    port=$(free_port)
    "start_$what" "$port" >"$WORK/$what.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if wait_for "$what" "$pid" "$port" "$name"; then
      printf -v "PORT_$what" '%s' "$port"
      return
    fi
    log "$what exited during start-up on port $port (try $try): $(tail -1 "$WORK/$what.log")"
  done
  cat "$WORK/$what.log" >&2
  die "$what did not start"
}

start_authserver() { exec "$WORK/authserver" -listen "127.0.0.1:$1"; }
start authserver probe.test.
# Each resolver reaches the authserver through its own recorder, which logs the questions it relays:
# compare reads the logs to tell which questions were forwarded.
start_up_unbound() { exec "$WORK/conformance" recorder -listen "127.0.0.1:$1" -to "127.0.0.1:$PORT_authserver" -log "$WORK/upstream-unbound.txt"; }
start_up_sidedns() { exec "$WORK/conformance" recorder -listen "127.0.0.1:$1" -to "127.0.0.1:$PORT_authserver" -log "$WORK/upstream-sidedns.txt"; }
start up_unbound probe.test.
start up_sidedns probe.test.

start_unbound() {
  cat >"$WORK/unbound.conf" <<EOF
server:
  verbosity: 1
  num-threads: 1
  interface: 127.0.0.1
  outgoing-interface: 127.0.0.1
  port: $1
  do-ip6: no
  # A port clash must fail loudly, not share the port with another process.
  so-reuseport: no
  # The default 10 TCP connections per thread is fewer than the runs keep open at once: unbound then
  # closes a waiting one (the pipelining case saw "closed").
  incoming-num-tcp: 100
  access-control: 127.0.0.0/8 $UNBOUND_ACCESS
  # Forwarding to a loopback upstream is refused unless this is off.
  do-not-query-localhost: no
  # test. is a built-in local zone (RFC 6761): without nodefault unbound answers it itself.
  local-zone: "test." nodefault
  # No validation: sidedns does none either.
  module-config: "iterator"
  chroot: ""
  username: ""
  directory: "$WORK"
  pidfile: ""
  use-syslog: no
  logfile: ""
$("$WORK/conformance" unbound-data)
remote-control:
  control-enable: no
# Everything goes to the loopback upstream, as with sidedns: unbound never asks the root servers.
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$PORT_up_unbound
EOF
  unbound-checkconf "$WORK/unbound.conf" >/dev/null || return 1
  exec unbound -d -p -c "$WORK/unbound.conf"
}
start unbound web.docker.
UNBOUND_PORT=$PORT_unbound
log "unbound $(unbound -V | head -1 | awk '{print $2}') on 127.0.0.1:$UNBOUND_PORT, upstream 127.0.0.1:$PORT_up_unbound -> authserver 127.0.0.1:$PORT_authserver"

if [[ $DUMP == 1 ]]; then
  "$WORK/conformance" dump -server "127.0.0.1:$UNBOUND_PORT" -unbound-log "$WORK/upstream-unbound.txt" "$@"
  exit
fi

"$WORK/conformance" docker -socket "$WORK/docker.sock" >"$WORK/docker.out" 2>"$WORK/docker.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -qx ready "$WORK/docker.out" 2>/dev/null && break; sleep 0.1; done
grep -qx ready "$WORK/docker.out" || { cat "$WORK/docker.log" >&2; die "fake docker did not start"; }

start_sidedns() {
  DOCKER_HOST=unix://$WORK/docker.sock exec "$WORK/sidedns" \
    --listen "127.0.0.1:$1" --upstream "127.0.0.1:$PORT_up_sidedns" --http off \
    --allow 127.0.0.0/8 --rate-limit 0 --log-level error
}
start sidedns api.shop.docker.
SIDEDNS_PORT=$PORT_sidedns
log "sidedns from $SIDEDNS_SRC at $(cd "$SIDEDNS_SRC" && git rev-parse --short HEAD 2>/dev/null || echo "(not a git checkout)")$(cd "$SIDEDNS_SRC" && git diff --quiet HEAD 2>/dev/null || echo +dirty) on 127.0.0.1:$SIDEDNS_PORT"

"$WORK/conformance" compare -unbound "127.0.0.1:$UNBOUND_PORT" -sidedns "127.0.0.1:$SIDEDNS_PORT" \
  -unbound-log "$WORK/upstream-unbound.txt" -sidedns-log "$WORK/upstream-sidedns.txt" "$@"

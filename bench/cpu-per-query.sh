#!/usr/bin/env bash
# bench/cpu-per-query.sh: CPU time sidedns spends per query at a fixed rate, for two sets of flags, interleaved.
#
# Throughput (bench/run.sh) is bounded by the client as much as by the server and moves by several percent
# between identical runs here; the server's own CPU time per query at a rate it sustains is steadier. The
# local scenario: 1,000 containers from bench/fakedocker, every name asked in turn from one source.
#
# Env: ROUNDS=6 RATE=70000 DURATION=10 A_ARGS="" B_ARGS="--service-map off" PORT=15400
# Prints one line per run and the median of each set. Needs dnsperf (Debian: dnsperf).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-6}
RATE=${RATE:-70000}
DURATION=${DURATION:-10}
A_ARGS=${A_ARGS:-}
B_ARGS=${B_ARGS:---service-map off}
PORT=${PORT:-15400}
HTTP_PORT=$((PORT + 1))

command -v dnsperf >/dev/null || { echo "dnsperf is missing: apt-get install dnsperf" >&2; exit 1; }
WORK=$(mktemp -d /tmp/sidedns-cpq.XXXXXX)
FD=
cleanup() {
  [[ -n "$FD" ]] && kill "$FD" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
(cd "$ROOT" && go build -o "$WORK/sidedns" ./cmd/sidedns && go build -o "$WORK/fakedocker" ./bench/fakedocker)

"$WORK/fakedocker" -socket "$WORK/docker.sock" -hosts "$WORK/hosts" >"$WORK/fd.out" 2>"$WORK/fd.log" &
FD=$!
for _ in $(seq 50); do grep -qx ready "$WORK/fd.out" 2>/dev/null && break; sleep 0.2; done
grep -qx ready "$WORK/fd.out" || { echo "fakedocker did not start" >&2; exit 1; }
awk '{print $2 " A"}' "$WORK/hosts" >"$WORK/queries"
tck=$(getconf CLK_TCK)

# run SET ARGS: one server's life; prints microseconds of CPU per query.
run() {
  local pid t0 t1 n out
  # shellcheck disable=SC2086 # the extra flags are words
  DOCKER_HOST=unix://$WORK/docker.sock "$WORK/sidedns" --listen "127.0.0.1:$PORT" --http "127.0.0.1:$HTTP_PORT" \
    --upstream 127.0.0.1:9 --rate-limit 0 --control-socket off --log-level warn $2 >"$WORK/sidedns.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    # The last name resolving means the first Docker sync, which publishes every container at once, is in.
    if tail -1 "$WORK/queries" | dnsperf -s 127.0.0.1 -p "$PORT" -n 1 -t 1 2>/dev/null | grep -q 'Response codes: *NOERROR 1 '; then
      break
    fi
    sleep 0.1
  done
  dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries" -n 1 -c 8 >/dev/null 2>&1 # warm
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries" -c 8 -l "$DURATION" -Q "$RATE" 2>&1)
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  n=$(awk '/Queries completed/ {print $3}' <<<"$out")
  awk -v t=$((t1 - t0)) -v tck="$tck" -v n="$n" 'BEGIN {printf "%.3f\n", t * 1e6 / tck / n}'
}

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

: >"$WORK/a"
: >"$WORK/b"
for round in $(seq "$ROUNDS"); do
  a=$(run A "$A_ARGS")
  b=$(run B "$B_ARGS")
  echo "$a" >>"$WORK/a"
  echo "$b" >>"$WORK/b"
  echo "round $round: A ($A_ARGS) $a us/query; B ($B_ARGS) $b us/query"
done
ma=$(median <"$WORK/a")
mb=$(median <"$WORK/b")
echo "median CPU per query at $RATE q/s over $ROUNDS rounds: A ($A_ARGS) $ma us, B ($B_ARGS) $mb us, A/B $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.3f", a / b}')"

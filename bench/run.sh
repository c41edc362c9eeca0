#!/usr/bin/env bash
# bench/run.sh: sidedns against its anchors (dnsmasq, unbound) in one sitting, on loopback.
#
# Every server forwards the zone test. to a loopback authoritative server (bench/authserver).
# For the local scenario, sidedns reads 1,000 containers from a fake Docker daemon (bench/fakedocker)
# and dnsmasq and unbound get the same names and addresses as local data. local-weighted does the same with
# 333 compose services of 3 replicas weighted 100/100/800 (one tagged canary): sidedns weights the first
# address, the anchors cannot and answer the same address sets.
# Each measurement starts the server fresh, warms its cache when the scenario needs it, runs
# dnsperf with the same flags for every server, and stops the server. Runs are interleaved
# (sidedns, dnsmasq, unbound, sidedns, ...) so that machine noise spreads over all of them.
# Only the ratios between servers of one sitting mean anything: see bench/README.md.
#
# Env: RUNS=3 DURATION=10 CLIENTS=8 QUICK=1 (1 run of 3 s) SKIP_SIDEDNS=1 SCENARIOS="local hits cold mixed"
#      (also: local-weighted) LATENCY=1 (latency at 50% of unbound's peak) BASE_PORT=15350
#      SIDEDNS_ARGS="extra flags" (sidedns and baseline) KEEP_WORK=1 (keep the temp dir with the server logs)
#      BASELINE=<git rev> (also measure sidedns built at that revision, as "baseline", interleaved with the
#      rest: the before/after of a change in one sitting); BASELINE=. is the working tree's binary itself
#      BASELINE_ARGS="extra flags" (the baseline's only, after SIDEDNS_ARGS: e.g. BASELINE=. BASELINE_ARGS="--http
#      off" measures one binary with and without a flag in one sitting)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ "${QUICK:-0}" == 1 ]]; then
  RUNS=${RUNS:-1}
  DURATION=${DURATION:-3}
fi
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
SCENARIOS=${SCENARIOS:-"local hits cold mixed"}
LATENCY=${LATENCY:-1}
SKIP_SIDEDNS=${SKIP_SIDEDNS:-0}
BASE_PORT=${BASE_PORT:-15350}
SIDEDNS_ARGS=${SIDEDNS_ARGS:-}
# One scenario, one server, one run: the server's life, warm-up included. Bounds a hung run.
STEP_TIMEOUT=$((DURATION + 60))

AUTH_PORT=$BASE_PORT
declare -A PORT=([sidedns]=$((BASE_PORT + 1)) [dnsmasq]=$((BASE_PORT + 2)) [unbound]=$((BASE_PORT + 3)))
HTTP_PORT=$((BASE_PORT + 4))
BASELINE=${BASELINE:-}
BASELINE_ARGS=${BASELINE_ARGS:-}
PORT[baseline]=$((BASE_PORT + 5))
SERVERS=(sidedns dnsmasq unbound)
[[ -n "$BASELINE" ]] && SERVERS=(sidedns baseline dnsmasq unbound)
[[ "$SKIP_SIDEDNS" == 1 ]] && SERVERS=(dnsmasq unbound)
HIT_NAMES=1000
LOCAL_NAMES=1000
LOCAL_NETWORKS=4
# local-weighted: compose services of one replica per weight; -canary 1 tags the first sidedns.tags=canary.
WEIGHTED_SERVICES=333
WEIGHTS=100,100,800
# The fake daemon of each local scenario. Its -check takes the same flags, to know the names.
declare -A FAKE_ARGS=(
  [local]="-containers $LOCAL_NAMES -networks $LOCAL_NETWORKS"
  [local-weighted]="-containers 0 -services $WEIGHTED_SERVICES -weights $WEIGHTS -canary 1 -networks $LOCAL_NETWORKS"
)
declare -A NAMES=() # local scenario -> how many names its query file asks

has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------- tools ----------

install_tools() {
  local missing=()
  command -v dnsperf >/dev/null || missing+=(dnsperf)
  command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
  command -v unbound >/dev/null || missing+=(unbound)
  ((${#missing[@]} == 0)) && return
  [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root or install them: apt-get install ${missing[*]}"
  log "installing ${missing[*]} from Debian's packages"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's policy-rc.d usually keeps the services from starting here; stop them if they did anyway,
  # so that nothing of theirs sits on port 53 or competes for the CPU.
  local svc
  for svc in unbound dnsmasq; do
    if pgrep -x "$svc" >/dev/null; then
      log "stopping the $svc service that the package started"
      if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
      else
        service "$svc" stop >/dev/null 2>&1 || true
      fi
    fi
  done
}

port_busy() { ss -Hlnu "sport = :$1" 2>/dev/null | grep -q . || ss -Hlnt "sport = :$1" 2>/dev/null | grep -q .; }

# ---------- processes ----------

WORK=$(mktemp -d /tmp/sidedns-bench.XXXXXX)
declare -A PID=()

stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local name
  for name in "${!PID[@]}"; do stop_pid "${PID[$name]}"; done
  if [[ "${KEEP_WORK:-0}" == 1 ]]; then log "kept $WORK (server logs, configs, query files)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# probe PORT [QNAME]: true when PORT answers QNAME (h1.test) A with NOERROR and something in it. dnsperf shows
# no records; a reply at least 16 bytes (one compressed A record) longer than the query rules out a bare one.
probe() {
  local out
  out=$(echo "${2:-h1.test} A" | timeout 5 dnsperf -s 127.0.0.1 -p "$1" -n 1 -t 1 2>&1) || return 1
  grep -q 'Response codes: *NOERROR 1 ' <<<"$out" &&
    awk '/Average packet size:/ { gsub(/,/, ""); ok = ($7 >= $5 + 16) } END { exit !ok }' <<<"$out"
}

wait_ready() {
  local name=$1 port=$2
  for _ in $(seq 50); do
    kill -0 "${PID[$name]}" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "$name exited during start-up"; }
    probe "$port" && return 0
    sleep 0.2
  done
  cat "$WORK/$name.log" >&2
  die "$name did not answer h1.test on 127.0.0.1:$port within 10 s"
}

# sidedns_args NAME: sets ARGS to the flags of sidedns or baseline; later flags win, so SIDEDNS_ARGS and
# BASELINE_ARGS may override the defaults (e.g. --http off).
sidedns_args() {
  # shellcheck disable=SC2206 # SIDEDNS_ARGS and BASELINE_ARGS are lists of flags.
  ARGS=(--listen "127.0.0.1:${PORT[$1]}" --upstream "127.0.0.1:$AUTH_PORT" --http "127.0.0.1:$HTTP_PORT"
    --log-level error --cache-size 100000 --allow 127.0.0.0/8 --rate-limit 0 $SIDEDNS_ARGS)
  # shellcheck disable=SC2206
  [[ $1 == baseline ]] && ARGS+=($BASELINE_ARGS)
  return 0
}

# http_of NAME: the HTTP address sidedns or baseline serves /readyz on (the last --http in its flags), or
# nothing with --http off.
http_of() {
  local ARGS a next='' http=''
  sidedns_args "$1"
  for a in "${ARGS[@]}"; do
    if [[ -n $next ]]; then http=$a next=; continue; fi
    case $a in
      -http | --http) next=1 ;;
      -http=* | --http=*) http=${a#*=} ;;
    esac
  done
  [[ $http == off ]] && http=
  printf '%s' "$http"
}

# wait_local NAME PORT KIND: the local data of scenario KIND is complete: the last name of its query file
# resolves and, for sidedns with an HTTP server, /readyz says the first Docker sync is done. (Without one, the
# last name is enough: the first sync publishes every container at once.) Up to 30 s, for sidedns's first sync.
wait_local() {
  local name=$1 port=$2 kind=$3 last http=''
  last=$(awk 'END { print $1 }' "$WORK/$kind.txt")
  [[ $name == sidedns || $name == baseline ]] && http=$(http_of "$name")
  for _ in $(seq 150); do
    kill -0 "${PID[$name]}" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "$name exited during start-up"; }
    if probe "$port" "$last" && { [[ -z $http ]] || curl -fsS --max-time 2 -o /dev/null "http://$http/readyz"; }; then
      return 0
    fi
    sleep 0.2
  done
  cat "$WORK/$name.log" >&2
  die "$name did not answer $last on 127.0.0.1:$port${http:+ (or /readyz on $http)} within 30 s"
}

# write_unbound_conf FILE [LOCAL_DATA_FILE]: the unbound config; local-data lines go into its server clause.
write_unbound_conf() {
  local extra=
  [[ -n "${2:-}" ]] && extra=$(cat "$2")
  cat >"$1" <<EOF
server:
  verbosity: 0
  num-threads: 2
  interface: 127.0.0.1
  outgoing-interface: 127.0.0.1
  port: ${PORT[unbound]}
  do-ip6: no
  so-reuseport: yes
  access-control: 127.0.0.0/8 allow
  # Forwarding to a loopback upstream is refused unless this is off.
  do-not-query-localhost: no
  # test. is a built-in local zone (RFC 6761): without nodefault unbound answers it itself.
  local-zone: "test." nodefault
  # No validation: the other servers do none either.
  module-config: "iterator"
  msg-cache-size: 128m
  rrset-cache-size: 256m
  msg-cache-slabs: 2
  rrset-cache-slabs: 2
  infra-cache-slabs: 2
  key-cache-slabs: 2
  chroot: ""
  username: ""
  directory: "$WORK"
  pidfile: ""
  use-syslog: no
  logfile: ""
$extra
remote-control:
  control-enable: no
forward-zone:
  name: "test."
  forward-addr: 127.0.0.1@$AUTH_PORT
EOF
}

# start_server NAME [KIND]: with a local scenario's KIND (local, local-weighted), sidedns reads that fake
# daemon's containers, dnsmasq and unbound get the same names as local data, and the start waits until the
# last name resolves.
start_server() {
  local name=$1 port=${PORT[$1]} kind=${2:-} ARGS=()
  local sock=$WORK/no-docker.sock hosts=() ubconf=$WORK/unbound.conf
  if [[ -n $kind ]]; then
    sock=$WORK/$kind.sock
    hosts=(--addn-hosts="$WORK/$kind.hosts")
    ubconf=$WORK/unbound-$kind.conf
  fi
  port_busy "$port" && die "port $port for $name is already in use (set BASE_PORT)"
  case $name in
    sidedns | baseline)
      sidedns_args "$name"
      DOCKER_HOST=unix://$sock "$WORK/$name" "${ARGS[@]}" >"$WORK/$name.log" 2>&1 &
      ;;
    dnsmasq)
      dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --server="127.0.0.1#$AUTH_PORT" \
        --bind-interfaces --listen-address=127.0.0.1 --port="$port" --cache-size=10000 "${hosts[@]}" \
        --user=root --pid-file= --log-facility=- >"$WORK/$name.log" 2>&1 &
      ;;
    unbound)
      unbound -d -p -c "$ubconf" >"$WORK/$name.log" 2>&1 &
      ;;
  esac
  PID[$name]=$!
  wait_ready "$name" "$port"
  [[ -n $kind ]] && wait_local "$name" "$port" "$kind"
  return 0
}

stop_server() {
  stop_pid "${PID[$1]}"
  unset "PID[$1]"
}

# ---------- query files ----------

gen_hits() { awk -v n="$HIT_NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "h%d.test A\n", i }' >"$1"; }

# setup_local KIND: start the fake daemon of local scenario KIND (it writes its names as a hosts file, a line
# per address), derive the query file (each name once; the bare ones are answered from sidedns's admin view,
# as queries from 127.0.0.1 get it) and unbound's local-data from it, then check once that every server answers
# every name with the right addresses and, for sidedns, that first addresses follow the weights.
setup_local() {
  local kind=$1 srv weights line
  # shellcheck disable=SC2086 # FAKE_ARGS are lists of flags.
  "$WORK/fakedocker" -socket "$WORK/$kind.sock" ${FAKE_ARGS[$kind]} -hosts "$WORK/$kind.hosts" \
    >"$WORK/fakedocker-$kind.out" 2>"$WORK/fakedocker-$kind.log" &
  PID[fakedocker-$kind]=$!
  for _ in $(seq 100); do
    grep -qx ready "$WORK/fakedocker-$kind.out" 2>/dev/null && break
    kill -0 "${PID[fakedocker-$kind]}" 2>/dev/null || { cat "$WORK/fakedocker-$kind.log" >&2; die "fakedocker ($kind) exited"; }
    sleep 0.1
  done
  grep -qx ready "$WORK/fakedocker-$kind.out" || die "fakedocker ($kind) did not serve within 10 s"
  awk '!seen[$2]++ { printf "%s A\n", $2 }' "$WORK/$kind.hosts" >"$WORK/$kind.txt"
  NAMES[$kind]=$(wc -l <"$WORK/$kind.txt")
  if [[ $kind == local ]]; then
    ((NAMES[local] == LOCAL_NAMES)) || die "fakedocker wrote ${NAMES[local]} names, want $LOCAL_NAMES"
  else
    ((NAMES[$kind] == 3 * WEIGHTED_SERVICES)) || die "fakedocker wrote ${NAMES[$kind]} names, want $((3 * WEIGHTED_SERVICES))"
  fi
  # No local-zone: unbound makes a transparent zone for each local-data name by itself; the lines of one name
  # make one RRset.
  awk '{ printf "  local-data: \"%s. A %s\"\n", $2, $1 }' "$WORK/$kind.hosts" >"$WORK/unbound-$kind-data.conf"
  write_unbound_conf "$WORK/unbound-$kind.conf" "$WORK/unbound-$kind-data.conf"
  for srv in "${SERVERS[@]}"; do
    start_server "$srv" "$kind"
    weights=
    [[ $kind == local-weighted && ($srv == sidedns || $srv == baseline) ]] && weights=-check-weights
    # shellcheck disable=SC2086
    "$WORK/fakedocker" ${FAKE_ARGS[$kind]} -check "127.0.0.1:${PORT[$srv]}" $weights \
      >"$WORK/check-$kind-$srv.out" 2>&1 || { cat "$WORK/check-$kind-$srv.out" >&2; die "$srv gives wrong $kind answers"; }
    log "$kind: $srv: $(grep '^check' "$WORK/check-$kind-$srv.out")"
    while read -r line; do log "$kind: $srv: $line"; done < <(grep '^weights' "$WORK/check-$kind-$srv.out")
    stop_server "$srv"
  done
}

# Enough unique names that dnsperf never loops back to a name it already asked: 200k per second.
UNIQUE_LINES=$((DURATION * 200000))

# gen_cold FILE PREFIX: every name unique; PREFIX makes them unique across runs too.
gen_cold() { awk -v n="$UNIQUE_LINES" -v p="$2" 'BEGIN { for (i = 1; i <= n; i++) printf "%s-%d.test A\n", p, i }' >"$1"; }

# gen_mixed FILE PREFIX: 9 in 10 from the hit names, 1 in 10 unique.
gen_mixed() {
  awk -v n="$UNIQUE_LINES" -v h="$HIT_NAMES" -v p="$2" 'BEGIN {
    for (i = 1; i <= n; i++)
      if (i % 10 == 0) printf "%s-%d.test A\n", p, i; else printf "h%d.test A\n", (i * 7919) % h + 1
  }' >"$1"
}

# ---------- measuring ----------

# parse FILE: prints "qps avg_ms stddev_ms lost_pct notok_pct" from dnsperf's summary.
parse() {
  awk '
    /Queries completed:/ { done = $3 }
    /Queries lost:/ { lost = $4; gsub(/[()%]/, "", lost) }
    /Response codes:/ { for (i = 3; i <= NF; i += 2) if ($i != "NOERROR") { n = $(i + 1); bad += n } }
    /Queries per second:/ { qps = $4 }
    /Average Latency \(s\):/ { avg = $4 * 1000 }
    /Latency StdDev \(s\):/ { sd = $4 * 1000 }
    END {
      if (qps == "") exit 1
      printf "%.0f %.3f %.3f %s %.2f\n", qps, avg, sd, lost, (done > 0 ? 100 * bad / done : 0)
    }' "$1"
}

# percentiles FILE: prints "p50_ms p99_ms p999_ms" from dnsperf -v's per-query lines ("> NOERROR name A secs").
percentiles() {
  awk '$1 == ">" && NF >= 5 { print $NF * 1000 }' "$1" | sort -g | awk '
    { v[NR] = $1 }
    function at(p,  k) { k = int(p * NR + 0.999999); if (k < 1) k = 1; return v[k] }
    END { if (NR == 0) exit 1; printf "%.3f %.3f %.3f\n", at(0.50), at(0.99), at(0.999) }'
}

declare -A RAW=() # "scenario|server" -> newline-separated parse lines

measure() { # measure SCENARIO SERVER RUN
  local sc=$1 srv=$2 run=$3 file warm=$WORK/hits.txt out port=${PORT[$2]} extra=() mode=
  case $sc in
    local | local-weighted) file=$WORK/$sc.txt; warm=$file; mode=$sc ;;
    hits) file=$WORK/hits.txt ;;
    cold) file=$WORK/q-cold.txt; gen_cold "$file" "c$run$srv$RANDOM" ;;
    mixed) file=$WORK/q-mixed.txt; gen_mixed "$file" "m$run$srv$RANDOM" ;;
    lat50) file=$WORK/hits.txt; extra=(-Q "$LAT_QPS" -v) ;;
  esac
  start_server "$srv" "$mode"
  if [[ $sc != cold ]]; then
    timeout 30 dnsperf -s 127.0.0.1 -p "$port" -d "$warm" -c "$CLIENTS" -n 1 >"$WORK/warm.out" 2>&1 ||
      die "warm-up of $srv failed"
    # The warm-up pass is also a check: every name answered, and NOERROR.
    [[ -z $mode ]] || grep -q "Response codes: *NOERROR ${NAMES[$sc]} " "$WORK/warm.out" ||
      { cat "$WORK/warm.out" >&2; die "$sc: $srv did not answer all ${NAMES[$sc]} names with NOERROR"; }
  fi
  out=$WORK/out-$sc-$srv-$run.txt
  # In the background so that a signal's trap runs at once, not after the run.
  timeout "$STEP_TIMEOUT" dnsperf -s 127.0.0.1 -p "$port" -d "$file" -c "$CLIENTS" -l "$DURATION" "${extra[@]}" >"$out" 2>&1 &
  PID[dnsperf]=$!
  wait "${PID[dnsperf]}" || { cat "$out" >&2; die "dnsperf against $srv failed"; }
  unset "PID[dnsperf]"
  stop_server "$srv"
  local line
  line=$(parse "$out") || { cat "$out" >&2; die "cannot parse dnsperf output for $sc/$srv"; }
  [[ $sc == lat50 ]] && line="$line $(percentiles "$out")"
  rm -f "$out"
  RAW[$sc|$srv]+="$line"$'\n'
  log "$sc $srv run $run: $line"
}

# median_col SCENARIO SERVER COL: median of column COL over the runs (max for COL 4, lost).
median_col() {
  printf '%s' "${RAW[$1|$2]:-}" | awk -v c="$3" 'NF { print $c }' | sort -g |
    awk -v c="$3" '{ v[NR] = $1 } END {
      if (NR == 0) { print "-"; exit }
      if (c == 4) { print v[NR]; exit }
      print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)
    }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2fx", a / b }'; }

# ---------- main ----------

install_tools
port_busy "$AUTH_PORT" && die "port $AUTH_PORT for the authserver is already in use (set BASE_PORT)"

log "building into $WORK"
(cd "$ROOT" && go build -o "$WORK/authserver" ./bench/authserver) || die "build authserver"
if has_scenario local || has_scenario local-weighted; then
  command -v curl >/dev/null || die "curl is missing (the local scenarios wait for sidedns's /readyz)"
  (cd "$ROOT" && go build -o "$WORK/fakedocker" ./bench/fakedocker) || die "build fakedocker"
fi
if [[ "$SKIP_SIDEDNS" != 1 ]]; then
  (cd "$ROOT" && go build -o "$WORK/sidedns" ./cmd/sidedns) || die "build sidedns (SKIP_SIDEDNS=1 runs only the anchors)"
fi
BASELINE_DESC=
if [[ -n "$BASELINE" && "$SKIP_SIDEDNS" != 1 ]]; then
  if [[ $BASELINE == . ]]; then
    cp "$WORK/sidedns" "$WORK/baseline"
    BASELINE_DESC="the working tree's sidedns binary, the same as sidedns"
  else
    rev=$(git -C "$ROOT" rev-parse --verify --short "$BASELINE^{commit}") || die "no revision $BASELINE"
    # An export, not a worktree: nothing is registered in the repository, nothing is left if the build fails.
    mkdir "$WORK/baseline-src"
    git -C "$ROOT" archive "$rev" | tar -x -C "$WORK/baseline-src" || die "export $BASELINE"
    (cd "$WORK/baseline-src" && go build -o "$WORK/baseline" ./cmd/sidedns) || die "build sidedns at $BASELINE"
    rm -rf "$WORK/baseline-src"
    BASELINE_DESC="sidedns built at $BASELINE ($rev)"
  fi
  [[ -n $BASELINE_ARGS ]] && BASELINE_DESC+=", with extra flags: $BASELINE_ARGS"
  log "baseline: $BASELINE_DESC"
fi
write_unbound_conf "$WORK/unbound.conf"
gen_hits "$WORK/hits.txt"

"$WORK/authserver" -listen "127.0.0.1:$AUTH_PORT" >"$WORK/authserver.log" 2>&1 &
PID[authserver]=$!
wait_ready authserver "$AUTH_PORT"
for kind in local local-weighted; do
  if has_scenario "$kind"; then setup_local "$kind"; fi
done

log "servers: ${SERVERS[*]}; scenarios: $SCENARIOS; runs $RUNS x ${DURATION}s; dnsperf -c $CLIENTS"
for sc in $SCENARIOS; do
  for run in $(seq "$RUNS"); do
    for srv in "${SERVERS[@]}"; do measure "$sc" "$srv" "$run"; done
  done
done

LAT_QPS=
if [[ "$LATENCY" == 1 && " $SCENARIOS " == *" hits "* ]]; then
  LAT_QPS=$(awk -v q="$(median_col hits unbound 1)" 'BEGIN { printf "%d", q / 2 }')
  log "lat50: cache hits at -Q $LAT_QPS (half of unbound's median peak), latency from dnsperf -v"
  for run in $(seq "$RUNS"); do
    for srv in "${SERVERS[@]}"; do measure lat50 "$srv" "$run"; done
  done
fi

# ---------- report ----------

SCW=8 # width of the scenario column
for sc in $SCENARIOS; do SCW=$((${#sc} > SCW ? ${#sc} : SCW)); done

mkdir -p "$ROOT/bench/results"
RESULT=$ROOT/bench/results/$(date +%Y%m%d-%H%M%S).txt
{
  echo "sidedns bench $(date -Iseconds)  commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty')"
  echo "host: $(nproc) cores, $(uname -r); $(dnsperf -h 2>&1 | grep -m1 Version | sed 's/Version/dnsperf/'); $(dnsmasq --version | head -1 | awk '{print "dnsmasq", $3}'); $(unbound -V | head -1 | sed 's/Version/unbound/')"
  echo "dnsperf -s 127.0.0.1 -c $CLIENTS -l $DURATION (no -Q); $RUNS run(s) per server, interleaved, medians; each run on a freshly started server"
  if has_scenario local; then
    echo "local: $LOCAL_NAMES bare container names (sidedns: fake daemon; dnsmasq: addn-hosts; unbound: local-data), answers checked once"
  fi
  if has_scenario local-weighted; then
    echo "local-weighted: $WEIGHTED_SERVICES compose services x 3 replicas, sidedns.weight $WEIGHTS, replica 1 tagged canary;" \
      "${NAMES[local-weighted]} names: <svc> and <svc>.bench.docker (3 addresses), canary.<svc>.bench.docker (1);" \
      "the same address sets for all, weights checked on sidedns"
  fi
  echo "hits: $HIT_NAMES names, warmed by one pass; cold: unique names; mixed: 90% hit names, 10% unique"
  if [[ -n "$BASELINE_DESC" ]]; then echo "baseline: $BASELINE_DESC; sidedns: the working tree"; fi
  if [[ -n "$SIDEDNS_ARGS" ]]; then echo "sidedns extra flags (baseline too): $SIDEDNS_ARGS"; fi
  echo
  printf "%-${SCW}s %-8s %10s %9s %9s %7s %7s %9s %9s\n" scenario server QPS avg_ms sd_ms lost% notok% vs_unbnd vs_dnsmq
  for sc in $SCENARIOS; do
    for srv in "${SERVERS[@]}"; do
      q=$(median_col "$sc" "$srv" 1)
      printf "%-${SCW}s %-8s %10s %9s %9s %7s %7s %9s %9s\n" "$sc" "$srv" "$q" \
        "$(median_col "$sc" "$srv" 2)" "$(median_col "$sc" "$srv" 3)" "$(median_col "$sc" "$srv" 4)" \
        "$(median_col "$sc" "$srv" 5)" \
        "$(ratio "$q" "$(median_col "$sc" unbound 1)")" "$(ratio "$q" "$(median_col "$sc" dnsmasq 1)")"
    done
  done
  if [[ -n "$LAT_QPS" ]]; then
    echo
    echo "latency at 50% load: cache hits, dnsperf -Q $LAT_QPS -v; percentiles over every answer; ratio = p99 / other's p99 (lower is better)"
    echo "load% = QPS reached / QPS asked; below ~98% the server could not keep up and its latency is queueing"
    printf "%-${SCW}s %-8s %10s %6s %9s %9s %9s %7s %9s %9s\n" scenario server QPS load% p50_ms p99_ms p99.9_ms lost% p99/unb p99/dnsm
    for srv in "${SERVERS[@]}"; do
      q=$(median_col lat50 "$srv" 1)
      p99=$(median_col lat50 "$srv" 7)
      printf "%-${SCW}s %-8s %10s %6s %9s %9s %9s %7s %9s %9s\n" lat50 "$srv" "$q" \
        "$(awk -v q="$q" -v t="$LAT_QPS" 'BEGIN { printf "%.0f", 100 * q / t }')" \
        "$(median_col lat50 "$srv" 6)" "$p99" "$(median_col lat50 "$srv" 8)" "$(median_col lat50 "$srv" 4)" \
        "$(ratio "$p99" "$(median_col lat50 unbound 7)")" "$(ratio "$p99" "$(median_col lat50 dnsmasq 7)")"
    done
  fi
  echo
  echo "raw runs (qps avg_ms sd_ms lost% notok% [p50 p99 p99.9 ms]):"
  for key in $(printf '%s\n' "${!RAW[@]}" | sort); do
    printf "  %-$((SCW + 9))s %s\n" "$key" "$(printf '%s' "${RAW[$key]}" | paste -sd ';' | sed 's/;/ ; /g')"
  done
} | tee "$RESULT"
log "written to $RESULT"

#!/usr/bin/env bash
# Side-by-side benchmark: kwikid-gateway vs nginx (one worker) doing the same token injection
# in front of one shared kwikid-mock over HTTPS, plus the floor (the load generator straight at
# the mock), and the gateway with its rate limits shared through a local redis-server
# (gateway_redis); the gateway and nginx also serve h2c callers (h2load). See benches/README.md. Loopback and unix sockets only; every run is bounded
# in time.
#
#   bash benches/install.sh     # once: nginx, wrk, oha, h2load, python3
#   bash benches/run.sh         # builds with cargo --release --locked, runs, writes
#                               # benches/results/latest.md
#
# Knobs (environment): ROUNDS=3 DURATION=10 RATE=1000 RATE_DURATION=10 CONNS=64
# IDLE_CONNS=1000 WARMUP=2 PAIRS=10 SLICE=3 PROXY_CPU=0 LOAD_CPU=1 KEEP_WORKDIR=0 OUT=benches/results/latest.md
# H2=1 H2_REQUESTS=10000*DURATION H2_CONNS=8 H2_STREAMS=8 H2_MAX_SECONDS=6*DURATION+30
# GATEWAY_BIN=target/release/kwikid-gateway MOCK_BIN=target/release/kwikid-mock (either set:
# that one is not built)
# CONTENDERS="floor gateway gateway_redis nginx" (a subset is fine for a quick look)
# PROXY_CPU and LOAD_CPU are taskset CPU lists: PROXY_CPU=0,1 LOAD_CPU=0,1 gives the proxy both
# CPUs (the gateway then runs one runtime worker per CPU) and has the load share them.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-1000}
RATE_DURATION=${RATE_DURATION:-10}
CONNS=${CONNS:-64}
IDLE_CONNS=${IDLE_CONNS:-1000}
WARMUP=${WARMUP:-2}
# Interleaved CPU phase (gateway and nginx both contenders): PAIRS pairs of SLICE-second
# max-load slices. PAIRS=0 leaves it out.
PAIRS=${PAIRS:-10}
SLICE=${SLICE:-3}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
# The HTTP/2 phase (gateway and nginx): h2load sends H2_REQUESTS over H2_CONNS h2c connections
# with H2_STREAMS streams in flight on each, within H2_MAX_SECONDS. H2=0 leaves it out.
H2=${H2:-1}
H2_REQUESTS=${H2_REQUESTS:-$((DURATION * 10000))}
H2_CONNS=${H2_CONNS:-8}
H2_STREAMS=${H2_STREAMS:-8}
H2_MAX_SECONDS=${H2_MAX_SECONDS:-$((DURATION * 6 + 30))}
read -r -a contenders <<<"${CONTENDERS:-floor gateway gateway_redis nginx}"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
OUT=${OUT:-$here/results/latest.md}
BODY='{"handshake_id":"bench-session-12345","callback_url":"https://app.example.com/dl/cb"}'
ROUTE=/verification/v2/digilocker/init

bench_name=bench
# shellcheck source=benches/lib.sh
source "$here/lib.sh"

# ---------------------------------------------------------------------------- preflight
want_redis=0 want_h2=0
for who in "${contenders[@]}"; do
    case $who in
        floor) ;;
        gateway | nginx) [ "$H2" = 0 ] || want_h2=1 ;;
        gateway_redis) want_redis=1 ;;
        *) die "unknown contender: $who (floor, gateway, gateway_redis, nginx)" ;;
    esac
done
tools=(cargo nginx wrk oha python3 taskset timeout awk sed nm)
[ "$want_redis" = 0 ] || tools+=(redis-server)
[ "$want_h2" = 0 ] || tools+=(h2load)
need_tools "${tools[@]}"
[ "$(nproc --all)" -ge 2 ] || die "needs at least 2 CPUs (proxy on one, load + mock on another)"
# CPU lists as taskset -c takes them: 0 | 0,1 | 0-3 | 0,2-3.
cpu_count() {
    local part n=0 lo hi parts=()
    IFS=, read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        lo=${part%-*}
        hi=${part#*-}
        n=$((n + hi - lo + 1))
    done
    echo "$n"
}
for list in "$PROXY_CPU" "$LOAD_CPU"; do
    [[ $list =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || die "not a CPU list: $list (e.g. 0, 0,1, 0-1)"
    taskset -c "$list" true 2>/dev/null || die "cannot pin to CPUs $list (taskset -c $list)"
done
proxy_cpus=$(cpu_count "$PROXY_CPU")
raise_fd_limit
clk_tck=$(getconf CLK_TCK)

# GATEWAY_BIN=/path/to/kwikid-gateway measures another build (say, the last release) with
# this checkout's mock and configs: an A/B of two builds is two runs on a quiet machine.
build_release
layout=$(code_layout "$gateway_bin")
say "gateway code layout (build.rs): $layout"
make_work_dir bench
results=$work/results.tsv
: >"$results"
# The request body of every phase, as a file for h2load (-d); no trailing newline.
printf '%s' "$BODY" >"$work/body.json"

cleanup() {
    stop_started
    if [ "$KEEP_WORKDIR" = 1 ]; then
        say "work dir kept: $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# /proc/PID/stat fields summed over PIDs $2...: $1 is an awk expression over the fields after
# the command name ($1 there is the state, field 3 of proc(5)). Exited threads are included.
stat_sum() {
    local expr=$1 pid total=0 t
    shift
    for pid in "$@"; do
        t=$(awk "{ sub(/^.*\\) /, \"\"); print $expr }" "/proc/$pid/stat")
        total=$((total + t))
    done
    echo "$total"
}
# utime + stime, clock ticks.
cpu_ticks() { stat_sum '$12 + $13' "$@"; }
# utime alone: the user-space share of cpu_ticks.
user_ticks() { stat_sum '$12' "$@"; }
# Minor page faults: pages the kernel had to map (again), each a trap into the kernel that
# the proxy's system time pays for.
minor_faults() { stat_sum '$8' "$@"; }

# "steal ticks, ns": the clock ticks the hypervisor gave this machine's CPUs to other guests
# (/proc/stat, summed over all CPUs) and the wall clock. A phase that lost a large share of its
# CPUs to the host measures the host more than the proxy.
host_clock() { echo "$(awk '$1 == "cpu" { print $9 }' /proc/stat) $(date +%s%N)"; }

# Percent of all CPUs' time stolen between host_clock readings $1 and $2.
steal_pct() {
    awk -v a="$1" -v b="$2" -v hz="$clk_tck" -v cpus="$(nproc --all)" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        secs = (y[2] - x[2]) / 1e9
        printf "%.1f", (secs > 0 ? (y[1] - x[1]) / hz / secs / cpus * 100 : 0) }'
}

# CPU microseconds per request: $1 clock ticks spent over $2 requests.
us_per_request() { awk -v t="$1" -v hz="$clk_tck" -v n="$2" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }'; }

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; }

# ---------------------------------------------------------------------------- the mock
token=$(random_token)
export KWIKID_API_TOKEN=$token

say "starting kwikid-mock on CPU $LOAD_CPU"
start_mock "$mock_bin" "$LOAD_CPU" "$work"

# ---------------------------------------------------------------------------- redis
# One redis-server for the whole run, only for gateway_redis: a unix socket in the work dir
# (no TCP port at all), nothing persisted, pinned with the mock and the load generator.
redis_pid=""
redis_sock=$work/redis.sock
if [ "$want_redis" = 1 ]; then
    say "starting redis-server on CPU $LOAD_CPU (unix socket)"
    taskset -c "$LOAD_CPU" redis-server --port 0 --unixsocket "$redis_sock" --unixsocketperm 700 \
        --save "" --appendonly no --daemonize no --logfile "$work/redis.log" >/dev/null 2>&1 &
    redis_pid=$!
    started_pids+=("$redis_pid")
    for ((i = 0; i < 100; i++)); do
        [ -S "$redis_sock" ] && break
        kill -0 "$redis_pid" 2>/dev/null || { tail -5 "$work/redis.log" >&2; die "redis-server exited"; }
        sleep 0.1
    done
    [ -S "$redis_sock" ] || die "redis-server did not open $redis_sock"
fi

# ---------------------------------------------------------------------------- contender A
gateway_port=$(free_port)
admin_port=$(free_port)
# $1 = output file, $2 = extra [rate_limit] lines (the Redis backend for gateway_redis).
write_gateway_config() {
    cat >"$1" <<EOF
# kwikid-gateway for the benchmark: config.toml with loopback ports, the mock as upstream,
# limits far above the offered load, idle keep-alive kept 60 s (as nginx's keepalive_timeout).
[listen]
addr = "127.0.0.1:$gateway_port"
allow_cidrs = ["127.0.0.0/8", "::1/128"]
max_connections = 4096
header_read_timeout = "60s"
max_body_bytes = 16384
shutdown_grace = "5s"

[admin]
addr = "127.0.0.1:$admin_port"

[upstream]
base_url = "https://localhost:$mock_port"
connect_timeout = "2s"
request_timeout = "10s"
ca_file = "$work/ca.pem"
pool_max_idle_per_host = 64

[token]
env = "KWIKID_API_TOKEN"

[rate_limit]
global = { per_second = 1000000, burst = 1000000 }
per_caller = { per_second = 1000000, burst = 1000000 }
caller_header = "x-caller-id"
max_wait = "0s"
$2

[[routes]]
method = "POST"
path = "$ROUTE"

[log]
level = "warn"
format = "json"
EOF
}
write_gateway_config "$work/gateway.toml" ""
"$gateway_bin" check --config "$work/gateway.toml" >/dev/null || die "gateway config rejected"
if [ "$want_redis" = 1 ]; then
    # The same gateway; only the rate limits live in Redis (and `check` PINGs it). Its
    # timeout is 1 s, not the default 50 ms: redis-server shares LOAD_CPU with wrk and the
    # mock, and one reply that waits 50 ms for that CPU would void the whole run for a
    # reason that says nothing about the gateway. A slow reply still shows in the latency.
    write_gateway_config "$work/gateway-redis.toml" "backend = \"redis\"
redis_url = \"redis+unix://$redis_sock\"
redis_timeout = \"1s\"
on_redis_error = \"local\""
    "$gateway_bin" check --config "$work/gateway-redis.toml" >/dev/null || die "gateway_redis config rejected"
fi

# $1 = config, $2 = name for the log files.
start_gateway() {
    local config=${1:-$work/gateway.toml} name=${2:-gateway}
    start_server "$PROXY_CPU" "$work/$name-access.log" "$work/$name.err" "$gateway_port" 10 \
        "$gateway_bin" --config "$config"
    proxy_pid=$server_pid
    proxy_port=$gateway_port
    h2_port=$gateway_port
    cpu_pids=("$proxy_pid")
    rss_pid=$proxy_pid
}
stop_gateway() { stop_pid "$proxy_pid"; }
start_gateway_redis() { start_gateway "$work/gateway-redis.toml" gateway-redis; }
stop_gateway_redis() { stop_pid "$proxy_pid"; }

# gateway_redis only: scrapes the admin /metrics and prints "backend errors calls requests":
# kwikid_gateway_rate_limit_backend{backend="redis"}, the sum of
# kwikid_gateway_redis_errors_total, the Redis round trips made (the count of
# kwikid_gateway_redis_duration_seconds) and the requests answered
# (kwikid_gateway_requests_total). Requests the caller gave up on (status 499: wrk stops with
# requests in flight) are left out: one dropped while waiting for Redis has no round trip.
redis_metrics() {
    python3 - "$admin_port" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
backend, errors, calls, requests = "absent", 0, 0, 0
for line in text.splitlines():
    if not line or line.startswith("#"):
        continue
    series, _, value = line.partition(" ")
    value = value.split()[0]
    name = series.partition("{")[0]
    if series == 'kwikid_gateway_rate_limit_backend{backend="redis"}':
        backend = value
    elif name == "kwikid_gateway_redis_errors_total":
        errors += int(float(value))
    elif name == "kwikid_gateway_redis_duration_seconds_count":
        calls += int(float(value))
    elif name == "kwikid_gateway_requests_total" and 'status="499"' not in series:
        requests += int(float(value))
print(backend, errors, calls, requests)
PY
}

# Makes the run INVALID unless Redis decided every request so far: backend redis = 1, no Redis
# errors, and at least one Redis round trip per answered request. $1 = round, $2 = phase.
check_redis() {
    local round=$1 phase=$2 scraped backend errors calls requests
    scraped=$(redis_metrics) || { invalid=1; say "INVALID: gateway_redis /metrics unreadable after $phase"; return; }
    read -r backend errors calls requests <<<"$scraped"
    record "$round" gateway_redis redis_errors "$errors"
    record "$round" gateway_redis redis_unchecked "$((requests > calls ? requests - calls : 0))"
    if [ "$backend" != 1 ] || [ "$errors" != 0 ] || [ "$calls" -lt "$requests" ]; then
        invalid=1
        say "INVALID: gateway_redis after $phase: backend redis=$backend, redis errors=$errors," \
            "$calls Redis round trips for $requests requests"
    fi
}

# ---------------------------------------------------------------------------- contender B
nginx_port=$(free_port)
nginx_h2_port=$(free_port)
write_nginx_conf "$work/nginx" "$nginx_port" "$mock_port" "$work/ca.pem" "$token" "$nginx_h2_port"
nginx -t -q -p "$work/nginx/" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" \
    || die "nginx config rejected"

start_nginx() {
    start_server "$PROXY_CPU" /dev/null "$work/nginx/stderr" "$nginx_port" 10 \
        nginx -p "$work/nginx/" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" -g 'daemon off;'
    proxy_pid=$server_pid
    proxy_port=$nginx_port
    h2_port=$nginx_h2_port
    local worker
    worker=$(nginx_worker "$proxy_pid")
    cpu_pids=("$proxy_pid" "$worker")
    rss_pid=$worker
}
stop_nginx() { stop_pid "$proxy_pid"; }

# ---------------------------------------------------------------------------- load
# wrk -t1 -c$CONNS for $1 seconds at $2; prints wrk's output; the BENCH line is parsed later.
run_wrk() {
    local seconds=$1 url=$2 auth=${3:-}
    BENCH_AUTHORIZATION=$auth timeout $((seconds + 30)) \
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${seconds}s" --timeout 5s \
        -s "$here/post.lua" "$url"
}
bench_field() { sed -n "s/^BENCH .*\b$1=\([0-9]*\).*/\1/p" "$2" | head -1; }

# oha at a fixed $RATE req/s with $CONNS connections; JSON to stdout.
run_oha() {
    local url=$1; shift
    timeout $((RATE_DURATION + 30)) taskset -c "$LOAD_CPU" oha --no-tui \
        --output-format json -z "${RATE_DURATION}s" -q "$RATE" -c "$CONNS" \
        --latency-correction --wait-ongoing-requests-after-deadline \
        -m POST -T application/json -d "$BODY" -H "x-caller-id: bench" \
        --cacert "$work/ca.pem" "$@" "$url"
}

# h2load: $H2_REQUESTS POSTs over $H2_CONNS h2c connections (prior knowledge: the HTTP/2
# preface on plain TCP), $H2_STREAMS streams in flight on each, to URL $1. A connection is
# given up after H2_MAX_SECONDS (-T) or 10 s without a byte (-N): bounded in requests and in
# time. Prints h2load's output.
run_h2load() {
    timeout $((H2_MAX_SECONDS + 30)) taskset -c "$LOAD_CPU" h2load -n "$H2_REQUESTS" \
        -c "$H2_CONNS" -m "$H2_STREAMS" -T "${H2_MAX_SECONDS}s" -N 10s \
        -H 'content-type: application/json' -H 'x-caller-id: bench' -d "$work/body.json" "$1"
}

# Sockets the proxy holds open, over the given PIDs.
proxy_sockets() {
    local pid n=0
    for pid in "$@"; do
        n=$((n + $(find "/proc/$pid/fd" -lname 'socket:*' 2>/dev/null | wc -l)))
    done
    echo "$n"
}

invalid=0
# redis-server's utime + stime per request over a phase: not the proxy's CPU, reported apart.
# $1 = round, $2 = metric, $3 = ticks before, $4 = requests.
record_redis_cpu() {
    record "$1" gateway_redis "$2" "$(us_per_request $(($(cpu_ticks "$redis_pid") - $3)) "$4")"
}

# Measures one contender in one round; $1 = floor | gateway | gateway_redis | nginx.
measure() {
    local who=$1 round=$2 url auth="" oha_args=() before after requests non200 socket_errors
    local redis_before=0
    local log=$work/r$round-$who
    case $who in
        floor)
            url="https://127.0.0.1:$mock_port$ROUTE"
            auth="Bearer $token"
            oha_args=(-H "authorization: Bearer $token")
            ;;
        gateway) start_gateway; url="http://127.0.0.1:$proxy_port$ROUTE" ;;
        gateway_redis) start_gateway_redis; url="http://127.0.0.1:$proxy_port$ROUTE" ;;
        nginx) start_nginx; url="http://127.0.0.1:$proxy_port$ROUTE" ;;
    esac

    say "round $round: $who: warm-up ${WARMUP}s"
    run_wrk "$WARMUP" "$url" "$auth" >"$log.warmup" 2>&1 || die "wrk failed ($who warm-up)"
    [ "$who" != gateway_redis ] || check_redis "$round" warm-up

    say "round $round: $who: max req/s, $CONNS connections, ${DURATION}s"
    [ "$who" = floor ] || before=$(cpu_ticks "${cpu_pids[@]}") user_before=$(user_ticks "${cpu_pids[@]}") \
        faults_before=$(minor_faults "${cpu_pids[@]}")
    [ "$who" != gateway_redis ] || redis_before=$(cpu_ticks "$redis_pid")
    host_before=$(host_clock)
    run_wrk "$DURATION" "$url" "$auth" >"$log.wrk" 2>&1 || die "wrk failed ($who)"
    [ "$who" = floor ] || after=$(cpu_ticks "${cpu_pids[@]}") user_after=$(user_ticks "${cpu_pids[@]}") \
        faults_after=$(minor_faults "${cpu_pids[@]}")
    record "$round" "$who" steal_pct_max "$(steal_pct "$host_before" "$(host_clock)")"
    requests=$(bench_field requests "$log.wrk")
    local duration_us
    duration_us=$(bench_field duration_us "$log.wrk")
    non200=$(bench_field non200 "$log.wrk")
    socket_errors=$(bench_field socket_errors "$log.wrk")
    if [ -z "$requests" ] || [ "$requests" -eq 0 ]; then die "no requests completed ($who); see $log.wrk"; fi
    record "$round" "$who" rps "$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.0f", r / (d / 1e6) }')"
    record "$round" "$who" non200 "$non200"
    record "$round" "$who" socket_errors "$socket_errors"
    if [ "$non200" != 0 ] || [ "$socket_errors" != 0 ]; then
        invalid=1
        say "INVALID: $who answered $non200 non-200, $socket_errors socket errors"
        grep '^BENCH first_non200' "$log.wrk" >&2 || true
    fi
    if [ "$who" != floor ]; then
        record "$round" "$who" cpu_us_max "$(us_per_request $((after - before)) "$requests")"
        record "$round" "$who" user_us_max "$(us_per_request $((user_after - user_before)) "$requests")"
        record "$round" "$who" faults_per_1k_max "$(awk -v f="$((faults_after - faults_before))" -v n="$requests" 'BEGIN { printf "%.1f", f * 1000 / n }')"
    fi
    if [ "$who" = gateway_redis ]; then
        record_redis_cpu "$round" redis_cpu_us_max "$redis_before" "$requests"
        check_redis "$round" "max req/s"
    fi

    say "round $round: $who: fixed $RATE req/s, ${RATE_DURATION}s (oha)"
    [ "$who" = floor ] || before=$(cpu_ticks "${cpu_pids[@]}")
    [ "$who" != gateway_redis ] || redis_before=$(cpu_ticks "$redis_pid")
    host_before=$(host_clock)
    run_oha "$url" "${oha_args[@]}" >"$log.oha.json" 2>"$log.oha.err" || die "oha failed ($who); see $log.oha.err"
    [ "$who" = floor ] || after=$(cpu_ticks "${cpu_pids[@]}")
    record "$round" "$who" steal_pct_rate "$(steal_pct "$host_before" "$(host_clock)")"
    local parsed
    parsed=$(python3 - "$log.oha.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
codes = {str(k): v for k, v in r.get("statusCodeDistribution", {}).items()}
total = sum(codes.values())
non200 = total - codes.get("200", 0)
errors = sum(r.get("errorDistribution", {}).values())
p = r["latencyPercentiles"]
print(total, non200, errors, p["p50"] * 1000, p["p99"] * 1000)
PY
    )
    local total o_non200 o_errors p50 p99
    read -r total o_non200 o_errors p50 p99 <<<"$parsed"
    record "$round" "$who" p50_ms "$p50"
    record "$round" "$who" p99_ms "$p99"
    record "$round" "$who" non200 "$o_non200"
    record "$round" "$who" socket_errors "$o_errors"
    if [ "$o_non200" != 0 ] || [ "$o_errors" != 0 ]; then
        invalid=1
        say "INVALID: $who at $RATE req/s: $o_non200 non-200, $o_errors errors (see $log.oha.json)"
    fi
    if [ "$who" != floor ]; then
        record "$round" "$who" cpu_us_rate "$(us_per_request $((after - before)) "$total")"
        if [ "$who" = gateway_redis ]; then
            record_redis_cpu "$round" redis_cpu_us_rate "$redis_before" "$total"
            check_redis "$round" "$RATE req/s"
        fi
        record "$round" "$who" peak_rss_mib "$(awk -v k="$(status_kib "$rss_pid" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')"

        say "round $round: $who: RSS with $IDLE_CONNS idle keep-alive callers"
        local sockets_before_idle
        sockets_before_idle=$(proxy_sockets "${cpu_pids[@]}")
        timeout 120 taskset -c "$LOAD_CPU" python3 "$here/idle_conns.py" 127.0.0.1 "$proxy_port" \
            "$IDLE_CONNS" "$rss_pid" >"$log.idle" 2>&1 || { cat "$log.idle" >&2; die "idle connections failed ($who)"; }
        local rss idle_non200 closed
        rss=$(bench_field rss_kib "$log.idle")
        idle_non200=$(bench_field non200 "$log.idle")
        closed=$(bench_field closed_by_proxy "$log.idle")
        record "$round" "$who" idle_rss_mib "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')"
        record "$round" "$who" non200 "$idle_non200"
        if [ "$idle_non200" != 0 ] || [ "$closed" != 0 ]; then
            invalid=1
            say "INVALID: $who idle phase: $idle_non200 non-200, $closed connections closed early"
        fi
        [ "$who" != gateway_redis ] || check_redis "$round" "idle callers"
        if [ "$H2" != 0 ] && { [ "$who" = gateway ] || [ "$who" = nginx ]; }; then
            # Last, so that neither RSS figure carries what h2 allocated; first the proxy
            # closes the idle callers' connections, or that work would count as h2's.
            local i
            for ((i = 0; i < 100; i++)); do
                [ "$(proxy_sockets "${cpu_pids[@]}")" -le $((sockets_before_idle + 8)) ] && break
                sleep 0.1
            done
            measure_h2 "$who" "$round"
        fi
        "stop_$who"
    fi
}

# The HTTP/2 phase of gateway or nginx ($1) in round $2: h2c callers with h2load, the proxy's
# CPU over it as in the other phases. A gateway that answers no h2c request at all is
# reported as not serving h2c, and the run stays valid; any other failure, or nginx failing
# at all, makes the run INVALID.
measure_h2() {
    local who=$1 round=$2 log=$work/r$2-$1.h2load before after parsed
    local rps answered ok2xx
    say "round $round: $who: h2c, $H2_REQUESTS requests, $H2_CONNS connections x $H2_STREAMS streams (h2load)"
    before=$(cpu_ticks "${cpu_pids[@]}")
    run_h2load "http://127.0.0.1:$h2_port$ROUTE" >"$log" 2>&1 || true
    after=$(cpu_ticks "${cpu_pids[@]}")
    # "finished in 5.01s, 19960.12 req/s, ..." / "requests: N total, N started, N done, ..."
    # / "status codes: N 2xx, ...": prints req/s, done (answered), 2xx.
    parsed=$(python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
finished = re.search(r"^finished in [^,]+, ([0-9.]+) req/s", text, re.M)
done = re.search(r"^requests: \d+ total, \d+ started, (\d+) done", text, re.M)
ok = re.search(r"^status codes: (\d+) 2xx", text, re.M)
if not (finished and done and ok):
    sys.exit(1)
print(finished.group(1), done.group(1), ok.group(1))
PY
    ) || parsed=""
    if [ -z "$parsed" ]; then
        invalid=1
        say "INVALID: $who h2c: h2load gave no summary (stopped by timeout?); see $log"
        return
    fi
    read -r rps answered ok2xx <<<"$parsed"
    if [ "$answered" = 0 ] && [ "$who" = gateway ]; then
        record "$round" "$who" h2_unsupported 1
        say "$who: h2c not supported: none of $H2_REQUESTS h2c requests was answered ($(grep -m1 '^requests:' "$log"))"
        return
    fi
    record "$round" "$who" h2_rps "$(awk -v r="$rps" 'BEGIN { printf "%.0f", r }')"
    record "$round" "$who" non200 "$((answered - ok2xx))"
    record "$round" "$who" socket_errors "$((H2_REQUESTS - answered))"
    [ "$answered" = 0 ] || record "$round" "$who" h2_cpu_us "$(us_per_request $((after - before)) "$answered")"
    if [ "$ok2xx" != "$H2_REQUESTS" ]; then
        invalid=1
        say "INVALID: $who h2c: $ok2xx of $H2_REQUESTS requests answered 2xx: $(grep -m1 '^requests:' "$log")"
    fi
}

# ---------------------------------------------------------------------------- rounds
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
    # Rotate the order each round so no contender always runs first (or right after another).
    order=()
    for ((k = 0; k < ${#contenders[@]}; k++)); do
        order+=("${contenders[(k + round - 1) % ${#contenders[@]}]}")
    done
    for who in "${order[@]}"; do measure "$who" "$round"; done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - t0))

# ---------------------------------------------------------------------------- interleaved
# CPU per request, gateway and nginx in alternating SLICE-second slices of the max-load phase,
# both running the whole time: the host's speed drifts (neighbours, frequency) by up to ±20 %
# between the rounds' 10-second phases, for the same binary, and a drift that slow hits the
# two slices of a pair nearly alike. Each pair gives one gateway / nginx ratio; the report
# takes their median. The on-CPU time is the kernel's per-thread schedstat (ns), summed.
on_cpu_ns() {
    local pid total=0 t f
    for pid in "$@"; do
        for f in /proc/"$pid"/task/*/schedstat; do
            read -r t _ <"$f" || continue
            total=$((total + t))
        done
    done
    echo "$total"
}

has_contender() {
    local c
    for c in "${contenders[@]}"; do [ "$c" = "$1" ] && return 0; done
    return 1
}

if [ "$PAIRS" -gt 0 ] && has_contender gateway && has_contender nginx; then
    start_gateway
    gateway_pid=$proxy_pid gateway_url="http://127.0.0.1:$proxy_port$ROUTE"
    start_nginx
    nginx_pids=("${cpu_pids[@]}") nginx_main=$proxy_pid nginx_url="http://127.0.0.1:$proxy_port$ROUTE"
    say "interleaved: warm-up ${WARMUP}s each"
    run_wrk "$WARMUP" "$gateway_url" >"$work/pair-warmup-gateway" 2>&1 || die "wrk failed (gateway warm-up)"
    run_wrk "$WARMUP" "$nginx_url" >"$work/pair-warmup-nginx" 2>&1 || die "wrk failed (nginx warm-up)"
    for ((pair = 1; pair <= PAIRS; pair++)); do
        say "interleaved: pair $pair of $PAIRS, ${SLICE}s each"
        order=(gateway nginx)
        [ $((pair % 2)) = 1 ] || order=(nginx gateway)
        for who in "${order[@]}"; do
            if [ "$who" = gateway ]; then pids=("$gateway_pid") url=$gateway_url; else pids=("${nginx_pids[@]}") url=$nginx_url; fi
            log=$work/pair$pair-$who
            before=$(on_cpu_ns "${pids[@]}")
            run_wrk "$SLICE" "$url" >"$log" 2>&1 || die "wrk failed ($who, pair $pair)"
            after=$(on_cpu_ns "${pids[@]}")
            requests=$(bench_field requests "$log")
            non200=$(bench_field non200 "$log")
            socket_errors=$(bench_field socket_errors "$log")
            if [ -z "$requests" ] || [ "$requests" -eq 0 ]; then die "no requests completed ($who, pair $pair); see $log"; fi
            record "p$pair" "$who" non200 "$non200"
            record "p$pair" "$who" socket_errors "$socket_errors"
            [ "$non200" = 0 ] && [ "$socket_errors" = 0 ] || invalid=1
            record "p$pair" "$who" cpu_us_pair "$(awk -v t="$((after - before))" -v n="$requests" 'BEGIN { printf "%.2f", t / 1000 / n }')"
        done
    done
    stop_pid "$nginx_main"
    stop_pid "$gateway_pid"
fi

# ---------------------------------------------------------------------------- report
mkdir -p "$(dirname "$OUT")"
{
    echo "rounds=$ROUNDS"
    echo "duration_s=$DURATION"
    echo "rate=$RATE"
    echo "rate_duration_s=$RATE_DURATION"
    echo "conns=$CONNS"
    echo "pairs=$PAIRS"
    echo "slice_s=$SLICE"
    echo "idle_conns=$IDLE_CONNS"
    echo "proxy_cpu=$PROXY_CPU"
    echo "proxy_cpus=$proxy_cpus"
    echo "load_cpu=$LOAD_CPU"
    echo "contenders=${contenders[*]}"
    echo "elapsed_s=$elapsed"
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc --all) CPUs)"
    echo "kernel=$(uname -r)"
    echo "code_layout=$layout"
    if [ -n "${GATEWAY_BIN:-}" ]; then
        echo "gateway=$GATEWAY_BIN ($(git -C "$(dirname "$GATEWAY_BIN")" describe --always --dirty 2>/dev/null || echo unknown))"
    else
        echo "gateway=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)"
    fi
    echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
    echo "oha=$(oha --version | awk '{print $2}')"
    if [ "$want_h2" = 1 ]; then
        echo "h2load=$(h2load --version | sed -n 's|.*nghttp2/\([^ ]*\).*|\1|p')"
        echo "h2_requests=$H2_REQUESTS"
        echo "h2_conns=$H2_CONNS"
        echo "h2_streams=$H2_STREAMS"
    fi
    if [ "$want_redis" = 1 ]; then
        echo "redis=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
    fi
    echo "loadavg_start=$load_start"
    echo "loadavg_end=$load_end"
    echo "invalid=$invalid"
} >"$work/meta.txt"
python3 "$here/report.py" "$results" "$work/meta.txt" >"$OUT"
cat "$OUT"
say "written: $OUT"
if [ "$invalid" != 0 ]; then
    say "INVALID RUN: some response was not 200, or Redis did not decide every request (see above)"
    KEEP_WORKDIR=1
    exit 1
fi

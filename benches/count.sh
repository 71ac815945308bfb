#!/usr/bin/env bash
# Repeatable per-request costs of one proxy, for comparing builds or the gateway with nginx
# when wall-clock CPU figures are too noisy to tell a few percent apart:
#
#   instructions per request   valgrind --tool=callgrind, user space only (exact: the same
#                              binary and load give the same count on a busy machine)
#   syscalls and context       perf stat (raw_syscalls:sys_enter, context-switches) over the
#   switches per request       same load, without valgrind
#
#   bash benches/count.sh gateway [REQUESTS]    # default 5000, after 1000 not counted
#   bash benches/count.sh nginx [REQUESTS]      # nginx with benches/nginx.conf.template
#   bash benches/count.sh bare [REQUESTS]       # examples/bare_proxy.rs: the same job on
#                                               # hyper, tokio and rustls alone, the floor
#                                               # under the gateway's own steps
#   GATEWAY_BIN=/path/to/kwikid-gateway bash benches/count.sh gateway
#   KEEP_PROFILE=/tmp/gw.callgrind bash benches/count.sh gateway   # keep callgrind's profile
#   SYSCALLS=strace bash benches/count.sh gateway   # syscalls by call, through strace
#   CACHE_SIM=1 bash benches/count.sh gateway       # also L1 cache misses (callgrind's model)
#
# The load is oha with 64 connections (REQUESTS in all), on LOAD_CPU with the mock; the proxy
# runs on PROXY_CPU. Needs: bash benches/install.sh, valgrind, and linux-perf for the
# syscall counts (skipped when perf is missing or not permitted). Loopback only; bounded by
# the request count.
set -euo pipefail

who=${1:?usage: count.sh gateway|nginx|bare [REQUESTS]}
requests=${2:-5000}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ROUTE=/verification/v2/digilocker/init
BODY='{"handshake_id":"bench-session-12345","callback_url":"https://app.example.com/dl/cb"}'

bench_name=count
# shellcheck source=benches/lib.sh
source "$here/lib.sh"

case $who in gateway | nginx | bare) ;; *) die "first argument: gateway, nginx or bare" ;; esac
need_tools cargo oha valgrind callgrind_control python3 taskset
[ "$who" != nginx ] || need_tools nginx
build_release
if [ "$who" = bare ]; then
    say "building: cargo build --release --locked --example bare_proxy"
    (cd "$repo" && cargo build --release --locked --example bare_proxy) >&2 || die "example build failed"
    bare_bin=${CARGO_TARGET_DIR:-$repo/target}/release/examples/bare_proxy
fi
make_work_dir count
cleanup() {
    local pid
    for pid in "${started_pids[@]}"; do stop_pid "$pid"; done
    rm -rf "$work"
}
trap cleanup EXIT

token=$(random_token)
export KWIKID_API_TOKEN=$token
start_mock "$mock_bin" "$LOAD_CPU" "$work"
port=$(free_port)
admin_port=$(free_port)
write_load_config "$work/gateway.toml" "$port" "$admin_port"
write_nginx_conf "$work/nginx" "$port" "$mock_port" "$work/ca.pem" "$token"

# $1 = requests; fails unless every answer is 200, except in a warm-up ($2 = warm-up), where
# an instrumented proxy's first upstream handshakes may be slow enough for a 504.
load() {
    taskset -c "$LOAD_CPU" oha --no-tui -n "$1" -c 64 -m POST -H 'content-type: application/json' \
        -H 'x-caller-id: bench' -d "$BODY" --output-format json "http://127.0.0.1:$port$ROUTE" \
        >"$work/oha.json"
    [ "${2:-}" != warm-up ] || return 0
    python3 - "$work/oha.json" "$1" <<'PY' || die "not every answer was 200"
import json, sys
report = json.load(open(sys.argv[1]))
codes = report.get("statusCodeDistribution", {})
if codes.get("200", 0) != int(sys.argv[2]) or len(codes) != 1:
    print(f"answers: {codes}, errors: {report.get('errorDistribution', {})}", file=sys.stderr)
    sys.exit(1)
PY
}

# Starts the proxy, optionally under a wrapper ($@); sets proxy_pid to the process that
# serves (nginx: its worker when a master runs).
start_proxy() {
    if [ "$who" = gateway ]; then
        start_server "$PROXY_CPU" "$work/access.log" "$work/proxy.err" "$port" 120 \
            "$@" "$gateway_bin" --config "$work/gateway.toml"
    elif [ "$who" = bare ]; then
        start_server "$PROXY_CPU" /dev/null "$work/proxy.err" "$port" 120 \
            "$@" "$bare_bin" "127.0.0.1:$port" "localhost:$mock_port" "$work/ca.pem"
    else
        start_server "$PROXY_CPU" /dev/null "$work/proxy.err" "$port" 120 \
            "$@" nginx -p "$work/nginx/" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" -g 'daemon off;'
    fi
    proxy_pid=$server_pid
    if [ "$who" = nginx ] && grep -q '^master_process on;' "$work/nginx/nginx.conf"; then
        serving_pid=$(nginx_worker "$proxy_pid")
    else
        serving_pid=$proxy_pid
    fi
}

say "$who: syscalls and context switches per request ($requests requests)"
start_proxy
load 1000 warm-up
if [ "${SYSCALLS:-perf}" = perf ] && command -v perf >/dev/null &&
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$serving_pid" -o "$work/perf.txt" -- sleep 0.1 2>/dev/null; then
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$serving_pid" -o "$work/perf.txt" -- sleep 3600 2>/dev/null &
    perf_pid=$!
    sleep 0.5
    load "$requests"
    kill "$(pgrep -P "$perf_pid" sleep)" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    awk -F, -v n="$requests" '/raw_syscalls/ { printf "syscalls per request: %.2f\n", $1 / n }
        /context-switches/ { printf "context switches per request: %.2f\n", $1 / n }' "$work/perf.txt"
elif command -v strace >/dev/null; then
    # Without perf: strace counts every syscall of every thread (slower, the same counts).
    # Context switches are not counted: strace's own stops would be most of them.
    strace -f -c -o "$work/strace.txt" -p "$serving_pid" 2>/dev/null &
    strace_pid=$!
    sleep 1
    load "$requests"
    kill -INT "$strace_pid" 2>/dev/null || true
    wait "$strace_pid" 2>/dev/null || true
    # strace -c rows: % time, seconds, usecs/call, calls, [errors], syscall. No total row:
    # strace could not attach (an ordinary user, the gateway not dumpable: SECURITY.md).
    if ! grep -q ' total$' "$work/strace.txt" 2>/dev/null; then
        say "strace could not attach to PID $serving_pid: syscall counts skipped"
    else
        awk -v n="$requests" '$1 ~ /^[0-9.]+$/ && $NF != "total" { total += $4 }
            END { printf "syscalls per request: %.2f\n", total / n }' "$work/strace.txt"
        awk -v n="$requests" '$1 ~ /^[0-9.]+$/ && $NF != "total" { printf "  %-16s %.2f\n", $NF, $4 / n }' \
            "$work/strace.txt"
    fi
else
    say "neither perf nor strace: syscall counts skipped"
fi
stop_pid "$proxy_pid"

say "$who: instructions per request under callgrind ($requests requests, slow)"
sed -i 's/^master_process on;/master_process off;/' "$work/nginx/nginx.conf"
cache_sim=()
[ "${CACHE_SIM:-0}" = 0 ] || cache_sim=(--cache-sim=yes)
start_proxy valgrind --tool=callgrind "${cache_sim[@]}" --callgrind-out-file="$work/callgrind.out"
load 1000 warm-up
callgrind_control -z "$proxy_pid" >/dev/null 2>&1
load "$requests"
callgrind_control -d "$proxy_pid" >/dev/null 2>&1
for ((i = 0; i < 50; i++)); do
    dump=$(ls -t "$work"/callgrind.out.* 2>/dev/null | head -1 || true)
    [ -n "$dump" ] && grep -q '^totals:' "$dump" && break
    sleep 0.1
done
[ -n "$dump" ] || die "callgrind wrote no dump"
total=$(awk '/^totals:/ { print $2; exit }' "$dump")
echo "instructions per request: $((total / requests))"
if [ "${CACHE_SIM:-0}" != 0 ]; then
    # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw (callgrind's simulated L1 and last level)
    awk -v n="$requests" '/^totals:/ {
        printf "L1 misses per request: instruction %d, data read %d, data write %d\n", $5 / n, $6 / n, $7 / n
        printf "estimated cost per request (instructions + 10 x L1 misses): %d\n", ($2 + 10 * ($5 + $6 + $7)) / n
        exit }' "$dump"
fi
if [ -n "${KEEP_PROFILE:-}" ]; then
    cp "$dump" "$KEEP_PROFILE"
    say "callgrind profile kept in $KEEP_PROFILE (callgrind_annotate --inclusive=yes $KEEP_PROFILE)"
fi

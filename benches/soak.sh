#!/usr/bin/env bash
# Soak: does kwikid-gateway leak under long steady load? Release build, loopback only,
# in front of the real kwikid-mock over HTTPS.
#
#   bash benches/soak.sh                           # the full run: 1,000,000 + 1,000,000 requests
#   SOAK_REQUESTS=200000 bash benches/soak.sh      # a shorter one
#
# Phase "steady": SOAK_REQUESTS requests at a fixed SOAK_RATE (oha), one caller id. The
#   gateway's RSS and open descriptors are sampled every SAMPLE_EVERY s; the report compares
#   the mean of the first 10 % of samples with the last 10 %. Pass: RSS growth < 5 %, fds
#   flat (no growth beyond FD_SLACK), every answer 200, no connection error.
# Phase "callers": SOAK_CALLERS requests, each with its own x-caller-id (wrk + a Lua script),
#   which fills the per-caller rate-limit store with as many keys. Pass: after the load the
#   store is pruned (kwikid_gateway_rate_limiter_keys on /metrics falls to <= KEYS_AFTER;
#   the gateway prunes every 30 s) and RSS returns within 10 % of its value before the phase.
#
# Knobs (environment): SOAK_REQUESTS=1000000 SOAK_RATE=2000 SOAK_CONNS=32
# SOAK_CALLERS=$SOAK_REQUESTS CALLER_CONNS=16 CALLER_ROUNDS=1 (repeat phase 2: tells memory the
# allocator keeps from memory that keeps growing) SAMPLE_EVERY=5 PRUNE_WAIT=100 KEYS_AFTER=100
# FD_SLACK=4 PHASES="steady callers" ACCESS_LOG=/dev/null KEEP_WORKDIR=0 OUT= (a copy of the
# report). Needs: cargo, oha, wrk, curl, python3. At the defaults phase 1 takes ~8.5 min.
set -euo pipefail

SOAK_REQUESTS=${SOAK_REQUESTS:-1000000}
SOAK_RATE=${SOAK_RATE:-2000}
SOAK_CONNS=${SOAK_CONNS:-32}
SOAK_CALLERS=${SOAK_CALLERS:-$SOAK_REQUESTS}
CALLER_CONNS=${CALLER_CONNS:-16}
CALLER_ROUNDS=${CALLER_ROUNDS:-1}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
PRUNE_WAIT=${PRUNE_WAIT:-100}
KEYS_AFTER=${KEYS_AFTER:-100}
FD_SLACK=${FD_SLACK:-4}
PHASES=${PHASES:-steady callers}
ACCESS_LOG=${ACCESS_LOG:-/dev/null}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
OUT=${OUT:-}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
BODY='{"handshake_id":"soak-session-12345","callback_url":"https://app.example.com/dl/cb"}'
ROUTE=/verification/v2/digilocker/init

bench_name=soak
# shellcheck source=benches/lib.sh
source "$here/lib.sh"

need_tools cargo oha wrk curl python3 awk
raise_fd_limit
build_release
make_work_dir soak
sampler_pid=""
cleanup() {
    [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null
    stop_started
    if [ "$KEEP_WORKDIR" = 1 ]; then say "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
metric() {
    curl -sS --max-time 5 "http://127.0.0.1:$admin_port/metrics" | awk -v m="$1" '$1 == m { v = $2 } END { print v }'
}
# Requests the gateway has answered so far (all routes, statuses and outcomes).
requests_total() {
    curl -sS --max-time 5 "http://127.0.0.1:$admin_port/metrics" |
        awk '$1 ~ /^kwikid_gateway_requests_total[{ ]/ { n += $NF } END { printf "%d\n", n }'
}

# ---------------------------------------------------------------------------- processes
token=$(random_token)
export KWIKID_API_TOKEN=$token
start_mock "$mock_bin" "" "$work"

gateway_port=$(free_port)
admin_port=$(free_port)
cat >"$work/gateway.toml" <<EOF
[listen]
addr = "127.0.0.1:$gateway_port"
max_connections = 4096
header_read_timeout = "60s"

[admin]
addr = "127.0.0.1:$admin_port"

[upstream]
base_url = "https://localhost:$mock_port"
ca_file = "$work/ca.pem"
connect_timeout = "2s"
request_timeout = "10s"

[rate_limit]
global = { per_second = 1000000, burst = 1000000 }
per_caller = { per_second = 1000000, burst = 1000000 }

[log]
level = "warn"
EOF
start_server "" "$ACCESS_LOG" "$work/gateway.err" "$gateway_port" 10 \
    "$gateway_bin" --config "$work/gateway.toml"
gw_pid=$server_pid
url="http://127.0.0.1:$gateway_port$ROUTE"
say "gateway pid $gw_pid on :$gateway_port (admin :$admin_port), mock pid $mock_pid on :$mock_port"

# Samples "seconds rss_kib fds keys" into $1 every SAMPLE_EVERY s until killed, the first
# one SAMPLE_EVERY s in (after the load generator has opened its connections).
sample_into() {
    local file=$1 start=$SECONDS
    sleep "$SAMPLE_EVERY"
    while kill -0 "$gw_pid" 2>/dev/null; do
        printf '%s %s %s %s\n' $((SECONDS - start)) "$(rss_kib "$gw_pid")" "$(fds "$gw_pid")" \
            "$(metric kwikid_gateway_rate_limiter_keys 2>/dev/null | grep . || echo -)" >>"$file"
        sleep "$SAMPLE_EVERY"
    done
}
start_sampler() { sample_into "$1" & sampler_pid=$!; }
stop_sampler() { kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=""; }

report=$work/report.md
failed=0
verdict() { # name ok(0/1) text
    local mark=PASS
    [ "$2" = 1 ] || { mark=FAIL; failed=1; }
    printf '| %s | %s | %s |\n' "$1" "$3" "$mark" >>"$report"
}
{
    echo "# kwikid-gateway soak, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "gateway $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), release build; $(nproc) CPUs; SOAK_REQUESTS=$SOAK_REQUESTS SOAK_RATE=$SOAK_RATE SOAK_CALLERS=$SOAK_CALLERS"
    echo
    echo "| check | measured | verdict |"
    echo "|---|---|---|"
} >"$report"

# Warm-up: open the upstream pool, let the allocator settle.
oha --no-tui --output-format json -n 2000 -c "$SOAK_CONNS" -m POST -T application/json -d "$BODY" \
    -H "x-caller-id: soak" "$url" >"$work/warmup.json" 2>&1 || die "warm-up failed"

# ---------------------------------------------------------------------------- phase 1
if [[ " $PHASES " == *" steady "* ]]; then
    expected_s=$((SOAK_REQUESTS / SOAK_RATE))
    say "steady: $SOAK_REQUESTS requests at $SOAK_RATE/s (~${expected_s} s), $SOAK_CONNS connections"
    start_sampler "$work/steady.samples"
    timeout $((expected_s * 2 + 120)) oha --no-tui --output-format json -n "$SOAK_REQUESTS" \
        -q "$SOAK_RATE" -c "$SOAK_CONNS" -t 10s -m POST -T application/json -d "$BODY" \
        -H "x-caller-id: soak" "$url" >"$work/steady.json" 2>"$work/steady.err" ||
        { cat "$work/steady.err" >&2; die "oha failed"; }
    stop_sampler
    python3 - "$work/steady.json" "$work/steady.samples" "$FD_SLACK" >"$work/steady.verdict" <<'PY'
import json, sys
oha = json.load(open(sys.argv[1]))
samples = [s for s in (l.split() for l in open(sys.argv[2])) if len(s) == 4]
rss = [int(s[1]) for s in samples]
fds = [int(s[2]) for s in samples]
k = max(1, len(samples) // 10)
mean = lambda xs: sum(xs) / len(xs)
rss_first, rss_last = mean(rss[:k]), mean(rss[-k:])
fd_first, fd_last = mean(fds[:k]), mean(fds[-k:])
codes = oha.get("statusCodeDistribution", {})
errors = oha.get("errorDistribution", {})
ok = int(codes.get("200", 0))
non200 = sum(int(v) for c, v in codes.items() if c != "200")
s = oha["summary"]
growth = (rss_last - rss_first) / rss_first * 100
print(f"rss|{int(growth < 5)}|{rss_first/1024:.1f} MiB -> {rss_last/1024:.1f} MiB ({growth:+.2f} %, {len(samples)} samples, peak {max(rss)/1024:.1f} MiB)")
print(f"fds|{int(fd_last <= fd_first + int(sys.argv[3]))}|{fd_first:.1f} -> {fd_last:.1f} (min {min(fds)}, max {max(fds)})")
print(f"answers|{int(non200 == 0 and not errors and ok > 0)}|{ok} x 200, {non200} other {dict((c, v) for c, v in codes.items() if c != '200')}, errors {errors}")
print(f"rate|1|{s['requestsPerSec']:.0f} req/s over {s['total']:.0f} s; p50 {oha['latencyPercentiles']['p50']*1000:.2f} ms, p99 {oha['latencyPercentiles']['p99']*1000:.2f} ms, slowest {s['slowest']*1000:.1f} ms")
PY
    while IFS='|' read -r name ok text; do verdict "steady: $name" "$ok" "$text"; done <"$work/steady.verdict"
fi

# ---------------------------------------------------------------------------- phase 2
if [[ " $PHASES " == *" callers "* ]]; then
    cat >"$work/callers.lua" <<'LUA'
-- One distinct x-caller-id per request (thread id + counter); soak.sh stops wrk with SIGINT
-- once the gateway has counted enough requests.
wrk.method = "POST"
local body = '{"handshake_id":"soak-callers"}'
local round = os.getenv("SOAK_ROUND") or "1"
local threads, next_id = {}, 0
function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end
function init(args)
    sent, non200 = 0, 0
end
function request()
    sent = sent + 1
    return wrk.format(nil, nil, {
        ["Content-Type"] = "application/json",
        ["X-Caller-Id"] = string.format("soak-%s-%d-%d", round, id, sent),
    }, body)
end
function response(status, headers, body)
    if status ~= 200 then non200 = non200 + 1 end
end
function done(summary, latency, requests)
    local non = 0
    for _, t in ipairs(threads) do non = non + t:get("non200") end
    local e = summary.errors
    io.write(string.format("CALLERS requests=%d non200=%d socket_errors=%d\n", summary.requests,
        non, e.connect + e.read + e.write + e.timeout))
end
LUA
    rss_before=$(rss_kib "$gw_pid")
    keys_before=$(metric kwikid_gateway_rate_limiter_keys)
    threads=2
    for ((round = 1; round <= CALLER_ROUNDS; round++)); do
        tag="callers"
        [ "$CALLER_ROUNDS" = 1 ] || tag="callers #$round"
        say "$tag: $SOAK_CALLERS distinct x-caller-id values (wrk -t$threads -c$CALLER_CONNS)"
        start_sampler "$work/callers$round.samples"
        total_before=$(requests_total)
        # Ids are distinct across rounds too: the Lua counter restarts, the prefix does not.
        SOAK_ROUND=$round wrk -t"$threads" -c"$CALLER_CONNS" -d3600s --timeout 10s \
            -s "$work/callers.lua" "$url" >"$work/callers$round.wrk" 2>&1 &
        wrk_pid=$!
        started_pids+=("$wrk_pid")
        while kill -0 "$wrk_pid" 2>/dev/null; do
            done_so_far=$(($(requests_total) - total_before))
            [ "$done_so_far" -ge "$SOAK_CALLERS" ] && break
            sleep 0.5
        done
        # wrk stops on SIGINT and still prints its summary.
        kill -INT "$wrk_pid" 2>/dev/null || true
        wait "$wrk_pid" || true
        keys_peak=$(awk '$4 != "-" && $4 > m { m = $4 } END { print m + 0 }' "$work/callers$round.samples")
        keys_end=$(metric kwikid_gateway_rate_limiter_keys)
        rss_loaded=$(rss_kib "$gw_pid")
        keys_peak=$((keys_end > keys_peak ? keys_end : keys_peak))
        say "$tag: done; $keys_end keys now; waiting up to ${PRUNE_WAIT}s for the pruner"
        waited=0
        keys=$keys_end
        while [ "$waited" -lt "$PRUNE_WAIT" ]; do
            keys=$(metric kwikid_gateway_rate_limiter_keys)
            [ "$keys" -le "$KEYS_AFTER" ] && break
            sleep 1
            waited=$((waited + 1))
        done
        sleep "$SAMPLE_EVERY" # let the allocator hand memory back
        stop_sampler
        rss_after=$(rss_kib "$gw_pid")
        sent=$(sed -n 's/^CALLERS requests=\([0-9]*\).*/\1/p' "$work/callers$round.wrk")
        non200=$(sed -n 's/^CALLERS .*non200=\([0-9]*\).*/\1/p' "$work/callers$round.wrk")
        sockerr=$(sed -n 's/^CALLERS .*socket_errors=\([0-9]*\).*/\1/p' "$work/callers$round.wrk")
        rate=$(awk '/^Requests\/sec/ { print $2 }' "$work/callers$round.wrk")
        verdict "$tag: answers" "$([ "${non200:-1}" = 0 ] && [ "${sockerr:-1}" = 0 ] && echo 1 || echo 0)" \
            "${sent:-?} requests (${rate:-?} req/s), ${non200:-?} non-200, ${sockerr:-?} socket errors"
        verdict "$tag: store pruned" "$([ "$keys" -le "$KEYS_AFTER" ] && [ "$keys_peak" -gt "$KEYS_AFTER" ] && echo 1 || echo 0)" \
            "rate_limiter_keys ${keys_before:-?} before, peak sampled $keys_peak, $keys after ${waited} s"
        growth=$(awk -v a="$rss_before" -v b="$rss_after" 'BEGIN { printf "%+.2f", (b - a) / a * 100 }')
        verdict "$tag: memory returns" \
            "$(awk -v a="$rss_before" -v b="$rss_after" 'BEGIN { print ((b - a) / a * 100 < 10) ? 1 : 0 }')" \
            "RSS $((rss_before / 1024)) MiB before the phase, $((rss_loaded / 1024)) MiB at the end of the load, $((rss_after / 1024)) MiB after pruning ($growth %)"
        keys_before=$keys
    done
fi

kill -0 "$gw_pid" 2>/dev/null || { failed=1; echo "| gateway alive | exited | FAIL |" >>"$report"; }
if grep -q panicked "$work/gateway.err"; then
    failed=1
    echo "| no panic | $(grep -m1 panicked "$work/gateway.err") | FAIL |" >>"$report"
fi
echo >>"$report"
cat "$report"
[ -n "$OUT" ] && cp "$report" "$OUT"
[ "$failed" = 0 ] || { KEEP_WORKDIR=1; die "soak FAILED"; }
say "soak passed"

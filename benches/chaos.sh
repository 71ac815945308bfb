#!/usr/bin/env bash
# Long chaos: the real kwikid-mock process is killed and restarted every few seconds for a
# minute while oha sends steady load through the release gateway. Loopback only.
#
#   bash benches/chaos.sh
#
# Pass: the gateway never exits or panics; every request is answered (no connection error,
# no request slower than request_timeout + 1 s); every answer is 200, or the gateway's own 502
# upstream_unavailable / 504 upstream_timeout; each probe sent while KwikID is down gets that
# JSON error; after each restart it serves 200 again within 1 s; its descriptors return to
# their baseline. tests/chaos.rs is the CI-sized version.
#
# Knobs (environment): DURATION=60 RATE=500 CONNS=16 UP_FOR=3 DOWN_FOR=1 KILL_SIGNAL=KILL
# REQUEST_TIMEOUT=2 KEEP_WORKDIR=0. Needs: cargo, oha, curl, openssl, python3.
set -euo pipefail

DURATION=${DURATION:-60}
RATE=${RATE:-500}
CONNS=${CONNS:-16}
UP_FOR=${UP_FOR:-3}
DOWN_FOR=${DOWN_FOR:-1}
KILL_SIGNAL=${KILL_SIGNAL:-KILL}
REQUEST_TIMEOUT=${REQUEST_TIMEOUT:-2}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
BODY='{"handshake_id":"chaos-session","callback_url":"https://app.example.com/dl/cb"}'
ROUTE=/verification/v2/digilocker/init

bench_name=chaos
# shellcheck source=benches/lib.sh
source "$here/lib.sh"

need_tools cargo oha curl openssl python3 awk
raise_fd_limit
build_release
make_work_dir chaos
cleanup() {
    stop_started
    if [ "$KEEP_WORKDIR" = 1 ]; then say "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# One certificate for every incarnation of the mock (a restarted mock must be the same
# KwikID to the gateway, at the same port): a throwaway CA and a localhost leaf it signs.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=kwikid-chaos-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$work/leaf.key" -out "$work/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >"$work/leaf.ext"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/leaf.ext" -out "$work/leaf.pem" 2>/dev/null

token=$(random_token)
export KWIKID_API_TOKEN=$token
mock_port=$(free_port)
mock_pid=""
start_fixed_mock() {
    start_server "" "$work/mock.out" "$work/mock.err" "$mock_port" 10 \
        "$mock_bin" --listen "127.0.0.1:$mock_port" --cert "$work/leaf.pem" --key "$work/leaf.key"
    mock_pid=$server_pid
}
kill_mock() {
    kill -"$KILL_SIGNAL" "$mock_pid" 2>/dev/null || true
    wait "$mock_pid" 2>/dev/null || true
    forget_pid "$mock_pid"
}
start_fixed_mock

gateway_port=$(free_port)
admin_port=$(free_port)
cat >"$work/gateway.toml" <<EOF
[listen]
addr = "127.0.0.1:$gateway_port"
header_read_timeout = "10s"

[admin]
addr = "127.0.0.1:$admin_port"

[upstream]
base_url = "https://localhost:$mock_port"
ca_file = "$work/ca.pem"
connect_timeout = "500ms"
request_timeout = "${REQUEST_TIMEOUT}s"

[rate_limit]
global = { per_second = 1000000, burst = 1000000 }
per_caller = { per_second = 1000000, burst = 1000000 }

[log]
level = "warn"
EOF
start_server "" "$work/access.log" "$work/gateway.err" "$gateway_port" 10 \
    "$gateway_bin" --config "$work/gateway.toml"
gw_pid=$server_pid
url="http://127.0.0.1:$gateway_port$ROUTE"

# One request: prints "status gateway-error-code" (code "-" when absent).
probe() {
    curl -sS --max-time $((REQUEST_TIMEOUT + 1)) -o "$work/probe.body" -D "$work/probe.head" \
        -w '%{http_code}' -X POST -H 'content-type: application/json' -d "$BODY" "$url" 2>/dev/null ||
        echo -n 000
    printf ' %s\n' "$(awk -F': ' 'tolower($1) == "x-gateway-error" { gsub(/\r/, "", $2); print $2 }' "$work/probe.head" 2>/dev/null | head -1 | grep . || echo -)"
}

[ "$(probe)" = "200 -" ] || die "no 200 before the chaos"
fds_before=$(fds "$gw_pid")

say "load: $RATE req/s for ${DURATION}s over $CONNS connections; the mock is killed ($KILL_SIGNAL) every ${UP_FOR}s for ${DOWN_FOR}s"
timeout $((DURATION + 60)) oha --no-tui --output-format json -z "${DURATION}s" -q "$RATE" \
    -c "$CONNS" -t "$((REQUEST_TIMEOUT + 1))s" --wait-ongoing-requests-after-deadline \
    -m POST -T application/json -d "$BODY" "$url" >"$work/oha.json" 2>"$work/oha.err" &
oha_pid=$!
started_pids+=("$oha_pid")

kills=0 bad_probes=0 slow_recoveries=0 worst_recovery_ms=0
start=$SECONDS
while [ $((SECONDS - start)) -lt $((DURATION - UP_FOR)) ]; do
    sleep "$UP_FOR"
    kill_mock
    kills=$((kills + 1))
    down=$(probe)
    case $down in
    "502 upstream_unavailable" | "504 upstream_timeout") ;;
    *) bad_probes=$((bad_probes + 1)); say "probe while down: $down $(cat "$work/probe.body" 2>/dev/null)" ;;
    esac
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert list(d)==["error"] and d["error"]' \
        "$work/probe.body" 2>/dev/null || { bad_probes=$((bad_probes + 1)); say "error body is not {\"error\": …}"; }
    sleep "$DOWN_FOR"
    start_fixed_mock
    t0=$(date +%s%N)
    until [ "$(probe)" = "200 -" ]; do
        [ $((($(date +%s%N) - t0) / 1000000)) -lt 5000 ] || break
        sleep 0.02
    done
    ms=$((($(date +%s%N) - t0) / 1000000))
    [ "$ms" -gt "$worst_recovery_ms" ] && worst_recovery_ms=$ms
    [ "$ms" -lt 1000 ] || slow_recoveries=$((slow_recoveries + 1))
done
wait "$oha_pid" || { cat "$work/oha.err" >&2; die "oha failed"; }
forget_pid "$oha_pid"

alive=1
kill -0 "$gw_pid" 2>/dev/null || alive=0
health=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/healthz" || echo 000)
fds_after=$(fds "$gw_pid")
for ((i = 0; i < 100 && fds_after > fds_before + 4; i++)); do
    sleep 0.1
    fds_after=$(fds "$gw_pid")
done
panics=$(grep -c panicked "$work/gateway.err" || true)

if ! python3 - "$work/oha.json" "$REQUEST_TIMEOUT" <<PY
import json, sys
oha = json.load(open(sys.argv[1]))
limit = float(sys.argv[2]) + 1
codes = {int(k): int(v) for k, v in oha.get("statusCodeDistribution", {}).items()}
errors = oha.get("errorDistribution", {})
s = oha["summary"]
lat = oha["latencyPercentiles"]
checks = [
    ("answers", not errors, f"{sum(codes.values())} answered, connection errors/timeouts: {errors or 0}"),
    ("statuses", set(codes) <= {200, 502, 504} and codes.get(200, 0) > 0, f"{dict(sorted(codes.items()))}"),
    ("latency", s["slowest"] < limit, f"p50 {lat['p50']*1000:.1f} ms, p99 {lat['p99']*1000:.1f} ms, slowest {s['slowest']*1000:.0f} ms (limit {limit:.0f} s)"),
    ("kills", True, "$kills kills of kwikid-mock ($KILL_SIGNAL), each down ${DOWN_FOR}s"),
    ("probes while down", $bad_probes == 0, "$bad_probes of $kills not a JSON 502/504"),
    ("recovery", $slow_recoveries == 0, "200 again within 1 s of each restart: worst ${worst_recovery_ms} ms"),
    ("gateway", $alive == 1 and "$health" == "200" and $panics == 0, "alive=$alive, /healthz $health, panics $panics"),
    ("fds", $fds_after <= $fds_before + 4, "$fds_before before, $fds_after after"),
]
failed = False
print("| check | measured | verdict |\n|---|---|---|")
for name, ok, text in checks:
    print(f"| {name} | {text} | {'PASS' if ok else 'FAIL'} |")
    failed |= not ok
sys.exit(1 if failed else 0)
PY
then
    KEEP_WORKDIR=1
    die "chaos FAILED"
fi
say "chaos passed"

#!/usr/bin/env bash
# Profiles kwikid-gateway under the benchmark's load: the mock and wrk on CPU 1, the gateway
# on CPU 0, `perf record` (software cpu-clock, DWARF call graphs) over SECONDS of wrk load.
#
#   bash benches/profile.sh               # writes /tmp/kwikid-profile/perf.data + report.txt
#   SECONDS_=15 CONNS=64 bash benches/profile.sh
#
# Where perf cannot sample (no perf_event access), use callgrind instead:
#   TOOL=callgrind bash benches/profile.sh   (much slower; a short run is enough)
# Needs: bash benches/install.sh, plus linux-perf (or valgrind) from apt.
set -euo pipefail

SECONDS_=${SECONDS_:-10}
CONNS=${CONNS:-64}
TOOL=${TOOL:-perf}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${PROFILE_DIR:-/tmp/kwikid-profile}
mkdir -p "$out"
chmod 700 "$out"
ulimit -n 65536 2>/dev/null || true

(cd "$repo" && cargo build --release --locked --bins) >&2
bin=${CARGO_TARGET_DIR:-$repo/target}/release

pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

KWIKID_API_TOKEN="bench-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
export KWIKID_API_TOKEN
taskset -c "$LOAD_CPU" "$bin/kwikid-mock" --listen 127.0.0.1:0 --ca-out "$out/ca.pem" >"$out/mock.out" 2>&1 &
pids+=($!)
for ((i = 0; i < 100; i++)); do
    mock_port=$(sed -n 's|^kwikid-mock listening on https://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$out/mock.out")
    [ -n "$mock_port" ] && break
    sleep 0.1
done
[ -n "$mock_port" ] || { echo "kwikid-mock did not start" >&2; exit 1; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$out/gateway.toml" <<EOF
[listen]
addr = "127.0.0.1:$port"
header_read_timeout = "60s"
[upstream]
base_url = "https://localhost:$mock_port"
ca_file = "$out/ca.pem"
[token]
env = "KWIKID_API_TOKEN"
[rate_limit]
global = { per_second = 1000000, burst = 1000000 }
per_caller = { per_second = 1000000, burst = 1000000 }
[log]
level = "warn"
EOF

case $TOOL in
    perf)
        taskset -c "$PROXY_CPU" "$bin/kwikid-gateway" --config "$out/gateway.toml" >"$out/access.log" 2>"$out/gateway.err" &
        gw=$!
        pids+=("$gw")
        sleep 1
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s -s "$here/post.lua" "http://127.0.0.1:$port/verification/v2/digilocker/init" >/dev/null
        taskset -c "$LOAD_CPU" perf record -e cpu-clock -F 1999 --call-graph dwarf,16384 -p "$gw" -o "$out/perf.data" \
            -- sleep "$SECONDS_" 2>"$out/perf.err" &
        rec=$!
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECONDS_}s" -s "$here/post.lua" "http://127.0.0.1:$port/verification/v2/digilocker/init" | tee "$out/wrk.txt"
        wait "$rec"
        perf report -i "$out/perf.data" --no-children --sort dso,symbol --stdio --percent-limit 0.5 -g none >"$out/report.txt" 2>/dev/null
        perf report -i "$out/perf.data" --children --sort symbol --stdio --percent-limit 2 -g none >"$out/report-children.txt" 2>/dev/null
        ;;
    callgrind)
        taskset -c "$PROXY_CPU" valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
            "$bin/kwikid-gateway" --config "$out/gateway.toml" >"$out/access.log" 2>"$out/gateway.err" &
        gw=$!
        pids+=("$gw")
        sleep 5
        taskset -c "$LOAD_CPU" wrk -t1 -c8 -d"${SECONDS_}s" -s "$here/post.lua" "http://127.0.0.1:$port/verification/v2/digilocker/init" | tee "$out/wrk.txt"
        kill -TERM "$gw"; wait "$gw" || true
        callgrind_annotate --inclusive=no "$out/callgrind.out" >"$out/report.txt" 2>/dev/null
        callgrind_annotate --inclusive=yes "$out/callgrind.out" >"$out/report-children.txt" 2>/dev/null
        ;;
    *) echo "TOOL is perf or callgrind" >&2; exit 2 ;;
esac
echo "profile: $out/report.txt (self) and $out/report-children.txt (inclusive)" >&2

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

bench_name=profile
# shellcheck source=benches/lib.sh
source "$here/lib.sh"

raise_fd_limit
build_release

trap stop_started EXIT

KWIKID_API_TOKEN=$(random_token)
export KWIKID_API_TOKEN
start_mock "$mock_bin" "$LOAD_CPU" "$out"
port=$(free_port)
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
    perf) under=() ;;
    callgrind) under=(valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out") ;;
    *) die "TOOL is perf or callgrind" ;;
esac
: >"$out/access.log"
: >"$out/gateway.err"
start_server "$PROXY_CPU" "$out/access.log" "$out/gateway.err" "$port" 120 \
    "${under[@]}" "$gateway_bin" --config "$out/gateway.toml"
gw=$server_pid

case $TOOL in
    perf)
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
        taskset -c "$LOAD_CPU" wrk -t1 -c8 -d"${SECONDS_}s" -s "$here/post.lua" "http://127.0.0.1:$port/verification/v2/digilocker/init" | tee "$out/wrk.txt"
        stop_pid "$gw"
        callgrind_annotate --inclusive=no "$out/callgrind.out" >"$out/report.txt" 2>/dev/null
        callgrind_annotate --inclusive=yes "$out/callgrind.out" >"$out/report-children.txt" 2>/dev/null
        ;;
esac
echo "profile: $out/report.txt (self) and $out/report-children.txt (inclusive)" >&2

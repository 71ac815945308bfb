#!/usr/bin/env bash
# Writes link/kwikid-gateway.order: the gateway's functions that run while it serves, by their
# mangled symbols, most instructions first. build.rs hands the list to the linker, which puts
# those functions together at the start of .text, so a running gateway keeps fewer pages of
# its code resident (see build.rs). Symbols depend on the compiler and the dependency versions;
# run this again after either changes (a stale list only loses the saving).
#
#   bash benches/order.sh                 # builds the release binaries, writes the list
#   GATEWAY_BIN=... MOCK_BIN=... bash benches/order.sh
#
# What runs under callgrind (user space, every thread, from the first instruction): start-up,
# 3,000 HTTP/1.1 requests on 64 connections (oha), 200 requests over h2c when h2load is there,
# 200 idle keep-alive callers (idle_conns.py), and /metrics, /readyz and /healthz. Loopback
# only; bounded by the request counts. Needs valgrind, oha, python3, curl (bash
# benches/install.sh).
set -euo pipefail

PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ROUTE=/verification/v2/digilocker/init
BODY='{"handshake_id":"bench-session-12345","callback_url":"https://app.example.com/dl/cb"}'
out=$repo/link/kwikid-gateway.order

bench_name=order
# shellcheck source=benches/lib.sh
source "$here/lib.sh"

need_tools cargo oha valgrind callgrind_control python3 curl taskset
build_release
make_work_dir order
trap 'stop_started; rm -rf "$work"' EXIT
raise_fd_limit

token=$(random_token)
export KWIKID_API_TOKEN=$token
start_mock "$mock_bin" "$LOAD_CPU" "$work"
port=$(free_port)
admin_port=$(free_port)
write_load_config "$work/gateway.toml" "$port" "$admin_port" "[log]
level = \"warn\"
format = \"json\""

say "gateway under callgrind: start-up, requests, idle callers, admin endpoints"
start_server "$PROXY_CPU" "$work/access.log" "$work/gateway.err" "$port" 120 \
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/callgrind.out" \
    "$gateway_bin" --config "$work/gateway.toml"
gateway_pid=$server_pid
taskset -c "$LOAD_CPU" oha --no-tui -n 3000 -c 64 -m POST -H 'content-type: application/json' \
    -H 'x-caller-id: bench' -d "$BODY" "http://127.0.0.1:$port$ROUTE" >/dev/null
if command -v h2load >/dev/null; then
    printf '%s' "$BODY" >"$work/body.json"
    taskset -c "$LOAD_CPU" h2load -n 200 -c 2 -m 4 -d "$work/body.json" \
        -H 'content-type: application/json' -H 'x-caller-id: bench' \
        "http://127.0.0.1:$port$ROUTE" >/dev/null
fi
timeout 300 taskset -c "$LOAD_CPU" python3 "$here/idle_conns.py" 127.0.0.1 "$port" 200 "$gateway_pid" >/dev/null
for path in metrics readyz healthz; do curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/$path"; done
callgrind_control -d "$gateway_pid" >/dev/null 2>&1
for ((i = 0; i < 100; i++)); do
    dump=$(ls -t "$work"/callgrind.out.* 2>/dev/null | head -1 || true)
    [ -n "$dump" ] && grep -q '^totals:' "$dump" && break
    sleep 0.1
done
[ -n "$dump" ] || die "callgrind wrote no dump"

# The dump's cost lines follow an fn= line (names compressed to "(id)" after their first
# use); a cost line right after calls= is the call's inclusive cost and is skipped.
mkdir -p "$(dirname "$out")"
python3 - "$dump" "$gateway_bin" "$(rustc -V)" >"$out" <<'PY'
import collections, os, re, sys

dump, binary, rustc = sys.argv[1:]
objects, names, cost, owner = {}, {}, collections.Counter(), {}
fn = ob = None
after_call = False
name = re.compile(r"(c?)(fn|ob)=\((\d+)\)(?: (.*))?")
for line in open(dump):
    m = name.match(line.rstrip("\n"))
    if m:
        table = names if m.group(2) == "fn" else objects
        if m.group(4):
            table[m.group(3)] = m.group(4)
        if not m.group(1):
            if m.group(2) == "ob":
                ob = objects.get(m.group(3))
            else:
                fn = names[m.group(3)]
                owner[fn] = ob
        continue
    if line.startswith("calls="):
        after_call = True
    elif line[:1].isdigit() or line[:1] in "+-*":
        if after_call:
            after_call = False
        elif fn is not None:
            fields = line.split()
            if len(fields) > 1:
                cost[fn] += int(fields[1])
target = os.path.realpath(binary)
ours = [f for f in cost if owner.get(f) and os.path.realpath(owner[f]) == target]
ours.sort(key=lambda f: (-cost[f], f))
print(f"# {len(ours)} functions, most instructions first; written by benches/order.sh with {rustc}.")
print("\n".join(ours))
PY
listed=$(grep -vc '^#' "$out")
say "wrote $out: $listed functions"

#!/usr/bin/env bash
# Writes link/kwikid-gateway.profdata: the profile deploy/build.sh, the production build,
# optimizes with (rustc's profile-guided optimization, `-Cprofile-use`). It records which
# branches and functions a serving gateway runs, so LLVM inlines along them, keeps that code
# together and moves the rest (start-up, errors, admin) out of the way: fewer instructions
# and instruction-cache misses per request.
#
#   bash benches/pgo.sh        # instrumented build, training load, merged profile
#
# Run it again after a change to the request path, a dependency update or a new compiler: a
# stale profile still builds (LLVM skips the functions whose code changed), it just helps
# less. Needs llvm-profdata from the LLVM the compiler was built with (`rustc -vV`: LLVM
# version; Debian: apt-get install llvm-22 for LLVM 22), oha, h2load, python3, curl.
#
# The training load, loopback only and bounded in requests: 20,000 HTTP/1.1 POSTs on 64
# connections (oha), 2,000 over h2c (h2load), 200 idle keep-alive callers, a few requests the
# gateway refuses (wrong method, path and body), and the admin endpoints; then SIGTERM, so the
# drain and the exit run too and the profile is written.
set -euo pipefail

PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ROUTE=/verification/v2/digilocker/init
BODY='{"handshake_id":"bench-session-12345","callback_url":"https://app.example.com/dl/cb"}'
out=$repo/link/kwikid-gateway.profdata

bench_name=pgo
# shellcheck source=benches/lib.sh
source "$here/lib.sh"

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=$(command -v "llvm-profdata-$llvm_major" || true)
[ -n "$profdata" ] || die "no llvm-profdata-$llvm_major (rustc's LLVM is $llvm_major): apt-get install llvm-$llvm_major"
need_tools cargo oha h2load python3 curl taskset

make_work_dir pgo
trap 'stop_started; rm -rf "$work"' EXIT
raise_fd_limit

# The instrumented build goes to a target directory of its own: its flags differ from every
# other build's, and it must not take the profile it is about to replace. GATEWAY_BIN names
# an instrumented gateway built elsewhere. The mock is built alongside; its own profile, if
# it writes one, is not used.
instrumented=$repo/target/pgo-generate
if [ -z "${GATEWAY_BIN:-}" ]; then
    say "instrumented build (-Cprofile-generate), in target/pgo-generate"
    (cd "$repo" && RUSTFLAGS="-Cprofile-generate=$instrumented/raw" CARGO_TARGET_DIR="$instrumented" \
        cargo build --release --locked --bin kwikid-gateway --bin kwikid-mock) >&2 \
        || die "instrumented build failed"
fi
gateway_bin=${GATEWAY_BIN:-$instrumented/release/kwikid-gateway}
mock_bin=${MOCK_BIN:-$instrumented/release/kwikid-mock}
[ -x "$mock_bin" ] || die "no mock binary at $mock_bin (MOCK_BIN names one)"

token=$(random_token)
export KWIKID_API_TOKEN=$token
start_mock "$mock_bin" "$LOAD_CPU" "$work"
port=$(free_port)
admin_port=$(free_port)
write_load_config "$work/gateway.toml" "$port" "$admin_port" "[log]
level = \"info\"
format = \"json\""

say "training load"
LLVM_PROFILE_FILE="$work/raw/gateway-%p.profraw" start_server "$PROXY_CPU" "$work/access.log" \
    "$work/gateway.err" "$port" 60 "$gateway_bin" --config "$work/gateway.toml"
gateway_pid=$server_pid
url="http://127.0.0.1:$port$ROUTE"
taskset -c "$LOAD_CPU" oha --no-tui -n 20000 -c 64 -m POST -H 'content-type: application/json' \
    -H 'x-caller-id: bench' -d "$BODY" "$url" >/dev/null
printf '%s' "$BODY" >"$work/body.json"
taskset -c "$LOAD_CPU" h2load -n 2000 -c 4 -m 8 -d "$work/body.json" \
    -H 'content-type: application/json' -H 'x-caller-id: bench' "$url" >/dev/null
timeout 300 taskset -c "$LOAD_CPU" python3 "$here/idle_conns.py" 127.0.0.1 "$port" 200 "$gateway_pid" >/dev/null
for _ in 1 2 3 4 5; do
    curl -s -o /dev/null "$url"
    curl -s -o /dev/null -X POST -d '{' -H 'content-type: application/json' "$url"
    curl -s -o /dev/null -X POST -d "$BODY" -H 'content-type: application/json' "http://127.0.0.1:$port/nope"
done
for path in metrics readyz healthz; do curl -fsS -o /dev/null "http://127.0.0.1:$admin_port/$path"; done
stop_pid "$gateway_pid"

shopt -s nullglob
raw=("$work"/raw/gateway-*.profraw)
[ "${#raw[@]}" -gt 0 ] || die "the gateway wrote no profile"
# Sparse: functions that never ran are left out (5.6 MiB → 1 MiB); the build treats them as
# it would without a profile.
"$profdata" merge --sparse -o "$out" "${raw[@]}"
say "wrote $out ($(du -h "$out" | cut -f1)) from ${#raw[@]} raw profile(s)"

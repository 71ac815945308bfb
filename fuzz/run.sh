#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and exits non-zero if any of them crashed.
#
#   bash fuzz/run.sh [SECONDS]      # SECONDS per target, default 60
#
# Knobs (environment): FUZZ_TARGETS="route_matcher body_validator config_loader access_log
# header_filter" (a subset, space-separated).
# Needs only stable Rust: cargo-fuzz's nightly flags are allowed with RUSTC_BOOTSTRAP=1.
# Builds with AddressSanitizer (cargo-fuzz's default) into fuzz/target. New corpus entries go
# to fuzz/corpus/TARGET (git-ignored), crashes to fuzz/artifacts/TARGET (git-ignored);
# committed seeds are read from fuzz/seeds/TARGET, dictionaries from fuzz/dicts/TARGET.dict.
set -euo pipefail

seconds=${1:-60}
case $seconds in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
targets=${FUZZ_TARGETS:-route_matcher body_validator config_loader access_log header_filter}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=${RUSTC_BOOTSTRAP:-1}

echo "[fuzz] building: $targets" >&2
build_started=$(date +%s)
for target in $targets; do
    cargo fuzz build "$target"
done
echo "[fuzz] built in $(($(date +%s) - build_started)) s" >&2

failed=()
for target in $targets; do
    corpus=fuzz/corpus/$target
    mkdir -p "$corpus"
    dirs=("$corpus")
    [ -d "fuzz/seeds/$target" ] && dirs+=("fuzz/seeds/$target")
    extra=()
    [ -f "fuzz/dicts/$target.dict" ] && extra+=("-dict=fuzz/dicts/$target.dict")
    echo "[fuzz] $target: ${seconds} s" >&2
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a 1 GiB input is a leak.
    if ! cargo fuzz run "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
        "${extra[@]}"; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "[fuzz] FAILED: ${failed[*]} (reproducers under fuzz/artifacts/)" >&2
    exit 1
fi
echo "[fuzz] ok: no crash in ${seconds} s per target" >&2

#!/usr/bin/env bash
# The production build: `cargo build --release --locked`, optimized with the committed profile
# link/kwikid-gateway.profdata (profile-guided optimization, rustc's `-Cprofile-use`). LLVM
# then knows which branches and functions a serving gateway runs: it inlines along them, keeps
# them together and moves start-up, error and admin code out of their way. The same code runs
# ~23 % fewer instructions and ~30 % fewer instruction-cache misses per request
# (README, Performance). The binaries go to target/pgo/release/ (or, with --target T,
# target/pgo/T/release/), beside the plain release build in target/release/, not over it.
#
#   bash deploy/build.sh                                   # kwikid-gateway and kwikid-mock
#   bash deploy/build.sh --bin kwikid-gateway --target x86_64-unknown-linux-musl
#
# Arguments are passed to `cargo build`. A script rather than .cargo/config.toml: the flag
# needs the profile's absolute path, and Cargo neither resolves rustflags against the config's
# directory nor runs rustc for dependencies in the repository.
#
# The profile is LLVM's indexed format, written by benches/pgo.sh with the compiler's LLVM
# (22, Rust 1.95): an older compiler may refuse it, a newer one reads it. Code changed since
# the profile was written is optimized as without it; run benches/pgo.sh again after a change
# to the request path, a dependency update or a new compiler.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
profile=$repo/link/kwikid-gateway.profdata
[ -f "$profile" ] || { echo "deploy/build.sh: no $profile (bash benches/pgo.sh writes it)" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/pgo}
mkdir -p "$CARGO_TARGET_DIR"
# Cargo rebuilds when the flags change, not when a file they name does: the copy named by its
# digest makes a new profile a new flag.
digest=$(sha256sum "$profile" | cut -c1-16)
used=$CARGO_TARGET_DIR/kwikid-gateway-$digest.profdata
[ -f "$used" ] || cp "$profile" "$used"
cd "$repo"
exec cargo build --release --locked --config "build.rustflags = [\"-Cprofile-use=$used\"]" "$@"

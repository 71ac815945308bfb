#!/usr/bin/env bash
# Installs what benches/run.sh needs on Debian/Ubuntu: nginx (the comparison), wrk (max
# throughput), oha (fixed-rate latency; built from crates.io, version pinned), h2load (the
# HTTP/2 row; Debian's nghttp2-client), python3 and taskset. Run as root (or with sudo available). Safe to run twice.
set -euo pipefail

OHA_VERSION=1.16.0

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
    nginx wrk nghttp2-client python3 util-linux procps coreutils ca-certificates

# Debian's wrk cannot send at a fixed rate and there is no wrk2 package, so the fixed-rate
# latency comes from oha (coordinated-omission corrected). Building it takes 3-8 minutes.
if ! command -v oha >/dev/null || [ "$(oha --version 2>/dev/null | awk '{print $2}')" != "$OHA_VERSION" ]; then
    cargo install oha --version "$OHA_VERSION" --locked
fi

echo "benches/install.sh: ready; now run: bash benches/run.sh"

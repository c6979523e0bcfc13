#!/usr/bin/env bash
# Runs every test of unidb on a fresh machine: installs what the tests need
# (psql, the PostgreSQL client), then the whole cargo test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing: ${need_apt[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# Benchmarks are compiled by clippy --all-targets in CI; run them with cargo bench.
cargo test --lib --bins --tests --locked "$@"

#!/usr/bin/env bash
# Runs every test of unidb on a fresh machine: installs what the tests need (the
# PostgreSQL 15 server the PostgreSQL-backend tests start, psql, the client
# drivers of tests/clients: psycopg 3, asyncpg, pgjdbc; promtool from Debian's
# prometheus and headless chromium for the observability tests), then the whole
# cargo test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# shellcheck source=tests/clients/install.sh
source tests/clients/install.sh
install_client_drivers

# Benchmarks are compiled by clippy --all-targets in CI; run them with cargo bench.
cargo test --lib --bins --tests --locked "$@"

#!/usr/bin/env bash
# Runs every test of unidb on a fresh machine: installs what the tests need (the
# PostgreSQL 15 server the PostgreSQL-backend tests start, psql, and the client
# drivers of tests/clients: psycopg 3, asyncpg, pgjdbc), then the whole cargo test
# suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
    echo "installing: postgresql-15"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql-15
fi

# shellcheck source=tests/clients/install.sh
source tests/clients/install.sh
install_client_drivers

# Benchmarks are compiled by clippy --all-targets in CI; run them with cargo bench.
cargo test --lib --bins --tests --locked "$@"

#!/usr/bin/env bash
# Builds unidb in release mode and serves the shipped config (config/unidb.toml):
# SQLite database under data/, PostgreSQL protocol on 127.0.0.1:6432, user app/app.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -- serve --config config/unidb.toml "$@"

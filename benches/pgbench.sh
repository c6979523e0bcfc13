#!/usr/bin/env bash
# Whole-system benchmark: pgbench against unidb serving a SQLite file and against a
# throwaway PostgreSQL 15 cluster, in the same run, each loaded by `pgbench -i -s 10`.
#
#   benches/pgbench.sh [seconds-per-run (default 20)] [runs (default 3)]
#
# Prints TPS (median of the runs) and p99 latency for each target, protocol and
# script, and the ratio unidb-on-SQLite / direct PostgreSQL. Needs pgbench, psql and
# the PostgreSQL 15 server binaries (installed if missing); as root, the PostgreSQL
# cluster runs as the `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-20}
RUNS=${2:-3}
PGBIN=/usr/lib/postgresql/15/bin
SCALE=10

if [ ! -x "$PGBIN/postgres" ] || ! command -v pgbench >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15
fi

cargo build --release --locked --quiet
WORK=$(mktemp -d /tmp/unidb-bench.XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
UNIDB_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
    [ -n "${UNIDB_PID:-}" ] && kill "$UNIDB_PID" 2>/dev/null || true
    as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- PostgreSQL 15 -------------------------------------------------------------
mkdir -p "$WORK/pg" "$WORK/sock"
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pg" "$WORK/sock"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -w \
    -o "-p $PG_PORT -k $WORK/sock -c listen_addresses=127.0.0.1 -c max_connections=50" start >/dev/null
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE app OWNER app" >/dev/null

# --- unidb on SQLite ---------------------------------------------------------------
cat > "$WORK/unidb.toml" <<TOML
[server]
listen = "127.0.0.1:$UNIDB_PORT"
[log]
level = "warn"
[[users]]
name = "app"
password = "app"
[databases.app]
backend = "sqlite"
path = "$WORK/app.db"
TOML
./target/release/unidb serve --config "$WORK/unidb.toml" >"$WORK/unidb.log" 2>&1 &
UNIDB_PID=$!
export PGPASSWORD=app
for _ in $(seq 100); do
    psql -q -h 127.0.0.1 -p "$UNIDB_PORT" -U app -d app -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
done

# pgbench's own schema and data (scale 10: 1,000,000 accounts) on both targets.
for port in "$PG_PORT" "$UNIDB_PORT"; do
    pgbench -i -s "$SCALE" -q -h 127.0.0.1 -p "$port" -U app app >/dev/null 2>&1 || {
        echo "pgbench -i failed on port $port" >&2; exit 1; }
done
# Settle PostgreSQL after the load so background work does not land in a run.
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d app -c "CHECKPOINT" >/dev/null
sleep 2

# run TARGET_PORT SCRIPT PROTOCOL CLIENTS -> prints "tps p99_ms failed"
# SCRIPT is a pgbench builtin: select-only or tpcb-like.
run() {
    local port=$1 script=$2 proto=$3 clients=$4 dir
    dir=$(mktemp -d "$WORK/run.XXXXXX")
    (cd "$dir" && pgbench -n -h 127.0.0.1 -p "$port" -U app -d app -b "$script" \
        -c "$clients" -j 2 -T "$DURATION" -M "$proto" -l --sampling-rate=0.05 --log-prefix=tx >"$dir/out" 2>&1) || {
        cat "$dir/out" >&2; echo "0 0 all"; return; }
    local tps failed p99
    tps=$(grep -oP 'tps = \K[0-9.]+' "$dir/out" | head -1)
    failed=$(grep -oP 'number of failed transactions: \K[0-9]+' "$dir/out" || echo 0)
    # Per-transaction log (a 5% sample): 3rd column is the latency in microseconds.
    p99=$(cat "$dir"/tx.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f", a[i]/1000}')
    echo "$tps $p99 $failed"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "pgbench: builtin scripts at scale $SCALE, ${DURATION}s per run, median of $RUNS runs, -j 2"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
printf '%-28s %12s %10s %12s %10s %8s\n' "workload" "unidb tps" "p99 ms" "pg tps" "p99 ms" "ratio"
for case in "select-only simple 8" "select-only extended 8" "select-only prepared 8" \
    "tpcb-like simple 4" "tpcb-like prepared 4"; do
    set -- $case
    declare -A tps=() p99=() failed=()
    unidb_results=(); pg_results=()
    # Alternate the targets run by run so that drift hits both alike.
    for _ in $(seq "$RUNS"); do
        unidb_results+=("$(run "$UNIDB_PORT" "$1" "$2" "$3")")
        pg_results+=("$(run "$PG_PORT" "$1" "$2" "$3")")
    done
    for target in unidb pg; do
        if [ "$target" = unidb ]; then results=("${unidb_results[@]}"); else results=("${pg_results[@]}"); fi
        tps[$target]=$(printf '%s\n' "${results[@]}" | awk '{print $1}' | median)
        p99[$target]=$(printf '%s\n' "${results[@]}" | awk '{print $2}' | median)
        failed[$target]=$(printf '%s\n' "${results[@]}" | awk '{s+=$3} END {print s}')
    done
    ratio=$(awk -v a="${tps[unidb]}" -v b="${tps[pg]}" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }')
    printf '%-28s %12.0f %10s %12.0f %10s %8s\n' "$1 -M $2 -c $3" "${tps[unidb]}" "${p99[unidb]}" "${tps[pg]}" "${p99[pg]}" "$ratio"
    if [ "${failed[unidb]}" != 0 ] || [ "${failed[pg]}" != 0 ]; then
        echo "  failed transactions: unidb ${failed[unidb]}, postgres ${failed[pg]}"
    fi
done
echo "unidb: synchronous=normal (WAL); postgres: default settings (fsync on, synchronous_commit on)"

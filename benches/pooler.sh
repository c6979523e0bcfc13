#!/usr/bin/env bash
# Whole-system benchmark of transaction pooling: pgbench against a throwaway PostgreSQL 15
# cluster directly, through PgBouncer and through unidb, all in transaction pooling mode
# with 20 server connections, on the same pgbench database (scale 10). A second unidb
# with `[observe] enabled = false` (target unidb-noobs) measures what statement timing
# and statistics cost.
#
#   benches/pooler.sh [seconds-per-run (default 20)] [runs (default 3)]
#
# Environment:
#   TARGETS       targets to run, any of "direct pgbouncer unidb unidb-noobs" (default: all)
#   UNIDB_BIN     unidb binary, relative to the repository root or absolute
#                 (default target/release/unidb, built with cargo if missing)
#   IDLE_CLIENTS  idle connections for the memory measurement (default 2000; 0 skips it)
#   INSTRUCTIONS  1 (default): also count each pooler's user-space instructions per
#                 transaction under valgrind's callgrind; 0 skips it
#   WORKERS       `[server] workers` of the unidb targets (default 0: half the CPUs)
#   MODES         workloads, any of "select-simple select-extended select-prepared tpcb
#                 connect" (default: all)
#   DURATION, RUNS  used when the arguments are not given
#
# For every workload it runs pgbench against each target once per run, targets
# interleaved within a run, and prints a markdown table of the median TPS and average
# latency per target, the ratios unidb/PgBouncer, unidb/direct and unidb/unidb-noobs
# (observation on over off), and the failed
# transactions summed over every run; then each pooler's own CPU time (user + system,
# from /proc) and context switches per transaction (per connection with -C), which move
# less from run to run than throughput on a machine whose cores pgbench, PostgreSQL and
# the pooler share. Then it opens IDLE_CLIENTS idle client connections
# (benches/idle_clients.py) to each pooler and prints its resident memory per idle client.
# Last, it runs each pooler again under callgrind and counts the instructions it executes
# per transaction (4 clients, a fixed number of transactions): unlike time, that count
# does not move with what else the machine is doing.
#
# Runs as root on Debian 12: installs PostgreSQL 15 and PgBouncer when missing; the
# PostgreSQL cluster and PgBouncer run as the `postgres` user. Progress goes to stderr,
# the report to stdout. Everything it starts is stopped, and its temp dir removed, on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-${DURATION:-20}}
RUNS=${2:-${RUNS:-3}}
TARGETS=${TARGETS:-"direct pgbouncer unidb unidb-noobs"}
UNIDB_BIN=${UNIDB_BIN:-target/release/unidb}
IDLE_CLIENTS=${IDLE_CLIENTS:-2000}
INSTRUCTIONS=${INSTRUCTIONS:-1}
PGBIN=/usr/lib/postgresql/15/bin
SCALE=10
POOL_SIZE=20
MAX_CLIENTS=5000
CLK_TCK=$(getconf CLK_TCK)
FD_LIMIT=10000
BOUNCER_PREPARED= # set when PgBouncer can keep prepared statements in transaction mode

# Workloads, in the order they run and are reported. Each gets "-T $DURATION" and the
# target's host, port, user and database appended.
read -r -a MODES <<<"${MODES:-select-simple select-extended select-prepared tpcb connect}"
declare -A MODE_ARGS=(
    [select-simple]="-n -S -c 16 -j 2 --protocol=simple"
    [select-extended]="-n -S -c 16 -j 2 --protocol=extended"
    [select-prepared]="-n -S -c 16 -j 2 --protocol=prepared"
    [tpcb]="-n -c 8 -j 2"
    [connect]="-n -S -C -c 8 -j 2"
)
declare -A MODE_LABEL=(
    [select-simple]="select-only, simple, -c 16"
    [select-extended]="select-only, extended, -c 16"
    [select-prepared]="select-only, prepared, -c 16"
    [tpcb]="TPC-B, simple, -c 8"
    [connect]="select-only, new connection per tx (-C), -c 8"
)

log() { echo "pooler.sh: $*" >&2; }
die() { echo "pooler.sh: error: $*" >&2; exit 1; }

# Print a server log to stderr (before dying on a start failure): its first and last 10
# lines if it is long, since the error may be followed by a backtrace.
show_log() {
    [ -f "$1" ] || return 0
    echo "--- $1:" >&2
    if [ "$(wc -l <"$1")" -le 20 ]; then cat "$1" >&2; else head -n 10 "$1" >&2; echo "[...]" >&2; tail -n 10 "$1" >&2; fi
    echo "---" >&2
}

as_pg() { runuser -u postgres -- "$@"; }

# as_pg with the open-file limit raised to $FD_LIMIT: runuser's PAM session (pam_limits)
# resets the soft limit to the system default, so raise it again inside.
# shellcheck disable=SC2016 # the inner shell expands $1 and $@
as_pg_many_files() { as_pg sh -c 'ulimit -n "$1" && shift && exec "$@"' sh "$FD_LIMIT" "$@"; }

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# --- arguments and prerequisites ----------------------------------------------------

check_arguments() {
    [[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "seconds-per-run must be a positive integer, got '$DURATION'"
    [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "runs must be a positive integer, got '$RUNS'"
    [[ $IDLE_CLIENTS =~ ^[0-9]+$ ]] || die "IDLE_CLIENTS must be a number, got '$IDLE_CLIENTS'"
    [[ $INSTRUCTIONS =~ ^[01]$ ]] || die "INSTRUCTIONS must be 0 or 1, got '$INSTRUCTIONS'"
    local t
    for t in $TARGETS; do
        case $t in direct | pgbouncer | unidb | unidb-noobs) ;; *) die "unknown target '$t' in TARGETS (use direct, pgbouncer, unidb, unidb-noobs)" ;; esac
    done
    [ -n "${TARGETS// /}" ] || die "TARGETS is empty"
    [ "$(id -u)" -eq 0 ] || die "run as root (PostgreSQL and PgBouncer are started as the postgres user with runuser)"
    id postgres >/dev/null 2>&1 || NEED_PG_PACKAGES=1
}

# Install PostgreSQL 15 and PgBouncer if missing (apt-get update only when installing).
install_packages() {
    local missing=()
    if [ -n "${NEED_PG_PACKAGES:-}" ] || [ ! -x "$PGBIN/postgres" ] || ! command -v pgbench >/dev/null || ! command -v psql >/dev/null; then
        missing+=(postgresql-15 postgresql-client-15)
    fi
    if has_target pgbouncer && ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
        missing+=(pgbouncer)
    fi
    if [ "$INSTRUCTIONS" = 1 ] && ! command -v valgrind >/dev/null; then
        missing+=(valgrind)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
    fi
    PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
}

# Build unidb if the binary is missing.
build_unidb() {
    if [ ! -x "$UNIDB_BIN" ]; then
        log "$UNIDB_BIN not found: cargo build --release --locked"
        cargo build --release --locked || die "cargo build failed"
        [ -x "$UNIDB_BIN" ] || die "$UNIDB_BIN still missing after cargo build (set UNIDB_BIN?)"
    fi
}

# Pick free TCP ports on 127.0.0.1 (all bound at once, so they are distinct): PostgreSQL,
# PgBouncer, the two unidb instances and their HTTP endpoints.
pick_ports() {
    read -r PG_PORT BOUNCER_PORT UNIDB_PORT NOOBS_PORT UNIDB_HTTP NOOBS_HTTP CG_PORT CG_HTTP < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
    declare -gA PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT [unidb]=$UNIDB_PORT [unidb-noobs]=$NOOBS_PORT)
}

# --- process handling -----------------------------------------------------------------

# stop_pid PID: SIGTERM, then SIGKILL if it is still there after 10 s.
stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    set +e
    [ -n "${IDLE_PID:-}" ] && kill "$IDLE_PID" 2>/dev/null
    [ -n "${CG_PID:-}" ] && kill -9 "$CG_PID" 2>/dev/null
    [ -n "${UNIDB_PID:-}" ] && stop_pid "$UNIDB_PID"
    [ -n "${NOOBS_PID:-}" ] && stop_pid "$NOOBS_PID"
    [ -n "${BOUNCER_PID:-}" ] && stop_pid "$BOUNCER_PID"
    [ -d "${WORK:-}/pg" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}

# wait_ready NAME PORT PID LOG: wait until `SELECT 1` as bench works on PORT (60 s).
wait_ready() {
    local name=$1 port=$2 pid=$3 logfile=$4 i
    for i in $(seq 600); do
        if psql -XAtq -h 127.0.0.1 -p "$port" -U bench -d bench -c "SELECT 1" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log "$logfile"
            die "$name exited during start-up"
        fi
        sleep 0.1
    done
    show_log "$logfile"
    psql -XAtq -h 127.0.0.1 -p "$port" -U bench -d bench -c "SELECT 1" >&2 || true
    die "$name does not answer SELECT 1 on 127.0.0.1:$port after 60 s"
}

# Raise the open-file limit; the servers started afterwards inherit it.
raise_fd_limit() {
    ulimit -n "$FD_LIMIT" 2>/dev/null ||
        die "cannot raise the open-file limit to $FD_LIMIT (hard limit $(ulimit -Hn))"
}

# Warn if a server process got a lower open-file limit than the idle clients need.
check_fd_limit() {
    local name=$1 pid=$2 soft
    soft=$(awk '/^Max open files/ {print $4}' "/proc/$pid/limits")
    if [ "$soft" != unlimited ] && [ "$soft" -lt $((IDLE_CLIENTS + 100)) ]; then
        log "warning: $name (pid $pid) may open only $soft files, fewer than $IDLE_CLIENTS idle clients need"
    fi
}

# --- servers --------------------------------------------------------------------------

# PostgreSQL 15 on 127.0.0.1:$PG_PORT: SCRAM for TCP, trust on its private Unix socket;
# role and database `bench`. Default durability settings (fsync and synchronous_commit
# on), like benches/pgbench.sh.
start_postgres() {
    mkdir "$WORK/pg" "$WORK/pgsock"
    chown postgres: "$WORK/pg" "$WORK/pgsock"
    as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust -E UTF8 >/dev/null ||
        die "initdb failed"
    cat >"$WORK/pg/pg_hba.conf" <<'HBA'
local all all                trust
host  all all 127.0.0.1/32   scram-sha-256
HBA
    chown postgres: "$WORK/pg/pg_hba.conf"
    as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $WORK/pgsock -c listen_addresses=127.0.0.1 -c max_connections=300" \
        start >/dev/null || { show_log "$WORK/pg/server.log"; die "PostgreSQL did not start"; }
    psql_admin -c "SET password_encryption = 'scram-sha-256'" \
        -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench" >/dev/null
}

# psql as the superuser over PostgreSQL's private Unix socket.
psql_admin() { psql -XAtq -v ON_ERROR_STOP=1 -h "$WORK/pgsock" -p "$PG_PORT" -U postgres -d postgres "$@"; }

# pgbench tables at scale $SCALE, loaded once through a direct connection, then settled.
load_pgbench_tables() {
    log "pgbench -i -s $SCALE"
    pgbench -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U bench bench >"$WORK/init.log" 2>&1 ||
        { show_log "$WORK/init.log"; die "pgbench -i failed"; }
    psql_admin -d bench -c "CHECKPOINT" >/dev/null
}

# PgBouncer in transaction mode on 127.0.0.1:$BOUNCER_PORT, trust for clients, SCRAM
# (user bench, password bench) to PostgreSQL, running as postgres (it refuses root).
start_pgbouncer() {
    local dir=$WORK/pgbouncer
    BOUNCER_VERSION=$("$PGBOUNCER" --version | awk 'NR == 1 {print $2}')
    # max_prepared_statements (prepared statements in transaction mode) arrived in 1.21.
    if [ "$(printf '%s\n' 1.21 "$BOUNCER_VERSION" | sort -V | head -1)" = 1.21 ]; then
        BOUNCER_PREPARED=1
    else
        BOUNCER_PREPARED=
        log "PgBouncer $BOUNCER_VERSION predates 1.21: no prepared statements in transaction mode, its 'prepared' cell is n/a"
    fi
    mkdir "$dir"
    echo '"bench" ""' >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench user=bench password=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENTS
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
${BOUNCER_PREPARED:+max_prepared_statements = 200}
INI
    chown -R postgres: "$dir"
    as_pg_many_files "$PGBOUNCER" -d "$dir/pgbouncer.ini" 2>"$dir/stderr.log" ||
        { show_log "$dir/stderr.log"; show_log "$dir/pgbouncer.log"; die "PgBouncer did not start"; }
    local i
    for i in $(seq 100); do
        [ -s "$dir/pgbouncer.pid" ] && break
        sleep 0.1
    done
    [ -s "$dir/pgbouncer.pid" ] || { show_log "$dir/pgbouncer.log"; die "PgBouncer wrote no pid file"; }
    BOUNCER_PID=$(cat "$dir/pgbouncer.pid")
    wait_ready PgBouncer "$BOUNCER_PORT" "$BOUNCER_PID" "$dir/pgbouncer.log"
    check_fd_limit PgBouncer "$BOUNCER_PID"
}

# start_unidb NAME PORT HTTP_PORT OBSERVE: unidb in transaction mode on 127.0.0.1:PORT,
# trust for clients, SCRAM to PostgreSQL, the same pool size as PgBouncer; OBSERVE
# (true/false) is `[observe] enabled`. Sets START_PID.
start_unidb() {
    local name=$1 port=$2 http=$3 observe=$4
    cat >"$WORK/$name.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
auth = "trust"
max_clients = $MAX_CLIENTS
workers = ${WORKERS:-0}
[http]
listen = "127.0.0.1:$http"
[observe]
enabled = $observe
[log]
level = "warn"
[databases.bench]
backend = "postgres"
url = "postgres://bench:bench@127.0.0.1:$PG_PORT/bench"
pool_mode = "transaction"
pool_size = $POOL_SIZE
TOML
    "$UNIDB_BIN" serve --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    START_PID=$!
    wait_ready "$name" "$port" "$START_PID" "$WORK/$name.log"
    check_fd_limit "$name" "$START_PID"
}

# --- benchmark ------------------------------------------------------------------------

# The pgbench command line for MODE against TARGET.
pgbench_command() {
    local mode=$1 target=$2
    echo pgbench "${MODE_ARGS[$mode]}" -T "$DURATION" -h 127.0.0.1 -p "${PORT[$target]}" -U bench bench
}

# Whether MODE can run against TARGET (PgBouncer < 1.21 has no prepared statements in
# transaction mode: every prepared run would fail).
supported() {
    [ "$1" != select-prepared ] || [ "$2" != pgbouncer ] || [ -n "$BOUNCER_PREPARED" ]
}

# The pooler process of TARGET ("" for direct).
target_pid() {
    case $1 in
    pgbouncer) echo "$BOUNCER_PID" ;;
    unidb) echo "$UNIDB_PID" ;;
    unidb-noobs) echo "$NOOBS_PID" ;;
    *) echo "" ;;
    esac
}

# CPU ticks (user + system) and context switches (voluntary + involuntary, every
# thread) of PID so far, as "ticks switches".
proc_usage() {
    local pid=$1 ticks switches
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    switches=$(cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}')
    echo "$ticks $switches"
}

# run_pgbench MODE TARGET RUN: run pgbench once and append its TPS, average latency,
# failed transactions and abort flag, and for a pooler its CPU time and context
# switches per transaction, to the result arrays.
run_pgbench() {
    local mode=$1 target=$2 run=$3 out rc=0 tps lat failed pid t0 s0 t1 s1 n
    out=$WORK/out/$mode.$target.$run
    local cmd
    read -ra cmd <<<"$(pgbench_command "$mode" "$target")"
    pid=$(target_pid "$target")
    [ -z "$pid" ] || read -r t0 s0 <<<"$(proc_usage "$pid")"
    "${cmd[@]}" >"$out" 2>&1 || rc=$?
    n=$(awk '/^number of transactions actually processed:/ {split($NF, a, "/"); print a[1]; exit}' "$out")
    if [ -n "$pid" ] && [ "${n:-0}" -gt 0 ]; then
        read -r t1 s1 <<<"$(proc_usage "$pid")"
        CPU[$mode,$target]+="$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}') "
        CSW[$mode,$target]+="$(awk -v s=$((s1 - s0)) -v n="$n" 'BEGIN {printf "%.3f", s / n}') "
    fi
    # pgbench 15 prints "tps = N (without initial connection time)", and with -C
    # "tps = N (including reconnection times)": either way the first tps line.
    tps=$(awk '/^tps = / {print $3; exit}' "$out")
    lat=$(awk '/^latency average = / {print $4; exit}' "$out")
    failed=$(awk -F'[: ]+' '/^number of failed transactions:/ {print $5; exit}' "$out")
    TPS[$mode,$target]+="${tps:--} "
    LAT[$mode,$target]+="${lat:--} "
    FAILED[$mode]=$((${FAILED[$mode]:-0} + ${failed:-0}))
    if [ "$rc" -ne 0 ]; then
        ABORTED[$mode]=$((${ABORTED[$mode]:-0} + 1))
        log "warning: pgbench exited $rc ($mode, $target, run $run):"
        grep -v '^progress' "$out" | tail -n 8 >&2
    fi
    log "run $run/$RUNS $mode $target: tps ${tps:-?}, latency ${lat:-?} ms, failed ${failed:-?}"
}

# Run every workload RUNS times; within a run every target runs each workload in turn,
# the target order rotating from run to run so none is always first.
run_benchmark() {
    mkdir "$WORK/out"
    declare -gA TPS=() LAT=() FAILED=() ABORTED=() CPU=() CSW=()
    local targets run mode target i
    read -ra targets <<<"$TARGETS"
    for run in $(seq "$RUNS"); do
        for mode in "${MODES[@]}"; do
            for i in "${!targets[@]}"; do
                target=${targets[$(((i + run - 1) % ${#targets[@]}))]}
                supported "$mode" "$target" && run_pgbench "$mode" "$target" "$run"
            done
        done
    done
}

# Median of the numbers on stdin (non-numbers ignored); "-" if there are none.
median() {
    tr ' ' '\n' | awk '$1 ~ /^[0-9.]+$/' | sort -g |
        awk '{a[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

# cell MODE TARGET tps|lat|cpu|csw: the median formatted for the table.
cell() {
    local mode=$1 target=$2 what=$3 m
    if ! has_target "$target"; then echo "-"; return; fi
    if ! supported "$mode" "$target"; then echo "n/a"; return; fi
    case $what in
    tps) m=$(median <<<"${TPS[$mode,$target]:-}") ;;
    lat) m=$(median <<<"${LAT[$mode,$target]:-}") ;;
    cpu) m=$(median <<<"${CPU[$mode,$target]:-}") ;;
    csw) m=$(median <<<"${CSW[$mode,$target]:-}") ;;
    esac
    if [ "$m" = - ]; then
        echo "-"
    else
        case $what in
        tps) printf '%.0f' "$m" ;;
        lat) printf '%.3f' "$m" ;;
        cpu) printf '%.1f' "$m" ;;
        csw) printf '%.2f' "$m" ;;
        esac
    fi
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }

print_table() {
    echo "| mode | direct tps | pgbouncer tps | unidb tps | unidb/pgbouncer | unidb/direct | unidb observe off tps | observe on/off | avg latency ms (direct/pgbouncer/unidb) | failed |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    local mode d b u n failed
    for mode in "${MODES[@]}"; do
        d=$(cell "$mode" direct tps)
        b=$(cell "$mode" pgbouncer tps)
        u=$(cell "$mode" unidb tps)
        n=$(cell "$mode" unidb-noobs tps)
        failed=${FAILED[$mode]:-0}
        [ "${ABORTED[$mode]:-0}" -gt 0 ] && failed="$failed (${ABORTED[$mode]} runs aborted)"
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %s |\n' "${MODE_LABEL[$mode]}" "$d" "$b" "$u" \
            "$(ratio "$u" "$b")" "$(ratio "$u" "$d")" "$n" "$(ratio "$u" "$n")" \
            "$(cell "$mode" direct lat)" "$(cell "$mode" pgbouncer lat)" "$(cell "$mode" unidb lat)" "$failed"
    done
}

# The poolers' own CPU per transaction (per connection with -C): steadier than
# throughput on a machine whose cores pgbench, PostgreSQL and the pooler share.
print_cpu_table() {
    has_target pgbouncer || has_target unidb || return 0
    echo
    echo "Pooler CPU time (user + system) and context switches per transaction, from /proc around each run (medians; a ratio below 1: unidb spends less):"
    echo
    echo "| mode | pgbouncer µs/tx | unidb µs/tx | unidb/pgbouncer CPU | unidb observe off µs/tx | pgbouncer switches/tx | unidb switches/tx |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    local mode b u
    for mode in "${MODES[@]}"; do
        b=$(cell "$mode" pgbouncer cpu)
        u=$(cell "$mode" unidb cpu)
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${MODE_LABEL[$mode]}" "$b" "$u" "$(ratio "$u" "$b")" \
            "$(cell "$mode" unidb-noobs cpu)" "$(cell "$mode" pgbouncer csw)" "$(cell "$mode" unidb csw)"
    done
}

# --- memory per idle client -------------------------------------------------------------

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Number of PID's established TCP connections to PostgreSQL (its server connections).
server_conns() {
    if command -v ss >/dev/null; then
        ss -Htnp state established "( dport = :$PG_PORT )" | grep -c "pid=$1," || true
    else
        echo "-"
    fi
}

# idle_memory NAME PID PORT: the server's RSS with no client, then with $IDLE_CLIENTS idle
# clients connected; prints a table row. The client process holds its connections until
# its standard input (a coprocess pipe) is closed.
idle_memory() {
    local name=$1 pid=$2 port=$3 before with line conns wfd
    before=$(rss_kib "$pid")
    coproc IDLE { exec python3 benches/idle_clients.py 127.0.0.1 "$port" bench bench "$IDLE_CLIENTS"; }
    if ! read -r -t 330 -u "${IDLE[0]}" line || [ "$line" != "connected $IDLE_CLIENTS" ]; then
        die "$IDLE_CLIENTS idle clients could not connect to $name (got '${line:-nothing}')"
    fi
    sleep 2 # let the server settle
    with=$(rss_kib "$pid")
    conns=$(server_conns "$pid")
    wfd=${IDLE[1]}
    exec {wfd}>&-
    wait "$IDLE_PID" || die "idle clients to $name exited with an error"
    IDLE_PID=
    printf '| %s | %d | %d | %.2f | %s |\n' "$name" "$before" "$with" \
        "$(awk -v a="$before" -v b="$with" -v n="$IDLE_CLIENTS" 'BEGIN {print (b - a) / n}')" "$conns"
}

measure_memory() {
    [ "$IDLE_CLIENTS" -gt 0 ] || return 0
    has_target pgbouncer || has_target unidb || return 0
    log "memory: $IDLE_CLIENTS idle clients"
    echo
    echo "Memory with $IDLE_CLIENTS idle clients (VmRSS in KiB of the proxy process, after the pgbench runs):"
    echo
    echo "| proxy | RSS no clients | RSS with $IDLE_CLIENTS idle | KiB per idle client | its connections to PostgreSQL meanwhile |"
    echo "|---|---:|---:|---:|---:|"
    if has_target pgbouncer; then idle_memory pgbouncer "$BOUNCER_PID" "$BOUNCER_PORT"; fi
    if has_target unidb; then idle_memory unidb "$UNIDB_PID" "$UNIDB_PORT"; fi
}

# --- instructions per transaction -------------------------------------------------------

CG_CLIENTS=4
CG_WARMUP=200
CG_TX=(500 2500) # transactions per client of the two counted runs

# callgrind_run TARGET MODE TX: TARGET's pooler started again under callgrind on its own
# port, warmed up, then TX transactions per client of MODE; prints the instructions the
# whole process executed, start-up and shutdown included (the same in both runs).
callgrind_run() {
    local target=$1 mode=$2 tx=$3 out i
    out=$WORK/cg/$target.$mode.$tx
    case $target in
    pgbouncer)
        sed -e "s/^listen_port = .*/listen_port = $CG_PORT/" -e "s|^pidfile = .*|pidfile = $WORK/cg/pgbouncer.pid|" \
            -e "s|^logfile = .*|logfile = $WORK/cg/pgbouncer.log|" "$WORK/pgbouncer/pgbouncer.ini" >"$WORK/cg/pgbouncer.ini"
        chown postgres: "$WORK/cg/pgbouncer.ini"
        as_pg valgrind --tool=callgrind --callgrind-out-file="$out" "$PGBOUNCER" "$WORK/cg/pgbouncer.ini" \
            >"$WORK/cg/valgrind.log" 2>&1 &
        ;;
    unidb)
        sed -e "s/127.0.0.1:$UNIDB_PORT\"/127.0.0.1:$CG_PORT\"/" -e "s/127.0.0.1:$UNIDB_HTTP\"/127.0.0.1:$CG_HTTP\"/" \
            "$WORK/unidb.toml" >"$WORK/cg/unidb.toml"
        valgrind --tool=callgrind --callgrind-out-file="$out" "$UNIDB_BIN" serve --config "$WORK/cg/unidb.toml" \
            >"$WORK/cg/valgrind.log" 2>&1 &
        ;;
    esac
    for i in $(seq 100); do
        # The valgrind process itself, not runuser above it.
        CG_PID=$(pgrep -f -- "^[^ ]*valgrind[^ ]* .*--callgrind-out-file=$out" | head -n 1) || true
        [ -n "$CG_PID" ] && break
        sleep 0.1
    done
    [ -n "$CG_PID" ] || { show_log "$WORK/cg/valgrind.log"; die "$target did not start under valgrind"; }
    wait_ready "$target under valgrind" "$CG_PORT" "$CG_PID" "$WORK/cg/valgrind.log"
    # shellcheck disable=SC2206 # the mode's options are words
    local cmd=(pgbench ${MODE_ARGS[$mode]} -c "$CG_CLIENTS" -j 1 -h 127.0.0.1 -p "$CG_PORT" -U bench bench)
    "${cmd[@]}" -t "$CG_WARMUP" >"$WORK/cg/warmup.log" 2>&1 || { show_log "$WORK/cg/warmup.log"; die "pgbench warm-up against $target under valgrind failed"; }
    "${cmd[@]}" -t "$tx" >"$WORK/cg/run.log" 2>&1 || { show_log "$WORK/cg/run.log"; die "pgbench against $target under valgrind failed"; }
    # PgBouncer stops on SIGINT once its servers are closed, unidb on SIGTERM.
    if [ "$target" = pgbouncer ]; then kill -INT "$CG_PID"; else kill -TERM "$CG_PID"; fi
    for i in $(seq 600); do
        kill -0 "$CG_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$CG_PID" 2>/dev/null && die "$target under valgrind did not stop"
    CG_PID=
    awk '/^totals:/ {print $2}' "$out"
}

# instructions TARGET MODE: instructions per transaction, from the difference of two runs.
instructions() {
    local a b
    a=$(callgrind_run "$1" "$2" "${CG_TX[0]}")
    b=$(callgrind_run "$1" "$2" "${CG_TX[1]}")
    awk -v a="$a" -v b="$b" -v n=$(((CG_TX[1] - CG_TX[0]) * CG_CLIENTS)) 'BEGIN {printf "%.0f", (b - a) / n}'
}

measure_instructions() {
    [ "$INSTRUCTIONS" = 1 ] || return 0
    has_target pgbouncer || has_target unidb || return 0
    mkdir "$WORK/cg"
    chown postgres: "$WORK/cg"
    echo
    echo "User-space instructions per transaction under callgrind ($CG_CLIENTS clients, $CG_WARMUP warm-up transactions each, then the difference between runs of ${CG_TX[0]} and ${CG_TX[1]} transactions each):"
    echo
    echo "| mode | pgbouncer instructions/tx | unidb instructions/tx | unidb/pgbouncer |"
    echo "|---|---:|---:|---:|"
    local mode b u
    for mode in "${MODES[@]}"; do
        [ "$mode" = connect ] && continue
        log "instructions: $mode"
        b=n/a u=-
        if has_target pgbouncer && supported "$mode" pgbouncer; then b=$(instructions pgbouncer "$mode"); fi
        if has_target unidb; then u=$(instructions unidb "$mode"); fi
        printf '| %s | %s | %s | %s |\n' "${MODE_LABEL[$mode]%, -c *}, -c $CG_CLIENTS" "$b" "$u" "$(ratio "$u" "$b")"
    done
}

# --- main -------------------------------------------------------------------------------

check_arguments
install_packages
if has_target unidb || has_target unidb-noobs; then build_unidb; fi
[ -f benches/idle_clients.py ] || die "benches/idle_clients.py not found (run from the unidb repository)"

WORK=$(mktemp -d /tmp/unidb-pooler.XXXXXX)
chmod 755 "$WORK"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export PGPASSWORD=bench PGSSLMODE=disable
pick_ports
raise_fd_limit

log "PostgreSQL on 127.0.0.1:$PG_PORT"
start_postgres
load_pgbench_tables
if has_target pgbouncer; then
    log "PgBouncer on 127.0.0.1:$BOUNCER_PORT"
    start_pgbouncer
fi
if has_target unidb; then
    log "unidb on 127.0.0.1:$UNIDB_PORT"
    start_unidb unidb "$UNIDB_PORT" "$UNIDB_HTTP" true
    UNIDB_PID=$START_PID
fi
if has_target unidb-noobs; then
    log "unidb with [observe] enabled = false on 127.0.0.1:$NOOBS_PORT"
    start_unidb unidb-noobs "$NOOBS_PORT" "$NOOBS_HTTP" false
    NOOBS_PID=$START_PID
fi
sleep 2 # let the load's background writes settle

echo "# pooler benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- machine: $(nproc) cores (nproc), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r)"
echo "- PostgreSQL $(psql_admin -c 'SHOW server_version' | awk '{print $1}'), max_connections=300, default durability (fsync, synchronous_commit on)"
if has_target pgbouncer; then
    if [ -n "$BOUNCER_PREPARED" ]; then prepared="max_prepared_statements=200"; else prepared="no prepared statements in transaction mode before 1.21: prepared is n/a"; fi
    echo "- PgBouncer $BOUNCER_VERSION: pool_mode=transaction, default_pool_size=$POOL_SIZE, $prepared"
fi
if has_target unidb; then
    echo "- $("$UNIDB_BIN" --version): pool_mode=transaction, pool_size=$POOL_SIZE; unidb-noobs: the same with [observe] enabled = false"
fi
echo "- targets: $TARGETS; pgbench -s $SCALE, ${DURATION}s per run, median of $RUNS runs, targets interleaved within each run"
echo "- clients authenticate with SCRAM-SHA-256 directly and with trust to the poolers, which hold SCRAM connections to PostgreSQL; PGSSLMODE=disable everywhere"
echo "- command lines (PORT is the target's):"
for mode in "${MODES[@]}"; do
    echo "    $(pgbench_command "$mode" direct | sed "s/-p $PG_PORT/-p PORT/")"
done
echo

run_benchmark
print_table
print_cpu_table
measure_memory
measure_instructions

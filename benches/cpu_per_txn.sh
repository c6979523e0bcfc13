#!/usr/bin/env bash
# CPU time and voluntary context switches a server process spends per pgbench
# transaction, from /proc counters around one pgbench run. Used to compare poolers
# (unidb, PgBouncer) under the same load.
#
#   benches/cpu_per_txn.sh PID PORT PROTOCOL [extra pgbench options]
#   e.g. benches/cpu_per_txn.sh "$(pgrep -f 'unidb serve')" 6432 simple -C -c 8
#
# Connects as user and database `bench` (a pgbench -i database) on 127.0.0.1:PORT.
set -euo pipefail
pid=$1 port=$2 protocol=$3
shift 3
ticks=$(getconf CLK_TCK)
switches() { cat /proc/"$pid"/task/*/status | awk '/^voluntary_ctxt_switches/ { s += $2 } END { print s }'; }
cpu() { awk '{ print $14 + $15 }' /proc/"$pid"/stat; }
s0=$(switches) c0=$(cpu)
out=$(PGSSLMODE=disable pgbench -n -S -c 16 -j 2 -T 8 -M "$protocol" "$@" -h 127.0.0.1 -p "$port" -U bench bench 2>&1)
s1=$(switches) c1=$(cpu)
n=$(echo "$out" | awk '/actually processed/ { split($NF, a, "/"); print a[1] }')
tps=$(echo "$out" | awk '/^tps/ { print $3 }')
awk -v n="$n" -v tps="$tps" -v c="$((c1 - c0))" -v s="$((s1 - s0))" -v hz="$ticks" 'BEGIN {
    printf "tps %.0f  cpu %.1f us/txn  voluntary context switches %.2f/txn\n", tps, c / hz * 1e6 / n, s / n
}'

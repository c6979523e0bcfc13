#!/usr/bin/env bash
# Runs one client-driver check script against a PostgreSQL-protocol server:
#   bash tests/clients/run.sh psycopg|asyncpg|jdbc|psql|sqlalchemy|node
# Connection: UNIDB_HOST, UNIDB_PORT, UNIDB_USER, UNIDB_PASSWORD, UNIDB_DB.
# Exits with the client's status (0: every check passed). The drivers are installed by
# install_client_drivers (tests/clients/install.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    echo "usage: $0 psycopg|asyncpg|jdbc|psql|sqlalchemy|node" >&2
    exit 2
}
[ $# -eq 1 ] || usage

for var in UNIDB_HOST UNIDB_PORT UNIDB_USER UNIDB_DB; do
    if [ -z "${!var:-}" ]; then
        echo "FAIL - $var is not set" >&2
        exit 2
    fi
done
export UNIDB_PASSWORD="${UNIDB_PASSWORD:-}"

# Debian's python3-psycopg and python3-asyncpg are importable by the system interpreter,
# not necessarily by the first python3 on PATH.
python="${UNIDB_CLIENT_PYTHON:-/usr/bin/python3}"
jdbc_jar="${UNIDB_JDBC_JAR:-/usr/share/java/postgresql.jar}"

case "$1" in
    psycopg)
        exec "$python" "$here/psycopg_client.py"
        ;;
    asyncpg)
        exec "$python" "$here/asyncpg_client.py"
        ;;
    jdbc)
        exec java -cp "$jdbc_jar" "$here/JdbcClient.java"
        ;;
    sqlalchemy)
        exec "$python" "$here/sqlalchemy_client.py"
        ;;
    node)
        # node-postgres is installed into tests/clients/.node by install_client_drivers.
        NODE_PATH="$here/.node/node_modules" exec node "$here/node_client.js"
        ;;
    psql)
        export PGHOST="$UNIDB_HOST" PGPORT="$UNIDB_PORT" PGUSER="$UNIDB_USER" \
            PGPASSWORD="$UNIDB_PASSWORD" PGDATABASE="$UNIDB_DB" PGSSLMODE=disable \
            PGCONNECT_TIMEOUT=10
        table="unidb_clients_psql_$$"
        status=0
        psql -X -q -v ON_ERROR_STOP=1 -v "tbl=$table" -f "$here/psql_client.sql" || status=$?
        if [ "$status" -ne 0 ]; then
            # The script stops at the first failure, before its own DROP TABLE.
            psql -X -q -c "DROP TABLE IF EXISTS $table" >/dev/null 2>&1 || true
        fi
        exit "$status"
        ;;
    *)
        usage
        ;;
esac

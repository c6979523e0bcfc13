# shellcheck shell=bash
# Sourced by scripts/test.sh: defines install_client_drivers, which installs the
# client drivers that tests/clients/run.sh uses, skipping whatever is already there.
#
# The Python drivers come from Debian packages, so they are importable by the system
# interpreter /usr/bin/python3 (not by a pyenv or venv python that may be first on PATH);
# run.sh uses the same interpreter (override both with UNIDB_CLIENT_PYTHON).

install_client_drivers() {
    local py="${UNIDB_CLIENT_PYTHON:-/usr/bin/python3}"
    local need=()

    "$py" -c 'import psycopg' >/dev/null 2>&1 || need+=(python3-psycopg)
    "$py" -c 'import asyncpg' >/dev/null 2>&1 || need+=(python3-asyncpg)
    # `java File.java` (single-file source launch) needs the jdk.compiler module,
    # which a JRE lacks.
    java --list-modules 2>/dev/null | grep '^jdk\.compiler@' >/dev/null || need+=(default-jdk-headless)
    [ -r /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
    command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
    "$py" -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
    command -v npm >/dev/null 2>&1 || need+=(nodejs npm)

    if [ ${#need[@]} -ne 0 ]; then
        install_debian_packages "${need[@]}" || return
    fi
    # SQLAlchemy 2 (Debian has 1.4) from PyPI for the system interpreter, and
    # node-postgres from npm into tests/clients/.node.
    "$py" -c 'import sqlalchemy, sys; sys.exit(0 if sqlalchemy.__version__ >= "2" else 1)' \
        >/dev/null 2>&1 || "$py" -m pip install --quiet --break-system-packages 'SQLAlchemy>=2,<3' || return
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    [ -d "$here/.node/node_modules/pg" ] || npm install --prefix "$here/.node" --no-audit \
        --no-fund --no-save --silent pg@8 || return
}

install_debian_packages() {
    local need=("$@")
    echo "installing client drivers: ${need[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq || return
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${need[@]}" || return
}

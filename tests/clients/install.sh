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

    if [ ${#need[@]} -eq 0 ]; then
        return 0
    fi
    echo "installing client drivers: ${need[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq || return
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${need[@]}" || return
}

#!/usr/bin/env bash
# Start a PostgreSQL (15 or newer) that the test suite can use, and print its DSN.
#
# Idempotent: safe to run again while the server is up. Usage in CI:
#
#     eval "$(scripts/ci/postgres.sh)"        # exports DCP_TEST_PG_DSN
#     DCP_REQUIRE_POSTGRES=1 .venv/bin/python -m pytest
#
# stdout carries only `export ...` lines (so `eval` works); progress goes to stderr.
# Where the Debian/Ubuntu cluster tools exist (pg_ctlcluster), the packaged cluster
# ${DCP_PG_VERSION:-15}/main is started; otherwise a private cluster is initdb'd under
# ${DCP_PG_DATA:-/tmp/dcp-ci-pg} on port ${DCP_PG_PORT:-55432} (DCP_PG_PRIVATE=1 forces
# that). The test role may create databases, so every test can work in a fresh database of its
# own. Needs PostgreSQL 15+ server binaries (Debian: apt-get install postgresql).
set -euo pipefail

ROLE="${DCP_PG_ROLE:-dcp_test}"
PASSWORD="${DCP_PG_PASSWORD:-dcp_test}"
DB="${DCP_PG_DB:-dcp_test}"
VERSION="${DCP_PG_VERSION:-15}"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }

# Run a command as the postgres OS user (we may be root, or already postgres, or a user
# with a private cluster).
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

find_bindir() {
    if [ -x "/usr/lib/postgresql/$VERSION/bin/initdb" ]; then
        echo "/usr/lib/postgresql/$VERSION/bin"
    elif ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)"
    elif command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
    elif command -v initdb >/dev/null; then
        dirname "$(command -v initdb)"
    else
        log "no initdb found"
        exit 1
    fi
}

# A fresh Debian/Ubuntu machine: install the server (Debian 12's `postgresql` is 15), as root.
if ! command -v pg_ctlcluster >/dev/null && ! command -v initdb >/dev/null \
    && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing postgresql with apt"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        VERSION="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"
    else
        log "no PostgreSQL server found; install postgresql (15+) or run as root with apt"
        exit 1
    fi
fi

if [ -z "${DCP_PG_PRIVATE:-}" ] && command -v pg_ctlcluster >/dev/null \
    && pg_lsclusters -h 2>/dev/null | grep -q "^$VERSION main"; then
    PORT="$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')"
    if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
        log "starting cluster $VERSION/main on port $PORT"
        pg_ctlcluster "$VERSION" main start >&2
    fi
    HOST=127.0.0.1
    PSQL=(as_pg psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres)
else
    BINDIR="$(find_bindir)"
    DATA="${DCP_PG_DATA:-/tmp/dcp-ci-pg}"
    PORT="${DCP_PG_PORT:-55432}"
    HOST=127.0.0.1
    if [ ! -f "$DATA/PG_VERSION" ]; then
        log "initdb $DATA"
        mkdir -p "$DATA"
        [ "$(id -u)" = 0 ] && chown postgres: "$DATA"
        as_pg "$BINDIR/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        log "starting private cluster $DATA on port $PORT"
        as_pg "$BINDIR/pg_ctl" -D "$DATA" -w -l "$DATA/server.log" \
            -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1" start >&2
    fi
    PSQL=(as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h /tmp -p "$PORT" -U postgres -d postgres)
fi

for _ in $(seq 1 60); do
    if "${PSQL[@]}" -c 'SELECT 1' >/dev/null 2>&1; then break; fi
    sleep 0.5
done

"${PSQL[@]}" >&2 <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') THEN
        CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
    ELSE
        ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
    END IF;
END
\$\$;
SQL
if [ "$("${PSQL[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    "${PSQL[@]}" -c "CREATE DATABASE $DB OWNER $ROLE" >&2
fi

DSN="postgresql://$ROLE:$PASSWORD@$HOST:$PORT/$DB"
log "ready: $DSN"
echo "export DCP_TEST_PG_DSN='$DSN'"

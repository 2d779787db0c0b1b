#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for bidbridge's demo, tests and benchmarks.
#
#   scripts/pg.sh start    install PostgreSQL if absent, init and start the cluster (idempotent)
#   scripts/pg.sh stop     stop it
#   scripts/pg.sh wipe     stop it and delete its data
#   scripts/pg.sh url      print the libpq connection string of database "bidbridge"
#   scripts/pg.sh psql ... run psql against it
#
# The cluster lives in target/pg (override with BB_PGDIR), listens only on a
# unix socket in that directory (port number BB_PGPORT, default 54329, names
# the socket file), and runs as the `postgres` user when this script runs as
# root, because PostgreSQL refuses to run as root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGDIR=${BB_PGDIR:-$ROOT/target/pg}
PORT=${BB_PGPORT:-54329}
DATA=$PGDIR/data
SOCK=$PGDIR/run
LOG=$PGDIR/postgres.log

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

install_postgres() {
    if [ -n "$(pg_bin)" ]; then return; fi
    echo "pg.sh: PostgreSQL server not found; installing Debian's postgresql package" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    # Debian starts its own cluster on 5432; ours is separate and needs none of it.
    if [ -z "$(pg_bin)" ]; then
        echo "pg.sh: installation did not provide pg_ctl" >&2
        exit 1
    fi
}

# Runs a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

url() {
    echo "host=$SOCK port=$PORT user=postgres dbname=bidbridge"
}

running() {
    local bin
    bin=$(pg_bin) || return 1
    [ -f "$DATA/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

start() {
    install_postgres
    local bin
    bin=$(pg_bin)
    mkdir -p "$PGDIR" "$SOCK"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$PGDIR" "$SOCK"
        # postgres must be able to reach its directory through the checkout.
        local d=$PGDIR
        while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
    fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --no-locale >/dev/null
    fi
    if ! running; then
        # Throwaway data: fsync off makes tests fast; nothing here must survive a crash of the host.
        as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start \
            -o "-k $SOCK -p $PORT -c listen_addresses='' -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=128MB" >/dev/null
    fi
    # Wait for connections, then make sure the application database exists.
    for _ in $(seq 1 100); do
        if as_owner "$bin/pg_isready" -h "$SOCK" -p "$PORT" -q; then break; fi
        sleep 0.1
    done
    if ! psql_cmd -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'bidbridge'" | grep -q 1; then
        psql_cmd -d postgres -qc "CREATE DATABASE bidbridge" >/dev/null
    fi
}

psql_cmd() {
    psql -h "$SOCK" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 "$@"
}

stop() {
    local bin
    bin=$(pg_bin) || return 0
    if running; then
        as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    fi
}

case "${1:-}" in
    start) start; url ;;
    stop) stop ;;
    wipe) stop; rm -rf "$PGDIR" ;;
    url) url ;;
    status) if running; then echo "running: $(url)"; else echo "stopped"; exit 1; fi ;;
    psql) shift; psql_cmd -d bidbridge "$@" ;;
    *) echo "usage: $0 start|stop|wipe|url|status|psql" >&2; exit 2 ;;
esac

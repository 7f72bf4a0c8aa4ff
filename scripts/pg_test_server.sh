#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benchmarks, in a directory of
# its own, listening on 127.0.0.1 only.
#
#   eval "$(scripts/pg_test_server.sh start DIR)"   # exports LEGACYGPU_TEST_POSTGRES
#   scripts/pg_test_server.sh stop DIR
#
# Needs Debian's `postgresql` package (apt-get install postgresql). PostgreSQL
# refuses to run as root, so as root the server runs as the `postgres` user
# (created by that package). The server trusts local connections: it is for
# tests, never for data that matters.
#
# Options (environment): PGPORT_TRY (first port to try, default 55432);
# PGPORT_SAME=1 to retry that port only (a restart keeping its port);
# PG_FSYNC=off for a faster, not crash-safe server (default on: what the
# benchmarks measure).
set -euo pipefail

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd="$1"
dir="$(mkdir -p "$2" && cd "$2" && pwd)"

bindir() {
    local d
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    # Debian keeps the server binaries out of PATH, one directory per version.
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
        echo "error: PostgreSQL's server binaries were not found (apt-get install postgresql)" >&2
        exit 1
    fi
    echo "$d"
}

# Runs a server binary as a user PostgreSQL accepts.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

case "$cmd" in
start)
    bin="$(bindir)"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || { echo "error: no postgres user (apt-get install postgresql)" >&2; exit 1; }
        chown postgres: "$dir"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    port="${PGPORT_TRY:-55432}"
    # A port free now may be taken before the server binds it (another
    # server, or an outgoing connection's local port): a start that fails to
    # bind tries again, on the next port, or (PGPORT_SAME=1: a restart that
    # must keep its port) on the same one a moment later.
    started=""
    for _ in $(seq 1 50); do
        if [ "${PGPORT_SAME:-0}" = 1 ] || port_free "$port"; then
            # Loopback only; the socket stays in DIR, never /var/run.
            opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200"
            opts="$opts -c fsync=${PG_FSYNC:-on} -c shared_buffers=128MB"
            rm -f "$dir/server.log"
            if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -t 60 start >/dev/null 2>&1; then
                started=1
                break
            fi
            grep -q "could not bind" "$dir/server.log" || { cat "$dir/server.log" >&2; exit 1; }
        fi
        if [ "${PGPORT_SAME:-0}" = 1 ]; then
            sleep 0.2
        else
            port=$((port + 1))
        fi
    done
    [ -n "$started" ] || { echo "error: no port to listen on from ${PGPORT_TRY:-55432}" >&2; cat "$dir/server.log" >&2; exit 1; }
    echo "export LEGACYGPU_TEST_POSTGRES=postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    bin="$(bindir)"
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
*)
    usage
    ;;
esac

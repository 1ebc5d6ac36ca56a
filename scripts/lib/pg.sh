# shellcheck shell=bash
# Throwaway PostgreSQL for tests and scripts, from the machine's own server
# binaries. Source this file, then:  pg_start DIR  (exports PG_URL, PG_PORT)
# and  pg_stop DIR.  As root, the server runs as the `postgres` user (initdb
# refuses root).

pg_bindir() {
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

pg_ensure_installed() {
    pg_bindir >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "PostgreSQL server binaries not found: installing the 'postgresql' package..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
        pg_bindir >/dev/null && return 0
    fi
    echo "error: PostgreSQL server binaries (initdb, pg_ctl) not found." >&2
    echo "Install the OS package 'postgresql' (e.g. sudo apt-get install postgresql) or set DATABASE_URL." >&2
    return 1
}

pg_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Runs a server binary as the right user.
pg_as() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
    local dir=$1 bin port
    pg_ensure_installed || return 1
    bin=$(pg_bindir)
    port=${PG_PORT:-$(pg_free_port)}
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
        chown postgres "$dir"
        chmod 700 "$dir"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        pg_as "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            pg_as "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; return 1; }
    fi
    pg_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c max_connections=${PG_MAX_CONNECTIONS:-400} -c fsync=on -c synchronous_commit=on" \
        start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
    export PG_PORT=$port
    export PG_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
}

pg_stop() {
    local dir=$1 bin
    bin=$(pg_bindir) || return 0
    [ -f "$dir/data/postmaster.pid" ] && pg_as "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
    return 0
}

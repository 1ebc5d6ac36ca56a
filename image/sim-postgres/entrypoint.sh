#!/bin/sh
# initdb on first start (PGDATA in the container's tmpfs), then the server,
# listening on every address of the container's network, trusting everyone.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C --no-sync --no-instructions >/dev/null
fi
exec postgres -D "$PGDATA" \
    -c listen_addresses='*' \
    -c hba_file=/etc/postgresql/pg_hba.conf \
    -c unix_socket_directories= \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=300 \
    "$@"

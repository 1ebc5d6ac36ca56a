#!/usr/bin/env bash
# Runs the whole test suite against a throwaway PostgreSQL started here.
#   scripts/test.sh [extra cargo-nextest args, e.g. a test name filter]
# Uses DROVE_TEST_DATABASE_URL instead when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh

if [ -z "${DROVE_TEST_DATABASE_URL:-}" ]; then
    tmp=$(mktemp -d /tmp/drove-test.XXXXXX)
    chmod 755 "$tmp"
    trap 'pg_stop "$tmp/pg"; rm -rf "$tmp"' EXIT
    pg_start "$tmp/pg"
    export DROVE_TEST_DATABASE_URL=$PG_URL
    echo "test PostgreSQL: $PG_URL"
fi

# End-to-end tests run the binaries of other packages (drove-worker from the
# controller's tests): a test build alone does not build them.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi

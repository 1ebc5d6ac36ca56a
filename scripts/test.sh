#!/usr/bin/env bash
# Runs the whole test suite:
#   1. cargo tests (unit + end-to-end) against a throwaway PostgreSQL started here
#   2. the offline GCP deployment checks (terraform, cloud-init, rolling update)
#   3. the dashboard in headless Chromium, against a small demo
# Uses DROVE_TEST_DATABASE_URL instead of a throwaway server when it is set.
#   scripts/test.sh [extra cargo-nextest args, e.g. a test name filter]
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

failed=()
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@" || failed+=("cargo tests")
else
    cargo test --workspace --no-fail-fast "$@" || failed+=("cargo tests")
fi

# With a test filter, only the cargo tests were asked for.
if [ $# -eq 0 ]; then
    DROVE_DEPLOY_NO_BUILD=1 scripts/check-deploy.sh || failed+=("deploy checks (scripts/check-deploy.sh)")
    env -u PG_PORT -u PG_URL DROVE_BIN_DIR=${CARGO_TARGET_DIR:-target}/debug scripts/test-dashboard.sh || failed+=("dashboard browser test (scripts/test-dashboard.sh)")
fi

if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all tests passed"

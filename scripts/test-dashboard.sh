#!/usr/bin/env bash
# End-to-end test of the dashboard in a real browser: headless Chromium,
# driven through chromedriver by Python's selenium, against `drove demo`
# running on a throwaway PostgreSQL. See scripts/tests/dashboard/.
#
#   scripts/test-dashboard.sh
#
# Installs what it needs when missing: Debian's `chromium` and
# `chromium-driver` (apt-get, as root) and selenium from PyPI in a venv
# under target/. Skips, saying why, only when Chromium cannot be installed.
# Builds the debug binaries (or uses DROVE_BIN_DIR). Writes a screenshot to
# target/test-dashboard/dashboard.png (DROVE_DASHBOARD_OUT to change).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh

target=${CARGO_TARGET_DIR:-target}
out=${DROVE_DASHBOARD_OUT:-$target/test-dashboard}
mkdir -p "$out"

find_chromium() {
    local c
    for c in chromium chromium-browser google-chrome; do
        command -v "$c" >/dev/null 2>&1 && { command -v "$c"; return 0; }
    done
    return 1
}

skip() {
    echo "SKIP dashboard browser test: $*"
    echo "dashboard tests: 0 passed, 0 failed, 1 skipped"
    exit 0
}

# 1. Chromium and its WebDriver, from Debian.
if ! find_chromium >/dev/null || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium and chromium-driver (apt-get)..."
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q chromium chromium-driver >"$out/apt.log" 2>&1 ||
            { apt-get update -q >>"$out/apt.log" 2>&1 &&
                apt-get install -y -q chromium chromium-driver >>"$out/apt.log" 2>&1; } ||
            { tail -5 "$out/apt.log"; skip "apt-get could not install chromium and chromium-driver (log: $out/apt.log)"; }
    else
        skip "chromium and chromedriver are not installed and this is not root on a Debian-like system (install the packages chromium and chromium-driver)"
    fi
fi
chromium=$(find_chromium) || skip "chromium still not found after installing"
chromedriver=$(command -v chromedriver) || skip "chromedriver still not found after installing"

# 2. selenium (the W3C WebDriver client) in a venv of our own.
venv=$target/test-dashboard/venv
if ! "$venv/bin/python" -c 'import selenium' >/dev/null 2>&1; then
    echo "creating $venv with selenium (PyPI)..."
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >>"$out/apt.log" 2>&1
        fi
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check 'selenium>=4.20,<5'
fi

# 3. The binaries under test.
if [ -z "${DROVE_BIN_DIR:-}" ]; then
    cargo build --workspace --bins
    DROVE_BIN_DIR=$target/debug
fi

# 4. A PostgreSQL of this test's own (the test stops and restarts it to
#    check the page through a database outage).
tmp=$(mktemp -d /tmp/drove-dashboard-test.XXXXXX)
chmod 755 "$tmp"
trap 'pg_stop "$tmp/pg"; rm -rf "$tmp"' EXIT
pg_start "$tmp/pg"

DROVE_BIN="$DROVE_BIN_DIR/drove" PG_DIR="$tmp/pg" PG_PORT="$PG_PORT" PG_URL="$PG_URL" \
    CHROMIUM="$chromium" CHROMEDRIVER="$chromedriver" OUT_DIR="$out" \
    "$venv/bin/python" scripts/tests/dashboard/test_dashboard.py

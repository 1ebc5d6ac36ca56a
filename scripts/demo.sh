#!/usr/bin/env bash
# The local demo in one command: a throwaway PostgreSQL (from the machine's
# own server binaries, or DATABASE_URL if set), the controller with the local
# scaler, an autoscaled group of drove-worker processes, and bursts of
# CPU-bound jobs. Ctrl-C stops everything and removes the temporary files.
#
#   scripts/demo.sh                                  # the real demo (2 x 128 jobs of 3 s CPU)
#   scripts/demo.sh --jobs 32 --difficulty 1000      # a shorter one
#   scripts/demo.sh --help                           # every flag
#
# Builds the release binaries first when they are missing or older than the
# sources (set CARGO_TARGET_DIR to build elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
bin="$target/release/drove"

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found: install Rust (https://rustup.rs) to build drove." >&2
    exit 1
fi

# Cargo decides what to rebuild; when sources look newer than the binary,
# say so and show cargo's progress (a first release build takes minutes).
if [ ! -x "$bin" ] || [ ! -x "$target/release/drove-worker" ] ||
    [ -n "$(find Cargo.toml Cargo.lock queue worker controller -newer "$bin" -type f 2>/dev/null | head -1)" ]; then
    echo "Building drove in release mode (a first build takes several minutes; later ones are quick)..." >&2
    cargo build --release --workspace --bins
else
    cargo build --release --workspace --bins --quiet
fi

# PostgreSQL's server programs are needed unless DATABASE_URL points at a server.
if [ -z "${DATABASE_URL:-}" ]; then
    source scripts/lib/pg.sh
    if ! pg_bindir >/dev/null; then
        echo "error: the demo starts a throwaway PostgreSQL from this machine's server programs" >&2
        echo "(initdb, pg_ctl), and they are not installed. Install the OS package 'postgresql':" >&2
        echo "    sudo apt-get install postgresql        # Debian, Ubuntu" >&2
        echo "    sudo dnf install postgresql-server     # Fedora" >&2
        echo "or use a server you have:  DATABASE_URL=postgres://user:pass@host/db scripts/demo.sh" >&2
        exit 1
    fi
fi

exec "$bin" demo "$@"

#!/usr/bin/env bash
# The managed-instance-group simulation in Docker, with its report.
#
#   scripts/sim-mig.sh              every scenario, one after the other
#   scripts/sim-mig.sh kill         the scenarios whose name contains "kill"
#   scripts/sim-mig.sh images       the image checks and figures (size,
#                                   start to /readyz, idle memory)
#   SIM_PARALLEL=1 scripts/sim-mig.sh   all scenarios at once (faster, noisier)
#
# A group of worker containers (the FROM-scratch image of
# scripts/build-image.sh, built once per commit) runs under the controller's
# `docker` scaling backend on a private network, next to a PostgreSQL
# container built from this machine's own server binaries
# (scripts/sim-postgres-image.sh). Under a steady load of jobs, each scenario
# kills a worker (docker kill), cuts one off the network past its lease
# (docker network disconnect), hangs one until autohealing replaces it
# (docker pause), rolls the group from image v1 to v2 and back (max surge /
# max unavailable), scales it in from 4 to 1 and out again; then it checks
# that every job enqueued was recorded succeeded exactly once and none is
# left running without a live lease. The scenarios are the tests of
# controller/tests/docker_sim.rs, which CI runs too.
#
# Needs: Docker, cargo, PostgreSQL server binaries (initdb, postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

docker info >/dev/null 2>&1 || { echo "sim-mig: the Docker daemon is not reachable: nothing to simulate" >&2; exit 1; }

# Leftovers of earlier runs whose test process is gone (the tests clean up
# after themselves, even on failure; a run killed with SIGKILL cannot).
remove_leftovers() {
    local id pid
    docker ps -a --filter label=drove.test.pid --format '{{.ID}} {{.Label "drove.test.pid"}}' |
        while read -r id pid; do kill -0 "$pid" 2>/dev/null || docker rm -f "$id" >/dev/null 2>&1 || true; done
    docker network ls --filter label=drove.test.pid --format '{{.ID}} {{.Label "drove.test.pid"}}' |
        while read -r id pid; do kill -0 "$pid" 2>/dev/null || docker network rm "$id" >/dev/null 2>&1 || true; done
    docker images -q --filter label=drove.test.pid | sort -u |
        while read -r id; do
            pid=$(docker image inspect --format '{{index .Config.Labels "drove.test.pid"}}' "$id" 2>/dev/null) || continue
            kill -0 "$pid" 2>/dev/null || docker rmi -f "$id" >/dev/null 2>&1 || true
        done
}
remove_leftovers

filter=${1:-sim_}
[ "$filter" = images ] && filter=images_are_static_small_and_non_root
threads=1
[ "${SIM_PARALLEL:-0}" = 1 ] && threads=8

echo "sim-mig: images (built once per commit, then reused)" >&2
scripts/build-image.sh "$([ "$filter" = images_are_static_small_and_non_root ] && echo all || echo worker)" >/dev/null
scripts/sim-postgres-image.sh >/dev/null

report=$(mktemp /tmp/drove-sim-report.XXXXXX)
log=$(mktemp /tmp/drove-sim-log.XXXXXX)
trap 'rm -f "$report"' EXIT
export DROVE_SIM_REPORT=$report
started=$(date +%s)
echo "sim-mig: running '$filter' (test threads: $threads; full output in $log)" >&2
status=0
cargo test -q -p drove-controller --test docker_sim -- --nocapture --test-threads="$threads" "$filter" >"$log" 2>&1 || status=$?
grep -E '^(test |FIGURE|SKIP)' "$log" >&2 || true

echo
echo "== drove: managed instance group simulated in Docker =="
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, Docker $(docker version --format '{{.Server.Version}}'), $(date -u '+%Y-%m-%d %H:%M UTC')"
sed 's/^SIM //' "$report"
echo "total: $(($(date +%s) - started)) s"
if [ "$status" -ne 0 ]; then
    echo "sim-mig: FAILED (see $log; container logs and group events under /tmp/drove-test-logs/)" >&2
    exit "$status"
fi
rm -f "$log"

#!/usr/bin/env bash
# Builds drove-sim-postgres:<major>, the PostgreSQL of the Docker simulation
# (scripts/sim-mig.sh, controller/tests/docker_sim.rs), from this machine's
# own server binaries: initdb, postgres and their modules, every shared
# library they load (ldd), share/, zoneinfo, and dash for initdb's popen, in an
# image FROM scratch (see image/sim-postgres/Dockerfile). Prints the image
# reference. Reuses an image built from the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh

log() { echo "sim-postgres-image: $*" >&2; }
pg_ensure_installed
# The real directory (initdb and postgres find share/ and lib/ relative to it).
bindir=$(dirname "$(readlink -f "$(pg_bindir)/initdb")")
libdir=$("$bindir/pg_config" --pkglibdir 2>/dev/null || echo "$(dirname "$bindir")/lib")
sharedir=$("$bindir/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$(basename "$(dirname "$bindir")")")
major=$("$bindir/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)?.*/\1/')
sh_bin=$(readlink -f /bin/sh)

mkdir -p target
exec 9>target/.sim-postgres-image.lock
flock 9

modules=$(find "$libdir" -maxdepth 1 -name '*.so' ! -name 'llvmjit*' | sort)
# Everything that goes in, hashed: the image is rebuilt when any of it changes.
stamp=$( { cat image/sim-postgres/* scripts/sim-postgres-image.sh "$bindir/postgres" "$bindir/initdb" "$sh_bin"; echo "$modules"; } | sha256sum | cut -c1-12)
image=drove-sim-postgres:$major-$stamp
if docker image inspect "$image" >/dev/null 2>&1; then
    log "$image exists: reused"
    echo "$image"
    exit 0
fi

ctx=$(mktemp -d /tmp/drove-sim-pg.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
put() { # put SRC [DEST]: copy a file (following links) into the image at DEST (default SRC)
    mkdir -p "$root$(dirname "${2:-$1}")"
    cp -L "$1" "$root${2:-$1}"
}
put "$bindir/postgres"
put "$bindir/initdb"
put "$sh_bin" /bin/sh
for m in $modules; do put "$m"; done
# The dynamic loader and every library the binaries and modules need.
# shellcheck disable=SC2086
for lib in $(ldd "$bindir/postgres" "$bindir/initdb" "$sh_bin" $modules 2>/dev/null |
             awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/lib.*ld-linux/ {print $1}' | sort -u); do
    put "$lib"
done
mkdir -p "$(dirname "$root$sharedir")"
cp -a "$sharedir" "$root$sharedir"
rm -rf "$root$sharedir/man"
cp -a /usr/share/zoneinfo "$root/usr/share/zoneinfo"
mkdir -p "$root/etc/postgresql" "$root/usr/local/bin" "$root/var/lib/postgresql" "$root/tmp"
chmod 1777 "$root/tmp"
install -m 0644 image/sim-postgres/pg_hba.conf "$root/etc/postgresql/pg_hba.conf"
install -m 0755 image/sim-postgres/entrypoint.sh "$root/usr/local/bin/entrypoint.sh"
printf 'root:x:0:0:root:/root:/sbin/nologin\npostgres:x:70:70:postgres:/var/lib/postgresql:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\npostgres:x:70:\n' >"$root/etc/group"
# initdb and postgres find their share/ and lib/ relative to the binary's
# directory, as laid out here (the same paths as on this machine).
ln -s "$bindir/initdb" "$root/usr/local/bin/initdb"
ln -s "$bindir/postgres" "$root/usr/local/bin/postgres"
cp image/sim-postgres/Dockerfile "$ctx/Dockerfile"
log "docker build $image ($(du -sh "$root" | cut -f1))"
DOCKER_BUILDKIT=0 docker build --quiet --tag "$image" --tag "drove-sim-postgres:latest" \
    --label "org.opencontainers.image.version=$("$bindir/postgres" --version | awk '{print $NF}')" \
    "$ctx" >/dev/null 2> >(grep -v -E 'DEPRECATED|BuildKit is currently disabled|environment-variable|^\s*$' >&2 || true)
# Older builds of this image are of no further use.
docker images --format '{{.Repository}}:{{.Tag}}' drove-sim-postgres |
    grep -v -x -e "$image" -e drove-sim-postgres:latest | xargs -r docker rmi >/dev/null 2>&1 || true
echo "$image"

#!/bin/sh
# Lays out the files of a FROM-scratch drove image:
#   image/rootfs.sh OUT BINARY [CA_BUNDLE]
# writes OUT/root/ (the binary in /usr/local/bin, /etc/passwd and /etc/group
# with the non-root user 65532, the CA bundle, /tmp) and OUT/home/nonroot/
# (the user's home, copied with --chown by the Dockerfile). Used by the build
# stage of image/Dockerfile and by scripts/build-image.sh, so both produce the
# same image. Refuses a binary that is not statically linked.
set -eu
out=$1
bin=$2
ca=${3:-/etc/ssl/certs/ca-certificates.crt}
here=$(dirname "$0")

# Static: no program interpreter and no NEEDED shared libraries.
if readelf -lW "$bin" | grep -q 'program interpreter' || readelf -dW "$bin" | grep -q '(NEEDED)'; then
    echo "rootfs.sh: $bin is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static'" >&2
    exit 1
fi
[ -s "$ca" ] || { echo "rootfs.sh: no CA bundle at $ca (install ca-certificates)" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/root/usr/local/bin" "$out/root/etc/ssl/certs" "$out/home/nonroot"
install -m 0755 "$bin" "$out/root/usr/local/bin/"
install -m 0644 "$here/rootfs/etc/passwd" "$here/rootfs/etc/group" "$out/root/etc/"
install -m 0644 "$ca" "$out/root/etc/ssl/certs/ca-certificates.crt"
mkdir -m 1777 "$out/root/tmp"

#!/bin/bash
# drove-prepare.sh: runs as an ExecStartPre of a drove container unit on a
# Container-Optimized OS VM, before every (re)start of the container.
#
#   drove-prepare.sh UNIT IMAGE_METADATA_KEY [SECRET_VERSION=HOST_PATH ...]
#
# 1. Reads the image reference from the instance metadata key
#    IMAGE_METADATA_KEY and writes DROVE_IMAGE=<ref> to /run/drove/UNIT.image
#    (the unit's EnvironmentFile), then pulls the image. The image is metadata,
#    not part of the unit, so scripts/rolling-update.sh can make a template for
#    a new tag by changing that one key.
# 2. Fetches each Secret Manager version (projects/P/secrets/S/versions/V)
#    with the VM service account's token from the metadata server and the
#    Secret Manager REST API, and writes the value to HOST_PATH (tmpfs under
#    /run), readable only by the image's user. Nothing secret is ever in the
#    instance metadata, the unit, the environment or terraform state.
#
# COS has bash, curl, base64, sed and docker; no gcloud, jq or python, hence
# the sed-based JSON field extraction on Google's well-formed replies.
# DROVE_METADATA_URL and DROVE_SECRETMANAGER_URL exist for the offline tests.
set -euo pipefail

METADATA=${DROVE_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}
SECRETMANAGER=${DROVE_SECRETMANAGER_URL:-https://secretmanager.googleapis.com/v1}
RUN_DIR=${DROVE_RUN_DIR:-/run/drove}

log() { echo "drove-prepare: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -ge 2 ] || die "usage: drove-prepare.sh UNIT IMAGE_METADATA_KEY [SECRET_VERSION=HOST_PATH ...]"
unit=$1 image_key=$2
shift 2

metadata() {
    curl --silent --show-error --fail --retry 10 --retry-connrefused --retry-delay 2 \
        --header 'Metadata-Flavor: Google' "$METADATA/$1"
}

# Prints the string value of a top-level-or-nested JSON field named $1 found
# in stdin. Enough for Google's token and secret replies, whose values never
# contain quotes.
json_field() {
    tr -d '\n' | sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p"
}

mkdir -p "$RUN_DIR/secrets"
chmod 0755 "$RUN_DIR" "$RUN_DIR/secrets"

image=$(metadata "instance/attributes/$image_key") || die "cannot read metadata key $image_key"
[ -n "$image" ] || die "metadata key $image_key is empty"
case $image in
    *[[:space:]]*) die "metadata key $image_key holds an invalid image reference" ;;
esac
printf 'DROVE_IMAGE=%s\n' "$image" >"$RUN_DIR/$unit.image.tmp"
mv -f "$RUN_DIR/$unit.image.tmp" "$RUN_DIR/$unit.image"
log "image $image"

attempt=1
until docker pull --quiet "$image" >/dev/null; do
    [ "$attempt" -lt 5 ] || die "docker pull $image failed $attempt times"
    log "docker pull failed (attempt $attempt), retrying"
    sleep $((attempt * 5))
    attempt=$((attempt + 1))
done

# The container runs as the image's user; secret files are given to that uid
# (mode 0400) when it is numeric, else made world-readable inside the
# root-owned tmpfs directory (only root and the container can reach it).
user=$(docker image inspect --format '{{.Config.User}}' "$image" 2>/dev/null || true)
uid=${user%%:*}

[ $# -eq 0 ] && exit 0

token=$(metadata "instance/service-accounts/default/token" | json_field access_token) ||
    die "cannot get an access token from the metadata server"
[ -n "$token" ] || die "the metadata server returned no access token"

for spec in "$@"; do
    version=${spec%%=*}
    path=${spec#*=}
    [ -n "$version" ] && [ -n "$path" ] && [ "$version" != "$spec" ] || die "bad secret spec: $spec"
    reply=$(curl --silent --show-error --fail --retry 5 --retry-connrefused --retry-delay 2 \
        --header "Authorization: Bearer $token" "$SECRETMANAGER/$version:access") ||
        die "cannot access secret $version (does the version exist, and may this VM's service account read it?)"
    data=$(printf '%s' "$reply" | json_field data)
    [ -n "$data" ] || die "secret $version has an empty payload"
    umask 077
    printf '%s' "$data" | base64 -d >"$path.tmp" || die "secret $version payload is not base64"
    case $uid in
        '' | *[!0-9]*) chmod 0444 "$path.tmp" ;;
        *) chown "$uid" "$path.tmp" && chmod 0400 "$path.tmp" ;;
    esac
    mv -f "$path.tmp" "$path"
    log "secret $version -> $path"
done

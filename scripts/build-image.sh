#!/usr/bin/env bash
# Builds the drove images offline, from binaries compiled here:
#   scripts/build-image.sh [worker|controller|all]     (default: all)
# Prints the image references it built or found, one a line, on stdout
# (progress goes to stderr):
#   drove-worker:<version>-<commit>[-dirty-<hash>]    and drove-worker:latest
#   drove:<version>-<commit>[-dirty-<hash>]           and drove:latest
#
# The final stages are those of image/Dockerfile, unchanged: only its `build`
# stage (a Rust toolchain image, which cannot be pulled here) is replaced by
# one holding the static binaries `cargo build --release` made on this
# machine. An image whose tag (commit + hash of uncommitted changes to the
# sources) already exists is reused, so CI and tests pay for the release
# build once; concurrent calls wait for each other.
#
# Environment: CARGO_TARGET_DIR (default target/), DROVE_IMAGE_FORCE=1 to
# rebuild even when the tag exists.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
case $what in
    worker) bins=(drove-worker) ;;
    controller) bins=(drove) ;;
    all) bins=(drove-worker drove) ;;
    *) echo "usage: $0 [worker|controller|all]" >&2; exit 2 ;;
esac

log() { echo "build-image: $*" >&2; }
command -v docker >/dev/null || { log "docker CLI not found"; exit 1; }
docker info >/dev/null 2>&1 || { log "the Docker daemon is not reachable"; exit 1; }

triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
mkdir -p "$target_dir"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)

# What goes into each binary and image: its tag changes when any of it has
# uncommitted changes (tests and docs do not count).
sources_of() {
    local common=(Cargo.toml Cargo.lock queue/Cargo.toml queue/src queue/migrations worker/Cargo.toml worker/src image)
    case $1 in
        drove-worker) echo "${common[@]}" ;;
        drove) echo "${common[@]}" controller/Cargo.toml controller/src ;;
    esac
}
empty=$(printf '' | sha256sum | cut -c1-12)
dirty_hash() { # dirty_hash PATH...: hash of the uncommitted changes under PATHs
    { git diff HEAD -- "$@"
      git ls-files --others --exclude-standard -z -- "$@" | xargs -0r sha256sum
    } 2>/dev/null | sha256sum | cut -c1-12
}
tag_of() {
    local dirty
    # shellcheck disable=SC2046
    dirty=$(dirty_hash $(sources_of "$1"))
    if [ "$dirty" = "$empty" ]; then echo "$version-${commit:0:12}"; else echo "$version-${commit:0:12}-dirty-$dirty"; fi
}
revision_of() {
    case $(tag_of "$1") in *-dirty-*) echo "$commit-dirty" ;; *) echo "$commit" ;; esac
}

# Tags are taken once, before building (the tree may change meanwhile).
declare -A tags revisions
for bin in "${bins[@]}"; do
    tags[$bin]=$(tag_of "$bin")
    revisions[$bin]=$(revision_of "$bin")
done

image_of() { case $1 in drove-worker) echo drove-worker ;; drove) echo drove ;; esac; }
stage_of() { case $1 in drove-worker) echo worker ;; drove) echo controller ;; esac; }

# One build at a time (tests running in parallel all call this script);
# a caller whose images all exist does not wait for another's build.
have_all() {
    local bin
    [ "${DROVE_IMAGE_FORCE:-0}" = 1 ] && return 1
    for bin in "${bins[@]}"; do
        docker image inspect "$(image_of "$bin"):${tags[$bin]}" >/dev/null 2>&1 || return 1
    done
}
exec 9>"$target_dir/.build-image.lock"
have_all || flock 9

todo=()
for bin in "${bins[@]}"; do
    if [ "${DROVE_IMAGE_FORCE:-0}" = 1 ] || ! docker image inspect "$(image_of "$bin"):${tags[$bin]}" >/dev/null 2>&1; then
        todo+=("$bin")
    else
        log "$(image_of "$bin"):${tags[$bin]} exists: reused"
    fi
done

if [ ${#todo[@]} -gt 0 ]; then
    # Static glibc binaries. --target keeps build scripts and proc macros
    # dynamic (crt-static would break them) and their output apart from the
    # host build's.
    cargo_bins=()
    for bin in "${todo[@]}"; do cargo_bins+=(--bin "$bin"); done
    log "cargo build --release (static) ${cargo_bins[*]}"
    started=$(date +%s)
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --locked --target "$triple" "${cargo_bins[@]}" >&2
    log "release build took $(( $(date +%s) - started )) s"

    ctx=$(mktemp -d /tmp/drove-image.XXXXXX)
    trap 'rm -rf "$ctx"' EXIT
    for bin in "${todo[@]}"; do
        path="$target_dir/$triple/release/$bin"
        # Belt and braces (rootfs.sh checks the ELF headers too).
        kind=$(file -b "$path" | grep -o -E 'static-pie linked|statically linked|dynamically linked' || true)
        deps=$(ldd "$path" 2>&1 || true)
        case $kind:$deps in
            static*:*"statically linked"* | static*:*"not a dynamic executable"*) ;;
            *) log "$path is not static: file says '$kind', ldd says: $deps"; exit 1 ;;
        esac
        log "$bin: $(du -h "$path" | cut -f1), file: $kind, ldd: $(echo "$deps" | head -n1 | xargs)"
        image/rootfs.sh "$ctx/out/$(stage_of "$bin")" "$path"
    done
    for bin in "${todo[@]}"; do
        name=$(image_of "$bin")
        tag=${tags[$bin]}
        stage=$(stage_of "$bin")
        # This image's final stage of image/Dockerfile, as it is there, after a
        # `build` stage that holds what rootfs.sh laid out above. (The legacy
        # builder, the only one here, builds every stage before the target.)
        {
            echo "FROM scratch AS build"
            echo "LABEL drove.image-build-stage=1"
            echo "COPY out/ /out/"
            sed -n '/^# ---- final images/,$p' image/Dockerfile |
                awk -v s="$stage" '/^FROM / { on = ($0 ~ (" AS " s "$")) } on'
        } >"$ctx/Dockerfile.$stage"
        grep -q "^FROM scratch AS $stage" "$ctx/Dockerfile.$stage" || { log "no stage '$stage' in image/Dockerfile"; exit 1; }
        log "docker build $name:$tag"
        DOCKER_BUILDKIT=0 docker build --quiet --file "$ctx/Dockerfile.$stage" \
            --build-arg "VERSION=$version" --build-arg "REVISION=${revisions[$bin]}" \
            --tag "$name:$tag" --tag "$name:latest" "$ctx" >/dev/null 2> >(grep -v -E 'DEPRECATED|BuildKit is currently disabled|environment-variable|^\s*$' >&2 || true)
    done
    # The build stage's image is left untagged: remove it (only ours, by label).
    docker image prune --force --filter label=drove.image-build-stage=1 >/dev/null
    # Images of earlier uncommitted states are of no further use (those of
    # commits are kept).
    for bin in "${todo[@]}"; do
        name=$(image_of "$bin")
        docker images --format '{{.Repository}}:{{.Tag}}' "$name" | grep -e '-dirty-' | grep -v -x "$name:${tags[$bin]}" |
            xargs -r docker rmi >/dev/null 2>&1 || true
    done
fi

for bin in "${bins[@]}"; do
    name=$(image_of "$bin")
    tag=${tags[$bin]}
    # latest follows the most recently requested build.
    docker tag "$name:$tag" "$name:latest"
    log "$name:$tag $(docker image inspect --format '{{.Size}}' "$name:$tag" | awk '{printf "%.1f MB", $1/1e6}')"
    echo "$name:$tag"
done

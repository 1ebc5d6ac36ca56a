#!/usr/bin/env bash
# Rolls the drove worker group to a new image tag with gcloud, with an
# optional canary, and rolls it back. See --help, and docs/deploy-gcp.md.
#
# How the new instance template is made: gcloud cannot create a template from
# another one, and rebuilding it from flags would drift from what terraform
# set. So the group's current template is read (`gcloud compute
# instance-templates describe --format=json`), copied whole with two changes
# (the `drove-image` metadata key that the VM's unit reads, and a description
# recording the previous template for --rollback), and inserted through the
# Compute API with an access token from `gcloud auth print-access-token`. The
# new template's name is derived from the group, the tag and a hash of the
# source template and image, so running the same update twice reuses it.
set -euo pipefail

prog=$(basename "$0")
API=${DROVE_COMPUTE_API:-https://compute.googleapis.com/compute/v1}

usage() {
    cat <<EOF
Usage: $prog [options] IMAGE_TAG
       $prog [options] --rollback [--to-template NAME]

Creates an instance template for IMAGE_TAG (a copy of the group's current
template whose drove-image metadata points at the same image repository with
the new tag), starts a proactive rolling update of the worker group to it, and
waits until every VM runs it. IMAGE_TAG may also be sha256:DIGEST, or a whole
image reference (anything with a '/').

Options:
  --project ID           project (default: \$CLOUDSDK_CORE_PROJECT, then gcloud config)
  --region REGION        region of the group (default: \$CLOUDSDK_COMPUTE_REGION, then gcloud config)
  --group NAME           worker group (default: drove-workers)
  --max-surge N          extra VMs during the update, number or percent (default: 3)
  --max-unavailable N    VMs that may be down during the update (default: 0)
  --canary N             move only N VMs (or N%) to the new template; run again
                         without --canary to finish, or --rollback to abandon
  --rollback             return the group to the previous template (the one
                         recorded in the current template's description, or
                         the base version while a canary is in progress)
  --to-template NAME     with --rollback: return to this template instead
  --timeout SECONDS      how long to wait for the update (default: 1800)
  --no-wait              start the update and return at once
  --dry-run              print the commands that would change anything, and
                         run only the read-only lookups they depend on
  -h, --help             show this help

Needs gcloud (logged in), curl and python3.
EOF
}

die() {
    echo "$prog: error: $*" >&2
    exit 1
}

usage_error() {
    echo "$prog: $*" >&2
    echo "Try '$prog --help'." >&2
    exit 2
}

project=${CLOUDSDK_CORE_PROJECT:-}
region=${CLOUDSDK_COMPUTE_REGION:-}
group=drove-workers
max_surge=3
max_unavailable=0
canary=
rollback=false
to_template=
timeout=1800
wait=true
dry_run=false
tag=

need_value() {
    [ $# -ge 2 ] && [ -n "$2" ] || usage_error "option $1 needs a value"
}

while [ $# -gt 0 ]; do
    case $1 in
        --project) need_value "$@"; project=$2; shift 2 ;;
        --project=*) project=${1#*=}; shift ;;
        --region) need_value "$@"; region=$2; shift 2 ;;
        --region=*) region=${1#*=}; shift ;;
        --group) need_value "$@"; group=$2; shift 2 ;;
        --group=*) group=${1#*=}; shift ;;
        --max-surge) need_value "$@"; max_surge=$2; shift 2 ;;
        --max-surge=*) max_surge=${1#*=}; shift ;;
        --max-unavailable) need_value "$@"; max_unavailable=$2; shift 2 ;;
        --max-unavailable=*) max_unavailable=${1#*=}; shift ;;
        --canary) need_value "$@"; canary=$2; shift 2 ;;
        --canary=*) canary=${1#*=}; shift ;;
        --rollback) rollback=true; shift ;;
        --to-template) need_value "$@"; to_template=$2; shift 2 ;;
        --to-template=*) to_template=${1#*=}; shift ;;
        --timeout) need_value "$@"; timeout=$2; shift 2 ;;
        --timeout=*) timeout=${1#*=}; shift ;;
        --no-wait) wait=false; shift ;;
        --dry-run) dry_run=true; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        -*) usage_error "unknown option: $1" ;;
        *)
            [ -z "$tag" ] || usage_error "more than one IMAGE_TAG: $tag, $1"
            tag=$1
            shift
            ;;
    esac
done
if [ $# -gt 0 ]; then
    [ -z "$tag" ] && [ $# -eq 1 ] || usage_error "more than one IMAGE_TAG"
    tag=$1
fi

if $rollback; then
    [ -z "$tag" ] || usage_error "--rollback takes no IMAGE_TAG"
    [ -z "$canary" ] || usage_error "--rollback and --canary do not go together"
else
    [ -n "$tag" ] || usage_error "missing IMAGE_TAG (or --rollback)"
    [ -z "$to_template" ] || usage_error "--to-template only goes with --rollback"
fi

count_re='^[0-9]+%?$'
[[ $max_surge =~ $count_re ]] || usage_error "--max-surge must be a number or a percentage, not '$max_surge'"
[[ $max_unavailable =~ $count_re ]] || usage_error "--max-unavailable must be a number or a percentage, not '$max_unavailable'"
[ -z "$canary" ] || [[ $canary =~ $count_re ]] || usage_error "--canary must be a number or a percentage, not '$canary'"
[[ $timeout =~ ^[0-9]+$ ]] || usage_error "--timeout must be a number of seconds, not '$timeout'"
[[ $group =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || usage_error "--group '$group' is not a valid group name"
if [ -n "$tag" ] && [[ $tag != */* ]]; then
    [[ $tag =~ ^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[0-9a-f]{64})$ ]] ||
        usage_error "IMAGE_TAG '$tag' is not a valid tag (or sha256:DIGEST)"
fi

command -v gcloud >/dev/null 2>&1 || die "gcloud not found on PATH"
command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH"
$dry_run || $rollback || command -v curl >/dev/null 2>&1 || die "curl not found on PATH"

if [ -z "$project" ]; then
    project=$(gcloud config get-value project 2>/dev/null || true)
fi
if [ -z "$region" ]; then
    region=$(gcloud config get-value compute/region 2>/dev/null || true)
fi
[ -n "$project" ] || usage_error "no project: pass --project (or set CLOUDSDK_CORE_PROJECT)"
[ -n "$region" ] || usage_error "no region: pass --region (or set CLOUDSDK_COMPUTE_REGION)"

where=(--project="$project" --region="$region")

say() { echo "==> $*" >&2; }

# Prints its arguments as one shell command line, quoting only what needs it.
show() {
    local out=() a
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
            out+=("$a")
        else
            out+=("'${a//\'/\'\\\'\'}'")
        fi
    done
    echo "${out[*]}"
}

# Shows a command, then runs it (or, with --dry-run, only shows it).
run() {
    if $dry_run; then
        show "$@"
    else
        echo "+ $(show "$@")" >&2
        "$@"
    fi
}

work=$(mktemp -d "${TMPDIR:-/tmp}/rolling-update.XXXXXX")
cleanup() { rm -rf "$work"; }
$dry_run || trap cleanup EXIT

# --- the group's versions --------------------------------------------------

gcloud compute instance-groups managed describe "$group" "${where[@]}" --format=json >"$work/group.json" ||
    die "cannot describe group $group in $region of $project"

# Prints "BASE CANARY": the template of the version without a target size,
# and the canary's template (or "-") when the group has two versions.
read -r base_template canary_template < <(python3 - "$work/group.json" <<'PY'
import json, sys
group = json.load(open(sys.argv[1]))
versions = group.get("versions") or [{"instanceTemplate": group.get("instanceTemplate", "")}]
def name(v):
    url = v.get("instanceTemplate", "").split("?")[0]
    if "/regions/" in url:
        sys.exit("regional instance templates are not supported: " + url)
    return url.rsplit("/", 1)[-1] or "-"
if len(versions) == 1:
    print(name(versions[0]), "-")
elif len(versions) == 2:
    base = [v for v in versions if not v.get("targetSize")] or versions[:1]
    other = [v for v in versions if v is not base[0]]
    print(name(base[0]), name(other[0]))
else:
    sys.exit("the group has %d versions; expected 1 or 2" % len(versions))
PY
) || die "cannot read the versions of group $group"
[ "$base_template" != "-" ] || die "group $group has no instance template"

start_update() {
    local args=(gcloud compute instance-groups managed rolling-action start-update "$group" "${where[@]}")
    args+=("$@" --max-surge="$max_surge" --max-unavailable="$max_unavailable")
    run "${args[@]}"
}

wait_for_group() {
    if ! $wait; then
        say "not waiting (--no-wait); follow it with: gcloud compute instance-groups managed wait-until $group --version-target-reached --project=$project --region=$region"
        return 0
    fi
    run gcloud compute instance-groups managed wait-until "$group" --version-target-reached "${where[@]}" --timeout="$timeout"
}

# --- rollback ---------------------------------------------------------------

if $rollback; then
    if [ -n "$to_template" ]; then
        target=$to_template
    elif [ "$canary_template" != "-" ]; then
        target=$base_template
        say "abandoning the canary on $canary_template: back to $base_template"
    else
        gcloud compute instance-templates describe "$base_template" --project="$project" --format='value(description)' >"$work/description" ||
            die "cannot describe template $base_template"
        target=$(sed -n 's/.*previous=\([a-z0-9-]*\).*/\1/p' "$work/description")
        [ -n "$target" ] || die "template $base_template records no previous template (it was not made by $prog); pass --to-template NAME"
        say "rolling back from $base_template to $target"
    fi
    gcloud compute instance-templates describe "$target" --project="$project" --format='value(name)' >/dev/null ||
        die "template $target does not exist"
    start_update --version=template="$target"
    wait_for_group
    say "done: group $group is on $target"
    exit 0
fi

# --- the new template -----------------------------------------------------

gcloud compute instance-templates describe "$base_template" --project="$project" --format=json >"$work/source.json" ||
    die "cannot describe template $base_template"

# Writes the new template's body to $work/new.json and prints
# "NAME IMAGE CURRENT_IMAGE".
read -r new_template image current_image < <(python3 - "$work/source.json" "$work/new.json" "$group" "$tag" "$base_template" <<'PY'
import hashlib, json, re, sys
source_path, out_path, group, tag, source_name = sys.argv[1:6]
template = json.load(open(source_path))
items = template.setdefault("properties", {}).setdefault("metadata", {}).setdefault("items", [])
current = next((i.get("value", "") for i in items if i.get("key") == "drove-image"), "")
if "/" in tag:
    image = tag
else:
    if not current:
        sys.exit("template %s has no drove-image metadata; pass a whole image reference" % source_name)
    repo = current.split("@", 1)[0]
    if re.search(r":[^/]*$", repo):
        repo = repo.rsplit(":", 1)[0]
    image = repo + ("@" + tag if tag.startswith("sha256:") else ":" + tag)
slug = re.sub(r"[^a-z0-9]+", "-", (tag.rsplit("/", 1)[-1] if "/" in tag else tag).lower()).strip("-")
if tag.startswith("sha256:"):
    slug = "sha256-" + tag.split(":", 1)[1][:12]
digest = hashlib.sha256((source_name + "\n" + image).encode()).hexdigest()[:8]
name = "-".join(p for p in (group[:20].rstrip("-"), slug[:24].strip("-"), digest) if p)
for key in ("id", "creationTimestamp", "selfLink", "selfLinkWithId", "kind"):
    template.pop(key, None)
template["properties"]["metadata"].pop("fingerprint", None)
template["name"] = name
template["description"] = "drove worker %s; previous=%s" % (image, source_name)
items[:] = [i for i in items if i.get("key") != "drove-image"] + [{"key": "drove-image", "value": image}]
json.dump(template, open(out_path, "w"), indent=2, sort_keys=True)
print(name, image, current or "-")
PY
) || die "cannot build the new template from $base_template"

if [ "$image" = "$current_image" ] && [ "$canary_template" = "-" ]; then
    say "group $group already runs $image ($base_template); nothing to do"
    say "(to replace its VMs anyway: gcloud compute instance-groups managed rolling-action replace $group --project=$project --region=$region)"
    exit 0
fi

if gcloud compute instance-templates describe "$new_template" --project="$project" --format='value(name)' >/dev/null 2>&1; then
    say "template $new_template exists; reusing it"
elif $dry_run; then
    say "would create template $new_template (image $image) from $base_template; body: $work/new.json"
    # shellcheck disable=SC2016 # printed for the reader, expanded when they run it
    printf '%s\n' "curl --fail-with-body --silent --show-error -X POST -H \"Authorization: Bearer \$(gcloud auth print-access-token)\" -H 'Content-Type: application/json' --data-binary @$work/new.json $API/projects/$project/global/instanceTemplates"
else
    say "creating template $new_template (image $image) from $base_template"
    token=$(gcloud auth print-access-token) || die "gcloud auth print-access-token failed; run gcloud auth login"
    echo "+ $(show curl -X POST "$API/projects/$project/global/instanceTemplates" --data-binary "@$work/new.json")" >&2
    curl --fail-with-body --silent --show-error -X POST \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        --data-binary "@$work/new.json" "$API/projects/$project/global/instanceTemplates" >"$work/insert.json" ||
        die "creating template $new_template failed: $(cat "$work/insert.json" 2>/dev/null)"
    operation=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$work/insert.json") ||
        die "unexpected reply to the template insert: $(cat "$work/insert.json")"
    for _ in $(seq 1 60); do
        gcloud compute operations describe "$operation" --global --project="$project" --format=json >"$work/operation.json" ||
            die "cannot follow operation $operation"
        status=$(python3 - "$work/operation.json" <<'PY'
import json, sys
op = json.load(open(sys.argv[1]))
if op.get("error"):
    sys.exit("operation failed: " + json.dumps(op["error"]))
print(op.get("status", ""))
PY
) || die "creating template $new_template: $status"
        [ "$status" = DONE ] && break
        sleep 2
    done
    [ "$status" = DONE ] || die "template $new_template still not created after 120 s (operation $operation)"
fi

# --- the rolling update ---------------------------------------------------

if [ -n "$canary" ]; then
    say "canary: $canary VM(s) of $group to $new_template, the rest stay on $base_template"
    start_update --version=template="$base_template" --canary-version=template="$new_template",target-size="$canary"
else
    say "updating every VM of $group to $new_template"
    start_update --version=template="$new_template"
fi
wait_for_group

if [ -n "$canary" ]; then
    say "canary running. Finish:  $prog --project $project --region $region --group $group $tag"
    say "           or abandon:  $prog --project $project --region $region --group $group --rollback"
else
    say "done: group $group runs $image"
    say "set worker_image = \"$image\" in your terraform variables before the next apply;"
    say "otherwise terraform moves the group back to the template it manages."
fi

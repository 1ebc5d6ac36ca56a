"""Shared helpers for the offline deploy tests (scripts/tests/deploy).

render() applies terraform/modules/drove-cloud-init (a module without
providers) in a scratch directory and returns its outputs: the very
user-data, unit and environment the GCP module puts in the instance
template. Nothing here touches the network.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
CLOUD_INIT_MODULE = os.path.join(REPO, "terraform", "modules", "drove-cloud-init")
FAKES = os.path.join(HERE, "fakes")

WORKER_IMAGE = "europe-west1-docker.pkg.dev/acme-prod/drove/drove-worker:1.4.0"
CONTROLLER_IMAGE = "europe-west1-docker.pkg.dev/acme-prod/drove/drove:1.4.0"
DB_SECRET = "projects/acme-prod/secrets/drove-database-url/versions/latest"
TOKEN_SECRET = "projects/acme-prod/secrets/drove-api-token/versions/latest"


def terraform_env():
    env = dict(os.environ)
    env.update({
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",  # no version check over the network
        "TF_CLI_CONFIG_FILE": os.path.join(HERE, "terraformrc"),
    })
    env.pop("TF_DATA_DIR", None)
    return env


class TerraformError(Exception):
    pass


def render(**module_args):
    """Applies drove-cloud-init with these arguments; returns its outputs."""
    args = {"worker_image": WORKER_IMAGE, "database_url_secret_version": DB_SECRET}
    args.update(module_args)
    tmp = tempfile.mkdtemp(prefix="drove-cloud-init-")
    try:
        config = {
            "module": {"ci": dict(args, source=os.path.relpath(CLOUD_INIT_MODULE, tmp))},
            "output": {"all": {"value": "${module.ci}"}},
        }
        with open(os.path.join(tmp, "main.tf.json"), "w") as f:
            json.dump(config, f, indent=2)
        env = terraform_env()
        for cmd in (["init", "-no-color"], ["apply", "-auto-approve", "-no-color"]):
            p = subprocess.run(["terraform", *cmd], cwd=tmp, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                raise TerraformError(p.stdout + p.stderr)
        p = subprocess.run(["terraform", "output", "-json", "all"], cwd=tmp, env=env,
                           capture_output=True, text=True, check=True)
        return json.loads(p.stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_unit(text):
    """Parses a systemd unit into {section: [(key, value), ...]}."""
    sections, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        if current is None or not sep:
            raise ValueError("not a unit line: " + line)
        current.append((key, value))
    return sections


def unit_values(unit, section, key):
    return [v for k, v in unit[section] if k == key]


def parse_env_file(text):
    env = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


def load_yaml(text):
    import yaml  # PyYAML: installed with checkov in scripts/check-deploy.sh's venv
    return yaml.safe_load(text)


def need(tool):
    if shutil.which(tool) is None:
        raise unittest.SkipTest(tool + " is not installed")

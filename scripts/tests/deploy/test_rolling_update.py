"""scripts/rolling-update.sh with a fake gcloud and curl on PATH (fakes/):
the exact commands it runs for an update, a canary, a promotion, a rollback
and a dry run, and its usage errors."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from deploytest import FAKES, REPO

SCRIPT = os.path.join(REPO, "scripts", "rolling-update.sh")
PROJECT, REGION, GROUP = "acme-prod", "europe-west1", "drove-workers"
REPO_IMAGE = "europe-west1-docker.pkg.dev/acme-prod/drove/drove-worker"
BASE = "drove-worker-20260101000000000000000001"
TEMPLATES_URL = "https://www.googleapis.com/compute/v1/projects/acme-prod/global/instanceTemplates/"
WHERE = ["--project=acme-prod", "--region=europe-west1"]


def template(name, image, description="drove worker (terraform)"):
    return {
        "kind": "compute#instanceTemplate",
        "id": "1234567890",
        "creationTimestamp": "2026-01-01T00:00:00.000-00:00",
        "name": name,
        "description": description,
        "selfLink": TEMPLATES_URL + name,
        "properties": {
            "machineType": "e2-standard-2",
            "metadata": {
                "kind": "compute#metadata",
                "fingerprint": "abc=",
                "items": [
                    {"key": "user-data", "value": "#cloud-config\nwrite_files: []\n"},
                    {"key": "drove-image", "value": image},
                    {"key": "block-project-ssh-keys", "value": "true"},
                ],
            },
            "serviceAccounts": [{"email": "drove-worker@acme-prod.iam.gserviceaccount.com",
                                 "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
            "shieldedInstanceConfig": {"enableSecureBoot": True, "enableVtpm": True,
                                       "enableIntegrityMonitoring": True},
        },
    }


class RollingUpdate(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fake-gcloud-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        os.makedirs(os.path.join(self.dir, "templates"))
        os.makedirs(os.path.join(self.dir, "config"))
        self.add_template(template(BASE, REPO_IMAGE + ":1.4.0"))
        self.set_group([{"name": "primary", "instanceTemplate": TEMPLATES_URL + BASE + "?uniqueId=42"}])

    # --- fixtures ---------------------------------------------------------

    def add_template(self, t):
        with open(os.path.join(self.dir, "templates", t["name"] + ".json"), "w") as f:
            json.dump(t, f)

    def set_group(self, versions):
        with open(os.path.join(self.dir, "group.json"), "w") as f:
            json.dump({"name": GROUP, "versions": versions}, f)

    def run_script(self, *args, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
        e.update(PATH=FAKES + os.pathsep + os.environ["PATH"], FAKE_GCLOUD_DIR=self.dir,
                 FAKE_CURL_MODE="compute", TMPDIR=self.dir)
        e.update(env or {})
        return subprocess.run(["bash", SCRIPT, *args], env=e, capture_output=True, text=True, timeout=60)

    def update(self, *args):
        return self.run_script("--project", PROJECT, "--region", REGION, *args)

    def calls(self, name="calls.jsonl"):
        path = os.path.join(self.dir, name)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f]

    def mutating(self):
        return [c for c in self.calls() if "rolling-action" in c or "wait-until" in c]

    def new_name(self, tag="1.5.0"):
        (describe,) = [c for c in self.calls() if c[:3] == ["compute", "instance-templates", "describe"]
                       and c[3] not in (BASE,)][:1]
        self.assertTrue(describe[3].startswith("drove-workers-" + re.sub(r"[^a-z0-9]+", "-", tag.lower())))
        return describe[3]

    # --- updates ----------------------------------------------------------

    def test_update_creates_a_copy_and_rolls_the_group(self):
        p = self.update("1.5.0")
        self.assertEqual(p.returncode, 0, p.stderr)
        new = self.new_name()
        self.assertRegex(new, r"^drove-workers-1-5-0-[0-9a-f]{8}$")

        calls = self.calls()
        self.assertEqual(calls[0], ["compute", "instance-groups", "managed", "describe", GROUP, *WHERE,
                                    "--format=json"])
        self.assertIn(["compute", "instance-templates", "describe", BASE, "--project=acme-prod", "--format=json"],
                      calls)
        self.assertIn(["auth", "print-access-token"], calls)
        self.assertIn(["compute", "operations", "describe", "operation-123", "--global", "--project=acme-prod",
                       "--format=json"], calls)
        self.assertEqual(self.mutating(), [
            ["compute", "instance-groups", "managed", "rolling-action", "start-update", GROUP, *WHERE,
             f"--version=template={new}", "--max-surge=3", "--max-unavailable=0"],
            ["compute", "instance-groups", "managed", "wait-until", GROUP, "--version-target-reached", *WHERE,
             "--timeout=1800"],
        ])
        self.assertIn(f'set worker_image = "{REPO_IMAGE}:1.5.0"', p.stderr)

    def test_new_template_is_the_old_one_with_the_new_image(self):
        self.assertEqual(self.update("1.5.0").returncode, 0)
        (curl,) = self.calls("curl.jsonl")
        self.assertIn("https://compute.googleapis.com/compute/v1/projects/acme-prod/global/instanceTemplates", curl)
        self.assertIn("Authorization: Bearer fake-token", curl)
        self.assertIn("POST", curl)
        with open(os.path.join(self.dir, "curl-body.json")) as f:
            body = json.load(f)
        source = template(BASE, REPO_IMAGE + ":1.4.0")
        self.assertEqual(body["name"], self.new_name())
        self.assertEqual(body["description"], f"drove worker {REPO_IMAGE}:1.5.0; previous={BASE}")
        for key in ("id", "selfLink", "creationTimestamp", "kind"):
            self.assertNotIn(key, body)
        self.assertNotIn("fingerprint", body["properties"]["metadata"])
        items = {i["key"]: i["value"] for i in body["properties"]["metadata"]["items"]}
        self.assertEqual(items["drove-image"], REPO_IMAGE + ":1.5.0")
        self.assertEqual(items["user-data"], "#cloud-config\nwrite_files: []\n")
        self.assertEqual(items["block-project-ssh-keys"], "true")
        for key in ("machineType", "serviceAccounts", "shieldedInstanceConfig"):
            self.assertEqual(body["properties"][key], source["properties"][key])

    def test_digest_and_full_reference(self):
        digest = "sha256:" + "ab" * 32
        self.assertEqual(self.update(digest).returncode, 0)
        with open(os.path.join(self.dir, "curl-body.json")) as f:
            items = {i["key"]: i["value"] for i in json.load(f)["properties"]["metadata"]["items"]}
        self.assertEqual(items["drove-image"], REPO_IMAGE + "@" + digest)

        os.remove(os.path.join(self.dir, "calls.jsonl"))
        other = "us-docker.pkg.dev/other/repo/drove-worker:2.0.0"
        self.assertEqual(self.update(other).returncode, 0)
        with open(os.path.join(self.dir, "curl-body.json")) as f:
            items = {i["key"]: i["value"] for i in json.load(f)["properties"]["metadata"]["items"]}
        self.assertEqual(items["drove-image"], other)

    def test_flags_reach_gcloud(self):
        p = self.run_script("--project=p1", "--region=us-east1", "--group=jobs", "--max-surge=10%",
                            "--max-unavailable", "2", "--timeout", "600", "v2")
        self.assertEqual(p.returncode, 0, p.stderr)
        start, wait = self.mutating()
        self.assertEqual(start[4:6], ["start-update", "jobs"])
        self.assertIn("--project=p1", start)
        self.assertIn("--region=us-east1", start)
        self.assertEqual(start[-2:], ["--max-surge=10%", "--max-unavailable=2"])
        self.assertEqual(wait[-1], "--timeout=600")

    def test_project_and_region_from_gcloud_config(self):
        for key, value in (("project", "cfg-project"), ("compute_region", "asia-east1")):
            with open(os.path.join(self.dir, "config", key), "w") as f:
                f.write(value)
        p = self.run_script("1.5.0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--project=cfg-project", self.mutating()[0])
        self.assertIn("--region=asia-east1", self.mutating()[0])

    def test_no_wait(self):
        p = self.update("--no-wait", "1.5.0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([c[4] for c in self.mutating()], ["start-update"])

    def test_dry_run_prints_and_changes_nothing(self):
        p = self.update("--dry-run", "1.5.0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.mutating(), [])
        self.assertEqual(self.calls("curl.jsonl"), [])
        self.assertNotIn(["auth", "print-access-token"], self.calls())
        new = self.new_name()
        lines = p.stdout.splitlines()
        self.assertIn(f"gcloud compute instance-groups managed rolling-action start-update {GROUP} "
                      f"--project=acme-prod --region=europe-west1 --version=template={new} "
                      "--max-surge=3 --max-unavailable=0", lines)
        self.assertIn(f"gcloud compute instance-groups managed wait-until {GROUP} --version-target-reached "
                      "--project=acme-prod --region=europe-west1 --timeout=1800", lines)
        curl = [line for line in lines if line.startswith("curl ")]
        self.assertEqual(len(curl), 1)
        self.assertIn("-X POST", curl[0])
        body_path = re.search(r"--data-binary @(\S+)", curl[0]).group(1)
        with open(body_path) as f:
            self.assertEqual(json.load(f)["name"], new)

    # --- canary, promotion, rollback ---------------------------------------

    def test_canary(self):
        p = self.update("--canary", "1", "1.5.0")
        self.assertEqual(p.returncode, 0, p.stderr)
        new = self.new_name()
        self.assertEqual(self.mutating()[0], [
            "compute", "instance-groups", "managed", "rolling-action", "start-update", GROUP, *WHERE,
            f"--version=template={BASE}", f"--canary-version=template={new},target-size=1",
            "--max-surge=3", "--max-unavailable=0"])
        self.assertIn("--version-target-reached", self.mutating()[1])
        self.assertIn("Finish:", p.stderr)

    def test_promoting_a_canary_reuses_its_template(self):
        self.assertEqual(self.update("--canary", "20%", "1.5.0").returncode, 0)
        new = self.new_name()
        # The group now has the canary; its template exists.
        with open(os.path.join(self.dir, "curl-body.json")) as f:
            self.add_template(json.load(f))
        self.set_group([
            {"name": "0-primary", "instanceTemplate": TEMPLATES_URL + BASE},
            {"name": "1-canary", "instanceTemplate": TEMPLATES_URL + new, "targetSize": {"percent": 20}},
        ])
        os.remove(os.path.join(self.dir, "calls.jsonl"))
        os.remove(os.path.join(self.dir, "curl.jsonl"))
        p = self.update("1.5.0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.calls("curl.jsonl"), [])  # same name: no second template
        self.assertIn(f"--version=template={new}", self.mutating()[0])
        self.assertFalse(any(a.startswith("--canary-version") for a in self.mutating()[0]))

    def test_same_image_again_changes_nothing(self):
        p = self.update("1.4.0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("already runs", p.stderr)
        self.assertEqual(self.mutating(), [])
        self.assertEqual(self.calls("curl.jsonl"), [])

    def test_rollback_to_the_recorded_previous_template(self):
        new = "drove-workers-1-5-0-0123abcd"
        self.add_template(template(new, REPO_IMAGE + ":1.5.0", f"drove worker {REPO_IMAGE}:1.5.0; previous={BASE}"))
        self.set_group([{"name": "primary", "instanceTemplate": TEMPLATES_URL + new}])
        p = self.update("--rollback")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.mutating(), [
            ["compute", "instance-groups", "managed", "rolling-action", "start-update", GROUP, *WHERE,
             f"--version=template={BASE}", "--max-surge=3", "--max-unavailable=0"],
            ["compute", "instance-groups", "managed", "wait-until", GROUP, "--version-target-reached", *WHERE,
             "--timeout=1800"],
        ])
        self.assertEqual(self.calls("curl.jsonl"), [])

    def test_rollback_abandons_a_canary(self):
        self.set_group([
            {"name": "0-primary", "instanceTemplate": TEMPLATES_URL + BASE},
            {"name": "1-canary", "instanceTemplate": TEMPLATES_URL + "drove-workers-x-1", "targetSize": {"fixed": 1}},
        ])
        p = self.update("--rollback")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"--version=template={BASE}", self.mutating()[0])

    def test_rollback_to_an_explicit_template(self):
        self.add_template(template("drove-worker-old", REPO_IMAGE + ":1.0.0"))
        p = self.update("--rollback", "--to-template", "drove-worker-old", "--dry-run")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.mutating(), [])
        self.assertIn("--version=template=drove-worker-old", p.stdout)

    def test_rollback_without_a_record_fails(self):
        p = self.update("--rollback")
        self.assertEqual(p.returncode, 1)
        self.assertIn("records no previous template", p.stderr)
        self.assertEqual(self.mutating(), [])

    def test_gcloud_failure_fails_the_script(self):
        with open(os.path.join(self.dir, "fail"), "w") as f:
            f.write("start-update")
        p = self.update("1.5.0")
        self.assertNotEqual(p.returncode, 0)
        self.assertFalse(any("wait-until" in c for c in self.calls()))

    def test_unknown_group_fails(self):
        with open(os.path.join(self.dir, "fail"), "w") as f:
            f.write(GROUP)
        p = self.update("1.5.0")
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot describe group drove-workers", p.stderr)

    # --- usage ------------------------------------------------------------

    def assert_usage_error(self, p, message):
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(message, p.stderr)
        self.assertIn("--help", p.stderr)
        self.assertEqual(self.mutating(), [])

    def test_usage_errors(self):
        self.assert_usage_error(self.update(), "missing IMAGE_TAG")
        self.assert_usage_error(self.update("--frobnicate", "1.5.0"), "unknown option: --frobnicate")
        self.assert_usage_error(self.update("1.5.0", "1.6.0"), "more than one IMAGE_TAG")
        self.assert_usage_error(self.update("--rollback", "1.5.0"), "--rollback takes no IMAGE_TAG")
        self.assert_usage_error(self.update("--to-template", "x", "1.5.0"), "--to-template only goes with --rollback")
        self.assert_usage_error(self.update("bad tag!"), "is not a valid tag")
        self.assert_usage_error(self.update("--canary", "some", "1.5.0"), "--canary must be a number")
        self.assert_usage_error(self.update("--max-surge"), "option --max-surge needs a value")
        self.assert_usage_error(self.run_script("1.5.0"), "no project")
        self.assertEqual([c for c in self.calls() if c[:2] != ["config", "get-value"]], [])

    def test_help(self):
        p = self.run_script("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("Usage: rolling-update.sh [options] IMAGE_TAG", p.stdout)
        self.assertIn("--rollback", p.stdout)
        self.assertEqual(self.calls(), [])


if __name__ == "__main__":
    unittest.main()

"""drove-prepare.sh, as rendered into the worker's user-data, run here against
a fake metadata server, Secret Manager and docker (fakes/curl, fakes/docker)."""
import json
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from deploytest import DB_SECRET, FAKES, WORKER_IMAGE, load_yaml, render

DATABASE_URL = "postgres://drove:s3cr3t@10.40.0.3:5432/drove?sslmode=verify-ca&sslrootcert=/etc/drove/db-server-ca.pem"


class PrepareScript(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        files = {f["path"]: f for f in load_yaml(render()["worker_user_data"])["write_files"]}
        cls.script = files["/etc/drove/drove-prepare.sh"]["content"]

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="drove-prepare-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.fake = os.path.join(self.tmp, "fake")
        self.run_dir = os.path.join(self.tmp, "run")
        os.makedirs(os.path.join(self.fake, "attributes"))
        os.makedirs(os.path.join(self.fake, "secrets"))
        self.script_path = os.path.join(self.tmp, "drove-prepare.sh")
        with open(self.script_path, "w") as f:
            f.write(self.script)
        with open(os.path.join(self.fake, "attributes", "drove-image"), "w") as f:
            f.write(WORKER_IMAGE)
        with open(os.path.join(self.fake, "secrets", "drove-database-url"), "w") as f:
            f.write(DATABASE_URL)

    def prepare(self, *specs, user="65532:65532", pull_status=0):
        env = dict(os.environ, PATH=FAKES + os.pathsep + os.environ["PATH"], FAKE_CURL_MODE="metadata",
                   FAKE_CURL_DIR=self.fake, FAKE_DOCKER_USER=user, FAKE_DOCKER_PULL_STATUS=str(pull_status),
                   DROVE_RUN_DIR=self.run_dir, DROVE_METADATA_URL="http://metadata.test/computeMetadata/v1",
                   DROVE_SECRETMANAGER_URL="https://secretmanager.test/v1")
        return subprocess.run(["bash", self.script_path, "drove-worker", "drove-image", *specs],
                              env=env, capture_output=True, text=True, timeout=60)

    def curl_calls(self):
        with open(os.path.join(self.fake, "calls.jsonl")) as f:
            return [json.loads(line) for line in f]

    def test_image_and_secret(self):
        secret_path = os.path.join(self.run_dir, "secrets", "database-url")
        p = self.prepare(f"{DB_SECRET}={secret_path}")
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(self.run_dir, "drove-worker.image")) as f:
            self.assertEqual(f.read(), f"DROVE_IMAGE={WORKER_IMAGE}\n")
        with open(secret_path) as f:
            self.assertEqual(f.read(), DATABASE_URL)  # exact bytes, no newline added
        st = os.stat(secret_path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o400)
        if os.geteuid() == 0:
            self.assertEqual(st.st_uid, 65532)
        self.assertNotIn("s3cr3t", p.stderr + p.stdout)
        calls = self.curl_calls()
        self.assertEqual(calls[-1]["url"], f"https://secretmanager.test/v1/{DB_SECRET}:access")
        self.assertIn("Authorization: Bearer ya29.fake-token", calls[-1]["headers"])
        with open(os.path.join(self.fake, "docker.log")) as f:
            self.assertIn(f"pull --quiet {WORKER_IMAGE}", f.read())

    def test_non_numeric_image_user_gets_a_readable_file(self):
        secret_path = os.path.join(self.run_dir, "secrets", "database-url")
        p = self.prepare(f"{DB_SECRET}={secret_path}", user="nonroot")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(secret_path).st_mode), 0o444)

    def test_missing_secret_fails_with_a_reason(self):
        secret = "projects/acme-prod/secrets/nope/versions/latest"
        p = self.prepare(f"{secret}={os.path.join(self.run_dir, 'secrets', 'x')}")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"cannot access secret {secret}", p.stderr)

    def test_missing_image_key_fails(self):
        os.remove(os.path.join(self.fake, "attributes", "drove-image"))
        p = self.prepare()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("cannot read metadata key drove-image", p.stderr)

    def test_bad_secret_spec_fails(self):
        p = self.prepare("no-equals-sign")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("bad secret spec", p.stderr)


if __name__ == "__main__":
    unittest.main()

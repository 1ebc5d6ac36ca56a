"""The rendered cloud-init of the worker and controller VMs, from the real
terraform module (terraform/modules/drove-cloud-init), against its inputs."""
import re
import shlex
import unittest

from deploytest import (CONTROLLER_IMAGE, DB_SECRET, TOKEN_SECRET, WORKER_IMAGE, TerraformError,
                        load_yaml, parse_env_file, parse_unit, render, unit_values)

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def files_of(user_data):
    assert user_data.startswith("#cloud-config\n"), user_data[:40]
    config = load_yaml(user_data)
    return config, {f["path"]: f for f in config["write_files"]}


def docker_run_args(unit):
    (exec_start,) = unit_values(unit, "Service", "ExecStart")
    args = shlex.split(exec_start)
    assert args[:3] == ["/usr/bin/docker", "run", "--rm"], args
    return args


class DefaultWorker(unittest.TestCase):
    """Standard VM, all defaults."""

    @classmethod
    def setUpClass(cls):
        cls.out = render()
        cls.config, cls.files = files_of(cls.out["worker_user_data"])
        cls.unit_text = cls.files["/etc/systemd/system/drove-worker.service"]["content"]
        cls.unit = parse_unit(cls.unit_text)
        cls.env = parse_env_file(cls.files["/etc/drove/drove-worker.env"]["content"])
        cls.args = docker_run_args(cls.unit)

    def test_files_and_start(self):
        self.assertEqual(set(self.files), {
            "/etc/drove/drove-prepare.sh",
            "/etc/drove/drove-worker.env",
            "/etc/systemd/system/drove-worker.service",
        })
        self.assertEqual(self.files["/etc/drove/drove-prepare.sh"]["permissions"], "0755")
        self.assertEqual(self.files["/etc/drove/drove-worker.env"]["permissions"], "0644")
        self.assertEqual(self.config["runcmd"], [
            ["systemctl", "daemon-reload"],
            ["systemctl", "start", "--no-block", "drove-worker.service"],
        ])
        self.assertEqual(self.unit_text, self.out["worker_unit"])

    def test_env_file_is_the_contract(self):
        self.assertEqual(self.env, {
            "DROVE_DATABASE_URL_FILE": "/run/secrets/database-url",
            "DROVE_SCHEMA": "drove",
            "DROVE_QUEUES": "default",
            "DROVE_GRACE": "25s",
            "DROVE_HTTP_ADDR": "0.0.0.0:8080",
            "DROVE_LOG_FORMAT": "json",
            "DROVE_LEASE_TTL": "10s",
        })
        self.assertEqual(self.env, self.out["worker_env"])

    def test_no_secret_or_url_in_user_data(self):
        self.assertNotIn("postgres://", self.out["worker_user_data"])
        self.assertNotIn("DATABASE_URL=", self.out["worker_user_data"])

    def test_stop_timeout_is_grace_plus_margin(self):
        self.assertEqual(self.out["worker_drain_grace_seconds"], 25)
        self.assertEqual(self.out["worker_stop_timeout_seconds"], 30)
        self.assertIn("--stop-timeout=30", self.args)
        self.assertEqual(unit_values(self.unit, "Service", "ExecStop"),
                         ["/usr/bin/docker stop --time=30 drove-worker"])
        (timeout_stop,) = unit_values(self.unit, "Service", "TimeoutStopSec")
        self.assertGreater(int(timeout_stop), 30)

    def test_container_options(self):
        for option in ("--name=drove-worker", "--network=host", "--env-file=/etc/drove/drove-worker.env",
                       "--mount=type=bind,source=/run/drove/secrets/database-url,"
                       "target=/run/secrets/database-url,readonly",
                       "--log-driver=gcplogs", "--cap-drop=ALL", "--security-opt=no-new-privileges"):
            self.assertIn(option, self.args)
        # The image comes from the metadata key, through the EnvironmentFile.
        self.assertEqual(self.args[-1], "${DROVE_IMAGE}")
        self.assertEqual(unit_values(self.unit, "Service", "EnvironmentFile"), ["-/run/drove/drove-worker.image"])

    def test_restarts_and_ordering(self):
        self.assertEqual(unit_values(self.unit, "Service", "Restart"), ["always"])
        self.assertEqual(unit_values(self.unit, "Unit", "StartLimitIntervalSec"), ["0"])
        (after,) = unit_values(self.unit, "Unit", "After")
        self.assertIn("gcr-online.target", after.split())
        self.assertIn("docker.service", after.split())

    def test_prestart_steps(self):
        pre = unit_values(self.unit, "Service", "ExecStartPre")
        self.assertIn("/usr/bin/docker-credential-gcr configure-docker --registries=europe-west1-docker.pkg.dev", pre)
        self.assertIn("/bin/bash /etc/drove/drove-prepare.sh drove-worker drove-image "
                      f"{DB_SECRET}=/run/drove/secrets/database-url", pre)
        iptables = [p for p in pre if "iptables" in p]
        self.assertEqual(len(iptables), 1)
        self.assertIn("--dport 8080 -j ACCEPT", iptables[0])

    def test_health_port_matches_listen_address(self):
        self.assertEqual(self.out["health_port"], 8080)
        self.assertEqual(self.out["health_path"], "/healthz")
        self.assertTrue(self.env["DROVE_HTTP_ADDR"].endswith(":%d" % self.out["health_port"]))

    def test_metadata(self):
        md = self.out["worker_metadata"]
        self.assertEqual(md["drove-image"], WORKER_IMAGE)
        self.assertEqual(md["user-data"], self.out["worker_user_data"])
        self.assertEqual(md["block-project-ssh-keys"], "true")
        self.assertEqual(md["enable-oslogin"], "TRUE")
        self.assertEqual(md["google-logging-enabled"], "true")
        self.assertNotIn("gce-container-declaration", md)  # no konlet

    def test_no_controller(self):
        self.assertIsNone(self.out["controller_user_data"])
        self.assertIsNone(self.out["controller_metadata"])


class SpotWorker(unittest.TestCase):
    def test_spot_defaults_to_shorter_grace(self):
        out = render(worker={"spot": True})
        self.assertEqual(out["worker_drain_grace_seconds"], 20)
        self.assertEqual(out["worker_env"]["DROVE_GRACE"], "20s")
        self.assertIn("--stop-timeout=25", docker_run_args(parse_unit(out["worker_unit"])))

    def test_spot_rejects_long_grace(self):
        with self.assertRaises(TerraformError) as e:
            render(worker={"spot": True, "drain_grace_seconds": 25})
        self.assertIn("at most 20 on Spot VMs", " ".join(str(e.exception).split()))


class CustomWorker(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.out = render(
            database_ca_cert_pem=CA_PEM,
            worker={
                "schema": "drove_staging",
                "queues": ["renders", "reports"],
                "slots": 8,
                "drain_grace_seconds": 90,
                "lease_ttl": "15s",
                "http_port": 9090,
                "exec": "render=/usr/bin/render --fast;report=/bin/report",
                "extra_env": {"RUST_LOG": "info"},
                "log_driver": "json-file",
                "docker_args": ["--shm-size=1g", "--init"],
            },
        )
        cls.config, cls.files = files_of(cls.out["worker_user_data"])
        cls.unit = parse_unit(cls.out["worker_unit"])
        cls.args = docker_run_args(cls.unit)

    def test_env(self):
        env = parse_env_file(self.files["/etc/drove/drove-worker.env"]["content"])
        self.assertEqual(env["DROVE_SCHEMA"], "drove_staging")
        self.assertEqual(env["DROVE_QUEUES"], "renders,reports")
        self.assertEqual(env["DROVE_SLOTS"], "8")
        self.assertEqual(env["DROVE_GRACE"], "90s")
        self.assertEqual(env["DROVE_LEASE_TTL"], "15s")
        self.assertEqual(env["DROVE_HTTP_ADDR"], "0.0.0.0:9090")
        self.assertEqual(env["DROVE_EXEC"], "render=/usr/bin/render --fast;report=/bin/report")
        self.assertEqual(env["RUST_LOG"], "info")

    def test_ports_timeouts_and_options(self):
        self.assertEqual(self.out["health_port"], 9090)
        pre = unit_values(self.unit, "Service", "ExecStartPre")
        self.assertTrue(any("--dport 9090 -j ACCEPT" in p for p in pre))
        self.assertFalse(any("--dport 8080" in p for p in pre))
        self.assertIn("--stop-timeout=95", self.args)
        self.assertEqual(unit_values(self.unit, "Service", "ExecStop"),
                         ["/usr/bin/docker stop --time=95 drove-worker"])
        self.assertIn("--log-driver=json-file", self.args)
        self.assertNotIn("--log-driver=gcplogs", self.args)
        self.assertIn("--shm-size=1g", self.args)
        self.assertIn("--init", self.args)

    def test_database_ca_file(self):
        ca = self.files["/etc/drove/db-server-ca.pem"]
        self.assertEqual(ca["content"], CA_PEM)
        self.assertEqual(ca["permissions"], "0644")
        self.assertIn("--mount=type=bind,source=/etc/drove/db-server-ca.pem,"
                      "target=/etc/drove/db-server-ca.pem,readonly", self.args)
        self.assertEqual(self.out["database_ca_cert_path"], "/etc/drove/db-server-ca.pem")


class InvalidInputs(unittest.TestCase):
    def assert_rejected(self, message, **args):
        with self.assertRaises(TerraformError) as e:
            render(**args)
        self.assertIn(message, " ".join(str(e.exception).split()))

    def test_database_url_cannot_be_plain_env(self):
        self.assert_rejected("other than DATABASE_URL", worker={"extra_env": {"DATABASE_URL": "postgres://x"}})

    def test_docker_args_cannot_smuggle_words(self):
        self.assert_rejected("docker_args", worker={"docker_args": ["--label=a b"]})

    def test_image_must_be_artifact_registry_with_tag(self):
        self.assert_rejected("worker_image must be an Artifact Registry image", worker_image="nginx:latest")
        self.assert_rejected("worker_image must be an Artifact Registry image",
                             worker_image="europe-west1-docker.pkg.dev/p/r/drove-worker")

    def test_grace_bounds(self):
        self.assert_rejected("from 1 to 100", worker={"drain_grace_seconds": 101})

    def test_controller_needs_token_secret(self):
        self.assert_rejected("api_token_secret_version is required", controller_image=CONTROLLER_IMAGE)


class Controller(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.out = render(
            controller_image=CONTROLLER_IMAGE,
            api_token_secret_version=TOKEN_SECRET,
            controller={"scaler": "gcp-metric", "project": "acme-prod", "region": "europe-west1",
                        "group_name": "drove-workers", "min_workers": 0, "max_workers": 12,
                        "target_backlog": 3, "metric_interval": "20s"},
        )
        cls.config, cls.files = files_of(cls.out["controller_user_data"])
        cls.unit = parse_unit(cls.files["/etc/systemd/system/drove-controller.service"]["content"])
        cls.args = docker_run_args(cls.unit)
        cls.env = parse_env_file(cls.files["/etc/drove/drove-controller.env"]["content"])

    def test_runs_serve_with_both_secrets(self):
        self.assertEqual(self.args[-2:], ["${DROVE_IMAGE}", "serve"])
        self.assertIn("--mount=type=bind,source=/run/drove/secrets/api-token,"
                      "target=/run/secrets/api-token,readonly", self.args)
        pre = unit_values(self.unit, "Service", "ExecStartPre")
        self.assertIn("/bin/bash /etc/drove/drove-prepare.sh drove-controller drove-image "
                      f"{DB_SECRET}=/run/drove/secrets/database-url "
                      f"{TOKEN_SECRET}=/run/drove/secrets/api-token", pre)
        self.assertTrue(any("--dport 8000 -j ACCEPT" in p for p in pre))

    def test_env(self):
        self.assertEqual(self.env, {
            "DROVE_DATABASE_URL_FILE": "/run/secrets/database-url",
            "DROVE_API_TOKEN_FILE": "/run/secrets/api-token",
            "DROVE_SCHEMA": "drove",
            "DROVE_LISTEN": "0.0.0.0:8000",
            "DROVE_LOG_FORMAT": "json",
            "DROVE_MIGRATE_ON_START": "true",
            "DROVE_SCALER": "gcp-metric",
            "DROVE_GCP_PROJECT": "acme-prod",
            "DROVE_GCP_REGION": "europe-west1",
            "DROVE_GCP_MIG": "drove-workers",
            "DROVE_MIN_WORKERS": "0",
            "DROVE_MAX_WORKERS": "12",
            "DROVE_TARGET_BACKLOG": "3",
            "DROVE_METRIC_INTERVAL": "20s",
        })

    def test_metadata(self):
        self.assertEqual(self.out["controller_metadata"]["drove-image"], CONTROLLER_IMAGE)
        self.assertNotIn("postgres://", self.out["controller_user_data"])

    def test_scaler_none_has_no_gcp_settings(self):
        out = render(controller_image=CONTROLLER_IMAGE, api_token_secret_version=TOKEN_SECRET)
        self.assertEqual(out["controller_env"]["DROVE_SCALER"], "none")
        self.assertFalse(any(k.startswith("DROVE_GCP_") for k in out["controller_env"]))

    def test_scaler_needs_group(self):
        with self.assertRaises(TerraformError) as e:
            render(controller_image=CONTROLLER_IMAGE, api_token_secret_version=TOKEN_SECRET,
                   controller={"scaler": "gcp-mig"})
        self.assertIn("group_name are required", " ".join(str(e.exception).split()))


class UnitSyntax(unittest.TestCase):
    """systemd itself reads the rendered units (when systemd-analyze exists)."""

    @staticmethod
    def verify(text):
        import os
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "drove-test.service")
            with open(path, "w") as f:
                f.write(text)
            p = subprocess.run(["systemd-analyze", "verify", "--man=no", path], capture_output=True, text=True)
        # COS's binaries (docker, docker-credential-gcr) and targets are absent
        # here; anything else systemd says is a problem in the unit.
        return [line for line in (p.stdout + p.stderr).splitlines()
                if line.strip() and not re.search(r"is not executable|No such file or directory|"
                                                  r"gcr-online\.target|docker\.service|"
                                                  r"System has not been booted", line)]

    def setUp(self):
        import shutil
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze is not installed")

    def test_rendered_units_verify_cleanly(self):
        out = render(controller_image=CONTROLLER_IMAGE, api_token_secret_version=TOKEN_SECRET)
        self.assertEqual(self.verify(out["worker_unit"]), [])
        self.assertEqual(self.verify(out["controller_unit"]), [])

    def test_verify_catches_a_broken_unit(self):
        broken = render()["worker_unit"].replace("Restart=always", "Restart=sometimes")
        self.assertTrue(any("sometimes" in line for line in self.verify(broken)))


if __name__ == "__main__":
    unittest.main()

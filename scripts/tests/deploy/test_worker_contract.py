"""The settings the cloud-init gives the containers are the ones the binaries
read: every environment name appears in `--help`, the defaults agree, and
the real drove-worker, started with the rendered environment against a
throwaway PostgreSQL, answers /healthz on the health-check port and drains
on SIGTERM well within docker's stop timeout.

The binaries are built with `cargo build` (incremental, so cheap when up to
date) unless DROVE_DEPLOY_NO_BUILD=1, in which case existing ones are used.
Tests of a binary whose package does not exist yet are skipped."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

from deploytest import CONTROLLER_IMAGE, REPO, TOKEN_SECRET, parse_env_file, load_yaml, render

_built = {}


def binary(package, name):
    """Path of a workspace binary, built first; SkipTest when unavailable."""
    if name in _built:
        return _built[name]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    candidates = [os.path.join(target, profile, name) for profile in ("debug", "release")]
    if os.environ.get("DROVE_DEPLOY_NO_BUILD") != "1" and shutil.which("cargo"):
        meta = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
                              cwd=REPO, capture_output=True, text=True)
        packages = {p["name"] for p in json.loads(meta.stdout)["packages"]} if meta.returncode == 0 else set()
        if package in packages:
            build = subprocess.run(["cargo", "build", "-q", "-p", package, "--bin", name], cwd=REPO,
                                   capture_output=True, text=True)
            if build.returncode != 0:
                raise AssertionError(f"cargo build -p {package} failed:\n{build.stderr[-4000:]}")
            candidates = candidates[:1]
    found = [c for c in candidates if os.access(c, os.X_OK)]
    if not found:
        raise unittest.SkipTest(f"{name} is not built and package {package} does not exist yet")
    _built[name] = max(found, key=os.path.getmtime)
    return _built[name]


def help_env(argv):
    p = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise unittest.SkipTest(f"{' '.join(argv)} --help failed: {p.stderr.strip()[:200]}")
    names = set(re.findall(r"\[env: ([A-Z0-9_]+)", p.stdout))
    defaults = {}
    for block in re.split(r"\n\s*\n", p.stdout):
        env = re.search(r"\[env: ([A-Z0-9_]+)", block)
        default = re.search(r"\[default: ([^\]]*)\]", block)
        if env and default:
            defaults[env.group(1)] = default.group(1)
    return p.stdout, names, defaults


WORKER_SCENARIOS = {
    "default": {},
    "spot": {"worker": {"spot": True}},
    "everything": {"worker": {"slots": 4, "exec": "render=/bin/render", "queues": ["a", "b"],
                              "lease_ttl": "20s", "http_port": 9000, "extra_env": {"RUST_LOG": "debug"}}},
}


class WorkerHelp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text, cls.names, cls.defaults = help_env([binary("drove-worker", "drove-worker")])

    def test_every_env_name_is_read_by_the_worker(self):
        for scenario, args in WORKER_SCENARIOS.items():
            out = render(**args)
            extra = set(args.get("worker", {}).get("extra_env", {}))
            unknown = set(out["worker_env"]) - extra - self.names
            self.assertEqual(unknown, set(), f"{scenario}: not in drove-worker --help")

    def test_database_url_can_come_from_a_file(self):
        self.assertIn("DROVE_DATABASE_URL_FILE", self.names)
        self.assertIn("DATABASE_URL", self.names)

    def test_defaults_agree(self):
        out = render()
        self.assertEqual(self.defaults.get("DROVE_HTTP_ADDR"), "0.0.0.0:%d" % out["health_port"])
        self.assertEqual(self.defaults.get("DROVE_GRACE"), "%ds" % out["worker_drain_grace_seconds"])
        self.assertEqual(self.defaults.get("DROVE_SCHEMA"), out["worker_env"]["DROVE_SCHEMA"])


class ControllerHelp(unittest.TestCase):
    def test_every_env_name_is_read_by_drove_serve(self):
        drove = binary("drove-controller", "drove")
        probe = subprocess.run([drove, "serve", "--help"], capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            self.skipTest("`drove serve` does not exist yet")
        _, names, _ = help_env([drove, "serve"])
        for scaler in ("gcp-metric", "gcp-mig", "none"):
            out = render(controller_image=CONTROLLER_IMAGE, api_token_secret_version=TOKEN_SECRET,
                         controller={"scaler": scaler, "project": "p", "region": "europe-west1",
                                     "group_name": "drove-workers"})
            self.assertEqual(set(out["controller_env"]) - names, set(), f"{scaler}: not in drove serve --help")


def tail(path, n=2000):
    with open(path) as f:
        return f.read()[-n:]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class WorkerLive(unittest.TestCase):
    """drove-worker with the rendered env file, as docker would start it."""

    @classmethod
    def setUpClass(cls):
        cls.worker = binary("drove-worker", "drove-worker")
        cls.drove = binary("drove-controller", "drove")
        cls.tmp = tempfile.mkdtemp(prefix="drove-deploy-live-")
        os.chmod(cls.tmp, 0o755)
        # A server of its own on a free port, even under scripts/test.sh
        # (which exports its own server's PG_PORT).
        env = {k: v for k, v in os.environ.items() if k not in ("PG_PORT", "PG_URL")}
        start = subprocess.run(["bash", "-c", 'source scripts/lib/pg.sh && pg_start "$1" && echo "$PG_URL"',
                                "_", os.path.join(cls.tmp, "pg")], cwd=REPO, env=env, capture_output=True, text=True)
        if start.returncode != 0:
            shutil.rmtree(cls.tmp, True)
            raise unittest.SkipTest("no PostgreSQL to run against: " + start.stderr.strip()[-300:])
        cls.url_file = os.path.join(cls.tmp, "database-url")
        with open(cls.url_file, "w") as f:
            f.write(start.stdout.strip().splitlines()[-1])

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["bash", "-c", 'source scripts/lib/pg.sh && pg_stop "$1"', "_", os.path.join(cls.tmp, "pg")],
                       cwd=REPO, capture_output=True)
        shutil.rmtree(cls.tmp, True)

    def test_health_port_and_drain(self):
        out = render()
        files = {f["path"]: f for f in load_yaml(out["worker_user_data"])["write_files"]}
        env = parse_env_file(files["/etc/drove/drove-worker.env"]["content"])
        port = free_port()
        # What differs from the VM: the secret file's path, and loopback on a
        # free port instead of 0.0.0.0:<health port> (asserted above to match).
        self.assertEqual(env["DROVE_HTTP_ADDR"], "0.0.0.0:%d" % out["health_port"])
        env.update(DROVE_DATABASE_URL_FILE=self.url_file, DROVE_HTTP_ADDR="127.0.0.1:%d" % port)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DROVE_", "DATABASE_URL"))}

        migrate = subprocess.run([self.drove, "migrate"], env=dict(base, **env), capture_output=True, text=True,
                                 timeout=120)
        self.assertEqual(migrate.returncode, 0, migrate.stderr)

        log_path = os.path.join(self.tmp, "worker.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen([self.worker], env=dict(base, **env), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while http_status("http://127.0.0.1:%d%s" % (port, out["health_path"])) != 200:
                self.assertIsNone(proc.poll(), "drove-worker exited: " + tail(log_path))
                self.assertLess(time.monotonic(), deadline, "no 200 from /healthz: " + tail(log_path))
                time.sleep(0.2)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=out["worker_stop_timeout_seconds"])
            elapsed = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(code, 0, tail(log_path))
        self.assertLess(elapsed, out["worker_drain_grace_seconds"])
        with open(log_path) as f:
            lines = [line for line in f if line.strip()]
        self.assertTrue(lines)
        for line in lines:
            entry = json.loads(line)  # DROVE_LOG_FORMAT=json: one JSON object a line
            self.assertIn("severity", entry)  # what Cloud Logging reads


if __name__ == "__main__":
    unittest.main()

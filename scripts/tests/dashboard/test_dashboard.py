"""The dashboard as a person uses it, in headless Chromium.

Runs `drove demo` (small and quick) on the PostgreSQL that
scripts/test-dashboard.sh started, then drives the page through chromedriver
with selenium: no token or a wrong one gets the login page with 401 and no
data; the login form and the `?token=` link sign in; the numbers change as
jobs complete; Pause/Resume on a queue and Retry on a dead job and Cancel on a
failing one act (checked through the API); a database outage shows a banner
and keeps the last numbers; a screenshot is saved.

Environment (set by scripts/test-dashboard.sh): DROVE_BIN, PG_DIR, PG_PORT,
PG_URL, CHROMIUM, CHROMEDRIVER, OUT_DIR.

Ends with one line `dashboard tests: N passed, N failed, N skipped`; exit
status 1 on any failure.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
TOKEN = "dashboard-test-token-0123456789"
ENV = os.environ


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def http(method, path, body=None, token=TOKEN, headers=None):
    """(status, headers, body text) of a request to the controller."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(BASE + path, data=data, method=method, headers=h)
    try:
        with OPENER.open(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def api(method, path, body=None):
    status, _, text = http(method, path, body)
    return status, (json.loads(text) if text else None)


def wait_for(what, fn, timeout=60, every=0.25):
    """Calls fn until it returns something truthy; fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # a page being redrawn, a refused connection
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pg(action):
    """Stops or starts the test's PostgreSQL (scripts/lib/pg.sh)."""
    subprocess.run(
        ["bash", "-c", f'source scripts/lib/pg.sh && pg_{action} "$PG_DIR"'],
        cwd=REPO, check=True, env={**ENV, "PG_PORT": ENV["PG_PORT"]},
        stdout=subprocess.DEVNULL,
    )


class Dashboard(unittest.TestCase):
    demo = None
    driver = None

    @classmethod
    def setUpClass(cls):
        cls.demo_log = open(os.path.join(ENV["OUT_DIR"], "demo.log"), "w")
        cls.demo = subprocess.Popen(
            [ENV["DROVE_BIN"], "demo", "--jobs", "40", "--difficulty", "400", "--bursts", "2",
             "--pause", "15s", "--max-workers", "3", "--scale-in-after", "5s",
             "--scale-to-zero-after", "10s", "--listen", f"127.0.0.1:{PORT}",
             "--api-token", TOKEN],
            env={**ENV, "DATABASE_URL": ENV["PG_URL"], "RUST_LOG": "warn"},
            stdout=cls.demo_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_for("the demo's controller", lambda: http("GET", "/readyz", token=None)[0] == 200, 90)
        opts = webdriver.ChromeOptions()
        opts.binary_location = ENV["CHROMIUM"]
        for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1400,1000", "--hide-scrollbars"]:
            opts.add_argument(a)
        cls.driver = webdriver.Chrome(service=Service(executable_path=ENV["CHROMEDRIVER"]), options=opts)
        cls.driver.set_page_load_timeout(30)

    @classmethod
    def tearDownClass(cls):
        if cls.driver:
            cls.driver.quit()
        if cls.demo and cls.demo.poll() is None:
            cls.demo.send_signal(signal.SIGINT)  # as Ctrl-C: an orderly stop
            try:
                cls.demo.wait(90)
            except subprocess.TimeoutExpired:
                cls.demo.kill()
        cls.demo_log.close()

    # ---- helpers ----

    def css(self, selector):
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def card(self, name):
        return self.css(f"#card-{name} .value").text

    def signed_in_page(self):
        self.driver.get(BASE + f"/?token={TOKEN}")
        wait_for("the queues table", lambda: self.all('#queues tr[data-queue="default"]'), 30)

    # ---- the tests, in order ----

    def test_01_no_token_or_a_wrong_one_gets_the_login_page_and_no_data(self):
        for path, headers in [("/", {}), ("/?token=wrong-token-0123456789", {}),
                              ("/", {"Cookie": "drove_token=wrong-token-0123456789"})]:
            status, h, body = http("GET", path, token=None, headers=headers)
            self.assertEqual(status, 401, path)
            self.assertIn('name="token"', body)
            self.assertNotIn('id="queues"', body)
            self.assertNotIn("/assets/app.js", body)
        for token in [None, "wrong-token-0123456789"]:
            for path in ["/v1/stats", "/v1/jobs", "/v1/workers", "/v1/history"]:
                status, _, body = http("GET", path, token=token)
                self.assertEqual(status, 401, f"{path} with {token}")
                self.assertNotIn("queues", body)
        d = self.driver
        d.get(BASE + "/")
        d.delete_all_cookies()
        d.get(BASE + "/")
        self.assertEqual(d.title, "drove: sign in")
        self.assertEqual(self.all("#queues"), [])
        d.get(BASE + "/?token=wrong-token-0123456789")
        self.assertIn("wrong", self.css("#login-message").text)
        self.assertEqual(self.all("#queues"), [])
        self.assertIsNone(d.get_cookie("drove_token"))

    def test_02_the_login_form_signs_in_with_an_httponly_strict_cookie(self):
        d = self.driver
        d.delete_all_cookies()
        d.get(BASE + "/")
        self.css("#token").send_keys(TOKEN)
        self.css("form button[type=submit]").click()
        wait_for("the dashboard", lambda: self.all('#queues tr[data-queue="default"]'), 30)
        self.assertEqual(d.current_url.rstrip("/"), BASE)
        c = d.get_cookie("drove_token")
        self.assertTrue(c["httpOnly"])
        self.assertEqual(c["sameSite"], "Strict")
        self.assertIsNone(d.execute_script("return document.cookie.match(/drove_token/)"),
                          "page scripts cannot read the token")
        # The ?token= link signs in too and drops the token from the address.
        d.delete_all_cookies()
        self.signed_in_page()
        self.assertNotIn("token", d.current_url)

    def test_03_numbers_change_as_jobs_complete(self):
        self.signed_in_page()
        status, _ = api("POST", "/v1/jobs/batch",
                        {"jobs": [{"kind": "spin", "payload": {"ms": 300}} for _ in range(30)]})
        self.assertEqual(status, 201)
        seen = set()

        def changed():
            seen.add((self.card("backlog"), self.card("running"), self.card("done")))
            dones = {s[2] for s in seen}
            return len(seen) >= 4 and len(dones) >= 2
        wait_for("the cards to change as jobs complete", changed, 90, every=0.5)
        self.assertTrue(self.all("#workers tbody tr[data-worker]"), "live workers listed")
        row = self.css("#workers tbody tr[data-worker]")
        self.assertRegex(row.text, r"ago")
        # The charts have lines.
        pts = wait_for("chart points", lambda: self.css('#chart-jobs polyline[data-series="waiting"]')
                       .get_attribute("points").split(), 20)
        self.assertGreaterEqual(len(pts), 2)
        self.assertTrue(self.all('#chart-workers polyline[data-series="workers"]'))

    def test_04_pause_and_resume_a_queue(self):
        self.signed_in_page()
        self.css('button[data-action="pause"][data-queue="default"]').click()
        wait_for("the queue paused (API)", lambda: api("GET", "/v1/queues/default")[1]["paused"], 15)
        wait_for("the Resume button", lambda: self.all('button[data-action="resume"][data-queue="default"]'), 15)
        self.assertIn("paused", self.css('#queues tr[data-queue="default"]').text)
        self.assertIn("paused", self.css("#flash").text)
        self.css('button[data-action="resume"][data-queue="default"]').click()
        wait_for("the queue resumed (API)", lambda: api("GET", "/v1/queues/default")[1]["paused"] is False, 15)
        wait_for("the Pause button", lambda: self.all('button[data-action="pause"][data-queue="default"]'), 15)

    def test_05_retry_a_dead_job(self):
        status, body = api("POST", "/v1/jobs", {"kind": "spin", "payload": {"ms": "not a number"},
                                                "max_attempts": 1})
        self.assertEqual(status, 201)
        job = body["id"]
        self.signed_in_page()
        row = f'#dead tr[data-job="{job}"]'
        wait_for("the job in the dead list", lambda: self.all(row), 90)
        self.assertIn("invalid payload", self.css(row).text)
        self.css(f'{row} button[data-action="retry"]').click()
        wait_for("the retry message", lambda: "queued again" in self.css("#flash").text, 15)

        def ran_again():
            j = api("GET", f"/v1/jobs/{job}")[1]
            return j["state"] == "dead" and len(j["errors"]) == 2 and j
        j = wait_for("the retried job to run (and fail) again", ran_again, 90)
        self.assertIn("invalid payload", j["errors"][-1]["error"])

    def test_06_cancel_a_failing_job(self):
        status, body = api("POST", "/v1/jobs", {"kind": "resize", "payload": {}, "max_attempts": 5,
                                                "backoff_base_ms": 600000})
        self.assertEqual(status, 201)
        job = body["id"]
        self.signed_in_page()
        row = f'#failing tr[data-job="{job}"]'
        wait_for("the job in the failing list", lambda: self.all(row), 90)
        self.assertIn("no handler", self.css(row).text)
        self.css(f'{row} button[data-action="cancel"]').click()
        wait_for("the job cancelled (API)", lambda: api("GET", f"/v1/jobs/{job}")[1]["state"] == "cancelled", 15)

    def test_07_a_database_outage_shows_a_banner_and_keeps_the_numbers(self):
        self.signed_in_page()
        wait_for("a full refresh", lambda: "updated" in self.css("#updated").text, 15)
        cards = ["backlog", "running", "workers", "dead"]
        before = {n: self.card(n) for n in cards}
        self.assertTrue(all(v.strip() not in ("", "–") for v in before.values()), before)
        pg("stop")
        try:
            wait_for("the outage banner",
                     lambda: "database is unavailable" in self.css("#banner").text, 30)
            self.assertIn("stale", self.css("body").get_attribute("class"))
            # The numbers of the last good refresh (the demo's jobs may have
            # moved between the reading above and the stop) stay through
            # later failed refreshes (every 2 s), with their age said.
            frozen = {n: self.card(n) for n in cards}
            self.assertEqual(frozen.keys(), before.keys())
            self.assertTrue(all(v.strip() not in ("", "–") for v in frozen.values()), frozen)
            time.sleep(5)
            self.assertIn("database is unavailable", self.css("#banner").text)
            self.assertEqual(frozen, {n: self.card(n) for n in cards}, "the last numbers stay on the page")
            self.assertRegex(self.css("#banner").text, r"statistics are from .+ ago|no statistics yet")
            self.assertNotEqual(self.all("#queues tr[data-queue]"), [], "the queue table stays")
        finally:
            pg("start")
        wait_for("the banner to go", lambda: "hidden" in self.css("#banner").get_attribute("class"), 60)

    def test_08_screenshot(self):
        self.signed_in_page()
        wait_for("a full refresh", lambda: "updated" in self.css("#updated").text, 15)
        d = self.driver
        height = d.execute_script("return document.documentElement.scrollHeight")
        want = min(max(height, 1000), 4000)
        d.set_window_size(1400, want)
        wait_for("the resized window", lambda: d.execute_script("return window.innerHeight") >= want - 150, 10)
        path = os.path.join(ENV["OUT_DIR"], "dashboard.png")
        d.save_screenshot(path)
        d.set_window_size(1400, 1000)
        self.assertGreater(os.path.getsize(path), 20_000)
        print(f"\n    screenshot: {path}", end=" ")

    def test_09_ctrl_c_stops_the_demo(self):
        demo = type(self).demo
        demo.send_signal(signal.SIGINT)
        code = demo.wait(90)
        self.assertEqual(code, 130)
        with open(os.path.join(ENV["OUT_DIR"], "demo.log")) as f:
            log = f.read()
        self.assertIn("nothing left running", log)


def main():
    started = time.monotonic()
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(Dashboard)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    if failed:
        log = os.path.join(ENV["OUT_DIR"], "demo.log")
        print(f"--- the demo's output ({log}), last lines:")
        with open(log) as f:
            print("".join(f.readlines()[-40:]))
    print(f"({time.monotonic() - started:.0f} s)")
    print(f"dashboard tests: {passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed or result.testsRun == 0 else 0)


if __name__ == "__main__":
    main()

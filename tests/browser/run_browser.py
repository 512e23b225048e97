#!/usr/bin/python3
"""Runs the operator dashboard's browser test: /dashboard in Debian's real
Chromium (driven by puppeteer-core) against aigw's admin API.

Starts three mock Azure regions (east fails with 500s, so there are failovers
and an open breaker; west and eu answer) and aigw under a real lighttpd with
authentication on (auth.admin_role left at its default, AI.Admin), creates
users and API keys with the aigw CLI, seeds traffic over HTTP (successes,
failovers, a failed call, rate-limit and budget refusals), takes what
`aigw report NAME --since 86400s --format json` prints as the expected
figures, then runs `node --test` on tests/browser/dashboard.test.mjs with the
setup in environment variables. Node's TAP output goes straight to the
terminal; the exit status is node's. Every process started here is stopped on
the way out, whatever happened.

    /usr/bin/python3 tests/browser/run_browser.py [node --test options]

AIGW_BIN and AIGW_SRCDIR as for the integration tests; CHROMIUM (default
/usr/bin/chromium); ARTIFACT_DIR for the screenshot (default
tests/browser/artifacts/ beside AIGW_BIN); SAVE_DOCS_SCREENSHOT=1 also writes
docs/dashboard.png (or DOCS_DIR/dashboard.png).

Standard library only (the integration tests' conftest is reused for the
mock regions and the gateway).
"""
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.abspath(os.path.join(HERE, "..", ".."))
NODE_TIMEOUT_S = 180  # the whole node run; normally well under a minute
# The figures are taken before node starts and compared with what the page
# shows a few seconds later; usage is per UTC day, so that must not straddle
# a UTC midnight. Closer to midnight than this, the run waits for it to pass.
MIDNIGHT_MARGIN_S = 90
REPORTS = ("usage", "budget", "errors", "latency", "failovers", "refusals", "traffic")
SINCE = "86400s"  # the page's default period, "day"
XSS_USER = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'

sys.path.insert(0, os.path.join(SRCDIR, "tests", "integration"))
import node_harness  # noqa: E402  (first: it lets conftest load without pytest)
from node_harness import Interrupted, die, make_user, on_signal  # noqa: E402
import conftest  # noqa: E402
from conftest import Gateway, MockRegion, backend_config, base_config  # noqa: E402


def need_tool(name, why):
    return node_harness.need_tool(name, why, "The browser test")


def find_chromium():
    path = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        die(f"Chromium not found at {path}: apt-get install chromium (or set CHROMIUM to its path)")
    return path


def wait_past_utc_midnight():
    now = datetime.datetime.now(datetime.timezone.utc)
    left = 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
    if left < MIDNIGHT_MARGIN_S:
        print(f"run_browser.py: {left} s to UTC midnight; waiting for it to pass "
              "(usage is per UTC day)", flush=True)
        time.sleep(left + 2)


def chat(gw, key, text):
    """One chat completion over HTTP; returns the status (4xx/5xx are answers too)."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    return gw.post("/v1/chat/completions", body, headers={"Authorization": f"Bearer {key}"}).status


def seed(gw, east, west, keys):
    """Traffic for every panel: failovers until east's breaker opens, plain
    successes, one failed call, rate-limit and budget refusals. Returns what
    was sent and answered, for the log."""
    east.set(mode="500")  # east answers 500 to everything: its breaker opens
    sent = []

    def send(user, n, text):
        for i in range(n):
            sent.append((user, chat(gw, keys[user], f"{text} {i} from {user}")))

    send("alice", 4, "Hello")      # the first three fail over east -> west, then east is open
    send("bob", 3, "Good morning")
    west.set(mode="400", fail_count=1)
    send("bob", 1, "A bad one")    # west answers 400: a failed request
    send(XSS_USER, 2, "Hi")
    send("limited", 3, "Quick")    # 1 per hour: one success, two rate_limited
    send("broke", 2, "Spend")      # budget 0: two budget_exceeded
    return sent


def report(gw, name):
    r = gw.cli("report", name, "--since", SINCE, "--format", "json")
    return json.loads(r.stdout)


def main():
    node = need_tool("node", "install Node.js 20 or newer")
    npm = need_tool("npm", "it installs puppeteer-core")
    chromium = find_chromium()
    if not os.path.exists(conftest.LIGHTTPD):
        die(f"lighttpd not found at {conftest.LIGHTTPD}")
    if not os.access(conftest.AIGW_BIN, os.X_OK):
        die(f"{conftest.AIGW_BIN} is missing: build it first (make aigw)")
    major = subprocess.run([node, "-p", "process.versions.node.split('.')[0]"],
                           capture_output=True, text=True).stdout.strip()
    if not major.isdigit() or int(major) < 20:
        die(f"node {major or '?'} is too old: the test needs Node.js 20 or newer")
    test_file = os.path.join(HERE, "dashboard.test.mjs")
    node_harness.ensure_node_modules(HERE, npm, env=dict(os.environ, PUPPETEER_SKIP_DOWNLOAD="1"))
    artifacts = os.path.abspath(os.environ.get("ARTIFACT_DIR") or
                                os.path.join(os.path.dirname(os.path.abspath(conftest.AIGW_BIN)),
                                             "tests", "browser", "artifacts"))
    os.makedirs(artifacts, exist_ok=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tmp = tempfile.mkdtemp(prefix="aigw-browser-")
    mocks, gateways, procs = [], [], []  # procs: node, once started
    rc = 1
    try:
        wait_past_utc_midnight()
        t_setup = time.monotonic()
        for name in ("east", "west", "eu"):
            mocks.append(MockRegion(name, tmp))
        east, west, eu = mocks
        for m in mocks:
            m.reset()
        # Three failures open a breaker, and it stays open for the whole run.
        cfg = base_config(tmp, [backend_config(east, 1), backend_config(west, 2), backend_config(eu, 3)],
                          auth={"enabled": True},
                          circuit_breaker={"failure_threshold": 3, "recovery_timeout_s": 600,
                                           "half_open_max_calls": 1})
        gw = Gateway(tmp, cfg, server="lighttpd", workers=4)
        gateways.append(gw)
        gw.start()
        keys = {
            "ops": make_user(gw, "ops", "--roles", "AI.Admin"),
            "alice": make_user(gw, "alice"),
            "bob": make_user(gw, "bob", "--budget", "50000"),
            XSS_USER: make_user(gw, XSS_USER),
            "limited": make_user(gw, "limited", "--requests", "1", "--window", "3600"),
            "broke": make_user(gw, "broke", "--budget", "0"),
        }
        sent = seed(gw, east, west, keys)
        expected = {name: report(gw, name) for name in REPORTS}
        expected["since"] = SINCE
        expected["sent"] = [{"user": u, "status": s} for u, s in sent]
        env = dict(os.environ)
        env.update({
            "AIGW_URL": gw.url,
            "AIGW_ADMIN_KEY": keys["ops"],
            "AIGW_ADMIN_USER": "ops",
            "AIGW_USER_KEY": keys["alice"],  # a model user, not an admin
            "XSS_USER": XSS_USER,
            "CHROMIUM": chromium,
            "ARTIFACT_DIR": artifacts,
            "DOCS_DIR": os.environ.get("DOCS_DIR") or os.path.join(SRCDIR, "docs"),
            "EXPECTED": json.dumps(expected),
            "FAILING_BACKEND": east.name,
            "NODE_NO_WARNINGS": "1",
        })
        statuses = {}
        for _, s in sent:
            statuses[s] = statuses.get(s, 0) + 1
        print(f"run_browser.py: gateway {gw.url} (lighttpd, 4 workers), mocks "
              f"{', '.join(f'{m.name} {m.url}' for m in mocks)}; {len(sent)} requests seeded "
              f"(statuses {json.dumps(statuses, sort_keys=True)}); setup {time.monotonic() - t_setup:.1f} s",
              flush=True)

        # TAP unless another reporter is asked for (node wants one destination per reporter).
        reporter = [] if any(a.startswith("--test-reporter") for a in sys.argv[1:]) else ["--test-reporter=tap"]
        cmd = [node, "--test", "--test-concurrency=1", *reporter, *sys.argv[1:], test_file]
        # In a process group of its own: node --test runs the file in a child
        # process, which runs Chromium; stopping the group stops them all.
        rc = node_harness.run_node(cmd, HERE, env, NODE_TIMEOUT_S, procs.append)
    except Interrupted as e:
        print(f"run_browser.py: interrupted ({e}); cleaning up", file=sys.stderr, flush=True)
        rc = 130
    except Exception as e:
        print(f"run_browser.py: setup failed: {e}", file=sys.stderr, flush=True)
        for gw in gateways:
            print(gw.error_log(), file=sys.stderr)
        rc = 1
    finally:
        sanitizer_failed = node_harness.stop_everything(procs[0] if procs else None, gateways, mocks)
        rc = rc or sanitizer_failed
        print(f"run_browser.py: artifacts (screenshot) in {artifacts}", flush=True)
        if rc == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"run_browser.py: logs and database kept in {tmp}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())

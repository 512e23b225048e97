#!/usr/bin/python3
"""Runs the client tests: the official `openai` npm SDK and the Vercel AI SDK
(`ai`, `@ai-sdk/openai`, `@ai-sdk/azure`), unchanged, against aigw.

Starts three mock Azure regions (east, west, eu) and aigw under a real lighttpd
with authentication on, creates users and API keys, then runs
`node --test` on tests/clients/*.test.mjs with the setup described in
environment variables. Node's TAP output goes straight to the terminal; the
exit status is node's. Every process started here is stopped on the way out,
whatever happened.

    /usr/bin/python3 tests/clients/run_clients.py [node --test options] [FILE.test.mjs...]

With no files named, every tests/clients/*.test.mjs runs.

Standard library only (the integration tests' conftest is reused for the
mock regions and the gateway).
"""
import glob
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
NODE_TIMEOUT_S = 300  # the whole node run; normally well under a minute

sys.path.insert(0, os.path.join(SRCDIR, "tests", "integration"))
import node_harness  # noqa: E402  (first: it lets conftest load without pytest)
from node_harness import Interrupted, die, make_user, on_signal  # noqa: E402
import conftest  # noqa: E402
from conftest import Gateway, MockRegion, backend_config, base_config  # noqa: E402


def need_tool(name, why):
    return node_harness.need_tool(name, why, "The client tests")


def main():
    node = need_tool("node", "install Node.js 20 or newer")
    npm = need_tool("npm", "it installs the SDKs")
    sqlite3 = need_tool("sqlite3", "the tests read aigw's audit rows with it")
    if not os.path.exists(conftest.LIGHTTPD):
        die(f"lighttpd not found at {conftest.LIGHTTPD}")
    if not os.access(conftest.AIGW_BIN, os.X_OK):
        die(f"{conftest.AIGW_BIN} is missing: build it first (make aigw)")
    major = subprocess.run([node, "-p", "process.versions.node.split('.')[0]"],
                           capture_output=True, text=True).stdout.strip()
    if not major.isdigit() or int(major) < 20:
        die(f"node {major or '?'} is too old: the tests need Node.js 20 or newer")
    # Arguments naming test files select them; any others are options for node --test.
    picked = [os.path.abspath(a) for a in sys.argv[1:] if a.endswith((".mjs", ".js")) and os.path.isfile(a)]
    node_opts = [a for a in sys.argv[1:] if not (a.endswith((".mjs", ".js")) and os.path.isfile(a))]
    tests = picked or sorted(glob.glob(os.path.join(HERE, "*.test.mjs")))
    if not tests:
        die(f"no *.test.mjs files in {HERE}")
    node_harness.ensure_node_modules(HERE, npm)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tmp = tempfile.mkdtemp(prefix="aigw-clients-")
    mocks, gateways, procs = [], [], []  # procs: node, once started
    rc = 1
    try:
        t_setup = time.monotonic()
        for name in ("east", "west", "eu"):
            mocks.append(MockRegion(name, tmp))
        east, west, eu = mocks
        for m in mocks:
            m.reset()
        cfg = base_config(tmp, [backend_config(east, 1), backend_config(west, 2)],
                          auth={"enabled": True})
        gw = Gateway(tmp, cfg, server="lighttpd", workers=4)
        gateways.append(gw)
        gw.start()
        retry_window_s = 2
        env = dict(os.environ)
        for k in list(env):  # the SDK reads these; only what the tests pass may count
            if k.startswith(("OPENAI_", "AZURE_OPENAI_")):
                del env[k]
        env.update({
            "AIGW_URL": gw.url,
            "AIGW_DB": gw.db_path,
            "SQLITE3": sqlite3,
            "AIGW_USER": "alice",
            "AIGW_KEY": make_user(gw, "alice"),
            "AIGW_LIMITED_USER": "limited",
            "AIGW_LIMITED_KEY": make_user(gw, "limited", "--requests", "1", "--window", "3600"),
            "AIGW_RETRY_USER": "retrier",
            "AIGW_RETRY_KEY": make_user(gw, "retrier", "--requests", "1", "--window", str(retry_window_s)),
            "AIGW_RETRY_WINDOW_S": str(retry_window_s),
            "AIGW_BROKE_KEY": make_user(gw, "broke", "--budget", "0"),
            "AIGW_BIN": conftest.AIGW_BIN,
            "AIGW_CONFIG_PATH": gw.config_path,
            "AIGW_BACKENDS": json.dumps([b["name"] for b in cfg["backends"]]),
            "MOCK_REGIONS": json.dumps([{"name": m.name, "url": m.url, "expect_key": f"key-{m.name}-secret"}
                                        for m in mocks]),
            "NODE_NO_WARNINGS": "1",
        })
        print(f"run_clients.py: gateway {gw.url} (lighttpd, 4 workers), mocks "
              f"{', '.join(f'{m.name} {m.url}' for m in mocks)}; setup {time.monotonic() - t_setup:.1f} s",
              flush=True)

        # One test file at a time: the mock regions' settings are shared state.
        cmd = [node, "--test", "--test-concurrency=1", "--test-reporter=tap", *node_opts, *tests]
        rc = node_harness.run_node(cmd, HERE, env, NODE_TIMEOUT_S, procs.append)
    except Interrupted as e:
        print(f"run_clients.py: interrupted ({e}); cleaning up", file=sys.stderr, flush=True)
        rc = 130
    except Exception as e:
        print(f"run_clients.py: setup failed: {e}", file=sys.stderr, flush=True)
        for gw in gateways:
            print(gw.error_log(), file=sys.stderr)
        rc = 1
    finally:
        sanitizer_failed = node_harness.stop_everything(procs[0] if procs else None, gateways, mocks)
        rc = rc or sanitizer_failed
        if rc == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"run_clients.py: logs and database kept in {tmp}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())

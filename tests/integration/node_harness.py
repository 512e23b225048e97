"""What the launchers of the Node.js tests share: tests/clients/run_clients.py
(the SDKs) and tests/browser/run_browser.py (the dashboard in Chromium).

Both reuse this directory's conftest (mock regions, the gateway) without
pytest, check their tools, keep their node_modules at the versions pinned in
package.json, and turn SIGTERM and SIGINT into an exception so that
everything they started is stopped on the way out. Standard library only.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

PROG = os.path.basename(sys.argv[0])

try:
    import pytest  # noqa: F401  (conftest imports it for its fixtures only)
except ImportError:
    # Not needed here: give conftest a stand-in so that only the stdlib is required.
    stub = types.ModuleType("pytest")
    stub.fixture = lambda *a, **k: (a[0] if a and callable(a[0]) else (lambda f: f))
    sys.modules["pytest"] = stub
import conftest  # noqa: E402,F401  (re-exported for the launchers)


def die(msg, code=2):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def need_tool(name, why, what="The tests"):
    path = shutil.which(name)
    if not path:
        die(f"'{name}' is not installed or not on PATH; {why}. {what} cannot run without it.")
    return path


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


def installed_version(here, package):
    try:
        with open(os.path.join(here, "node_modules", *package.split("/"), "package.json")) as f:
            return json.load(f).get("version")
    except (OSError, ValueError):
        return None


def ensure_node_modules(here, npm, env=None):
    """Every dependency of here/package.json installed, at the exact version
    pinned there (npm ci from the lock file when there is one)."""
    with open(os.path.join(here, "package.json")) as f:
        deps = json.load(f).get("dependencies", {})
    stale = [p for p, v in deps.items() if installed_version(here, p) != v]
    if not stale:
        return
    lock = os.path.exists(os.path.join(here, "package-lock.json"))
    cmd = [npm, "ci" if lock else "install", "--no-audit", "--no-fund"]
    print(f"{PROG}: node_modules lacks {', '.join(stale)}: {' '.join(cmd[1:])} in {here}", flush=True)
    r = subprocess.run(cmd, cwd=here, env=env)
    if r.returncode != 0:
        die(f"npm {cmd[1]} failed with exit status {r.returncode}")


def make_user(gw, user, *options):
    """aigw user add USER OPTIONS, then a key for it: returns the key's text."""
    gw.cli("user", "add", user, *options)
    key = gw.cli("key", "create", user).stdout.strip()
    if not key.startswith("aigw_"):
        raise RuntimeError(f"unexpected output of 'aigw key create {user}': {key!r}")
    return key


def stop_node(proc):
    """Stops node, its test processes and any browser they run: SIGTERM to
    the process group (puppeteer closes the browser on it), SIGKILL to what
    is left after a few seconds."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5 if sig == signal.SIGTERM else 0)  # the group's other members
    proc.wait()


def run_node(cmd, cwd, env, timeout_s, started):
    """Runs cmd (node --test ...) in a process group of its own and returns
    its exit status (1 when it had to be stopped after timeout_s). started(proc)
    is called at once, so that the caller can stop it if interrupted."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True)
    started(proc)
    try:
        rc = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        print(f"{PROG}: node did not finish within {timeout_s} s; killing it", file=sys.stderr, flush=True)
        stop_node(proc)
        rc = 1
    print(f"{PROG}: node exited with {rc} after {time.monotonic() - t0:.1f} s", flush=True)
    return rc


def stop_everything(node_proc, gateways, mocks):
    """Stops node (if still running), the gateways and the mocks, whatever
    fails on the way; returns 1 when a worker log holds a sanitizer report
    (printed), else 0."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if node_proc and node_proc.poll() is None:
        stop_node(node_proc)
    problems = []
    for gw in gateways:
        try:
            gw.stop()
        except Exception as e:  # keep stopping the rest
            print(f"{PROG}: stopping the gateway: {e}", file=sys.stderr)
        problems += gw.sanitizer_reports()
    for m in mocks:
        m.stop()
    if problems:
        print(f"{PROG}: sanitizer reports in the worker logs:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    return 0

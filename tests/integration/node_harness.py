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
import subprocess
import sys
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

"""A worker's memory stays flat over many requests, and valgrind finds no leak in the request loop."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fcgi_client  # noqa: E402

from conftest import AIGW_BIN, backend_config, base_config, chat_body  # noqa: E402

AZ = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def mixed_requests(addr, n, key):
    """Chat, streams, validation failures and bad keys: every path a worker takes."""
    h = {"Content-Type": "application/json", "api-key": key}
    kinds = [
        ("/api/chat", chat_body(user_id="leaky"), 200),
        (AZ, {"messages": [{"role": "user", "content": "s"}], "stream": True}, 200),
        ("/api/chat", chat_body(user_id="leaky", temperature=9), 400),
        ("/v1/embeddings", {"input": ["a", "b"], "model": "text-embedding-3-small"}, 200),
    ]
    for i in range(n):
        path, body, want = kinds[i % len(kinds)]
        status, _, _ = fcgi_client.request(addr, "POST", path, json.dumps(body).encode(), h)
        assert status == want, (path, status)
    status, _, _ = fcgi_client.request(addr, "POST", "/api/chat", b"{}", {"api-key": "aigw_bad"})
    assert status == 401


def private_kb(pid):
    """Memory only this process holds (Private_Clean + Private_Dirty): unlike Pss
    it does not change when other processes map or unmap the same libraries."""
    total = 0
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def start_serve(tmp_path, mocks, prefix=(), env_extra=None, workers=1):
    cfg = base_config(str(tmp_path), [backend_config(mocks["east"], 1)], auth={"enabled": True})
    path = os.path.join(str(tmp_path), "aigw.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    cli = lambda *a: subprocess.run([AIGW_BIN, "--config", path, *a], capture_output=True, text=True, check=True)
    cli("user", "add", "leaky", "--budget", "1000000000")
    key = cli("key", "create", "leaky").stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = os.path.join(str(tmp_path), "serve.log")
    proc = subprocess.Popen([*prefix, AIGW_BIN, "--config", path, "serve", "--listen", f"127.0.0.1:{port}",
                             "--workers", str(workers)], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, **(env_extra or {})))
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if fcgi_client.request(("127.0.0.1", port), "GET", "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    return proc, ("127.0.0.1", port), key, log


def sanitizer_build():
    """'asan', 'tsan' or None: which sanitizer runtime aigw was linked with."""
    out = subprocess.run(["ldd", AIGW_BIN], capture_output=True, text=True).stdout
    return "asan" if "libasan" in out else "tsan" if "libtsan" in out else None


def test_worker_memory_is_flat_over_1000_requests_once_warm(tmp_path, mocks):
    # Under AddressSanitizer freed memory sits in a quarantine and the heap
    # has red zones: with the quarantine off, growth is still a few hundred
    # KiB of allocator caches, so the bound is wider there. LeakSanitizer
    # (test_no_leak_in_the_request_loop) is the exact check in that build.
    san = sanitizer_build()
    if san == "tsan":
        pytest.skip("ThreadSanitizer keeps a shadow and a history of every memory access, which grow "
                    "with the requests: flatness is checked in the normal and ASan builds")
    env = {"ASAN_OPTIONS": "quarantine_size_mb=0:detect_leaks=1"} if san == "asan" else None
    bound_kib = 2048 if san == "asan" else 512
    proc, addr, key, _ = start_serve(tmp_path, mocks, env_extra=env)
    try:
        worker = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0])
        # Warm up until SQLite's page cache (2 MiB by default) has filled: it
        # grows with the audit table for the first ~1500 requests, then stays.
        mixed_requests(addr, 2000, key)
        before = private_kb(worker)
        mixed_requests(addr, 1000, key)
        after = private_kb(worker)
        assert after - before < bound_kib, \
            f"worker private memory grew from {before} to {after} KiB over 1000 requests"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_no_leak_in_the_request_loop(tmp_path, mocks):
    """The worker exits normally after 120 requests (AIGW_MAX_REQUESTS), so a leak
    checker sees everything the request loop left behind: valgrind in a normal
    build, LeakSanitizer in a sanitizer build (valgrind cannot run those)."""
    san = sanitizer_build()
    vlog = os.path.join(str(tmp_path), "valgrind.%p.log")
    prefix = () if san else (
        "valgrind", "--trace-children=yes", "--leak-check=full", "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite", f"--log-file={vlog}")
    env = {"AIGW_MAX_REQUESTS": "120"}
    if san == "asan":
        env["ASAN_OPTIONS"] = "detect_leaks=1:halt_on_error=1"
    proc, addr, key, log = start_serve(tmp_path, mocks, workers=1, prefix=prefix, env_extra=env)
    try:
        mixed_requests(addr, 119, key)
        time.sleep(3)  # the worker exits after its 120th request (the last one above)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    served = open(log).read()
    assert "exited (status 0)" in served, served[-3000:]  # the worker really finished its loop
    if san:
        # A sanitizer build: LeakSanitizer (ASan) or ThreadSanitizer checked the loop.
        for report in ("LeakSanitizer", "AddressSanitizer", "ThreadSanitizer"):
            assert report not in served, served[-5000:]
        return
    reports = [open(os.path.join(str(tmp_path), f)).read() for f in os.listdir(str(tmp_path))
               if f.startswith("valgrind.")]
    # The worker is the process whose parent is the master (valgrind follows the fork).
    worker_reports = [r for r in reports if f"Parent PID: {proc.pid}" in r]
    assert worker_reports, reports
    for r in worker_reports:
        assert "ERROR SUMMARY: 0 errors" in r, r[-4000:]
        assert "definitely lost: 0 bytes in 0 blocks" in r, r[-4000:]

"""One worker process serves many requests at once, and its writes are group-committed.

These talk FastCGI straight to `aigw serve` (tests/fcgi_client.py), so what is
measured is the worker: its request threads, the kept connection a web server
may ask for, the stop that lets in-flight requests finish, and the batches the
group commit makes of concurrent admissions and settlements.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fcgi_client  # noqa: E402

from conftest import AIGW_BIN, backend_config, base_config, chat_body  # noqa: E402

H = {"Content-Type": "application/json"}


def start_serve(tmp_path, mocks, workers=1, threads=None, backend_timeout_s=None, **overrides):
    backend = backend_config(mocks["east"], 1)
    if backend_timeout_s:
        backend["timeout_s"] = backend_timeout_s
    cfg = base_config(str(tmp_path), [backend], **overrides)
    path = os.path.join(str(tmp_path), "aigw.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = os.path.join(str(tmp_path), "serve.log")
    args = [AIGW_BIN, "--config", path, "serve", "--listen", f"127.0.0.1:{port}", "--workers", str(workers)]
    if threads:
        args += ["--threads", str(threads)]
    proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    addr = ("127.0.0.1", port)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if fcgi_client.request(addr, "GET", "/healthz", timeout=5)[0] == 200:
                return proc, addr, cfg["database"]["path"], log
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("aigw serve did not come up:\n" + open(log).read()[-3000:])


def stop(proc, timeout=20):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def chat(addr, results, i, user="t"):
    try:
        status, hdrs, body = fcgi_client.request(addr, "POST", "/api/chat",
                                                 json.dumps(chat_body(user_id=user)).encode(), H, timeout=60)
        results[i] = (status, hdrs.get("x-request-id"), body)
    except OSError as e:
        results[i] = (0, None, repr(e).encode())


def chat_together(addr, results, i, barrier):
    """Connects, waits for every other client, then sends: arrivals within a millisecond."""
    try:
        conn = fcgi_client.connect(addr, timeout=60)
        barrier.wait(30)
        status, hdrs, body = fcgi_client.request(addr, "POST", "/api/chat", json.dumps(chat_body()).encode(),
                                                 H, timeout=60, conn=conn)
        conn.close()
        results[i] = (status, hdrs.get("x-request-id"), body)
    except (OSError, threading.BrokenBarrierError) as e:
        results[i] = (0, None, repr(e).encode())


def parallel(addr, n, user="t", together=False):
    results = [None] * n
    barrier = threading.Barrier(n)
    threads = [threading.Thread(target=chat_together, args=(addr, results, i, barrier)) if together
               else threading.Thread(target=chat, args=(addr, results, i, user)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def metric(addr, name):
    _, _, body = fcgi_client.request(addr, "GET", "/metrics")
    m = re.search(rf"^{name}\{{\}} ([0-9.e+]+)$", body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def test_one_worker_holds_64_slow_calls_at_once(tmp_path, mocks):
    mocks["east"].set(latency_s=1.0)
    proc, addr, db, _ = start_serve(tmp_path, mocks, workers=1, threads=64, auth={"enabled": False})
    try:
        t0 = time.time()
        results = parallel(addr, 64)
        took = time.time() - t0
        assert [r[0] for r in results] == [200] * 64, [r for r in results if r[0] != 200][:3]
        # Served one at a time this would take 64 s; at once, about one call's latency.
        assert took < 8, f"64 one-second calls through one worker took {took:.1f} s"
        assert mocks["east"].stats()["max_in_flight"] >= 32
    finally:
        stop(proc)


def test_concurrent_writes_share_batches_and_every_row_is_written(tmp_path, mocks):
    import sqlite3
    mocks["east"].set(latency_s=0.5)
    proc, addr, db, _ = start_serve(tmp_path, mocks, workers=2, threads=64, auth={"enabled": False})
    try:
        before = metric(addr, "aigw_store_batches_total")
        results = parallel(addr, 96, together=True)
        assert [r[0] for r in results] == [200] * 96
        # The /metrics read above and below is not a write; each request writes twice.
        batches = metric(addr, "aigw_store_batches_total") - before
        writes = 2 * 96
        # 96 admissions arriving within a millisecond, and their settlements
        # half a second later: far fewer commits than writes. (Writes that
        # arrive one at a time commit one at a time: nobody waits to batch;
        # the clients, Python threads, send one after another within a few ms.)
        assert 0 < batches < writes * 0.75, f"{writes} writes in {batches} transactions: no group commit"
        con = sqlite3.connect(db)
        ids = {r[1] for r in results}
        rows = dict(con.execute("SELECT request_id, status FROM audit_log WHERE operation = 'chat'"))
        assert ids <= set(rows), "answered requests without an audit row"
        assert {rows[i] for i in ids} == {"success"}
        requests = con.execute("SELECT sum(requests) FROM usage_daily").fetchone()[0]
        assert requests == len(rows), "the batch's summed rollups must count every request once"
        con.close()
    finally:
        stop(proc)


def test_kept_connection_serves_request_after_request_and_does_not_block_a_stop(tmp_path, mocks):
    """A web server may keep the FastCGI connection (nginx fastcgi_keep_conn, Apache
    enablereuse): the thread serving it takes the next request from it, the
    other threads still take new connections, and a stop does not wait for
    the web server to close an idle kept connection."""
    proc, addr, _, _ = start_serve(tmp_path, mocks, workers=1, threads=2, auth={"enabled": False})
    try:
        kept = fcgi_client.connect(addr, timeout=10)
        for _ in range(3):
            status, _, _ = fcgi_client.request(addr, "POST", "/api/chat", json.dumps(chat_body()).encode(), H,
                                               conn=kept)
            assert status == 200
        # The second thread still accepts connections while the first holds the kept one.
        assert fcgi_client.request(addr, "GET", "/healthz", timeout=10)[0] == 200
        t0 = time.time()
        assert stop(proc) == 0
        assert time.time() - t0 < 5, "the stop waited for the idle kept connection"
        kept.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_stop_lets_in_flight_requests_finish(tmp_path, mocks):
    mocks["east"].set(latency_s=1.5)
    proc, addr, db, log = start_serve(tmp_path, mocks, workers=1, threads=16, auth={"enabled": False})
    results = [None] * 8
    threads = [threading.Thread(target=chat, args=(addr, results, i)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.7)  # all eight are with the mock now
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert proc.wait(20) == 0
    assert [r[0] for r in results] == [200] * 8, results
    import sqlite3
    con = sqlite3.connect(db)
    statuses = [r[0] for r in con.execute("SELECT status FROM audit_log WHERE operation = 'chat'")]
    con.close()
    assert statuses == ["success"] * 8


AZ = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
STREAM_BODY = json.dumps({"messages": [{"role": "user", "content": "Hello"}], "stream": True}).encode()


def stream_text(payload):
    """The content an SSE chat answer carries, and whether it ended with [DONE]."""
    text, done = [], False
    for line in payload.decode().split("\n"):
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        for c in chunk.get("choices", []):
            text.append(c.get("delta", {}).get("content") or "")
    return "".join(text), done


def test_a_client_that_stops_reading_holds_up_no_other_stream(tmp_path, mocks):
    # One process runs all its streams on one transfer loop. A client that
    # stops reading fills the web server's socket; its stream must wait for
    # room on its own while the process's other streams go on.
    words = ["w%06d" % i for i in range(1_200_000)]  # about 9.6 MB of text
    reply = " ".join(words)
    mocks["east"].set(reply=reply, stream_chunks=600)
    proc, addr, _, _ = start_serve(tmp_path, mocks, workers=1, threads=4, backend_timeout_s=60,
                                   auth={"enabled": False}, retry={"deadline_s": 60})
    stuck = fcgi_client.connect(addr, timeout=120)
    try:
        fcgi_client.send_request(stuck, "POST", AZ, STREAM_BODY, H)
        # Let the stuck stream fill every buffer between the mock and the client.
        deadline = time.time() + 20
        while mocks["east"].stats()["in_flight"] == 0 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(2)
        mocks["east"].set(reply="small answer", stream_chunks=None)
        t0 = time.time()
        status, _, payload = fcgi_client.request(addr, "POST", AZ, STREAM_BODY, H, timeout=10)
        took = time.time() - t0
        assert status == 200, payload[:500]
        assert stream_text(payload) == ("small answer", True), payload[:500]
        assert took < 5, f"a second stream took {took:.1f} s while another client did not read"
        # The stuck client reads at last: its answer is whole and in order.
        status, _, payload = fcgi_client.read_response(stuck)
        assert status == 200
        text, done = stream_text(payload)
        assert done and text == reply, (len(text), len(reply))
    finally:
        stuck.close()
        stop(proc)

"""The same core scenarios under every supported way of running aigw, each with the real server.

lighttpd (mod_fastcgi spawning workers), Apache 2.4 + mod_fcgid (a vhost, and
the .htaccess variant for shared hosting) and nginx in front of `aigw serve`,
all started from the files in webserver-configs/ with only paths and ports
substituted. Then the `aigw serve` master's process management: a killed
worker is replaced, SIGHUP reloads gracefully, SIGTERM drains.
"""
import http.client
import json
import os
import signal
import threading
import time

import pytest

from conftest import backend_config, chat_body

SERVERS = ["lighttpd", "apache", "apache_htaccess", "nginx"]
AZ = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


@pytest.fixture(params=SERVERS)
def served(request, make_gateway, mocks):
    gw = make_gateway(server=request.param, workers=4, auth={"enabled": True},
                      backends=[backend_config(mocks["east"], 1), backend_config(mocks["west"], 2)])
    gw.cli("user", "add", "alice")
    gw.key = gw.cli("key", "create", "alice").stdout.strip()
    return gw


def test_chat_request(served, mocks):
    r = served.post("/api/chat", chat_body(user_id="alice"), headers={"Authorization": f"Bearer {served.key}"})
    assert r.status == 200, (r, served.error_log())
    assert r.json()["content"] == "Hello from east"
    assert served.audit_rows()[-1]["status"] == "success"


def test_authenticated_request_both_headers_and_refusal(served, mocks):
    assert served.post("/api/chat", chat_body(user_id="alice"), headers={"api-key": served.key}).status == 200
    r = served.post("/api/chat", chat_body(user_id="alice"))
    assert r.status == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = served.post("/api/chat", chat_body(user_id="alice"), headers={"Authorization": "Bearer aigw_x_y"})
    assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_validation_error(served, mocks):
    r = served.post("/api/chat", chat_body(user_id="alice", temperature=3), headers={"api-key": served.key})
    assert r.status == 400 and r.json()["error"]["param"] == "temperature"
    r = served.post("/api/chat", json.dumps(chat_body("x" * (2 << 20))),
                    headers={"api-key": served.key, "Content-Type": "application/json"})
    assert r.status == 413 and r.json()["error"]["code"] == "body_too_large"


def test_failover(served, mocks):
    mocks["east"].set(mode="500")
    r = served.post("/api/chat", chat_body(user_id="alice"), headers={"api-key": served.key})
    assert r.status == 200 and r.json()["content"] == "Hello from west"
    assert served.audit_rows()[-1]["attempts"] == 2


def test_streamed_request_arrives_incrementally(served, mocks):
    mocks["east"].set(reply="one two three four five", stream_delay_s=0.3)
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    conn.request("POST", AZ, json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}),
                 {"Content-Type": "application/json", "api-key": served.key})
    resp = conn.getresponse()
    assert resp.status == 200
    t0 = time.time()
    arrivals, buf = [], b""
    while chunk := resp.read1(65536):
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            arrivals.append((time.time() - t0, ev))
    conn.close()
    content = [t for t, ev in arrivals if b'"content":"' in ev and b'"content":""' not in ev]
    assert arrivals[-1][1] == b"data: [DONE]"
    assert len(content) >= 4
    assert content[-1] - content[0] > 0.6, arrivals  # relayed as produced, not buffered


# --- aigw serve --------------------------------------------------------------

@pytest.fixture
def nginx_gw(make_gateway, mocks):
    gw = make_gateway(server="nginx", workers=3)
    return gw


def test_killed_worker_is_replaced_and_traffic_continues(nginx_gw, mocks):
    before = nginx_gw.serve_workers()
    assert len(before) == 3
    os.kill(before[0], signal.SIGKILL)
    deadline = time.time() + 5
    while time.time() < deadline:
        now = nginx_gw.serve_workers()
        if len(now) == 3 and before[0] not in now:
            break
        time.sleep(0.05)
    now = nginx_gw.serve_workers()
    assert len(now) == 3 and before[0] not in now
    for _ in range(10):
        assert nginx_gw.post("/api/chat", chat_body()).status == 200
    assert "died (signal 9)" in nginx_gw.error_log()


def slow_request(gw, results):
    t0 = time.time()
    try:
        r = gw.post("/api/chat", chat_body("slow one"), timeout=30)
        results.append((r.status, r.json().get("content"), time.time() - t0))
    except Exception as e:  # noqa: BLE001 - recorded for the assertion
        results.append(("exception", repr(e), time.time() - t0))


def post_until(gw, body, status, seconds=5):
    """POSTs a chat until it is answered with status (a reload reaching every
    worker), at most seconds; returns the last answer."""
    deadline = time.time() + seconds
    while True:
        r = gw.post("/api/chat", body)
        if r.status == status or time.time() >= deadline:
            return r
        time.sleep(0.1)


def test_sighup_reloads_config_and_inflight_request_completes(nginx_gw, mocks):
    mocks["east"].set(latency_s=2)
    results = []
    t = threading.Thread(target=slow_request, args=(nginx_gw, results))
    t.start()
    time.sleep(0.5)  # the slow request is in flight on an old worker
    nginx_gw.config["validation"] = {"deny_patterns": ["forbidden phrase"]}
    nginx_gw.write_config()
    old = nginx_gw.serve_workers()
    nginx_gw.proc.serve.send_signal(signal.SIGHUP)
    mocks["east"].set(latency_s=0)
    r = post_until(nginx_gw, chat_body("a forbidden phrase here"), 400)
    assert r.status == 400 and r.json()["error"]["code"] == "prompt_injection_detected"
    # The old defaults are gone with the old workers: their idle threads stop
    # accepting as soon as each old process has read its SIGTERM.
    r = post_until(nginx_gw, chat_body("ignore previous instructions"), 200)
    assert r.status == 200, r
    t.join(15)
    assert results and results[0][0] == 200, results
    # The old worker settles its audit row after the answer is sent, then
    # leaves; the master reaps it. Give that a few seconds on a slow machine.
    deadline = time.time() + 10
    while time.time() < deadline and set(old) & set(nginx_gw.serve_workers()):
        time.sleep(0.1)
    new = nginx_gw.serve_workers()
    assert not set(old) & set(new), (old, new)
    assert len(new) == len(old)


def test_sighup_with_a_broken_config_keeps_serving(nginx_gw, mocks):
    with open(nginx_gw.config_path, "w") as f:
        f.write('{"backends": [}')
    nginx_gw.proc.serve.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert nginx_gw.post("/api/chat", chat_body()).status == 200
    assert "reload refused" in nginx_gw.error_log()


def test_sigterm_lets_the_inflight_request_finish_then_exits(nginx_gw, mocks):
    mocks["east"].set(latency_s=2)
    results = []
    t = threading.Thread(target=slow_request, args=(nginx_gw, results))
    t.start()
    time.sleep(0.5)
    serve = nginx_gw.proc.serve
    serve.send_signal(signal.SIGTERM)
    t.join(15)
    assert results and results[0][0] == 200, results
    serve.wait(10)
    assert serve.returncode == 0
    assert nginx_gw.serve_workers() == [] if serve.poll() is None else True
    assert not os.path.exists(os.path.join(nginx_gw.tmpdir, "serve.pid"))
    row = nginx_gw.audit_rows()[-1]
    assert row["status"] == "success"

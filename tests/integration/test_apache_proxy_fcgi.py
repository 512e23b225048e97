"""Apache 2.4 + mod_proxy_fcgi in front of `aigw serve`, the real server started
from webserver-configs/apache/aigw-proxy-fcgi.conf (see
servers.start_apache_proxy_fcgi): routing and the FastCGI parameters,
streaming event by event, credentials, Apache's own errors in JSON, and many
concurrent requests through few aigw workers.
"""
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import time

import servers
from conftest import chat_body, stream_events

AZ = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
SERVER = "apache_proxy_fcgi"


def chat(content="Hello", **extra):
    body = {"messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return body


def is_openai_error(r, code=None):
    """r is JSON in the OpenAI error shape (with code, if given)."""
    assert r.headers.get("content-type", "").startswith("application/json"), (r, r.headers)
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code", "param"}, err
    if code is not None:
        assert err["code"] == code, err
    return err


def test_chat_completion_passes_path_query_and_client_address(make_gateway, mocks):
    gw = make_gateway(server=SERVER)
    parent = "0af7651916cd43dd8448eb211c80319c"
    r = gw.post(AZ, chat(temperature=0.2), headers={"traceparent": f"00-{parent}-b7ad6b7169203331-01"})
    assert r.status == 200, (r, gw.error_log())
    assert r.json()["choices"][0]["message"]["content"] == "Hello from east"
    assert r.headers["x-request-id"]
    st = mocks["east"].stats()
    # REQUEST_URI (the path) and QUERY_STRING reached aigw as sent.
    assert st["by_path"] == {"/openai/deployments/gpt-4o-east/chat/completions": 1}
    assert st["last_query"] == "api-version=2024-10-21"
    assert st["last_body"] == chat(temperature=0.2)
    rows = gw.audit_rows()
    assert len(rows) == 1
    row = rows[0]
    assert row["operation"] == "chat.completions" and row["status"] == "success", row
    assert row["http_status"] == 200 and row["total_tokens"] > 0
    assert row["request_id"] == r.headers["x-request-id"]
    assert row["client_ip"] == "127.0.0.1"          # REMOTE_ADDR
    assert row["trace_id"] == parent                 # HTTP_TRACEPARENT
    # The gateway's own JSON errors pass through Apache unchanged.
    r = gw.post("/openai/deployments/gpt-4o/chat/completions", chat())
    assert r.status == 400 and is_openai_error(r)["param"] == "api-version"
    r = gw.post("/api/chat", "not json", headers={"Content-Type": "text/plain"})  # CONTENT_TYPE
    assert r.status in (400, 415) and is_openai_error(r)
    assert gw.get("/v1/models").status == 200


def test_stream_reaches_the_client_event_by_event(make_gateway, mocks):
    gw = make_gateway(server=SERVER)
    mocks["east"].set(reply="one two three four five six", stream_delay_s=0.25)
    resp, events = stream_events(gw, AZ, chat(stream=True))
    assert resp.status == 200, gw.error_log()
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    assert events and events[-1][1] == "data: [DONE]", events
    content = [t for t, ev in events if '"content":"' in ev and '"content":""' not in ev]
    assert len(content) >= 5, events
    # Relayed as aigw writes them (flushpackets=on), not collected by Apache:
    # the first and last words are 5 model delays (1.25 s) apart, and no two
    # words arrive together.
    assert content[-1] - content[0] > 0.8, events
    gaps = [b - a for a, b in zip(content, content[1:])]
    assert min(gaps) > 0.1, events
    text = "".join(json.loads(ev[6:])["choices"][0]["delta"].get("content") or ""
                   for _, ev in events if ev != "data: [DONE]" and json.loads(ev[6:]).get("choices"))
    assert text == "one two three four five six"
    deadline = time.time() + 5
    while time.time() < deadline and gw.audit_rows()[-1]["status"] == "pending":
        time.sleep(0.05)
    row = gw.audit_rows()[-1]
    assert row["stream"] == 1 and row["status"] == "success" and row["completion_tokens"] > 0, row


def test_credentials_reach_aigw(make_gateway, mocks):
    gw = make_gateway(server=SERVER, auth={"enabled": True})
    gw.cli("user", "add", "alice")
    key = gw.cli("key", "create", "alice").stdout.strip()
    # Authorization: Bearer (HTTP_AUTHORIZATION, CGIPassAuth On) ...
    r = gw.post("/api/chat", chat_body(user_id="alice"), headers={"Authorization": f"Bearer {key}"})
    assert r.status == 200, (r, gw.error_log())
    # ... and api-key (HTTP_API_KEY), on both routes.
    r = gw.post(AZ, chat(), headers={"api-key": key})
    assert r.status == 200, r
    rows = gw.audit_rows()
    assert [row["user_id"] for row in rows] == ["alice", "alice"], rows
    assert all(row["status"] == "success" for row in rows), rows
    # No credential, and a wrong one: aigw's own 401s.
    r = gw.post("/api/chat", chat_body(user_id="alice"))
    assert r.status == 401 and r.headers["www-authenticate"].startswith("Bearer"), r
    is_openai_error(r)
    for headers in ({"Authorization": "Bearer aigw_x_y"}, {"api-key": "aigw_x_y"}):
        r = gw.post("/api/chat", chat_body(user_id="alice"), headers=headers)
        assert r.status == 401, (headers, r)
        is_openai_error(r, "invalid_api_key")


def raw_request(port, head, body=b"", timeout=30):
    """Sends head (and body) as is, returns (status, headers dict, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + body)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head_raw, _, rest = data.partition(b"\r\n\r\n")
    lines = head_raw.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        rest = out
    return int(lines[0].split()[1]), headers, rest


def test_oversized_bodies_get_json_413(make_gateway, mocks):
    gw = make_gateway(server=SERVER)
    # Over aigw's limit (1 MiB): aigw's own 413.
    r = gw.post("/api/chat", json.dumps(chat_body("x" * (2 << 20))), headers={"Content-Type": "application/json"})
    assert r.status == 413, r
    is_openai_error(r, "body_too_large")
    assert r.headers.get("x-request-id"), r.headers
    # Over Apache's LimitRequestBody (8 MiB): Apache's 413 from the ErrorDocument,
    # sent before any of the body is read or passed on.
    head = (f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {9 << 20}\r\nConnection: close\r\n\r\n").encode()
    status, headers, body = raw_request(gw.port, head)
    assert status == 413, (status, headers, body)
    assert headers["content-type"].startswith("application/json"), headers
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert "x-request-id" not in headers  # Apache's answer: aigw never saw it
    # A chunked body (no Content-Length) over aigw's limit: aigw reads the
    # stream and stops at its limit.
    big = json.dumps(chat_body("y" * (2 << 20))).encode()
    head = (b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    status, headers, body = raw_request(gw.port, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
    assert status == 413, (status, headers, body)
    assert json.loads(body)["error"]["code"] == "body_too_large"
    # A small chunked body is passed on whole.
    small = json.dumps(chat_body("chunked hello")).encode()
    status, headers, body = raw_request(gw.port, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
    assert status == 200, (status, headers, body, gw.error_log())
    assert mocks["east"].stats()["last_body"]["messages"][0]["content"] == "chunked hello"
    # Afterwards the gateway answers normally.
    assert gw.post("/api/chat", chat_body()).status == 200


def test_stopped_aigw_serve_gets_json_503_and_recovers_at_once(make_gateway, mocks):
    gw = make_gateway(server=SERVER)
    assert gw.post("/api/chat", chat_body()).status == 200
    serve = gw.proc.serve
    serve.send_signal(signal.SIGTERM)
    serve.wait(15)
    for _ in range(2):
        r = gw.post("/api/chat", chat_body())
        assert r.status == 503, r
        is_openai_error(r, "backend_unavailable")
        assert r.headers.get("retry-after") == "5", r.headers
        assert "x-request-id" not in r.headers  # Apache's answer, not aigw's
    # Back as soon as aigw is (retry=0: no minute of 503s after a restart).
    servers.restart_serve(gw, gw.proc)
    r = gw.post("/api/chat", chat_body())
    assert r.status == 200, (r, gw.error_log())


def headers_of(gw, path, body):
    """POST; returns (status, [(name, value)] with repeated headers kept)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, resp.getheaders()


def test_aigw_own_503_keeps_its_retry_after(make_gateway, mocks):
    gw = make_gateway(server=SERVER, retry={"max_attempts": 1},
                      circuit_breaker={"failure_threshold": 1, "recovery_timeout_s": 30})
    mocks["east"].set(mode="500")
    assert gw.post("/api/chat", chat_body()).status == 502   # aigw's; opens the breaker
    status, headers = headers_of(gw, "/api/chat", chat_body())
    assert status == 503, headers
    assert [v for k, v in headers if k.lower() == "retry-after"] == ["30"], headers
    assert any(k.lower() == "x-request-id" for k, _ in headers), headers


def test_worker_dying_mid_request_gets_json_503(make_gateway, mocks):
    gw = make_gateway(server=SERVER, workers=1)
    mocks["east"].set(latency_s=3)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        t0 = time.time()
        fut = ex.submit(gw.post, "/api/chat", chat_body(), None, 20)
        time.sleep(0.5)  # the request is waiting for the model in the worker
        for pid in gw.serve_workers():
            os.kill(pid, signal.SIGKILL)
        r = fut.result()
    assert r.status == 503 and time.time() - t0 < 2.5, r
    is_openai_error(r, "backend_unavailable")
    # aigw serve replaces the worker; Apache uses it at once.
    mocks["east"].set(latency_s=0)
    deadline = time.time() + 10
    while time.time() < deadline:
        r = gw.post("/api/chat", chat_body())
        if r.status == 200:
            break
        time.sleep(0.2)
    assert r.status == 200, (r, gw.error_log())


def slow_requests(gw, n, timeout=60):
    """n parallel POST /api/chat; returns ([status], seconds for all)."""
    def one(i):
        return gw.post("/api/chat", chat_body(f"slow {i}"), timeout=timeout).status
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        statuses = list(ex.map(one, range(n)))
    return statuses, time.time() - t0


def test_requests_beyond_the_workers_queue_and_all_complete(make_gateway, mocks):
    """More requests at once than aigw has workers: none is refused or times
    out (a worker that takes one request at a time leaves the others waiting
    in the socket's queue; a threaded one takes them all)."""
    gw = make_gateway(server=SERVER, workers=1)
    mocks["east"].set(latency_s=0.3)
    statuses, _ = slow_requests(gw, 16)
    assert statuses == [200] * 16, (statuses, gw.error_log())
    rows = gw.audit_rows()
    assert len(rows) == 16 and all(r["status"] == "success" for r in rows), rows


def test_one_worker_serves_sixteen_slow_requests_at_once(make_gateway, mocks):
    """A worker serves many requests at once (threads): through Apache's
    threads and one aigw worker, 16 model calls of 1 s take about 1 s."""
    gw = make_gateway(server=SERVER, workers=1)
    mocks["east"].set(latency_s=1)
    statuses, elapsed = slow_requests(gw, 16)
    assert statuses == [200] * 16, (statuses, gw.error_log())
    assert elapsed < 4, f"16 requests of 1 s took {elapsed:.1f} s through one aigw worker"
    assert mocks["east"].stats()["max_in_flight"] >= 8

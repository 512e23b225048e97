"""Hostile input through lighttpd: every attack gets a clear 4xx, no worker dies, nothing leaks.

After each attack the database holds exactly what policy says (an audit row
for a refused request past authentication, nothing else) and the workers that
served before the attack still serve after it.
"""
import json
import socket
import time

import pytest

from conftest import chat_body

SQLI = "x'); DROP TABLE audit_log; --"


@pytest.fixture
def gw(make_gateway, mocks):
    g = make_gateway(workers=2, auth={"enabled": True})
    g.cli("user", "add", "mallory")
    g.key = g.cli("key", "create", "mallory").stdout.strip()
    g.h = {"api-key": g.key, "Content-Type": "application/json"}
    g.pids_before = sorted(g.worker_pids())
    return g


def assert_unharmed(gw, mocks, backend_calls=0):
    """Workers alive (same processes), no backend call, tables intact, traffic still served."""
    assert sorted(gw.worker_pids()) == gw.pids_before
    assert mocks["east"].stats()["requests"] == backend_calls
    tables = {r["name"] for r in gw.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"audit_log", "users", "api_keys", "budget_usage"} <= tables
    assert gw.query("SELECT count(*) AS n FROM audit_log WHERE status NOT IN ('refused')")[0]["n"] == 0
    r = gw.post("/api/chat", chat_body(user_id="mallory"), headers=gw.h)
    assert r.status == 200, r


def raw(gw, path, data, headers):
    return gw.post(path, data, headers=headers)


BODIES = {
    "truncated": b'{"messages": [{"role": "user", "content": "hel',
    "not utf-8": b'{"messages": [{"role": "user", "content": "\xc3\x28"}], "user_id": "mallory"}',
    "overlong utf-8": b'{"messages": [{"role": "user", "content": "\xc0\xaf"}], "user_id": "mallory"}',
    "nested 10000 deep": b'{"messages": ' + b"[" * 10000 + b"]" * 10000 + b"}",
    "objects nested 10000 deep": b'{"a":' * 10000 + b"1" + b"}" * 10000,
    "raw NUL": b'{"messages": [{"role": "user", "content": "a\x00b"}], "user_id": "mallory"}',
    "escaped NUL in key": b'{"messages\\u0000": [], "user_id": "mallory"}',
    "duplicate keys": b'{"messages": [], "messages": [{"role": "user", "content": "x"}], "user_id": "mallory"}',
    "duplicate keys via escapes": b'{"user_id": "a", "user\\u005fid": "b", "messages": []}',
    "trailing garbage": json.dumps(chat_body(user_id="mallory")).encode() + b" {}",
    "bare string": b'"hello"',
    "infinity": b'{"temperature": Infinity}',
    "leading zeros": b'{"max_tokens": 0100}',
    "BOM": b"\xef\xbb\xbf" + json.dumps(chat_body(user_id="mallory")).encode(),
    "lone low surrogate": b'{"messages": [{"role": "user", "content": "\\udc00"}], "user_id": "mallory"}',
    "control char in string": b'{"messages": [{"role": "user", "content": "a\x01b"}], "user_id": "mallory"}',
}


@pytest.mark.parametrize("name", list(BODIES))
def test_malformed_bodies_get_400_invalid_json(gw, mocks, name):
    r = raw(gw, "/api/chat", BODIES[name], gw.h)
    assert r.status == 400, (name, r)
    err = r.json()["error"]
    assert err["code"] == "invalid_json" and err["message"]
    assert_unharmed(gw, mocks)


VALUES = {
    "max_tokens huge": (dict(max_tokens=10 ** 30), "max_tokens"),
    "max_tokens negative": (dict(max_tokens=-1), "max_tokens"),
    "max_tokens string": (dict(max_tokens="100"), "max_tokens"),
    "max_tokens bool": (dict(max_tokens=True), "max_tokens"),
    "temperature overflow": (dict(temperature=1e308 * 10), "temperature"),
    "temperature null is default": None,
    "messages a string": (dict(messages="hi"), "messages"),
    "messages an object": (dict(messages={"role": "user"}), "messages"),
    "message a string": (dict(messages=["hi"]), "messages[0]"),
    "role a number": (dict(messages=[{"role": 1, "content": "x"}]), "messages[0].role"),
    "content an object": (dict(messages=[{"role": "user", "content": {"a": 1}}]), "messages[0].content"),
    "user_id an array": (dict(user_id=["mallory"]), "user_id"),
    "user_id with newline": (dict(user_id="mal\nlory"), "user_id"),
    "user_id 257 chars": (dict(user_id="m" * 257), "user_id"),
    "model a number": (dict(model=4), "model"),
}


@pytest.mark.parametrize("name", [k for k, v in VALUES.items() if v])
def test_wrong_types_and_out_of_range_values_name_the_field(gw, mocks, name):
    fields, param = VALUES[name]
    body = chat_body(user_id="mallory")
    body.update(fields)
    data = json.dumps(body).replace("Infinity", "1e999").encode()
    r = raw(gw, "/api/chat", data, gw.h)
    assert r.status in (400, 403), (name, r)
    err = r.json()["error"]
    assert err["param"] == param, err
    assert_unharmed(gw, mocks)


def test_sql_metacharacters_are_data(gw, mocks):
    body = chat_body(SQLI, user_id="mallory", model=SQLI)
    r = gw.post("/api/chat", body, headers=gw.h)
    assert r.status == 404 and SQLI in r.json()["error"]["message"]
    r = gw.post("/api/chat", chat_body(SQLI, user_id="mallory"), headers=gw.h)
    assert r.status == 200
    rows = gw.audit_rows()
    assert any(SQLI in (row["request_body"] or "") for row in rows)
    r = gw.post("/api/chat", chat_body(user_id=SQLI), headers=gw.h)
    assert r.status == 403  # not the caller, and stored verbatim, never executed
    r = gw.cli("user", "add", SQLI)
    assert SQLI in gw.cli("user", "list").stdout
    r = gw.post("/api/chat", chat_body(), headers={"api-key": "aigw_' OR 1=1 --"})
    assert r.status == 401
    assert gw.query("SELECT count(*) AS n FROM users")[0]["n"] == 2


@pytest.mark.parametrize("path", [
    "/openai/deployments/..%2f..%2fetc/chat/completions?api-version=1",
    "/openai/deployments/%2e%2e/chat/completions?api-version=1",
    "/openai/deployments/gpt-4o%00/chat/completions?api-version=1",
    "/openai/deployments/gpt%2D4o%20x/chat/completions?api-version=1",
    "/openai/deployments//chat/completions?api-version=1",
    "/openai/deployments/" + "a" * 500 + "/chat/completions?api-version=1",
    "/api/chat/",
    "/API/CHAT",
    "/api/chat%00",
    "/v1/chat/completions/../../../etc/passwd",
])
def test_path_tricks_are_404_and_reach_no_backend(gw, mocks, path):
    r = gw.post(path, chat_body(user_id="mallory"), headers=gw.h)
    assert r.status in (400, 404), (path, r)
    assert_unharmed(gw, mocks)


@pytest.mark.parametrize("version", ["2024-10-21%26x%3Dy", "2024-10-21%23frag", "..%2f..%2f", "a" * 80, "v%20"])
def test_api_version_cannot_inject_into_the_backend_url(gw, mocks, version):
    r = gw.post(f"/openai/deployments/gpt-4o/chat/completions?api-version={version}",
                chat_body(user_id="mallory"), headers=gw.h)
    assert r.status == 400, r
    assert r.json()["error"]["param"] == "api-version"
    assert_unharmed(gw, mocks)


def test_repeated_and_conflicting_credentials_are_400(gw, mocks):
    s = socket.create_connection(("127.0.0.1", gw.port))
    body = json.dumps(chat_body(user_id="mallory")).encode()
    s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"api-key: " + gw.key.encode() + b"\r\napi-key: " + gw.key.encode() + b"\r\n"
              b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    resp = b""
    while chunk := s.recv(65536):
        resp += chunk
    s.close()
    assert resp.startswith(b"HTTP/1.1 400"), resp[:200]
    assert_unharmed(gw, mocks)


def raw_exchange(port, data):
    """Sends raw bytes, returns (status, headers dict, body) of the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    resp = b""
    try:
        while chunk := s.recv(65536):
            resp += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            n = int(size.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out, body = out + rest[:n], rest[n + 2:]
        body = out
    return status, headers, body


@pytest.mark.parametrize("server", ["lighttpd", "nginx", "apache_proxy_fcgi"])
@pytest.mark.parametrize("header", ["api-key", "Authorization"])
def test_a_credential_sent_twice_is_400_through_every_server(make_gateway, mocks, server, header):
    """nginx passes both copies as two parameters of one name; lighttpd and
    Apache join them. Either way the request is refused, whichever copy is
    the good one."""
    g = make_gateway(server=server, workers=2, auth={"enabled": True})
    g.cli("user", "add", "mallory")
    key = g.cli("key", "create", "mallory").stdout.strip()
    good = key if header == "api-key" else f"Bearer {key}"
    body = json.dumps(chat_body(user_id="mallory")).encode()
    for first, second in ((good, good), (good, "nope"), ("nope", good)):
        status, _, answer = raw_exchange(
            g.port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"{header}: {first}\r\n{header}: {second}\r\n".encode()
            + b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)
        assert status == 400, (server, header, status, answer[:300])
        err = json.loads(answer)["error"]
        # aigw names the header; nginx refuses a second Authorization itself.
        assert err["param"] == header or (server == "nginx" and header == "Authorization"
                                          and err["code"] == "bad_request"), err
    assert mocks["east"].stats()["requests"] == 0
    r = g.post("/api/chat", chat_body(user_id="mallory"), headers={header: good})
    assert r.status == 200, r


NGINX_REFUSALS = {
    "64 KiB header": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 65536
                      + b"\r\nContent-Length: 0\r\n\r\n", (400, 431)),
    "16 KiB Authorization": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                             + b"a" * 16384 + b"\r\nContent-Length: 0\r\n\r\n", (400, 431)),
    "NUL in a header": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n"
                        b"Content-Length: 0\r\n\r\n", (400,)),
    "path above the root": (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "conflicting Content-Length": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello", (400,)),
    "8 KiB deployment name": (b"POST /openai/deployments/" + b"d" * 8192
                              + b"/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                              (414,)),
    "HTTP/0.9-ish garbage": (b"\x16\x03\x01 hello\r\n\r\n", (400,)),
}


LIGHTTPD_REFUSALS = {
    "body over max-request-size": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: application/json\r\nContent-Length: 9000000\r\n\r\n{",
                                   (413,)),
    "64 KiB header": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 65536
                      + b"\r\nContent-Length: 0\r\n\r\n", (431,)),
    "garbage request line": (b"\x16\x03\x01 hello\r\n\r\n", (400,)),
    "conflicting Content-Length": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello", (400,)),
    "NUL in a header": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n"
                        b"Content-Length: 0\r\n\r\n", (400,)),
}


APACHE_REFUSALS = {
    "64 KiB header": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 65536
                      + b"\r\nContent-Length: 0\r\n\r\n", (400, 431)),
    "garbage request line": (b"\x16\x03\x01 hello\r\n\r\n", (400,)),
    "conflicting Content-Length": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello", (400,)),
    "path above the root": (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "16 KiB URI": (b"GET /v1/" + b"u" * 16384 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414,)),
}


SERVER_REFUSALS = [(server, case, *cases[case]) for server, cases in (
    ("nginx", NGINX_REFUSALS), ("lighttpd", LIGHTTPD_REFUSALS), ("apache", APACHE_REFUSALS),
    ("apache_proxy_fcgi", APACHE_REFUSALS)) for case in sorted(cases)]


@pytest.mark.parametrize("server,case,data,statuses", SERVER_REFUSALS,
                         ids=[f"{s}-{c}" for s, c, _, _ in SERVER_REFUSALS])
def test_what_the_web_server_refuses_itself_is_openai_shaped_json(make_gateway, mocks, server, case,
                                                                  data, statuses):
    g = make_gateway(server=server, workers=1)
    status, headers, body = raw_exchange(g.port, data)
    assert status in statuses, (case, status, body[:200])
    assert headers.get("content-type", "").startswith("application/json"), (case, headers, body[:200])
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and err["code"] and err["message"], err
    assert mocks["east"].stats()["requests"] == 0
    r = g.post("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200, r


def test_oversized_headers_are_refused_by_the_server(gw, mocks):
    r = gw.post("/api/chat", chat_body(user_id="mallory"), headers=dict(gw.h, **{"X-Junk": "j" * 70000}))
    assert 400 <= r.status < 500
    assert_unharmed(gw, mocks)


def test_slow_bodies_do_not_starve_the_workers(gw, mocks):
    """Slowloris: many connections trickling a body; real requests still get answered."""
    socks = []
    for _ in range(30):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"api-key: " + gw.key.encode() + b"\r\nContent-Length: 100000\r\n\r\n{\"messages\": [")
        socks.append(s)
    t0 = time.time()
    for _ in range(5):
        r = gw.post("/api/chat", chat_body(user_id="mallory"), headers=gw.h)
        assert r.status == 200
    assert time.time() - t0 < 3
    for s in socks:
        s.close()
    assert sorted(gw.worker_pids()) == gw.pids_before


@pytest.mark.parametrize("token", [
    "e30.e30.",                          # {} . {} with no signature
    "eyJhbGciOiJub25lIn0.e30.",          # alg none
    "eyJhbGciOiJIUzI1NiJ9." + "A" * 5000 + ".sig",
    "a.b.c.d.e",
    "\u00e9\u00e9.\u00e9\u00e9.\u00e9\u00e9",
    "eyJhbGciOiJIUzI1NiIsImtpZCI6WzEsMl19.e30.x",  # kid is an array
])
def test_crafted_tokens_are_401(gw, mocks, token):
    r = gw.post("/api/chat", chat_body(user_id="mallory"),
                headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    assert r.status == 401, r
    assert_unharmed(gw, mocks)


def test_unauthenticated_junk_writes_nothing(gw, mocks):
    before = gw.query("SELECT count(*) AS n FROM audit_log")[0]["n"]
    for body in BODIES.values():
        assert gw.post("/api/chat", body, headers={"Content-Type": "application/json"}).status == 401
    assert gw.query("SELECT count(*) AS n FROM audit_log")[0]["n"] == before

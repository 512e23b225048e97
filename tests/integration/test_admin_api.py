"""The admin API (/admin/api/) and the dashboard's files, through a real web server.

Every endpoint of docs/ADMIN_API.md; who may call it (401 without a
credential, 403 without the admin role, never without authentication); the
audit row of every change; reports equal to `aigw report`'s; and the headers
that keep answers out of caches and the page under a strict policy.
"""
import http.client as http_client
import json
import os
import re
import urllib.parse

import pytest

import tokens
from conftest import backend_config, chat_body, http

SECRET = "an-hs256-secret-of-at-least-32-bytes!!"
ISS = "https://login.example.test/tenant/v2.0"
AUD = "api://aigw"
XSS_USER = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def new_key(gw, user, *options):
    gw.cli("user", "add", user, *options)
    return gw.cli("key", "create", user).stdout.strip()


@pytest.fixture
def gw(make_gateway, mocks, tmp_path):
    secret = os.path.join(str(tmp_path), "hs256.secret")
    with open(secret, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(secret, 0o600)
    auth = {"enabled": True,
            "jwt": {"issuer": ISS, "audience": AUD, "hs256_secret": f"file:{secret}", "leeway_s": 30}}
    g = make_gateway(backends=[backend_config(mocks["east"], 1), backend_config(mocks["west"], 2)],
                     auth=auth)
    g.admin = bearer(new_key(g, "ops", "--roles", "AI.Admin"))
    g.alice = bearer(new_key(g, "alice"))
    return g


def api(gw, method, path, body=None, headers=None):
    hdrs = dict(gw.admin if headers is None else headers)
    return http(method, gw.url + "/admin/api/" + path, body, hdrs)


def admin_rows(gw):
    return gw.query("SELECT user_id, status, http_status, request_body FROM audit_log"
                    " WHERE operation = 'admin' ORDER BY id")


# --- who may call it -------------------------------------------------------------


def test_no_credential_is_401_and_says_how_to_send_one(gw):
    for path in ("me", "users", "no/such/endpoint"):
        r = api(gw, "GET", path, headers={})
        assert r.status == 401, r
        assert r.json()["error"]["code"] == "invalid_token"
        assert "www-authenticate" in r.headers
        assert r.headers["cache-control"] == "no-store"
    r = api(gw, "GET", "me", headers=bearer("aigw_not-a-key-that-exists-anywhere-at-all-0000"))
    assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key", r


def test_a_key_without_the_admin_role_is_403_and_the_refusal_is_audited(gw):
    r = api(gw, "GET", "users", headers=gw.alice)
    assert r.status == 403, r
    err = r.json()["error"]
    assert err["code"] == "forbidden" and "AI.Admin" in err["message"]
    assert r.headers["cache-control"] == "no-store"
    assert b"ops" not in r.body  # no data
    rows = gw.query("SELECT user_id, operation, status, error_code FROM audit_log WHERE user_id = 'alice'")
    assert rows == [{"user_id": "alice", "operation": "admin", "status": "refused", "error_code": "forbidden"}]


def test_jwt_roles_decide_too_and_required_roles_do_not_apply(gw):
    admin = tokens.hs256(tokens.claims(sub="carol", roles=["AI.Admin"]), SECRET)
    user = tokens.hs256(tokens.claims(sub="dave", roles=["AI.User"]), SECRET)
    r = api(gw, "GET", "me", headers=bearer(admin))
    assert r.status == 200, r
    assert r.json() == {"user_id": "carol", "roles": "AI.Admin", "via": "jwt"}
    assert api(gw, "GET", "me", headers=bearer(user)).status == 403
    # The admin role alone is not a model user's: the model routes still want AI.User.
    assert gw.post("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                   headers=bearer(admin)).status == 403


def test_admin_role_is_configurable(make_gateway, mocks):
    g = make_gateway(auth={"enabled": True, "admin_role": "Gateway.Operator"})
    key = bearer(new_key(g, "root", "--roles", "AI.Admin"))
    op = bearer(new_key(g, "op", "--roles", "Gateway.Operator"))
    assert http("GET", g.url + "/admin/api/me", headers=key).status == 403
    assert http("GET", g.url + "/admin/api/me", headers=op).status == 200


def test_without_authentication_the_admin_api_answers_no_one(gateway):
    r = http("GET", gateway.url + "/admin/api/users")
    assert r.status == 403, r
    assert "auth.enabled" in r.json()["error"]["message"]


def test_unknown_paths_and_methods_after_authentication(gw):
    r = api(gw, "GET", "nothing-here")
    assert r.status == 404 and r.json()["error"]["code"] == "not_found"
    r = api(gw, "DELETE", "users")
    assert r.status == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert api(gw, "GET", "reports/nonsense").status == 404


# --- users -------------------------------------------------------------------------


def test_users_are_created_listed_and_changed(gw):
    r = api(gw, "POST", "users", {"user_id": "bob", "token_budget": 500, "budget_period": "month"})
    assert r.status == 201, r
    bob = r.json()
    assert bob["user_id"] == "bob" and bob["roles"] == "AI.User"
    assert bob["token_budget"] == 500 and bob["budget_period"] == "month"
    assert bob["custom"]["token_budget"] and not bob["custom"]["requests_per_window"]
    assert bob["requests_per_window"] == 100000  # the configuration's default, in force
    assert bob["budget_used"] == 0 and bob["budget_remaining"] == 500 and bob["disabled"] is False

    assert api(gw, "POST", "users", {"user_id": "bob"}).json()["error"]["code"] == "already_exists"

    r = api(gw, "PATCH", "users", {"user_id": "bob", "requests_per_window": 7, "token_budget": None})
    assert r.status == 200, r
    assert r.json()["requests_per_window"] == 7 and r.json()["custom"]["token_budget"] is False
    assert r.json()["budget_period"] == "month"  # untouched fields stay

    users = {u["user_id"]: u for u in api(gw, "GET", "users").json()["users"]}
    assert set(users) == {"ops", "alice", "bob"}
    assert users["bob"]["requests_per_window"] == 7
    # The CLI sees the same row.
    line = [l for l in gw.cli("user", "list").stdout.splitlines() if l.startswith("bob\t")][0]
    assert line.split("\t")[2] == "7"


def test_disabling_a_user_takes_effect_at_once_and_enabling_restores_it(gw):
    assert gw.post("/api/chat", chat_body(), headers=gw.alice).status == 200
    r = api(gw, "PATCH", "users", {"user_id": "alice", "disabled": True})
    assert r.status == 200 and r.json()["disabled"] is True
    r = gw.post("/api/chat", chat_body(), headers=gw.alice)
    assert r.status == 401 and "disabled" in r.json()["error"]["message"]
    api(gw, "PATCH", "users", {"user_id": "alice", "disabled": False})
    assert gw.post("/api/chat", chat_body(), headers=gw.alice).status == 200


def test_bad_user_bodies_name_the_field_and_change_nothing(gw):
    before = gw.dump_text()
    cases = [
        ("POST", "not json", "invalid_json", None),
        ("POST", [1, 2], "invalid_json", None),
        ("POST", {}, "missing_field", "user_id"),
        ("POST", {"user_id": ""}, "invalid_value", "user_id"),
        ("POST", {"user_id": "x" * 257}, "invalid_value", "user_id"),
        ("POST", {"user_id": "a\nb"}, "invalid_value", "user_id"),
        ("POST", {"user_id": "e", "token_budget": -1}, "invalid_value", "token_budget"),
        ("POST", {"user_id": "e", "token_budget": "10"}, "invalid_value", "token_budget"),
        ("POST", {"user_id": "e", "budget_period": "week"}, "invalid_value", "budget_period"),
        ("POST", {"user_id": "e", "disabled": True}, "invalid_value", "disabled"),
        ("POST", {"user_id": "e", "colour": "red"}, "invalid_value", "colour"),
        ("PATCH", {"user_id": "nobody", "token_budget": 5}, "not_found", None),
        ("PATCH", {"user_id": "alice", "disabled": "yes"}, "invalid_value", "disabled"),
    ]
    for method, body, code, param in cases:
        r = api(gw, method, "users", body if not isinstance(body, str) else body,
                headers={**gw.admin, "Content-Type": "application/json"})
        assert r.json()["error"]["code"] == code, (body, r)
        if param:
            assert r.json()["error"]["param"] == param, (body, r)
    assert gw.dump_text().replace("\n", "").count("INSERT INTO users") == before.replace("\n", "").count(
        "INSERT INTO users")
    assert [r["request_body"] for r in admin_rows(gw)] == []


def test_a_user_id_of_any_printable_text_round_trips(gw):
    r = api(gw, "POST", "users", {"user_id": XSS_USER})
    assert r.status == 201, r
    assert r.json()["user_id"] == XSS_USER
    r = api(gw, "POST", "keys", {"user_id": XSS_USER})
    assert r.status == 201
    keys = api(gw, "GET", "keys?user=" + urllib.parse.quote(XSS_USER, safe="")).json()["keys"]
    assert [k["user_id"] for k in keys] == [XSS_USER]
    assert XSS_USER in [u["user_id"] for u in api(gw, "GET", "users").json()["users"]]


# --- keys ----------------------------------------------------------------------------


def test_a_created_key_works_is_shown_once_and_revoking_it_ends_it(gw):
    r = api(gw, "POST", "keys", {"user_id": "alice", "expires_in": "30d"})
    assert r.status == 201, r
    made = r.json()
    key, key_id = made["key"], made["key_id"]
    assert key.startswith("aigw_") and made["user_id"] == "alice" and made["expires"]
    assert gw.post("/api/chat", chat_body(), headers=bearer(key)).status == 200

    listed = api(gw, "GET", "keys?user=alice").json()["keys"]
    assert key_id in [k["key_id"] for k in listed]
    assert key not in json.dumps(listed)
    # The key's text is nowhere in the database, the audit row included.
    assert key not in gw.dump_text()
    assert key_id in admin_rows(gw)[-1]["request_body"]

    r = api(gw, "DELETE", "keys/" + key_id)
    assert r.status == 200 and r.json()["key_id"] == key_id and r.json()["revoked"]
    r = gw.post("/api/chat", chat_body(), headers=bearer(key))
    assert r.status == 401, r
    assert api(gw, "DELETE", "keys/" + key_id).json()["error"]["code"] == "not_found"


def test_keys_for_unknown_users_and_bad_durations_are_refused(gw):
    assert api(gw, "POST", "keys", {"user_id": "ghost"}).json()["error"]["code"] == "not_found"
    r = api(gw, "POST", "keys", {"user_id": "alice", "expires_in": "soon"})
    assert r.status == 400 and r.json()["error"]["param"] == "expires_in"
    assert api(gw, "POST", "keys", {"expires_in": "1d"}).json()["error"]["param"] == "user_id"


# --- breakers ---------------------------------------------------------------------------


def test_breakers_are_shown_and_reset(gw, mocks):
    mocks["east"].set(mode="500")
    for _ in range(6):
        gw.post("/api/chat", chat_body(), headers=gw.alice)
    states = {b["name"]: b for b in api(gw, "GET", "breakers").json()["backends"]}
    assert states["east"]["state"] == "open" and states["east"]["open_until"], states
    assert states["west"]["state"] == "closed" and states["west"]["open_until"] is None
    assert states["east"]["priority"] == 1 and states["east"]["failures"] >= 5
    r = api(gw, "POST", "breakers/east/reset", {})
    assert r.status == 200 and r.json() == {"name": "east", "state": "closed"}
    assert {b["name"]: b["state"] for b in api(gw, "GET", "breakers").json()["backends"]}["east"] == "closed"
    assert "closed" in [l for l in gw.cli("backend", "status").stdout.splitlines() if l.startswith("east")][0]
    assert api(gw, "POST", "breakers/nowhere/reset", {}).status == 404
    assert api(gw, "POST", "breakers/east/open", {}).status == 404


# --- every change audited ------------------------------------------------------------------


def test_every_change_writes_one_audit_row_naming_the_admin(gw):
    api(gw, "POST", "users", {"user_id": "erin", "token_budget": 9})
    api(gw, "PATCH", "users", {"user_id": "erin", "disabled": True})
    key_id = api(gw, "POST", "keys", {"user_id": "erin"}).json()["key_id"]
    api(gw, "DELETE", "keys/" + key_id)
    api(gw, "POST", "breakers/west/reset", {})
    api(gw, "GET", "users")  # reads are not changes
    rows = admin_rows(gw)
    assert [r["user_id"] for r in rows] == ["ops"] * 5
    assert all(r["status"] == "success" for r in rows)
    detail = [json.loads(r["request_body"]) for r in rows]
    assert [(d["action"], d["target"]) for d in detail] == [
        ("user.create", "erin"), ("user.update", "erin"), ("key.create", "erin"),
        ("key.revoke", key_id), ("breaker.reset", "west")]
    assert detail[0]["changes"]["token_budget"] == 9
    assert [r["http_status"] for r in rows] == [201, 200, 201, 200, 200]


# --- reports and audit rows ------------------------------------------------------------------


def seed_traffic(gw, mocks):
    gw.cli("user", "add", "limited", "--requests", "1", "--window", "3600")
    limited = bearer(gw.cli("key", "create", "limited").stdout.strip())
    for _ in range(3):
        assert gw.post("/api/chat", chat_body(), headers=gw.alice).status == 200
    for _ in range(3):
        gw.post("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
                headers=limited)
    mocks["east"].set(mode="500", fail_count=1)
    assert gw.post("/api/chat", chat_body(), headers=gw.alice).status == 200  # fails over to west


def test_reports_equal_the_cli_reports(gw, mocks):
    seed_traffic(gw, mocks)
    for name in ("usage", "budget", "errors", "latency", "failovers", "refusals", "traffic"):
        cli = json.loads(gw.cli("report", name, "--since", "86400", "--format", "json").stdout)
        r = api(gw, "GET", f"reports/{name}?since=86400")
        assert r.status == 200, r
        got = r.json()
        assert got["report"] == name and got["since_s"] == 86400
        assert got["rows"] == cli, name
        assert got["total_rows"] == len(cli) and got["truncated"] is False
        if cli:
            assert got["columns"] == list(cli[0].keys())
    traffic = api(gw, "GET", "reports/traffic?since=3600").json()["rows"]
    usage = api(gw, "GET", "reports/usage?since=86400").json()["rows"]
    assert sum(t["requests"] for t in traffic) == sum(u["requests"] for u in usage) == 7
    assert sum(t["refused"] for t in traffic) == 2
    refusals = api(gw, "GET", "reports/refusals").json()["rows"]
    assert refusals == [{"reason": "rate_limit_exceeded", "refused": 2, "last_seen": refusals[0]["last_seen"]}]
    assert len(api(gw, "GET", "reports/failovers").json()["rows"]) == 1
    # A long report keeps its newest rows, and says it was cut.
    cut = api(gw, "GET", "reports/usage?since=86400&limit=1").json()
    assert cut["rows"] == usage[-1:] and cut["total_rows"] == len(usage) and cut["truncated"] is True
    assert api(gw, "GET", "reports/usage?limit=0").json()["error"]["param"] == "limit"
    assert api(gw, "GET", "reports/usage?since=-1").status == 400
    assert api(gw, "GET", "reports/usage?since=ten").json()["error"]["param"] == "since"


def test_recent_audit_rows_newest_first_with_filters(gw, mocks):
    seed_traffic(gw, mocks)
    rows = api(gw, "GET", "audit").json()["rows"]
    assert len(rows) == 7
    assert [r["ts_ms"] for r in rows] == sorted((r["ts_ms"] for r in rows), reverse=True)
    first = rows[0]
    assert set(first) >= {"request_id", "time", "user_id", "operation", "model", "backend", "status",
                          "http_status", "total_tokens", "latency_ms", "error_code"}
    limited = api(gw, "GET", "audit?user=limited").json()["rows"]
    assert [r["status"] for r in limited].count("refused") == 2 and {r["user_id"] for r in limited} == {"limited"}
    one = api(gw, "GET", "audit?request_id=" + rows[3]["request_id"]).json()["rows"]
    assert one == [rows[3]]
    assert len(api(gw, "GET", "audit?limit=2").json()["rows"]) == 2
    assert api(gw, "GET", "audit?limit=501").json()["error"]["param"] == "limit"
    assert api(gw, "GET", "audit?limit=0").json()["error"]["param"] == "limit"
    r = api(gw, "GET", "audit?user=" + "x" * 300)
    assert r.status == 400 and r.json()["error"]["param"] == "user", r
    assert api(gw, "GET", "audit?user=nobody").json()["rows"] == []


# --- the dashboard's files ------------------------------------------------------------------


def test_the_dashboard_is_served_with_a_strict_policy_and_needs_no_credential(gw):
    page = http("GET", gw.url + "/dashboard")
    assert page.status == 200, page
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                      "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.body.decode()
    assert "<script src=" in html and "http://" not in html and "https://" not in html
    js = http("GET", gw.url + "/dashboard/app.js")
    css = http("GET", gw.url + "/dashboard/app.css")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    # Data goes into the page as text only (comments may name what is avoided).
    code = re.sub(rb"/\*.*?\*/|//[^\n]*", b"", js.body, flags=re.S)
    assert not re.search(rb"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|\beval\(", code)
    assert http("GET", gw.url + "/dashboard/other.js").status == 404
    assert http("POST", gw.url + "/dashboard", {}).status == 405
    # Nothing of the database is in the page: it asks the API, with a credential.
    assert b"alice" not in page.body + js.body


# --- the shipped web server configurations keep it to operators' addresses -------------------


def get_from(gw, source_ip, path, headers):
    """GET path from a given loopback source address (127.0.0.2 is 'another host' to the server)."""
    conn = http_client.HTTPConnection("127.0.0.1", gw.port, timeout=10, source_address=(source_ip, 0))
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.mark.parametrize("server", ["lighttpd", "nginx", "apache", "apache_proxy_fcgi"])
def test_shipped_configs_serve_the_admin_paths_only_to_this_host(make_gateway, mocks, server):
    g = make_gateway(server=server, auth={"enabled": True})
    admin = bearer(new_key(g, "ops", "--roles", "AI.Admin"))
    for path in ("/admin/api/me", "/dashboard", "/dashboard/app.js"):
        status, body = get_from(g, "127.0.0.2", path, admin)
        assert status == 403, (server, path, body)
        assert json.loads(body)["error"]["code"] == "forbidden"
        assert get_from(g, "127.0.0.1", path, admin)[0] == 200, (server, path)
    # The model routes and the health checks stay open to everyone.
    assert get_from(g, "127.0.0.2", "/healthz", {})[0] == 200

"""Authentication through lighttpd: JWT bearer tokens (HS256, RS256), gateway API keys, roles."""
import concurrent.futures
import http.server
import json
import os
import threading
import time

import pytest

import tokens
from conftest import chat_body

ISS = "https://login.example.test/tenant/v2.0"
AUD = "api://aigw"
SECRET = "an-hs256-secret-of-at-least-32-bytes!!"


@pytest.fixture(scope="module")
def rsa(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("keys"))
    return tokens.RsaKey(d, "key-1"), tokens.RsaKey(d, "key-2")


def jwt_gateway(make_gateway, tmp_path, rsa, hs256=True, **overrides):
    jwks = os.path.join(str(tmp_path), "jwks.json")
    with open(jwks, "w") as f:
        json.dump({"keys": [rsa[0].jwk()]}, f)
    secret = os.path.join(str(tmp_path), "hs256.secret")
    with open(secret, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(secret, 0o600)
    jwt = {"issuer": ISS, "audience": AUD, "jwks_file": jwks, "leeway_s": 30}
    if hs256:
        jwt["hs256_secret"] = f"file:{secret}"
    auth = {"enabled": True, "jwt": jwt}
    auth.update(overrides.pop("auth", {}))
    return make_gateway(auth=auth, **overrides)


@pytest.fixture
def gw(make_gateway, tmp_path, rsa):
    return jwt_gateway(make_gateway, tmp_path, rsa)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_valid_hs256_token_passes(gw, mocks):
    r = gw.post("/api/chat", chat_body(), headers=bearer(tokens.hs256(tokens.claims(), SECRET)))
    assert r.status == 200, r
    row = gw.audit_rows()[0]
    assert row["user_id"] == "alice" and row["status"] == "success"


def test_valid_rs256_token_passes(gw, rsa):
    r = gw.post("/api/chat", chat_body(), headers=bearer(rsa[0].sign(tokens.claims())))
    assert r.status == 200, r


def refused_cases(rsa):
    good = tokens.claims()
    return {
        "expired": rsa[0].sign(tokens.claims(exp_in=-120)),
        "not yet valid": rsa[0].sign(tokens.claims(nbf=int(good["iat"]) + 600)),
        "wrong issuer": rsa[0].sign(tokens.claims(iss="https://evil.example/")),
        "wrong audience": rsa[0].sign(tokens.claims(aud="api://someone-else")),
        "bad signature": rsa[0].sign(good)[:-6] + "AAAAAA",
        "signed by another key": rsa[1].sign(good, header={"kid": "key-1"}),
        "alg none": tokens.encode({"alg": "none", "typ": "JWT"}, good) + ".",
        "HS256 signed with the RSA public key": tokens.hs256(good, rsa[0].public_pem(), header={"kid": "key-1"}),
        "unknown kid": rsa[1].sign(good),
        "missing exp": tokens.hs256({k: v for k, v in good.items() if k != "exp"}, SECRET),
        "exp a string": tokens.hs256(dict(good, exp="tomorrow"), SECRET),
        "garbage": "not.a.jwt",
        "huge": "eyJ" + "a" * 3000 + "." + "b" * 3000 + ".c",
    }


CASES = ["expired", "not yet valid", "wrong issuer", "wrong audience", "bad signature", "signed by another key",
         "alg none", "HS256 signed with the RSA public key", "unknown kid", "missing exp", "exp a string",
         "garbage", "huge"]


@pytest.mark.parametrize("case", CASES)
def test_bad_token_is_refused_with_401(gw, mocks, rsa, case):
    token = refused_cases(rsa)[case]
    r = gw.post("/api/chat", chat_body(), headers=bearer(token))
    assert r.status == 401, (case, r)
    assert r.json()["error"]["code"] == "invalid_token"
    assert r.headers["www-authenticate"].startswith('Bearer realm="aigw", error="invalid_token"')
    assert token not in r.body.decode()
    assert mocks["east"].stats()["requests"] == 0


def test_hs256_confusion_refused_when_only_rsa_keys_are_configured(make_gateway, tmp_path, rsa, mocks):
    gw = jwt_gateway(make_gateway, tmp_path, rsa, hs256=False)
    token = tokens.hs256(tokens.claims(), rsa[0].public_pem(), header={"kid": "key-1"})
    r = gw.post("/api/chat", chat_body(), headers=bearer(token))
    assert r.status == 401
    assert gw.post("/api/chat", chat_body(), headers=bearer(rsa[0].sign(tokens.claims()))).status == 200


def test_missing_role_is_403(gw, mocks):
    r = gw.post("/api/chat", chat_body(), headers=bearer(tokens.hs256(tokens.claims(roles=["Other"]), SECRET)))
    assert r.status == 403, r
    assert r.json()["error"]["code"] == "forbidden"
    assert mocks["east"].stats()["requests"] == 0


def test_missing_credentials_and_both_headers(gw):
    r = gw.post("/api/chat", chat_body())
    assert r.status == 401 and "www-authenticate" in r.headers
    r = gw.post("/api/chat", chat_body(), headers={"Authorization": "Bearer x", "api-key": "aigw_x"})
    assert r.status == 400 and r.json()["error"]["param"] == "Authorization"
    r = gw.post("/api/chat", chat_body(), headers={"Authorization": "Basic YWxpY2U6cHc="})
    assert r.status == 401


def test_user_id_must_match_unless_on_behalf_of(gw, mocks):
    token = tokens.hs256(tokens.claims(sub="alice"), SECRET)
    r = gw.post("/api/chat", chat_body(user_id="bob"), headers=bearer(token))
    assert r.status == 403 and r.json()["error"]["param"] == "user_id"
    app = tokens.hs256(tokens.claims(sub="portal-app", roles=["AI.User", "AI.OnBehalfOf"]), SECRET)
    r = gw.post("/api/chat", chat_body(user_id="bob"), headers=bearer(app))
    assert r.status == 200, r
    row = gw.audit_rows()[-1]
    assert row["user_id"] == "portal-app" and row["end_user"] == "bob"
    # bob's budget carries the usage, not the application's
    used = gw.query("SELECT user_id, used FROM budget_usage")
    assert [u["user_id"] for u in used] == ["bob"]


def test_api_keys_in_both_headers_and_revocation(make_gateway, mocks):
    gw = make_gateway(auth={"enabled": True})
    gw.cli("user", "add", "carol", "--roles", "AI.User")
    key = gw.cli("key", "create", "carol").stdout.strip()
    assert key.startswith("aigw_")
    assert key not in gw.dump_text()
    r = gw.post("/api/chat", chat_body(user_id="carol"), headers={"Authorization": f"Bearer {key}"})
    assert r.status == 200, r
    r = gw.post("/api/chat", chat_body(user_id="carol"), headers={"api-key": key})
    assert r.status == 200, r
    # The client's credential never reaches the backend; the backend's own key does.
    last = mocks["east"].stats()["last_headers"]
    assert "authorization" not in last and last["api-key"] == "key-east-secret"
    key_id = key.split("_")[1]
    assert key_id in gw.cli("key", "list").stdout
    gw.cli("key", "revoke", key_id)
    for h in ({"Authorization": f"Bearer {key}"}, {"api-key": key}):
        r = gw.post("/api/chat", chat_body(user_id="carol"), headers=h)
        assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert "revoked" in r.json()["error"]["message"]


def test_changes_reach_every_worker_at_once_or_within_a_second(make_gateway, mocks):
    """Workers keep keys, users and breakers in memory; aigw's own commands
    make every worker read them again at once, and a change made by another
    program (here Python's sqlite3, as the sqlite3 shell would) is seen within
    a second."""
    gw = make_gateway(auth={"enabled": True})
    gw.cli("user", "add", "erin")
    key = gw.cli("key", "create", "erin").stdout.strip()
    h = {"api-key": key}
    # Warm every worker's cache: many requests land on every process.
    for _ in range(20):
        assert gw.post("/api/chat", chat_body(user_id="erin"), headers=h).status == 200
    gw.cli("user", "disable", "erin")
    for _ in range(20):
        r = gw.post("/api/chat", chat_body(user_id="erin"), headers=h)
        assert r.status == 401 and "disabled" in r.json()["error"]["message"], r
    gw.cli("user", "set", "erin", "--enable")
    for _ in range(20):
        assert gw.post("/api/chat", chat_body(user_id="erin"), headers=h).status == 200
    gw.execute("UPDATE api_keys SET revoked_ms = 1 WHERE user_id = 'erin'")
    t0 = time.monotonic()
    while gw.post("/api/chat", chat_body(user_id="erin"), headers=h).status == 200:
        assert time.monotonic() - t0 < 3, "a key revoked in the database still works after 3 s"
        time.sleep(0.05)
    assert time.monotonic() - t0 < 1.5
    for _ in range(20):
        assert gw.post("/api/chat", chat_body(user_id="erin"), headers=h).status == 401


def test_disabled_user_and_unknown_key(make_gateway, mocks):
    gw = make_gateway(auth={"enabled": True})
    gw.cli("user", "add", "dave")
    key = gw.cli("key", "create", "dave").stdout.strip()
    gw.cli("user", "disable", "dave")
    assert gw.post("/api/chat", chat_body(user_id="dave"), headers={"api-key": key}).status == 401
    r = gw.post("/api/chat", chat_body(user_id="dave"), headers={"api-key": "aigw_0000_nope"})
    assert r.status == 401


def test_cli_errors_are_one_clear_line(make_gateway):
    gw = make_gateway(auth={"enabled": True})
    r = gw.cli("key", "create", "nobody", check=False)
    assert r.returncode != 0 and "no user nobody" in r.stderr
    r = gw.cli("user", "add", "x", "--budget", "lots", check=False)
    assert r.returncode != 0 and "--budget" in r.stderr
    for cmd in (["user", "--help"], ["key", "--help"], ["backend", "--help"], ["audit", "--help"],
                ["serve", "--help"], ["check-config", "--help"], ["db", "--help"]):
        assert gw.cli(*cmd).stdout.startswith("usage:")


# --- keys from an OpenID provider (openid_config_url) ----------------------------


class OpenIdProvider:
    """A stand-in for the tenant's OpenID endpoints: the discovery document and
    the JWKS it points to, counting what it serves and able to fail like an
    outage (HTTP 503)."""

    def __init__(self, keys):
        self.keys = list(keys)
        self.down = False
        self.hits = {"discovery": 0, "jwks": 0}
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server interface
                if provider.down:
                    return self.answer(503, {"error": "temporarily_unavailable"})
                if self.path == "/tenant/v2.0/.well-known/openid-configuration":
                    provider.hits["discovery"] += 1
                    return self.answer(200, {"issuer": ISS, "jwks_uri": f"{provider.base}/tenant/discovery/v2.0/keys"})
                if self.path == "/tenant/discovery/v2.0/keys":
                    provider.hits["jwks"] += 1
                    return self.answer(200, {"keys": [k.jwk() for k in provider.keys]})
                return self.answer(404, {"error": "not_found"})

            def answer(self, status, doc):
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.config_url = f"{self.base}/tenant/v2.0/.well-known/openid-configuration"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider(rsa):
    p = OpenIdProvider([rsa[0]])
    yield p
    p.close()


def openid_gateway(make_gateway, provider):
    return make_gateway(auth={"enabled": True, "jwt": {"issuer": ISS, "audience": AUD,
                                                       "openid_config_url": provider.config_url}})


def test_openid_keys_are_fetched_once_and_shared_by_all_workers(make_gateway, provider, rsa, mocks):
    gw = openid_gateway(make_gateway, provider)
    token = rsa[0].sign(tokens.claims())
    assert gw.post("/api/chat", chat_body(), headers=bearer(token)).status == 200
    # 24 concurrent requests reach every worker; the others take the keys
    # from the shared database instead of asking the provider again.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: gw.post("/api/chat", chat_body(), headers=bearer(token)).status,
                                 range(24)))
    assert statuses == [200] * 24
    assert provider.hits == {"discovery": 1, "jwks": 1}
    cached = gw.query("SELECT url FROM jwks_cache")
    assert [c["url"] for c in cached] == [provider.config_url]
    # A token from a key the provider does not publish is refused, and a
    # stream of them does not turn aigw into a load on the provider: the
    # keys were fetched less than a minute ago.
    for _ in range(10):
        r = gw.post("/api/chat", chat_body(), headers=bearer(rsa[1].sign(tokens.claims())))
        assert r.status == 401 and "kid" in r.json()["error"]["message"], r
    assert provider.hits == {"discovery": 1, "jwks": 1}
    assert mocks["east"].stats()["requests"] == 25


def test_openid_provider_down_is_503_then_recovers(make_gateway, provider, rsa, mocks):
    provider.down = True
    gw = openid_gateway(make_gateway, provider)
    token = rsa[0].sign(tokens.claims())
    # Not the caller's fault: a 503 the SDKs retry, not a 401 that sends the
    # user back to log in.
    r = gw.post("/api/chat", chat_body(), headers=bearer(token))
    assert r.status == 503 and r.json()["error"]["code"] == "auth_unavailable", r
    assert "signing keys are unavailable" in r.json()["error"]["message"]
    assert r.headers["retry-after"] == "10"
    assert "cannot fetch the OpenID configuration" in gw.error_log()
    assert mocks["east"].stats()["requests"] == 0
    provider.down = False
    # Each worker asks a failing provider again after at most 10 s.
    deadline = time.time() + 25
    while time.time() < deadline:
        r = gw.post("/api/chat", chat_body(), headers=bearer(token))
        if r.status == 200:
            break
        time.sleep(0.5)
    assert r.status == 200, r

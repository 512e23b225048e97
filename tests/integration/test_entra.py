"""Backends that sign in with Entra ID instead of an api-key, through lighttpd.

tests/mock_keyvault.py issues the tokens (IMDS managed identity, client
credentials, workload identity) and answers /_mock/introspect; the mock
region is an Azure resource with local authentication disabled
(bearer_only): it refuses api-keys and accepts a bearer token only when the
token service calls it live and issued for https://cognitiveservices.azure.com.
A 200 therefore proves the gateway signed in with a real token.
"""
import concurrent.futures
import json
import os
import subprocess

import pytest

from conftest import AIGW_BIN, backend_config, chat_body
from test_secrets import MockKeyVault, log_text

SCOPE = "https://cognitiveservices.azure.com/.default"
FEDERATED = "federated-token-for-tests"


@pytest.fixture(scope="module")
def token_service():
    svc = MockKeyVault()
    yield svc
    svc.stop()


@pytest.fixture
def ts(token_service):
    token_service.control("reset", {})
    return token_service


def entra_backend(region, ts, tmp_path, auth="managed_identity", priority=1, **extra):
    b = backend_config(region, priority)
    del b["api_key"]
    entra = {"auth": auth, "imds_endpoint": f"{ts.url}/metadata/identity/oauth2/token",
             "authority_host": ts.url, "timeout_s": 2}
    if auth == "client_credentials":
        path = os.path.join(str(tmp_path), "client.secret")
        with open(path, "w") as f:
            f.write("client-secret-1\n")
        os.chmod(path, 0o600)
        entra.update(tenant_id="tenant-1", client_id="client-1", client_secret=f"file:{path}")
    if auth == "workload_identity":
        path = os.path.join(str(tmp_path), "azure-identity-token")
        with open(path, "w") as f:
            f.write(extra.pop("federated", FEDERATED))
        entra.update(tenant_id="tenant-1", client_id="client-1", token_file=path)
    entra.update(extra)
    b["entra"] = entra
    return b


def resource_with_entra_only(region, ts):
    region.set(bearer_introspect_url=f"{ts.url}/_mock/introspect", bearer_only=True)


def requests_of(ts, kind):
    return ts.stats()["token_requests"][kind]


@pytest.mark.parametrize("auth,kind", [("managed_identity", "imds"),
                                       ("client_credentials", "entra"),
                                       ("workload_identity", "workload")])
def test_each_identity_signs_in_and_no_key_is_sent(make_gateway, mocks, ts, tmp_path, auth, kind):
    resource_with_entra_only(mocks["east"], ts)
    gw = make_gateway(backends=[entra_backend(mocks["east"], ts, tmp_path, auth)])
    for _ in range(12):
        r = gw.post("/api/chat", chat_body())
        assert r.status == 200, (r, gw.error_log())
    headers = mocks["east"].stats()["last_headers"]
    assert "api-key" not in headers and headers["authorization"].startswith("Bearer ")
    st = ts.stats()
    token = headers["authorization"][7:]
    assert st["issued_audiences"][token] == "https://cognitiveservices.azure.com"
    # One token per worker process at most, however many requests.
    assert 1 <= st["token_requests"][kind] <= 4
    if kind == "imds":
        assert "resource=https%3A%2F%2Fcognitiveservices.azure.com" in st["last_token_request"]["path"]
    # Tokens appear in no log and no audit row.
    text = log_text(gw) + json.dumps(gw.audit_rows())
    for t in st["issued_tokens"]:
        assert t not in text


def test_one_token_for_many_threads_of_a_process(make_gateway, mocks, ts, tmp_path):
    resource_with_entra_only(mocks["east"], ts)
    mocks["east"].set(latency_s=0.2)
    gw = make_gateway(backends=[entra_backend(mocks["east"], ts, tmp_path)], workers=1)
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda _: gw.post("/api/chat", chat_body()).status, range(32)))
    assert statuses == [200] * 32
    assert requests_of(ts, "imds") == 1


def test_a_revoked_token_is_replaced_once_on_401(make_gateway, mocks, ts, tmp_path):
    resource_with_entra_only(mocks["east"], ts)
    gw = make_gateway(backends=[entra_backend(mocks["east"], ts, tmp_path)], workers=1)
    assert gw.post("/api/chat", chat_body()).status == 200
    assert requests_of(ts, "imds") == 1
    ts.revoke_tokens()
    before = mocks["east"].stats()["requests"]
    r = gw.post("/api/chat", chat_body())
    assert r.status == 200, (r, gw.error_log())
    assert requests_of(ts, "imds") == 2
    assert mocks["east"].stats()["requests"] == before + 2  # the 401, then the retry
    row = gw.audit_rows()[-1]
    assert row["status"] == "success" and row["attempts"] == 1


def test_a_token_close_to_expiry_is_replaced_before_it_expires(make_gateway, mocks, ts, tmp_path):
    import time
    resource_with_entra_only(mocks["east"], ts)
    ts.set(token_lifetime_s=3)  # replaced half way through its life
    gw = make_gateway(backends=[entra_backend(mocks["east"], ts, tmp_path)], workers=1)
    assert gw.post("/api/chat", chat_body()).status == 200
    time.sleep(2)
    before = mocks["east"].stats()["requests"]
    assert gw.post("/api/chat", chat_body()).status == 200
    assert requests_of(ts, "imds") == 2
    assert mocks["east"].stats()["requests"] == before + 1  # no 401 on the way


def test_a_failed_sign_in_fails_over_and_says_why(make_gateway, mocks, ts, tmp_path):
    resource_with_entra_only(mocks["east"], ts)
    gw = make_gateway(backends=[
        entra_backend(mocks["east"], ts, tmp_path, "workload_identity", federated="not-the-token"),
        backend_config(mocks["west"], 2)])
    mocks["west"].set(reply="from west")
    r = gw.post("/api/chat", chat_body())
    assert r.status == 200 and r.json()["content"] == "from west", r
    assert mocks["east"].stats()["requests"] == 0
    log = gw.error_log()
    assert "backend east" in log and "(invalid_client)" in log and "backends[0].entra" in log
    assert "not-the-token" not in log


def test_secrets_check_signs_in_for_each_backend(make_gateway, mocks, ts, tmp_path):
    resource_with_entra_only(mocks["east"], ts)
    gw = make_gateway(backends=[entra_backend(mocks["east"], ts, tmp_path)])
    r = gw.cli("secrets", "check")
    assert f"backends[0].entra\t{SCOPE}\tok (managed_identity)" in r.stdout, r.stdout
    ts.set(token_mode="503")
    r = gw.cli("secrets", "check", check=False)
    assert r.returncode != 0
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("backends[0].entra")][0]
    assert "refused an access token for backend east: HTTP 503" in line, line
    for t in ts.stats()["issued_tokens"]:
        assert t not in r.stdout + r.stderr


def test_entra_settings_are_checked(mocks, tmp_path):
    def check(backend):
        p = tmp_path / "cfg.json"
        p.write_text(json.dumps({"backends": [backend]}))
        return subprocess.run([AIGW_BIN, "--config", str(p), "check-config"], capture_output=True,
                              text=True)
    b = backend_config(mocks["east"], 1, entra={"auth": "managed_identity"})
    r = check(b)
    assert r.returncode != 0 and "api_key exclude each other" in r.stderr + r.stdout, r
    del b["api_key"]
    b["entra"] = {"auth": "workload_identity"}
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({"backends": [b]}))
    r = subprocess.run([AIGW_BIN, "--config", str(p), "check-config"], capture_output=True,
                       text=True, env=env_free)
    assert r.returncode != 0 and "workload_identity needs tenant_id, client_id and token_file" in (
        r.stderr + r.stdout), r
    b["entra"] = {"auth": "password"}
    assert "backends[0].entra.auth" in (lambda r: r.stderr + r.stdout)(check(b))
    b["entra"] = {"scope": "https://cognitiveservices.azure.com"}
    assert "backends[0].entra.scope" in (lambda r: r.stderr + r.stdout)(check(b))
    b["entra"] = {}
    b["type"] = "openai"
    assert "applies to type \"azure\" only" in (lambda r: r.stderr + r.stdout)(check(b))
    # AKS's injected environment is enough for workload identity (check-config
    # then goes on to sign in, which fails here: no such token file).
    b["type"] = "azure"
    b["entra"] = {"auth": "workload_identity", "authority_host": "http://127.0.0.1:9"}
    p.write_text(json.dumps({"backends": [b]}))
    env = dict(env_free, AZURE_TENANT_ID="t", AZURE_CLIENT_ID="c",
               AZURE_FEDERATED_TOKEN_FILE=str(tmp_path / "tok"))
    r = subprocess.run([AIGW_BIN, "--config", str(p), "check-config"], capture_output=True,
                       text=True, env=env)
    assert "needs" not in r.stderr + r.stdout and "secret references do not resolve" in r.stderr, r

"""Backend keys from Azure Key Vault, through lighttpd, against tests/mock_keyvault.py.

The mock is one process serving the vault API, IMDS, App Service's identity
endpoint and Entra ID's token endpoint; the gateway's config points every
endpoint at it. Backend keys are references of the form
keyvault:http://127.0.0.1:PORT/secrets/openai-key-${env}, with the
environment "staging", and the mock region is told to accept only the value
the vault holds (expect_key), so a 200 proves the key came from the vault.

lighttpd gives its workers a fixed environment (PATH, AIGW_ENV, AIGW_DEBUG),
so the client secret is a file: reference and endpoints come from the config.
"""
import os
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import SRCDIR, backend_config, chat_body, http, stop_process

MOCK_KEYVAULT = os.path.join(SRCDIR, "tests", "mock_keyvault.py")
KEY_NAME = "openai-key-staging"
KEY_PATH = "/secrets/" + KEY_NAME
CLIENT_SECRET = "client-secret-" + uuid.uuid4().hex


class MockKeyVault:
    """tests/mock_keyvault.py in its own process."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, MOCK_KEYVAULT, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"mock key vault did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def control(self, route, body=None):
        r = http("POST" if body is not None else "GET", f"{self.url}/_mock/{route}", body)
        assert r.status == 200, r
        return r.json()

    def set_secret(self, name, value):
        return self.control("secret", {"name": name, "value": value})["version"]

    def delete_secret(self, name):
        self.control("delete", {"name": name})

    def set(self, **settings):
        return self.control("config", settings)

    def revoke_tokens(self):
        self.control("revoke", {})

    def reset(self):
        self.control("reset", {})
        self.set(client_secret=CLIENT_SECRET)

    def stats(self):
        return self.control("stats")

    def stop(self):
        stop_process(self.proc)


@pytest.fixture(scope="session")
def keyvault_process():
    kv = MockKeyVault()
    yield kv
    kv.stop()


@pytest.fixture
def kv(keyvault_process):
    keyvault_process.reset()
    return keyvault_process


def new_value(tag):
    return f"kv-{tag}-{uuid.uuid4().hex}"


def kv_ref(kv, name="openai-key-${env}"):
    return f"keyvault:{kv.url}/secrets/{name}"


def secrets_section(kv, tmp_path, auth="managed_identity", cache_ttl_s=300, **extra):
    keyvault = {"auth": auth, "imds_endpoint": f"{kv.url}/metadata/identity/oauth2/token",
                "authority_host": kv.url, "timeout_s": 2}
    if auth == "client_credentials":
        path = os.path.join(str(tmp_path), "kv-client.secret")
        with open(path, "w") as f:
            f.write(CLIENT_SECRET + "\n")
        os.chmod(path, 0o600)
        keyvault.update(tenant_id="tenant-1", client_id="client-1", client_secret=f"file:{path}")
    keyvault.update(extra)
    return {"cache_ttl_s": cache_ttl_s, "keyvault": keyvault}


def start(make_gateway, mocks, kv, tmp_path, auth="managed_identity", cache_ttl_s=300, workers=4,
          backends=None, keyvault=None, **overrides):
    """A gateway whose east key is openai-key-${env} in the vault; returns (gateway, value).
    keyvault: more secrets.keyvault settings; overrides: more top-level config."""
    value = new_value("staging")
    kv.set_secret(KEY_NAME, value)
    mocks["east"].set(expect_key=value)
    if backends is None:
        backends = [backend_config(mocks["east"], 1, api_key=kv_ref(kv))]
    gw = make_gateway(backends=backends, workers=workers, environment="staging",
                      secrets=secrets_section(kv, tmp_path, auth, cache_ttl_s, **(keyvault or {})),
                      **overrides)
    return gw, value


def chat_ok(gw, n=1):
    for _ in range(n):
        r = gw.post("/api/chat", chat_body())
        assert r.status == 200, (r, gw.error_log())


def log_text(gw):
    out = []
    for name in sorted(os.listdir(gw.tmpdir)):
        if name.endswith((".log", ".stderr")):
            with open(os.path.join(gw.tmpdir, name), errors="replace") as f:
                out.append(f.read())
    return "\n".join(out)


# --- resolving ------------------------------------------------------------------


def test_key_resolves_through_managed_identity_imds(make_gateway, mocks, kv, tmp_path):
    gw, value = start(make_gateway, mocks, kv, tmp_path)
    chat_ok(gw, 3)
    assert mocks["east"].stats()["last_headers"]["api-key"] == value
    st = kv.stats()
    assert 1 <= st["token_requests"]["imds"] <= 4  # at most one per worker
    assert st["token_requests"]["entra"] == st["token_requests"]["app_service"] == 0
    assert set(st["vault_by_path"]) == {KEY_PATH}
    assert st["rejected_tokens"] == 0
    imds = [r for r in st["received"] if r["path"] == "/metadata/identity/oauth2/token"]
    assert imds and all(r["headers"].get("Metadata") == "true" for r in imds)
    assert "api-version=2018-02-01" in imds[0]["query"]
    assert "resource=https%3A%2F%2Fvault.azure.net" in imds[0]["query"]
    vault = [r for r in st["received"] if r["path"] == KEY_PATH]
    assert all(r["query"] == "api-version=7.4" for r in vault)
    assert all(r["headers"]["Authorization"].startswith("Bearer mock-token-") for r in vault)


def test_key_resolves_through_client_credentials(make_gateway, mocks, kv, tmp_path):
    gw, value = start(make_gateway, mocks, kv, tmp_path, auth="client_credentials")
    chat_ok(gw, 3)
    assert mocks["east"].stats()["last_headers"]["api-key"] == value
    st = kv.stats()
    assert 1 <= st["token_requests"]["entra"] <= 4
    assert st["token_requests"]["imds"] == 0
    posts = [r for r in st["received"] if r["path"] == "/tenant-1/oauth2/v2.0/token"]
    assert posts and all(r["method"] == "POST" for r in posts)
    form = dict(p.split("=", 1) for p in posts[0]["body"].split("&"))
    assert form == {"client_id": "client-1", "client_secret": CLIENT_SECRET,
                    "scope": "https%3A%2F%2Fvault.azure.net%2F.default",
                    "grant_type": "client_credentials"}
    assert set(st["vault_by_path"]) == {KEY_PATH}


def test_env_selects_the_environments_secret(make_gateway, mocks, kv, tmp_path):
    kv.set_secret("openai-key-production", new_value("production"))
    kv.set_secret("openai-key-test", new_value("test"))
    gw, value = start(make_gateway, mocks, kv, tmp_path)  # "environment": "staging"
    chat_ok(gw, 4)
    assert mocks["east"].stats()["last_headers"]["api-key"] == value
    assert set(kv.stats()["vault_by_path"]) == {KEY_PATH}


def test_pinned_version_is_read(make_gateway, mocks, kv, tmp_path):
    old = new_value("old")
    version = kv.set_secret(KEY_NAME, old)
    kv.set_secret(KEY_NAME, new_value("current"))
    mocks["east"].set(expect_key=old)
    backends = [backend_config(mocks["east"], 1, api_key=kv_ref(kv, f"openai-key-${{env}}/{version}"))]
    gw = make_gateway(backends=backends, environment="staging",
                      secrets=secrets_section(kv, tmp_path))
    chat_ok(gw, 2)
    assert set(kv.stats()["vault_by_path"]) == {f"{KEY_PATH}/{version}"}


# --- rotation, outages, tokens -------------------------------------------------------


def test_rotated_key_is_fetched_again_after_401_without_restart(make_gateway, mocks, kv, tmp_path):
    gw, old = start(make_gateway, mocks, kv, tmp_path, cache_ttl_s=3600)
    chat_ok(gw, 12)  # warms every worker's cache
    pids = sorted(gw.worker_pids())
    fetched = kv.stats()["vault_requests"]

    new = new_value("rotated")
    kv.set_secret(KEY_NAME, new)
    mocks["east"].set(expect_key=new)  # the old key is now refused with 401
    chat_ok(gw, 12)

    assert mocks["east"].stats()["last_headers"]["api-key"] == new
    assert sorted(gw.worker_pids()) == pids  # no restart
    assert fetched < kv.stats()["vault_requests"] <= fetched + 4  # once per worker at most
    rows = gw.audit_rows()
    assert len(rows) == 24 and all(r["status"] == "success" for r in rows)


def test_vault_down_with_warm_cache_keeps_serving(make_gateway, mocks, kv, tmp_path):
    gw, value = start(make_gateway, mocks, kv, tmp_path, cache_ttl_s=1, workers=1)
    chat_ok(gw, 3)
    kv.set(vault_mode="down", token_mode="down")
    time.sleep(1.3)  # the cached value is past its TTL
    t0 = time.time()
    chat_ok(gw, 6)
    time.sleep(1.2)  # and past the retry pause: one more failed refresh
    chat_ok(gw, 2)
    assert time.time() - t0 < 8
    assert mocks["east"].stats()["last_headers"]["api-key"] == value
    log = log_text(gw)
    stale = [l for l in log.splitlines() if "serving the cached value" in l]
    assert len(stale) == 1, log  # warned once per outage, not per request
    assert f"secret reference keyvault:{kv.url}/secrets/openai-key-staging" in stale[0]
    assert "cannot reach Key Vault" in stale[0]

    # The vault comes back: values are fetched again.
    kv.set(vault_mode="ok", token_mode="ok")
    time.sleep(1.2)
    before = kv.stats()["vault_requests"]
    chat_ok(gw, 1)
    assert kv.stats()["vault_requests"] > before
    assert "refreshed again" in log_text(gw)


def test_expired_secret_is_fetched_once_by_a_process_however_many_threads_need_it(
        make_gateway, mocks, kv, tmp_path):
    """64 requests meet an expired key together in one worker process: one of its
    threads fetches it from the vault while the others wait for that answer, so
    the vault sees one call, not a stampede of 64."""
    gw, value = start(make_gateway, mocks, kv, tmp_path, cache_ttl_s=1, workers=1, server="nginx")
    chat_ok(gw)
    kv.set(vault_latency_s=0.3)  # a slow vault: the others arrive while the first fetches
    time.sleep(1.3)              # the cached value is past its TTL
    before = kv.stats()["vault_requests"]
    n = 64
    barrier = threading.Barrier(n)
    statuses = [None] * n

    def client(i):
        barrier.wait(30)
        statuses[i] = gw.post("/api/chat", chat_body(), timeout=30).status

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * n
    assert kv.stats()["vault_requests"] - before == 1
    # and not one thread failed to refresh it and fell back on the old value
    assert "serving the cached value" not in log_text(gw), log_text(gw)[-3000:]
    assert mocks["east"].stats()["last_headers"]["api-key"] == value


def test_many_requests_one_token_until_it_expires(make_gateway, mocks, kv, tmp_path):
    # Tokens live 6 s, so they are replaced 3 s in; the secret itself is not
    # cached (TTL 0), so every request reads the vault with the same token.
    kv.set(token_lifetime_s=6)
    gw, _ = start(make_gateway, mocks, kv, tmp_path, cache_ttl_s=0, workers=1)
    t0 = time.time()
    chat_ok(gw, 10)
    assert time.time() - t0 < 2, "too slow for the token's lifetime"
    st = kv.stats()
    assert st["token_requests_total"] == 1
    assert st["vault_requests"] >= 10
    time.sleep(3.5)
    chat_ok(gw, 3)
    st = kv.stats()
    assert st["token_requests_total"] == 2
    assert st["rejected_tokens"] == 0  # never sent an expired token


def test_revoked_token_is_replaced(make_gateway, mocks, kv, tmp_path):
    gw, _ = start(make_gateway, mocks, kv, tmp_path, cache_ttl_s=0, workers=1)
    chat_ok(gw, 2)
    kv.revoke_tokens()  # the vault now answers 401 to the token the worker holds
    chat_ok(gw, 2)
    st = kv.stats()
    assert st["token_requests_total"] == 2
    assert st["rejected_tokens"] == 1


def test_vault_errors_are_clear_and_name_the_reference(make_gateway, mocks, kv, tmp_path):
    gw, value = start(make_gateway, mocks, kv, tmp_path, cache_ttl_s=0, workers=1,
                      retry={"max_attempts": 1}, circuit_breaker={"failure_threshold": 100})
    ref = f"secret reference keyvault:{kv.url}/secrets/openai-key-staging: "
    imds = f"{kv.url}/metadata/identity/oauth2/token"
    cases = [
        ({"vault_mode": "403"}, f"access to secret openai-key-staging in {kv.url} denied "
         "(HTTP 403 (Forbidden)): the identity needs permission to get secrets"),
        ({"vault_mode": "down"}, f"cannot reach Key Vault {kv.url}: "),
        ({"vault_mode": "503"}, f"Key Vault {kv.url} answered HTTP 503"),
        # The worker's token is revoked and no new one can be had.
        ({"vault_mode": "ok", "token_mode": "500"},
         f"the instance metadata service (IMDS) at {imds} refused a Key Vault access token: "
         "HTTP 500 (temporarily_unavailable)"),
        ({"token_mode": "down"}, "cannot get a Key Vault access token from the instance "
         f"metadata service (IMDS) at {imds}: "),
    ]
    for settings, want in cases:
        kv.set(**settings)
        kv.revoke_tokens()
        r = gw.post("/api/chat", chat_body())
        assert r.status >= 500, r
        assert value not in r.body.decode(errors="replace")
        assert ref + want in log_text(gw), (want, log_text(gw))
    kv.set(token_mode="ok")
    kv.delete_secret(KEY_NAME)
    assert gw.post("/api/chat", chat_body()).status >= 500
    assert ref + f"secret openai-key-staging in {kv.url} not found (HTTP 404 (SecretNotFound))" \
        in log_text(gw)
    rows = gw.audit_rows()
    assert len(rows) == len(cases) + 1
    assert all("backend key unavailable" in r["attempts_detail"] for r in rows)


# --- nothing leaks ---------------------------------------------------------------------


def test_no_secret_value_in_logs_audit_or_vault_traffic(make_gateway, mocks, kv, tmp_path, monkeypatch):
    monkeypatch.setenv("AIGW_DEBUG", "1")  # debug lines too
    # west's key does not exist, so every request also writes an error line.
    backends = [backend_config(mocks["west"], 1, api_key=kv_ref(kv, "west-key-${env}")),
                backend_config(mocks["east"], 2, api_key=kv_ref(kv))]
    gw, first = start(make_gateway, mocks, kv, tmp_path, auth="client_credentials", cache_ttl_s=1,
                      workers=2, backends=backends)
    chat_ok(gw, 4)
    second = new_value("rotated")
    kv.set_secret(KEY_NAME, second)
    mocks["east"].set(expect_key=second)
    chat_ok(gw, 4)
    kv.set(vault_mode="down")
    time.sleep(1.2)
    chat_ok(gw, 4)
    r = gw.post("/api/chat", chat_body(stream=True))
    assert r.status == 200

    st = kv.stats()
    tokens = st["issued_tokens"]
    assert tokens
    secrets = [first, second, CLIENT_SECRET] + tokens

    logs = log_text(gw)
    assert "west-key-staging" in logs  # the failures were logged, by reference
    audit = repr(gw.audit_rows())
    db = b""
    for suffix in ("", "-wal"):
        if os.path.exists(gw.db_path + suffix):
            db += open(gw.db_path + suffix, "rb").read()
    for s in secrets:
        assert s not in logs, f"a secret is in the logs: {s[:8]}..."
        assert s not in audit, f"a secret is in the audit table: {s[:8]}..."
        assert s.encode() not in db, f"a secret is in the database: {s[:8]}..."

    # What the vault and token endpoint received: the key values never; the
    # client secret only in the token request's form.
    for req in st["received"]:
        text = repr(req)
        assert first not in text and second not in text
        if CLIENT_SECRET in text:
            assert req["path"] == "/tenant-1/oauth2/v2.0/token" and CLIENT_SECRET in req["body"]
    # What the regions received besides the api-key header.
    for region in ("east", "west"):
        s = mocks[region].stats()
        rest = repr((s["last_body"], s["last_query"],
                     {k: v for k, v in s["last_headers"].items() if k != "api-key"}))
        assert first not in rest and second not in rest


# --- aigw secrets check, App Service ---------------------------------------------------


def test_secrets_check_reports_every_reference(make_gateway, mocks, kv, tmp_path):
    backends = [backend_config(mocks["east"], 1, api_key=kv_ref(kv)),
                backend_config(mocks["west"], 2, api_key=kv_ref(kv, "missing-${env}"))]
    gw, value = start(make_gateway, mocks, kv, tmp_path, auth="client_credentials", backends=backends)
    r = gw.cli("secrets", "check", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    lines = out.splitlines()
    assert f"backends[0].api_key\tkeyvault:{kv.url}/secrets/openai-key-staging\tok" in lines, out
    assert any(l.startswith(f"backends[1].api_key\tkeyvault:{kv.url}/secrets/missing-staging\t")
               and "not found (HTTP 404" in l for l in lines), out
    assert any(l.startswith("secrets.keyvault.client_secret\tfile:") and l.endswith("\tok")
               for l in lines), out
    assert value not in out and CLIENT_SECRET not in out
    assert not any(t in out for t in kv.stats()["issued_tokens"])


def lighttpd_passes(name):
    conf = open(os.path.join(SRCDIR, "webserver-configs", "lighttpd", "aigw.conf")).read()
    m = re.search(r'"bin-copy-environment"\s*=>\s*\(([^)]*)\)', conf)
    return bool(m) and f'"{name}"' in m.group(1)


def test_app_service_identity(make_gateway, mocks, kv, tmp_path, monkeypatch):
    assert lighttpd_passes("IDENTITY_HEADER"), "the shipped lighttpd config must pass IDENTITY_* to workers"
    monkeypatch.setenv("IDENTITY_HEADER", "mock-identity-header")
    gw, value = start(make_gateway, mocks, kv, tmp_path,
                      keyvault={"identity_endpoint": f"{kv.url}/msi/token"})
    chat_ok(gw, 3)
    st = kv.stats()
    assert st["token_requests"]["app_service"] >= 1
    assert st["token_requests"]["imds"] == 0

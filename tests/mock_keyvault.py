#!/usr/bin/env python3
# mock_keyvault.py -- test fixture for aigw's Key Vault secret references.
#
# One process on 127.0.0.1 that stands in for everything aigw talks to when a
# secret is a keyvault: reference:
#
#   GET  /secrets/NAME[/VERSION]?api-version=7.4    Azure Key Vault (needs a
#        "Authorization: Bearer T" with a token this mock issued and that has
#        not expired or been revoked; anything else gets 401)
#   GET  /metadata/identity/oauth2/token             VM managed identity (IMDS):
#        ?api-version=2018-02-01&resource=https://vault.azure.net[&client_id=]
#        with "Metadata: true"
#   GET  /msi/token                                  App Service managed identity:
#        ?api-version=2019-08-01&resource=...  with "X-IDENTITY-HEADER: H"
#   POST /TENANT/oauth2/v2.0/token                   Entra ID client credentials:
#        form client_id, client_secret, scope=https://vault.azure.net/.default,
#        grant_type=client_credentials
#
# Control routes (JSON in, JSON out), for the tests:
#   POST /_mock/secret  {"name", "value", "version"?}  adds a version, which
#                       becomes the current one; answers {"version", "id"}
#   POST /_mock/delete  {"name"}                       forgets a secret
#   POST /_mock/config  {setting: value, ...}          see DEFAULTS below
#   POST /_mock/revoke  {}                             forgets every issued token
#   POST /_mock/reset   {}                             secrets, settings, stats
#   GET  /_mock/stats                                  counts, issued tokens and
#                       everything received on the non-control routes
#
# Settings: vault_mode and token_mode are "ok", "down" (the connection is
# closed without an answer, like a dead host) or an HTTP status to answer
# with ("401", "403", "404", "429", "500", "503"); token_lifetime_s; the
# credentials the token endpoints accept (tenant, client_id, client_secret,
# identity_header, imds_client_id: when set IMDS demands that client_id).
#
# Usage: python3 tests/mock_keyvault.py [--port 0] [--host 127.0.0.1]
# Prints exactly one line "READY <port>" on stdout once listening.
# Python 3.11, standard library only.

import argparse
import json
import os
import secrets as pysecrets
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

RESOURCE = "https://vault.azure.net"
SCOPE = RESOURCE + "/.default"
IMDS_PATH = "/metadata/identity/oauth2/token"
APP_SERVICE_PATH = "/msi/token"
MAX_BODY = 1 << 20
MAX_RECEIVED = 5000
MODES = ("ok", "down", "400", "401", "403", "404", "429", "500", "503")

DEFAULTS = {
    "vault_mode": "ok",
    "token_mode": "ok",
    "token_lifetime_s": 3600,
    "tenant": "tenant-1",
    "client_id": "client-1",
    "client_secret": "client-secret-1",
    "identity_header": "mock-identity-header",
    "imds_client_id": None,
    "vault_latency_s": 0,
}


def check_settings(upd):
    if not isinstance(upd, dict):
        return "settings must be a JSON object"
    for k, v in upd.items():
        if k not in DEFAULTS:
            return "unknown setting %r" % k
        if k in ("vault_mode", "token_mode") and v not in MODES:
            return "%s must be one of %s" % (k, ", ".join(MODES))
        if k in ("token_lifetime_s", "vault_latency_s") and not (
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0):
            return "%s must be a non-negative number" % k
        if k in ("tenant", "client_id", "client_secret", "identity_header") and not isinstance(v, str):
            return "%s must be a string" % k
        if k == "imds_client_id" and v is not None and not isinstance(v, str):
            return "imds_client_id must be a string or null"
    return None


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.port = None
        self._clear()

    def _clear(self):
        self.settings = dict(DEFAULTS)
        self.secrets = {}          # name -> [(version, value, created)], current last
        self.tokens = {}           # token -> expiry (epoch seconds)
        self.issued = []           # every token ever issued, for the leak checks
        self.token_requests = {"imds": 0, "app_service": 0, "entra": 0}
        self.vault_requests = 0
        self.vault_by_path = {}
        self.rejected_tokens = 0
        self.received = []
        self.last_token_request = None

    def reset(self):
        with self.lock:
            self._clear()

    def stats(self):
        with self.lock:
            return {
                "token_requests": dict(self.token_requests),
                "token_requests_total": sum(self.token_requests.values()),
                "vault_requests": self.vault_requests,
                "vault_by_path": dict(self.vault_by_path),
                "rejected_tokens": self.rejected_tokens,
                "issued_tokens": list(self.issued),
                "last_token_request": self.last_token_request,
                "received": list(self.received),
                "settings": dict(self.settings),
                "secrets": {n: [v for v, _, _ in vs] for n, vs in self.secrets.items()},
            }

    def issue(self):
        with self.lock:
            token = "mock-token-" + pysecrets.token_hex(16)
            life = self.settings["token_lifetime_s"]
            expires = int(time.time() + life)
            self.tokens[token] = expires
            self.issued.append(token)
            return token, int(life), expires


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-keyvault"
    sys_version = ""

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("[keyvault] %s\n" % (fmt % args))

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (OSError, ValueError):
            self.close_connection = True

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_GET

    # -- plumbing --------------------------------------------------------
    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(n) if n else b""

    def send_json(self, status, obj, headers=()):
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def drop(self):
        """Close without an answer: what a dead host looks like to curl."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def dispatch(self):
        parts = urlsplit(self.path)
        path, query = parts.path, parts.query
        raw = self.read_body()
        if path.startswith("/_mock/"):
            return self.control(path, raw)
        st = self.server.state
        with st.lock:
            if len(st.received) < MAX_RECEIVED:
                st.received.append({"method": self.command, "path": path, "query": query,
                                    "headers": dict(self.headers.items()),
                                    "body": raw.decode("utf-8", "replace")})
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if path.startswith("/secrets/") and self.command == "GET":
            return self.vault(path, q)
        if path == IMDS_PATH and self.command == "GET":
            return self.token_imds(q)
        if path == APP_SERVICE_PATH and self.command == "GET":
            return self.token_app_service(q)
        if path.endswith("/oauth2/v2.0/token") and self.command == "POST":
            return self.token_entra(path, raw)
        self.send_json(404, {"error": {"code": "NotFound", "message": "no such route"}})

    # -- control ---------------------------------------------------------
    def control(self, path, raw):
        st = self.server.state
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as e:
            return self.send_json(400, {"error": "invalid JSON: %s" % e})
        if path == "/_mock/stats" and self.command == "GET":
            return self.send_json(200, st.stats())
        if self.command != "POST":
            return self.send_json(405, {"error": "POST expected"})
        if path == "/_mock/reset":
            st.reset()
            return self.send_json(200, {"ok": True})
        if path == "/_mock/config":
            err = check_settings(body)
            if err:
                return self.send_json(400, {"error": err})
            with st.lock:
                st.settings.update(body)
                return self.send_json(200, dict(st.settings))
        if path == "/_mock/secret":
            name, value = body.get("name"), body.get("value")
            if not isinstance(name, str) or not isinstance(value, str):
                return self.send_json(400, {"error": "name and value must be strings"})
            version = body.get("version") or uuid.uuid4().hex
            with st.lock:
                st.secrets.setdefault(name, []).append((version, value, int(time.time())))
            return self.send_json(200, {"version": version, "id": self.secret_id(name, version)})
        if path == "/_mock/delete":
            with st.lock:
                st.secrets.pop(body.get("name"), None)
            return self.send_json(200, {"ok": True})
        if path == "/_mock/revoke":
            with st.lock:
                st.tokens.clear()
            return self.send_json(200, {"ok": True})
        self.send_json(404, {"error": "no such control route"})

    def secret_id(self, name, version):
        return "http://127.0.0.1:%d/secrets/%s/%s" % (self.server.state.port, name, version)

    # -- Key Vault -------------------------------------------------------
    def vault(self, path, q):
        st = self.server.state
        with st.lock:
            st.vault_requests += 1
            st.vault_by_path[path] = st.vault_by_path.get(path, 0) + 1
            mode = st.settings["vault_mode"]
            latency = st.settings["vault_latency_s"]
        if latency:
            time.sleep(latency)
        if mode == "down":
            return self.drop()
        if "api-version" not in q:
            return self.send_json(400, {"error": {"code": "MissingApiVersionParameter",
                                                  "message": "The api-version query parameter is required."}})
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with st.lock:
            expiry = st.tokens.get(token) if token else None
            valid = expiry is not None and expiry > time.time()
            if not valid:
                st.rejected_tokens += 1
        if not valid or mode == "401":
            return self.send_json(401, {"error": {"code": "Unauthorized",
                                                  "message": "AKV10000: Request is missing a Bearer or PoP token."}},
                                  headers=[("WWW-Authenticate", 'Bearer authorization="https://login.'
                                            'microsoftonline.com/tenant-1", resource="%s"' % RESOURCE)])
        if mode != "ok":
            code = {"403": "Forbidden", "404": "SecretNotFound", "429": "Throttled"}.get(mode, "InternalError")
            return self.send_json(int(mode), {"error": {"code": code, "message": "mock error %s" % mode}})
        segs = path.split("/")[2:]
        if len(segs) not in (1, 2) or not segs[0]:
            return self.send_json(400, {"error": {"code": "BadParameter", "message": "bad path"}})
        name, version = segs[0], segs[1] if len(segs) == 2 else None
        with st.lock:
            versions = list(st.secrets.get(name, []))
        found = [v for v in versions if v[0] == version] if version else versions[-1:]
        if not found:
            return self.send_json(404, {"error": {"code": "SecretNotFound",
                                                  "message": "A secret with (name/id) %s was not found in this key vault." % name}})
        ver, value, created = found[-1]
        self.send_json(200, {
            "value": value,
            "id": self.secret_id(name, ver),
            "attributes": {"enabled": True, "created": created, "updated": created,
                           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
            "tags": {},
        })

    # -- token endpoints -------------------------------------------------
    def token_gate(self, kind):
        """Counts the request; returns False when token_mode made it fail."""
        st = self.server.state
        with st.lock:
            st.token_requests[kind] += 1
            st.last_token_request = {"kind": kind, "path": self.path,
                                     "headers": dict(self.headers.items())}
            mode = st.settings["token_mode"]
        if mode == "down":
            self.drop()
            return False
        if mode != "ok":
            self.send_json(int(mode), {"error": "temporarily_unavailable",
                                       "error_description": "mock error %s" % mode})
            return False
        return True

    def token_imds(self, q):
        if not self.token_gate("imds"):
            return
        st = self.server.state
        if self.headers.get("Metadata") != "true":
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "Required metadata header not specified"})
        if q.get("api-version") != "2018-02-01" or q.get("resource") != RESOURCE:
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "bad api-version or resource"})
        want = st.settings["imds_client_id"]
        if want is not None and q.get("client_id") != want:
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "Identity not found"})
        token, life, expires = st.issue()
        self.send_json(200, {"access_token": token, "client_id": q.get("client_id", "system-assigned"),
                             "expires_in": str(life), "expires_on": str(expires),
                             "ext_expires_in": str(life), "not_before": str(int(time.time())),
                             "resource": RESOURCE, "token_type": "Bearer"})

    def token_app_service(self, q):
        if not self.token_gate("app_service"):
            return
        st = self.server.state
        if self.headers.get("X-IDENTITY-HEADER") != st.settings["identity_header"]:
            return self.send_json(401, {"error": "unauthorized",
                                        "error_description": "missing or wrong X-IDENTITY-HEADER"})
        if q.get("api-version") != "2019-08-01" or q.get("resource") != RESOURCE:
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "bad api-version or resource"})
        token, life, expires = st.issue()
        self.send_json(200, {"access_token": token, "expires_on": str(expires), "resource": RESOURCE,
                             "token_type": "Bearer", "client_id": q.get("client_id", "system-assigned")})

    def token_entra(self, path, raw):
        if not self.token_gate("entra"):
            return
        st = self.server.state
        form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        tenant = path.split("/")[1]
        s = st.settings
        if tenant != s["tenant"]:
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "AADSTS90002: Tenant not found."})
        if form.get("grant_type") != "client_credentials" or form.get("scope") != SCOPE:
            return self.send_json(400, {"error": "invalid_scope",
                                        "error_description": "bad grant_type or scope"})
        if form.get("client_id") != s["client_id"] or form.get("client_secret") != s["client_secret"]:
            return self.send_json(401, {"error": "invalid_client",
                                        "error_description": "AADSTS7000215: Invalid client secret provided."})
        token, life, _ = st.issue()
        self.send_json(200, {"token_type": "Bearer", "expires_in": life, "ext_expires_in": life,
                             "access_token": token})


def make_server(host, port, state, verbose):
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        block_on_close = False
        allow_reuse_address = True
        request_queue_size = 128

        def server_bind(self):
            socketserver.TCPServer.server_bind(self)  # no reverse DNS lookup
            self.server_name = host
            self.server_port = self.server_address[1]

        def handle_error(self, request, client_address):
            if self.verbose:
                super().handle_error(request, client_address)

    srv = Server((host, port), Handler)
    srv.state = state
    srv.verbose = verbose
    return srv


def main():
    ap = argparse.ArgumentParser(description="Mock Azure Key Vault and token endpoints for aigw tests")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    signal.signal(signal.SIGINT, lambda *a: os._exit(0))
    state = State()
    srv = make_server(args.host, args.port, state, args.verbose)
    state.port = srv.server_address[1]
    sys.stdout.write("READY %d\n" % state.port)
    sys.stdout.flush()
    srv.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()

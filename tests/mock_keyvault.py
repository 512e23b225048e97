#!/usr/bin/env python3
# mock_keyvault.py -- test fixture for aigw's Key Vault secret references and
# Entra ID sign-in to Azure OpenAI.
#
# One process on 127.0.0.1 that stands in for Azure Key Vault and the three
# token endpoints aigw uses. Every token it issues is random, remembered with
# its expiry and its audience: https://vault.azure.net (Key Vault) or
# https://cognitiveservices.azure.com (Azure OpenAI).
#
#   GET  /secrets/NAME[/VERSION]?api-version=7.4    Azure Key Vault. Needs
#        "Authorization: Bearer T" with a token this mock issued for the vault
#        audience that has not expired or been revoked; anything else (a
#        cognitiveservices token too) gets 401 with a WWW-Authenticate header.
#   GET  /metadata/identity/oauth2/token             VM managed identity (IMDS):
#        ?api-version=2018-02-01&resource=R[&client_id=] with "Metadata: true"
#   GET  /msi/token                                  App Service managed identity:
#        ?api-version=2019-08-01&resource=R[&client_id=] with
#        "X-IDENTITY-HEADER: H"
#        R is https://vault.azure.net or https://cognitiveservices.azure.com,
#        exactly. No Metadata header, a wrong api-version or no resource: 400
#        invalid_request; any other resource: 400 {"error": "invalid_resource",
#        "error_description": "AADSTS500011: ..."}. A token answers
#        {"access_token", "expires_on", "resource": R, "token_type": "Bearer",
#        "client_id", ...} (IMDS adds expires_in, ext_expires_in, not_before).
#   POST /TENANT/oauth2/v2.0/token                   Entra ID, form-encoded,
#        grant_type=client_credentials, client_id, scope=R/.default and either
#        client_secret=S (client credentials, counted as "entra") or
#        client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
#        with client_assertion=F, the federated token (AKS workload identity,
#        counted as "workload"). A wrong tenant: 400 invalid_request; another
#        grant_type, or a scope that is not one of the two: 400 invalid_scope;
#        a wrong client_id or
#        client_secret: 401 invalid_client (AADSTS7000215); a wrong client_id
#        or assertion: 401 invalid_client (AADSTS700211); both a secret and an
#        assertion, or an assertion without its type: 400 invalid_request. A
#        token answers {"token_type": "Bearer", "expires_in", "ext_expires_in",
#        "access_token"}; its audience is the scope without "/.default".
#
# Control routes (JSON in, JSON out), for the tests; never recorded in
# "received":
#   POST /_mock/secret  {"name", "value", "version"?}  adds a version, which
#                       becomes the current one; answers {"version", "id"}
#   POST /_mock/delete  {"name"}                       forgets a secret
#   POST /_mock/config  {setting: value, ...}          see below; answers all
#                       the settings; an unknown setting or bad value: 400
#   POST /_mock/revoke  {}                             every issued token stops
#                       being valid (it is still known to introspection)
#   POST /_mock/reset   {}                             secrets, settings, tokens,
#                       stats
#   GET  /_mock/introspect?token=T                     {"active", "audience",
#                       "expires_on"}: active is true when this mock issued T
#                       and T has neither expired nor been revoked; audience
#                       and expires_on (epoch seconds) are those T was issued
#                       with, null for a token this mock never issued. For a
#                       mock Azure OpenAI region to check the bearer tokens
#                       it receives. No token parameter: 400.
#   GET  /_mock/stats                                  {"token_requests": {"imds",
#                       "app_service", "entra", "workload"}, "token_requests_total",
#                       "vault_requests", "vault_by_path", "rejected_tokens" (vault
#                       401s for a bad token, a wrong audience included),
#                       "rejected_audience" (those for a wrong audience),
#                       "issued_tokens" [every token, in order],
#                       "issued_audiences" {token: audience}, "introspect_requests",
#                       "last_token_request" {"kind", "path", "headers", "query",
#                       "form"} (query and form parsed; client_secret and
#                       client_assertion appear as "<present>", never their
#                       value), "received" (everything the non-control routes
#                       received, raw), "settings", "secrets" {name: [versions]}}
#
# Settings (POST /_mock/config):
#   vault_mode, token_mode  "ok", "down" (the connection is closed without an
#                           answer, like a dead host) or an HTTP status to
#                           answer with ("400", "401", "403", "404", "429",
#                           "500", "503")
#   token_lifetime_s        how long an issued token is valid, in seconds
#                           (default 3600; fractions allowed: a token is
#                           refused from issue time + token_lifetime_s on,
#                           and expires_on is that time rounded down)
#   vault_latency_s         a pause before each vault answer (default 0)
#   tenant, client_id, client_secret   what Entra ID accepts ("tenant-1",
#                           "client-1", "client-secret-1")
#   federated_token         the client_assertion workload identity accepts
#                           ("federated-token-for-tests")
#   identity_header         the X-IDENTITY-HEADER App Service demands
#                           ("mock-identity-header")
#   imds_client_id          when set, IMDS demands that client_id (null)
#
# Usage: python3 tests/mock_keyvault.py [--port 0] [--host 127.0.0.1] [--verbose]
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

RESOURCE = "https://vault.azure.net"            # the vault's audience
COGNITIVE_RESOURCE = "https://cognitiveservices.azure.com"  # Azure OpenAI's
RESOURCES = (RESOURCE, COGNITIVE_RESOURCE)
SCOPES = {r + "/.default": r for r in RESOURCES}  # scope -> audience
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SECRET_FIELDS = ("client_secret", "client_assertion")  # never shown in stats
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
    "federated_token": "federated-token-for-tests",
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
        if k in ("tenant", "client_id", "client_secret", "federated_token",
                 "identity_header") and not isinstance(v, str):
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
        self.tokens = {}           # valid token -> expiry (epoch seconds); revoke empties it
        self.issued = []           # every token ever issued, for the leak checks
        self.audiences = {}        # every token ever issued -> its audience
        self.expiries = {}         # every token ever issued -> its expiry
        self.token_requests = {"imds": 0, "app_service": 0, "entra": 0, "workload": 0}
        self.vault_requests = 0
        self.vault_by_path = {}
        self.rejected_tokens = 0
        self.rejected_audience = 0
        self.introspect_requests = 0
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
                "rejected_audience": self.rejected_audience,
                "issued_tokens": list(self.issued),
                "issued_audiences": dict(self.audiences),
                "introspect_requests": self.introspect_requests,
                "last_token_request": self.last_token_request,
                "received": list(self.received),
                "settings": dict(self.settings),
                "secrets": {n: [v for v, _, _ in vs] for n, vs in self.secrets.items()},
            }

    def issue(self, audience):
        """A new token for audience; returns (token, lifetime, expires_on), both
        whole seconds. It is refused from exactly issue time + lifetime on."""
        with self.lock:
            token = "mock-token-" + pysecrets.token_hex(16)
            life = self.settings["token_lifetime_s"]
            expiry = time.time() + life
            self.tokens[token] = expiry
            self.expiries[token] = expiry
            self.audiences[token] = audience
            self.issued.append(token)
            return token, int(life), int(expiry)

    def check_token(self, token):
        """(valid, audience): valid when issued here, not expired, not revoked."""
        with self.lock:
            expiry = self.tokens.get(token) if token else None
            valid = expiry is not None and expiry > time.time()
            return valid, self.audiences.get(token) if token else None

    def introspect(self, token):
        valid, audience = self.check_token(token)
        with self.lock:
            self.introspect_requests += 1
            expiry = self.expiries.get(token)
        return {"active": valid, "audience": audience,
                "expires_on": int(expiry) if expiry is not None else None}


def shown(fields):
    """Request parameters for the stats: secrets by presence only."""
    return {k: "<present>" if k in SECRET_FIELDS else v for k, v in fields.items()}


def parse_fields(text):
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


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
            return self.control(path, query, raw)
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
            return self.token_imds(q, query)
        if path == APP_SERVICE_PATH and self.command == "GET":
            return self.token_app_service(q, query)
        if path.endswith("/oauth2/v2.0/token") and self.command == "POST":
            return self.token_entra(path, raw)
        self.send_json(404, {"error": {"code": "NotFound", "message": "no such route"}})

    # -- control ---------------------------------------------------------
    def control(self, path, query, raw):
        st = self.server.state
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as e:
            return self.send_json(400, {"error": "invalid JSON: %s" % e})
        if path == "/_mock/stats" and self.command == "GET":
            return self.send_json(200, st.stats())
        if path == "/_mock/introspect" and self.command == "GET":
            token = parse_fields(query).get("token")
            if not token:
                return self.send_json(400, {"error": "token query parameter required"})
            return self.send_json(200, st.introspect(token))
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
        valid, audience = st.check_token(token)
        wrong_audience = valid and audience != RESOURCE
        if not valid or wrong_audience:
            with st.lock:
                st.rejected_tokens += 1
                if wrong_audience:
                    st.rejected_audience += 1
        if not valid or wrong_audience or mode == "401":
            message = ("AKV10022: Invalid audience. Expected %s, found: %s." % (RESOURCE, audience)
                       if wrong_audience and mode != "401"
                       else "AKV10000: Request is missing a Bearer or PoP token.")
            return self.send_json(401, {"error": {"code": "Unauthorized", "message": message}},
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
    def token_gate(self, kind, query="", body=""):
        """Counts and records the request; returns False when token_mode made it fail."""
        st = self.server.state
        with st.lock:
            st.token_requests[kind] += 1
            st.last_token_request = {"kind": kind, "path": self.path,
                                     "headers": dict(self.headers.items()),
                                     "query": shown(parse_fields(query)),
                                     "form": shown(parse_fields(body))}
            mode = st.settings["token_mode"]
        if mode == "down":
            self.drop()
            return False
        if mode != "ok":
            self.send_json(int(mode), {"error": "temporarily_unavailable",
                                       "error_description": "mock error %s" % mode})
            return False
        return True

    def bad_resource(self, q, api_version):
        """Answers the 400 a managed identity endpoint gives for a bad api-version or
        resource and returns True; returns False when q is good."""
        resource = q.get("resource")
        if q.get("api-version") != api_version:
            error, why = "invalid_request", "bad api-version or resource"
        elif not resource:
            error, why = "invalid_request", "Required audience parameter not specified"
        elif resource not in RESOURCES:
            error, why = "invalid_resource", (
                "AADSTS500011: The resource principal named %s was not found in the tenant "
                "named %s." % (resource, self.server.state.settings["tenant"]))
        else:
            return False
        self.send_json(400, {"error": error, "error_description": why})
        return True

    def token_imds(self, q, query):
        if not self.token_gate("imds", query=query):
            return
        st = self.server.state
        if self.headers.get("Metadata") != "true":
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "Required metadata header not specified"})
        if self.bad_resource(q, "2018-02-01"):
            return
        want = st.settings["imds_client_id"]
        if want is not None and q.get("client_id") != want:
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "Identity not found"})
        resource = q["resource"]
        token, life, expires = st.issue(resource)
        self.send_json(200, {"access_token": token, "client_id": q.get("client_id", "system-assigned"),
                             "expires_in": str(life), "expires_on": str(expires),
                             "ext_expires_in": str(life), "not_before": str(int(time.time())),
                             "resource": resource, "token_type": "Bearer"})

    def token_app_service(self, q, query):
        if not self.token_gate("app_service", query=query):
            return
        st = self.server.state
        if self.headers.get("X-IDENTITY-HEADER") != st.settings["identity_header"]:
            return self.send_json(401, {"error": "unauthorized",
                                        "error_description": "missing or wrong X-IDENTITY-HEADER"})
        if self.bad_resource(q, "2019-08-01"):
            return
        resource = q["resource"]
        token, life, expires = st.issue(resource)
        self.send_json(200, {"access_token": token, "expires_on": str(expires), "resource": resource,
                             "token_type": "Bearer", "client_id": q.get("client_id", "system-assigned")})

    def token_entra(self, path, raw):
        body = raw.decode("utf-8", "replace")
        form = {k: v[-1] for k, v in parse_qs(body).items()}
        seen = parse_fields(body)
        # A client assertion instead of a secret: workload identity (federated credentials).
        workload = "client_assertion" in seen or "client_assertion_type" in seen
        if not self.token_gate("workload" if workload else "entra", body=body):
            return
        st = self.server.state
        tenant = path.split("/")[1]
        s = st.settings
        if tenant != s["tenant"]:
            return self.send_json(400, {"error": "invalid_request",
                                        "error_description": "AADSTS90002: Tenant not found."})
        if form.get("grant_type") != "client_credentials":
            return self.send_json(400, {"error": "invalid_scope",
                                        "error_description": "bad grant_type or scope"})
        audience = SCOPES.get(form.get("scope"))
        if audience is None:
            return self.send_json(400, {"error": "invalid_scope", "error_description":
                                        "AADSTS70011: The provided value for the input parameter 'scope' "
                                        "is not valid. The scope %s is not valid." % form.get("scope", "")})
        if workload:
            if "client_secret" in seen:
                return self.send_json(400, {"error": "invalid_request", "error_description":
                                            "only one of client_secret and client_assertion may be given"})
            if form.get("client_assertion_type") != JWT_BEARER or not form.get("client_assertion"):
                return self.send_json(400, {"error": "invalid_request", "error_description":
                                            "client_assertion needs client_assertion_type=" + JWT_BEARER})
            if form.get("client_id") != s["client_id"] or form["client_assertion"] != s["federated_token"]:
                return self.send_json(401, {"error": "invalid_client", "error_description":
                                            "AADSTS700211: No matching federated identity record found "
                                            "for presented assertion."})
        elif form.get("client_id") != s["client_id"] or form.get("client_secret") != s["client_secret"]:
            return self.send_json(401, {"error": "invalid_client",
                                        "error_description": "AADSTS7000215: Invalid client secret provided."})
        token, life, _ = st.issue(audience)
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

#!/usr/bin/env python3
# mock_region.py -- test fixture for the aigw integration tests.
#
# A fake "Azure OpenAI region" (one resource endpoint) that the integration
# tests start as a subprocess on 127.0.0.1 and point the gateway at. It speaks
# the Azure OpenAI REST API (chat completions, streamed or not, embeddings,
# model list, the Responses API) plus the OpenAI-style /v1 variants, and its
# behaviour can be changed at runtime through the /_mock/* control routes so
# that tests can inject the failures real regions produce (500, 429 +
# Retry-After, 400, 401, hangs, dropped connections, malformed JSON, broken
# streams, refused connections).
#
# Usage: python3 tests/mock_region.py --port PORT [--name east] [--host 127.0.0.1]
# Once listening it prints exactly one line "READY <port>" on stdout.
# Python 3.11, standard library only.
#
# API routes (a trailing slash is accepted on each):
#   azure flavour -- key in the api-key header (or "Authorization: Bearer T"
#   when the expect_bearer setting is T); 401 otherwise:
#     POST /openai/deployments/{deployment}/chat/completions?api-version=V
#     POST /openai/deployments/{deployment}/embeddings?api-version=V
#     GET  /openai/models?api-version=V
#     POST /openai/responses?api-version=V                  (preview API)
#     GET|DELETE /openai/responses/{id}?api-version=V
#     GET  /openai/responses/{id}/input_items?api-version=V
#     (a missing api-version on these is a 404, as on Azure)
#     GA v1, no api-version needed; the deployment is the body's "model":
#     POST /openai/v1/chat/completions      POST /openai/v1/embeddings
#     GET  /openai/v1/models                POST /openai/v1/responses
#     GET|DELETE /openai/v1/responses/{id}  GET /openai/v1/responses/{id}/input_items
#   openai flavour -- "Authorization: Bearer KEY"; 401 invalid_api_key otherwise:
#     POST /v1/chat/completions   POST /v1/embeddings   GET /v1/models
#     POST /v1/responses   GET|DELETE /v1/responses/{id}   GET /v1/responses/{id}/input_items
# Any other path is a 404; so is a wrong method on a known path.
#
# Chat completions answer `reply` (streamed as `data: {chunk}` lines ending in
# `data: [DONE]` when "stream": true; Azure streams open with a prompt-filter
# chunk). The Responses API answers a "response" object whose output is one
# assistant message with `reply`; with "stream": true it sends the typed events
# (`event: T` + `data: {"type": T, "sequence_number": n, ...}`) from
# response.created to response.completed, without [DONE]. Responses are
# remembered in memory unless "store": false (per process, until
# /_mock/reset): previous_response_id must name one of them (else 400
# previous_response_not_found), and GET / DELETE / input_items read them (404
# for an unknown id). In the azure flavour a Responses call needs "model" (the
# deployment).
#
# Control routes (never subject to the settings below):
#   GET  /_mock/stats    requests, by_path, last_headers, last_body, last_query,
#                        in_flight, max_in_flight, responses (number stored)
#   GET  /_mock/config   the settings
#   POST /_mock/config   {setting: value, ...} merged into the settings
#   POST /_mock/reset    default settings, stats and stored responses cleared
#   POST /_mock/down     {"seconds": S}: stop listening (connections refused,
#                        open ones dropped) for S seconds, then come back
#
# Settings (POST /_mock/config):
#   mode              ok | 500 | 429 (+ Retry-After) | 400 | 401 | hang (wait
#                     hang_s, then answer normally) | close (drop the
#                     connection) | malformed (200 with truncated JSON) |
#                     stream_break (streams drop after 2 content pieces,
#                     anything else is dropped at once); applies to every API
#                     route, before routing and authentication
#   fail_count        null, or apply `mode` to only the next N requests
#   reply             the assistant text (default "Hello from <name>")
#   prompt_tokens     usage reported; null = estimated from the input
#   completion_tokens                   (characters // 4 + 1)
#   retry_after       seconds in 429 answers (Retry-After, retry-after-ms)
#   hang_s            how long mode "hang" waits
#   stream_delay_s    pause between the events of a chat stream; in a
#                     Responses stream before each text delta and text done
#   stream_chunks     null = one stream piece per word, N = reply in N pieces
#   expect_key        null = any non-empty key; else the key that must come
#   expect_bearer     null, or a bearer token also accepted on azure routes
#   bearer_introspect_url  null, or the token service's introspection URL: a
#                     bearer token it calls live with audience
#                     https://cognitiveservices.azure.com is accepted too
#   bearer_only       refuse api-key (an Azure resource with disableLocalAuth)
#   latency_s         delay before every API answer
#   usage_on_finish_chunk  chat streams: usage on the finish_reason chunk
#   null_id           chat answers carry "id": null

import argparse
import base64
import hashlib
import json
import math
import os
import random
import re
import signal
import socket
import socketserver
import string
import struct
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MODES = ("ok", "500", "429", "400", "401", "hang", "close", "malformed",
         "stream_break")

AZURE_CHAT_MODEL = "gpt-4o-2024-08-06"
AZURE_EMBED_MODEL = "text-embedding-3-small"
OPENAI_CHAT_MODEL = "gpt-4o"
OPENAI_EMBED_MODEL = "text-embedding-3-small"

MAX_BODY = 64 * 1024 * 1024

ERR_401 = {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}
ERR_404 = {"error": {"code": "404", "message": "Resource not found"}}
ERR_500 = {"error": {"code": "InternalServerError", "message": "The server had an error while processing your request."}}
ERR_400 = {"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}}
MALFORMED_BODY = b'{"choices": [ {"message": '
MALFORMED_RESPONSE_BODY = b'{"id": "resp_mock", "object": "response", "output": [ {"type": "message", '
FILTER_OK = {"hate": {"filtered": False, "severity": "safe"}}


def default_config(name):
    return {
        "mode": "ok",
        "fail_count": None,
        "reply": "Hello from %s" % name,
        "prompt_tokens": None,
        "completion_tokens": None,
        "retry_after": 2,
        "hang_s": 30,
        "stream_delay_s": 0,
        "stream_chunks": None,
        "expect_key": None,
        # A bearer token also accepted on azure routes (Entra ID style).
        "expect_bearer": None,
        # Entra ID sign-in: a bearer token is accepted when this introspection
        # URL (tests/mock_keyvault.py's /_mock/introspect) says it is live and
        # issued for https://cognitiveservices.azure.com.
        "bearer_introspect_url": None,
        # The resource has local authentication disabled: api-key refused.
        "bearer_only": False,
        "latency_s": 0,
        # Some providers send usage on the last chunk that still has choices
        # (the finish_reason chunk) instead of a separate chunk with none.
        "usage_on_finish_chunk": False,
        # The id field of answers; some providers send null.
        "null_id": False,
    }


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def validate_config_update(upd):
    """Return an error string, or None when `upd` is acceptable."""
    if not isinstance(upd, dict):
        return "config must be a JSON object"
    for k, v in upd.items():
        if k == "mode":
            if v not in MODES:
                return "mode must be one of %s" % ", ".join(MODES)
        elif k == "fail_count":
            if v is not None and not (_is_int(v) and v >= 0):
                return "fail_count must be a non-negative integer or null"
        elif k == "reply":
            if not isinstance(v, str):
                return "reply must be a string"
        elif k in ("prompt_tokens", "completion_tokens"):
            if v is not None and not (_is_int(v) and v >= 0):
                return "%s must be a non-negative integer or null" % k
        elif k == "stream_chunks":
            if v is not None and not (_is_int(v) and v >= 1):
                return "stream_chunks must be a positive integer or null"
        elif k in ("retry_after", "hang_s", "stream_delay_s", "latency_s"):
            if not (_is_num(v) and v >= 0):
                return "%s must be a non-negative number" % k
        elif k in ("usage_on_finish_chunk", "null_id"):
            if not isinstance(v, bool):
                return "%s must be true or false" % k
        elif k == "bearer_only":
            if not isinstance(v, bool):
                return "bearer_only must be true or false"
        elif k in ("expect_key", "expect_bearer", "bearer_introspect_url"):
            if v is not None and not isinstance(v, str):
                return "%s must be a string or null" % k
        else:
            return "unknown setting %r" % k
    return None


class State:
    """Config, stats and connection bookkeeping shared by all server
    incarnations (it survives /_mock/down)."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.epoch = 0              # bumped on reset / down: wakes sleepers
        self.config = default_config(name)
        self.in_flight = 0
        self.conns = set()
        self.server = None
        self.port = None
        self.going_down = False
        self.down_seconds = 0.0
        # Responses API objects stored by this region: id -> (response, input items)
        self.responses = {}
        self._clear_stats()

    def _clear_stats(self):
        self.requests = 0
        self.by_path = {}
        self.last_headers = {}
        self.last_body = None
        self.last_query = None
        self.max_in_flight = self.in_flight

    # -- control ---------------------------------------------------------
    def reset(self):
        with self.cond:
            self.config = default_config(self.name)
            self._clear_stats()
            self.responses.clear()
            self.epoch += 1
            self.cond.notify_all()
            return dict(self.config)

    def merge_config(self, upd):
        with self.lock:
            self.config.update(upd)
            return dict(self.config)

    def get_config(self):
        with self.lock:
            return dict(self.config)

    def stats(self):
        with self.lock:
            return {
                "requests": self.requests,
                "by_path": dict(self.by_path),
                "last_headers": dict(self.last_headers),
                "last_body": self.last_body,
                "last_query": self.last_query,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "responses": len(self.responses),
            }

    # -- stored responses (Responses API) --------------------------------
    def store_response(self, resp, items):
        with self.lock:
            self.responses[resp["id"]] = (json.loads(json.dumps(resp)), items)

    def get_response(self, rid):
        """(response, input items) or None."""
        with self.lock:
            got = self.responses.get(rid)
            return json.loads(json.dumps(got)) if got is not None else None

    def has_response(self, rid):
        with self.lock:
            return rid in self.responses

    def delete_response(self, rid):
        with self.lock:
            return self.responses.pop(rid, None) is not None

    def wake_sleepers(self):
        with self.cond:
            self.epoch += 1
            self.cond.notify_all()

    # -- per request -----------------------------------------------------
    def arrive(self, path, headers, body, query):
        """Record an API request; return (config snapshot, effective mode,
        epoch)."""
        with self.lock:
            self.requests += 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            self.last_headers = headers
            self.last_body = body
            self.last_query = query
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight
            cfg = dict(self.config)
            mode = cfg["mode"]
            fc = cfg["fail_count"]
            if fc is not None:
                if fc > 0:
                    self.config["fail_count"] = fc - 1
                else:
                    mode = "ok"
            return cfg, mode, self.epoch

    def depart(self):
        with self.lock:
            self.in_flight -= 1

    def sleep(self, seconds, epoch):
        """Sleep, but wake early if reset/down happens meanwhile."""
        if not seconds or seconds <= 0:
            return
        deadline = time.monotonic() + seconds
        with self.cond:
            while self.epoch == epoch:
                rem = deadline - time.monotonic()
                if rem <= 0:
                    return
                self.cond.wait(rem)

    # -- connections -----------------------------------------------------
    def track(self, sock):
        with self.lock:
            self.conns.add(sock)

    def untrack(self, sock):
        with self.lock:
            self.conns.discard(sock)

    def shutdown_all_connections(self):
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class BodyError(Exception):
    pass


def rand_id(prefix):
    return prefix + "".join(random.choices(string.ascii_letters + string.digits, k=29))


def content_chars(c):
    """Characters of one message's content: a string, or parts with text."""
    if isinstance(c, str):
        return len(c)
    total = 0
    if isinstance(c, list):
        for part in c:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
            elif isinstance(part, str):
                total += len(part)
    return total


def message_chars(messages):
    if not isinstance(messages, list):
        return 0
    return sum(content_chars(m.get("content")) for m in messages if isinstance(m, dict))


def input_chars(inp):
    """Characters of a Responses API input: a string, or the text of its
    items (content as a string or a list of parts with text)."""
    if isinstance(inp, str):
        return len(inp)
    return message_chars(inp)


def normalise_input(inp):
    """A Responses API input as the list of items it stands for (with ids),
    or None when it is neither a string nor a list of item objects."""
    if isinstance(inp, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": inp}], "id": rand_id("msg_")}]
    if not isinstance(inp, list) or not all(isinstance(x, dict) for x in inp):
        return None
    items = []
    for x in inp:
        item = dict(x)
        if "role" in item and "type" not in item:
            item["type"] = "message"
        if item.get("type") == "message" and isinstance(item.get("content"), str):
            ptype = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": ptype, "text": item["content"]}]
        if "id" not in item:
            item["id"] = rand_id("msg_" if item.get("type") == "message" else "item_")
        items.append(item)
    return items


def split_reply(reply, n):
    if n:
        length = len(reply)
        pieces = [reply[i * length // n:(i + 1) * length // n] for i in range(n)]
        pieces = [p for p in pieces if p]
    else:
        pieces = re.findall(r"\S+\s*", reply)
        lead = re.match(r"\s*", reply).group(0)
        if pieces and lead:
            pieces[0] = lead + pieces[0]
        elif not pieces and reply:
            pieces = [reply]
    return pieces or [""]


def fake_embedding(item, dims):
    seed = json.dumps(item, sort_keys=True).encode("utf-8")
    out = b""
    counter = 0
    while len(out) < dims:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    vec = [(b - 127.5) / 127.5 for b in out[:dims]]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 6) for v in vec]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-azure-openai"
    sys_version = ""
    disable_nagle_algorithm = True

    def version_string(self):
        return self.server_version

    # -- plumbing --------------------------------------------------------
    def log_message(self, fmt, *args):
        if getattr(self.server, "verbose", False):
            sys.stderr.write("[%s] %s\n" % (self.server.state.name, fmt % args))

    def setup(self):
        super().setup()
        self.server.state.track(self.connection)

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass
        finally:
            self.server.state.untrack(self.connection)

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (OSError, ValueError):
            # BrokenPipe, ConnectionReset, socket shut down by /_mock/down...
            self.close_connection = True

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            data = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionResetError("eof in chunked body")
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise BodyError("bad chunk size")
                if size < 0:
                    raise BodyError("bad chunk size")
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if not t:
                            raise ConnectionResetError("eof in trailers")
                        if t in (b"\r\n", b"\n"):
                            break
                    return bytes(data)
                if len(data) + size > MAX_BODY:
                    raise BodyError("body too large")
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise ConnectionResetError("eof in chunk")
                data += chunk
                crlf = self.rfile.readline(65537)
                if crlf not in (b"\r\n", b"\n"):
                    raise BodyError("missing CRLF after chunk")
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl.strip())
        except ValueError:
            raise BodyError("bad Content-Length")
        if n < 0 or n > MAX_BODY:
            raise BodyError("bad Content-Length")
        data = self.rfile.read(n)
        if len(data) < n:
            raise ConnectionResetError("eof in body")
        return data

    def send_raw(self, status, data, ctype="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_json(self, status, obj, headers=()):
        self.send_raw(status, json.dumps(obj, separators=(",", ":")).encode("utf-8"), "application/json", headers)

    def drop(self):
        """Close the connection without (further) response bytes."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except (OSError, ValueError):
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def api_headers(self):
        rid = str(uuid.uuid4())
        return [
            ("x-ms-region", self.server.state.name),
            ("x-ms-request-id", rid),
            ("x-request-id", rid),
            ("apim-request-id", str(uuid.uuid4())),
            ("openai-processing-ms", "12"),
            ("x-ratelimit-remaining-requests", "99"),
            ("x-ratelimit-remaining-tokens", "99000"),
        ]

    # -- dispatch --------------------------------------------------------
    def dispatch(self):
        parts = urlsplit(self.path)
        path, query = parts.path, parts.query
        try:
            raw = self.read_body()
        except BodyError as e:
            self.close_connection = True
            self.send_json(400, {"error": {"code": "BadRequest", "message": str(e)}})
            return
        self._started = False
        try:
            if path == "/_mock" or path.startswith("/_mock/"):
                self.handle_mock(path, raw)
            else:
                self.handle_api(path, query, raw)
        except (OSError, ValueError):
            raise
        except Exception:
            tb = traceback.format_exc()
            sys.stderr.write(tb)
            self.close_connection = True
            if not self._started:
                self.send_json(500, {"error": {"code": "MockBug", "message": tb}})

    def send_response(self, code, message=None):
        self._started = True
        super().send_response(code, message)

    # -- control API -----------------------------------------------------
    def handle_mock(self, path, raw):
        st = self.server.state
        method = self.command
        body = None
        if raw:
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                self.send_json(400, {"error": "invalid JSON: %s" % e})
                return
        if path == "/_mock/stats" and method == "GET":
            self.send_json(200, st.stats())
        elif path == "/_mock/config" and method == "GET":
            cfg = st.get_config()
            self.send_json(200, cfg)
        elif path == "/_mock/config" and method == "POST":
            upd = body if body is not None else {}
            err = validate_config_update(upd)
            if err:
                self.send_json(400, {"error": err})
                return
            self.send_json(200, st.merge_config(upd))
        elif path == "/_mock/reset" and method == "POST":
            self.send_json(200, st.reset())
        elif path == "/_mock/down" and method == "POST":
            secs = (body or {}).get("seconds") if isinstance(body, dict) else None
            if not (_is_num(secs) and secs >= 0):
                self.send_json(400, {"error": "seconds must be a non-negative number"})
                return
            with st.lock:
                if st.going_down:
                    busy = True
                else:
                    busy = False
                    st.going_down = True
                    st.down_seconds = float(secs)
                srv = st.server
            if busy:
                self.send_json(409, {"error": "already going down"})
                return
            self.close_connection = True
            self.send_json(200, {"down": True, "seconds": secs, "port": st.port})
            threading.Thread(target=srv.shutdown, daemon=True).start()
        else:
            self.send_json(404, {"error": "unknown control route %s %s" % (method, path)})

    # -- API ---------------------------------------------------------------
    def route(self, path):
        """Return (flavor, kind, deployment, response id, needs api-version)
        or None. kind: chat, embeddings, models, responses (create),
        response (one stored response), input_items. deployment None means
        it is the body's "model" (or there is none)."""
        m = re.fullmatch(r"/openai/deployments/([^/]+)/(chat/completions|embeddings)/?", path)
        if m:
            kind = "chat" if m.group(2) == "chat/completions" else "embeddings"
            return ("azure", kind, m.group(1), None, True)
        if re.fullmatch(r"/openai/models/?", path):
            return ("azure", "models", None, None, True)
        m = re.fullmatch(r"/openai/(v1/)?responses/?", path)
        if m:
            return ("azure", "responses", None, None, not m.group(1))
        m = re.fullmatch(r"/openai/(v1/)?responses/([^/]+)(/input_items)?/?", path)
        if m:
            return ("azure", "input_items" if m.group(3) else "response", None,
                    m.group(2), not m.group(1))
        m = re.fullmatch(r"/openai/v1/(chat/completions|embeddings|models)/?", path)
        if m:
            kind = {"chat/completions": "chat"}.get(m.group(1), m.group(1))
            return ("azure", kind, None, None, False)
        m = re.fullmatch(r"/v1/(chat/completions|embeddings|models|responses)/?", path)
        if m:
            kind = {"chat/completions": "chat"}.get(m.group(1), m.group(1))
            return ("openai", kind, None, None, False)
        m = re.fullmatch(r"/v1/responses/([^/]+)(/input_items)?/?", path)
        if m:
            return ("openai", "input_items" if m.group(2) else "response", None, m.group(1), False)
        return None

    def handle_api(self, path, query, raw):
        st = self.server.state
        body, body_err = None, None
        if raw:
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                body_err = str(e)
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        cfg, mode, epoch = st.arrive(path, headers, body, query)
        try:
            self.api(path, query, raw, body, body_err, cfg, mode, epoch)
        finally:
            st.depart()

    def api(self, path, query, raw, body, body_err, cfg, mode, epoch):
        st = self.server.state
        rt = self.route(path)
        qs = parse_qs(query, keep_blank_values=True)
        api_version = (qs.get("api-version") or [""])[0]
        is_stream = (rt is not None and rt[1] in ("chat", "responses") and self.command == "POST"
                     and isinstance(body, dict) and body.get("stream") is True)

        if cfg["latency_s"]:
            st.sleep(cfg["latency_s"], epoch)

        # ---- fault injection ----
        if mode == "close" or (mode == "stream_break" and not is_stream):
            self.drop()
            return
        if mode == "500":
            self.send_json(500, ERR_500, self.api_headers())
            return
        if mode == "401":
            self.send_json(401, ERR_401, self.api_headers())
            return
        if mode == "400":
            self.send_json(400, ERR_400, self.api_headers())
            return
        if mode == "429":
            ra = cfg["retry_after"]
            ra_s = max(0, int(math.ceil(ra)))
            op = {"chat": "ChatCompletions_Create", "embeddings": "Embeddings_Create",
                  "responses": "Responses_Create"}.get(
                rt[1] if rt else "", "ChatCompletions_Create")
            msg = ("Requests to the %s Operation under Azure OpenAI API version %s have "
                   "exceeded token rate limit of your current OpenAI S0 pricing tier. "
                   "Please retry after %d seconds. Please go here: "
                   "https://aka.ms/oai/quotaincrease if you would like to further "
                   "increase the default rate limit." % (op, api_version or "2024-10-21", ra_s))
            hdrs = self.api_headers() + [("Retry-After", str(ra_s)),
                                         ("retry-after-ms", str(int(round(ra * 1000))))]
            self.send_json(429, {"error": {"code": "429", "message": msg}}, hdrs)
            return
        if mode == "malformed":
            bad = MALFORMED_RESPONSE_BODY if rt and rt[1] in ("responses", "response") else MALFORMED_BODY
            self.send_raw(200, bad, "application/json", self.api_headers())
            return
        if mode == "hang":
            st.sleep(cfg["hang_s"], epoch)
        break_stream = (mode == "stream_break")

        # ---- normal behaviour ----
        if rt is None:
            self.send_json(404, ERR_404, self.api_headers())
            return
        flavor, kind, deployment, resp_id, needs_version = rt
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if flavor == "azure":
            if needs_version and not api_version:
                self.send_json(404, ERR_404, self.api_headers())
                return
            key = self.headers.get("api-key", "")
            key_ok = bool(key) and (cfg["expect_key"] is None or key == cfg["expect_key"])
            bearer_ok = bool(token) and cfg["expect_bearer"] is not None and token == cfg["expect_bearer"]
            if token and cfg["bearer_introspect_url"] and not bearer_ok:
                bearer_ok = self.token_is_live(cfg["bearer_introspect_url"], token)
            if cfg["bearer_only"] and key:
                key_ok = False  # disableLocalAuth: keys are refused
            if not (key_ok or bearer_ok):
                self.send_json(401, ERR_401, self.api_headers())
                return
        else:
            if not token or (cfg["expect_key"] is not None and token != cfg["expect_key"]):
                self.send_json(401, {"error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error", "param": None,
                    "code": "invalid_api_key"}}, self.api_headers())
                return

        if kind == "models":
            if self.command != "GET":
                self.send_json(404, ERR_404, self.api_headers())
                return
            self.send_json(200, self.models_list(flavor), self.api_headers())
            return
        if kind == "response":
            if self.command == "GET":
                self.response_get(resp_id)
            elif self.command == "DELETE":
                self.response_delete(resp_id)
            else:
                self.send_json(404, ERR_404, self.api_headers())
            return
        if kind == "input_items":
            if self.command != "GET":
                self.send_json(404, ERR_404, self.api_headers())
                return
            self.response_input_items(resp_id, parse_qs(query))
            return

        if self.command != "POST":
            self.send_json(404, ERR_404, self.api_headers())
            return
        if body_err is not None or not isinstance(body, dict):
            msg = ("Invalid JSON in request body: %s" % body_err) if body_err else \
                "Request body must be a JSON object."
            self.send_json(400, {"error": {"code": "BadRequest", "message": msg}}, self.api_headers())
            return

        if kind == "responses":
            self.responses_create(flavor, body, cfg, is_stream, break_stream, epoch)
            return
        if flavor == "azure" and deployment is None and not (
                isinstance(body.get("model"), str) and body["model"]):
            # /openai/v1/...: the deployment is the body's model.
            self.invalid_request("Missing required parameter: 'model'.", "model")
            return
        if kind == "chat":
            self.chat(flavor, body, cfg, is_stream, break_stream, epoch)
        else:
            self.embeddings(flavor, body, cfg)

    def token_is_live(self, url, token):
        """Asks the token service whether it issued this token for Azure OpenAI."""
        from urllib.parse import quote
        from urllib.request import urlopen
        try:
            with urlopen(url + ("&" if "?" in url else "?") + "token=" + quote(token), timeout=5) as r:
                d = json.loads(r.read())
        except (OSError, ValueError):
            return False
        return d.get("active") is True and d.get("audience") == "https://cognitiveservices.azure.com"

    def start_event_stream(self):
        """The status and headers of a chunked text/event-stream answer."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in self.api_headers():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()

    def invalid_request(self, message, param=None):
        self.send_json(400, {"error": {"message": message, "type": "invalid_request_error",
                                       "param": param, "code": None}}, self.api_headers())

    # -- Responses API -----------------------------------------------------
    def response_not_found(self, rid):
        self.send_json(404, {"error": {"message": "Response with id '%s' not found." % rid,
                                       "type": "invalid_request_error", "param": None,
                                       "code": None}}, self.api_headers())

    def response_get(self, rid):
        got = self.server.state.get_response(rid)
        if got is None:
            self.response_not_found(rid)
            return
        self.send_json(200, got[0], self.api_headers())

    def response_delete(self, rid):
        if not self.server.state.delete_response(rid):
            self.response_not_found(rid)
            return
        self.send_json(200, {"id": rid, "object": "response", "deleted": True}, self.api_headers())

    def response_input_items(self, rid, qs):
        got = self.server.state.get_response(rid)
        if got is None:
            self.response_not_found(rid)
            return
        items = got[1]
        # Input order unless ?order=desc; ?after=<item id> and ?limit=N page.
        if (qs.get("order") or [""])[0] == "desc":
            items = items[::-1]
        after = (qs.get("after") or [""])[0]
        if after:
            ids = [it.get("id") for it in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        limit = (qs.get("limit") or [""])[0]
        has_more = False
        if limit.isdigit() and 1 <= int(limit) <= 100:
            has_more = len(items) > int(limit)
            items = items[:int(limit)]
        self.send_json(200, {"object": "list", "data": items,
                             "first_id": items[0].get("id") if items else None,
                             "last_id": items[-1].get("id") if items else None,
                             "has_more": has_more}, self.api_headers())

    def responses_create(self, flavor, body, cfg, is_stream, break_stream, epoch):
        st = self.server.state
        model = body.get("model")
        if not (isinstance(model, str) and model):
            if flavor == "azure":
                # The deployment: Azure cannot do without it.
                self.invalid_request("Missing required parameter: 'model'.", "model")
                return
            model = OPENAI_CHAT_MODEL
        inp = body.get("input")
        if inp is None:
            self.invalid_request("Missing required parameter: 'input'.", "input")
            return
        items = normalise_input(inp)
        if items is None:
            self.invalid_request("Invalid type for 'input': expected a string or an array "
                                 "of input items.", "input")
            return
        prev = body.get("previous_response_id")
        if prev is not None and not isinstance(prev, str):
            self.invalid_request("Invalid type for 'previous_response_id': expected a string.",
                                 "previous_response_id")
            return
        if prev is not None and not st.has_response(prev):
            self.send_json(400, {"error": {
                "message": "Previous response with id '%s' not found." % prev,
                "type": "invalid_request_error", "param": "previous_response_id",
                "code": "previous_response_not_found"}}, self.api_headers())
            return

        reply = cfg["reply"]
        instructions = body.get("instructions") if isinstance(body.get("instructions"), str) else None
        p = cfg["prompt_tokens"]
        if p is None:
            p = (input_chars(inp) + len(instructions or "")) // 4 + 1
        c = cfg["completion_tokens"]
        if c is None:
            c = len(reply) // 4 + 1
        usage = {"input_tokens": p, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": c, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": p + c}
        store = body.get("store") is not False
        rid = rand_id("resp_")
        mid = rand_id("msg_")
        temperature = body.get("temperature")
        max_out = body.get("max_output_tokens")

        def response(status, output, use):
            return {
                "id": rid, "object": "response", "created_at": created, "status": status,
                "error": None, "incomplete_details": None, "instructions": instructions,
                "max_output_tokens": max_out if _is_int(max_out) else None,
                "model": model, "output": output, "parallel_tool_calls": True,
                "previous_response_id": prev, "reasoning": {"effort": None, "summary": None},
                "store": store, "temperature": temperature if _is_num(temperature) else 1.0,
                "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
                "top_p": 1.0, "truncation": "disabled", "usage": use,
                "user": body.get("user") if isinstance(body.get("user"), str) else None,
                "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
            }

        def message(status, content):
            return {"type": "message", "id": mid, "status": status, "role": "assistant",
                    "content": content}

        def text_part(text):
            return {"type": "output_text", "text": text, "annotations": []}

        created = int(time.time())
        done = response("completed", [message("completed", [text_part(reply)])], usage)

        if not is_stream:
            if store:
                st.store_response(done, items)
            self.send_json(200, done, self.api_headers())
            return

        # ---- streaming: typed events, no [DONE] ----
        self.start_event_stream()

        delay = cfg["stream_delay_s"]
        seq = [0]

        def event(etype, pause=False, **fields):
            if pause and delay:
                st.sleep(delay, epoch)
            payload = {"type": etype, "sequence_number": seq[0]}
            payload.update(fields)
            seq[0] += 1
            data = ("event: %s\ndata: %s\n\n" % (
                etype, json.dumps(payload, separators=(",", ":")))).encode("utf-8")
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        at = {"item_id": mid, "output_index": 0, "content_index": 0}
        event("response.created", response=response("in_progress", [], None))
        event("response.in_progress", response=response("in_progress", [], None))
        event("response.output_item.added", output_index=0, item=message("in_progress", []))
        event("response.content_part.added", **at, part=text_part(""))
        pieces = split_reply(reply, cfg["stream_chunks"])
        for i, piece in enumerate(pieces):
            if break_stream and i >= 2:
                self.drop()
                return
            event("response.output_text.delta", pause=True, **at, delta=piece, logprobs=[])
        if break_stream:
            self.drop()
            return
        event("response.output_text.done", pause=True, **at, text=reply, logprobs=[])
        event("response.content_part.done", **at, part=text_part(reply))
        event("response.output_item.done", output_index=0, item=done["output"][0])
        if store:
            st.store_response(done, items)
        event("response.completed", response=done)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def models_list(self, flavor):
        if flavor == "azure":
            caps = {"chat_completion": True, "completion": False, "embeddings": False,
                    "fine_tune": False, "inference": True}
            ecaps = dict(caps, chat_completion=False, embeddings=True)
            return {"object": "list", "data": [
                {"id": AZURE_CHAT_MODEL, "object": "model", "status": "succeeded",
                 "created_at": 1723075200, "capabilities": caps,
                 "lifecycle_status": "generally-available"},
                {"id": AZURE_EMBED_MODEL, "object": "model", "status": "succeeded",
                 "created_at": 1705968000, "capabilities": ecaps,
                 "lifecycle_status": "generally-available"},
            ]}
        return {"object": "list", "data": [
            {"id": OPENAI_CHAT_MODEL, "object": "model", "created": 1715367049, "owned_by": "system"},
            {"id": OPENAI_EMBED_MODEL, "object": "model", "created": 1705948997, "owned_by": "system"},
        ]}

    def chat(self, flavor, body, cfg, is_stream, break_stream, epoch):
        messages = body.get("messages")
        if not isinstance(messages, list):
            self.invalid_request("'messages' is a required property", "messages")
            return
        reply = cfg["reply"]
        p = cfg["prompt_tokens"]
        if p is None:
            p = message_chars(messages) // 4 + 1
        c = cfg["completion_tokens"]
        if c is None:
            c = len(reply) // 4 + 1
        usage = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        if flavor == "azure":
            model = AZURE_CHAT_MODEL
        else:
            model = body.get("model") if isinstance(body.get("model"), str) else OPENAI_CHAT_MODEL
        cid = None if cfg["null_id"] else rand_id("chatcmpl-")
        created = int(time.time())
        azure = flavor == "azure"

        if not is_stream:
            choice = {"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": reply},
                      "logprobs": None}
            resp = {"id": cid, "object": "chat.completion", "created": created, "model": model}
            if azure:
                choice["content_filter_results"] = FILTER_OK
                resp["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": FILTER_OK}]
            else:
                choice["message"]["refusal"] = None
            resp["choices"] = [choice]
            resp["usage"] = usage
            resp["system_fingerprint"] = "fp_mock"
            self.send_json(200, resp, self.api_headers())
            return

        # ---- streaming ----
        include_usage = (isinstance(body.get("stream_options"), dict)
                         and body["stream_options"].get("include_usage") is True)
        self.start_event_stream()

        st = self.server.state
        delay = cfg["stream_delay_s"]
        first = [True]

        def event(payload):
            if not first[0] and delay:
                st.sleep(delay, epoch)
            first[0] = False
            data = payload if isinstance(payload, bytes) else \
                ("data: " + json.dumps(payload, separators=(",", ":")) + "\n\n").encode("utf-8")
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def chunk(delta, finish):
            ch = {"index": 0, "delta": delta, "finish_reason": finish}
            if azure:
                ch["content_filter_results"] = {}
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": "fp_mock", "choices": [ch]}

        if azure:
            event({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                   "prompt_filter_results": [{"prompt_index": 0,
                                              "content_filter_results": FILTER_OK}]})
        pieces = split_reply(reply, cfg["stream_chunks"])
        for i, piece in enumerate(pieces):
            if break_stream and i >= 2:
                self.drop()
                return
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            event(chunk(delta, None))
        if break_stream:
            self.drop()
            return
        if include_usage and cfg["usage_on_finish_chunk"]:
            last = chunk({}, "stop")
            last["usage"] = usage
            event(last)
        else:
            event(chunk({}, "stop"))
        if include_usage and not cfg["usage_on_finish_chunk"]:
            event({"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "system_fingerprint": "fp_mock", "choices": [],
                   "usage": usage})
        event(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def embeddings(self, flavor, body, cfg):
        inp = body.get("input")
        if isinstance(inp, str):
            items = [inp]
        elif isinstance(inp, list) and inp:
            if all(_is_int(x) for x in inp):
                items = [inp]          # one pre-tokenised input
            else:
                items = inp
        else:
            self.invalid_request("'input' is a required property", "input")
            return
        dims = body.get("dimensions")
        if not (_is_int(dims) and 1 <= dims <= 4096):
            dims = 8
        b64 = body.get("encoding_format") == "base64"
        data = []
        chars = 0
        toks = 0
        for i, it in enumerate(items):
            if isinstance(it, str):
                chars += len(it)
            elif isinstance(it, list):
                toks += len(it)
            else:
                self.invalid_request("Invalid 'input[%d]'" % i, "input")
                return
            vec = fake_embedding(it, dims)
            emb = base64.b64encode(struct.pack("<%df" % dims, *vec)).decode("ascii") if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = cfg["prompt_tokens"]
        if n is None:
            n = (chars // 4 + 1 if chars or not toks else 0) + toks
        if flavor == "azure":
            model = AZURE_EMBED_MODEL
        else:
            model = body.get("model") if isinstance(body.get("model"), str) else OPENAI_EMBED_MODEL
        self.send_json(200, {"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": n, "total_tokens": n}},
                       self.api_headers())


def make_server(host, port, state, verbose):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class MockServer(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True
        block_on_close = False      # never join handler threads on close
        allow_reuse_address = True
        request_queue_size = 1024  # a threaded gateway sends hundreds of calls at once

        def server_bind(self):
            # Skip HTTPServer's getfqdn() (a reverse DNS lookup).
            socketserver.TCPServer.server_bind(self)
            self.server_name = host
            self.server_port = self.server_address[1]

        def handle_error(self, request, client_address):
            if self.verbose:
                super().handle_error(request, client_address)

    srv = MockServer((host, port), Handler)
    srv.state = state
    srv.verbose = verbose
    return srv


def bind_retry(host, port, state, verbose, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return make_server(host, port, state, verbose)
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description="Mock Azure OpenAI region for aigw tests")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    ap.add_argument("--name", default="east", help="region name (x-ms-region, default reply)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--verbose", action="store_true", help="log requests/errors to stderr")
    args = ap.parse_args()

    def _exit(signum, frame):
        os._exit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)

    state = State(args.name)
    srv = make_server(args.host, args.port, state, args.verbose)
    port = srv.server_address[1]
    with state.lock:
        state.server = srv
        state.port = port
    sys.stdout.write("READY %d\n" % port)
    sys.stdout.flush()

    while True:
        srv.serve_forever(poll_interval=0.05)
        # Only /_mock/down stops serve_forever: go down for a while.
        srv.server_close()                  # listening socket gone -> refused
        state.shutdown_all_connections()    # like a dead process: drop conns
        state.wake_sleepers()               # hung requests fail fast now
        with state.lock:
            secs = state.down_seconds
        time.sleep(secs)
        srv = bind_retry(args.host, port, state, args.verbose)
        with state.lock:
            state.server = srv
            state.going_down = False


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""aigw's benchmark (`make bench`, through tests/bench/run.sh).

Systems, all on 127.0.0.1, all answering from the same mock region (nginx
returning a fixed Azure OpenAI chat completion, or a short SSE stream):

  direct          the mock itself
  nginx-proxy     nginx proxy_pass to the mock (keep-alive upstream)
  fastcgi-floor   nginx (the shipped aigw site) + fcgi_floor.c: pre-forked libfcgi
                  processes relaying each request to the mock with libcurl, no
                  policy (matrix only: the least a FastCGI gateway costs)
  aigw-lighttpd   aigw under lighttpd, from webserver-configs/lighttpd/aigw.conf
  aigw-nginx      nginx (webserver-configs/nginx/aigw.conf) + `aigw serve`
  aigw-pg-nginx   the same with its database on PostgreSQL on this host
                  (tests/integration/pgserver.py; matrix and slow lane; BENCH_PG=0: off)
  portkey         Portkey's gateway (npm @portkey-ai/gateway) routing to the mock

aigw runs with every policy on: API-key authentication, a rate limit, a token
budget and a tokens-per-minute limit (all too high to refuse), validation,
redaction, two backends (priority 1 and 2, both the mock) and an audit row per
request with redacted bodies.

Sections (BENCH_SECTIONS, comma separated; default all):
  matrix     wrk at each concurrency, systems alternated, chat + SSE stream
  memory     private memory per aigw worker, idle and after >= 10,000 requests
  syscalls   strace -c on the aigw workers during a short run
  stream     time to first byte and relay delay of a stream with events every 100 ms
  audit      per-request cost with an empty audit table and with BENCH_AUDIT_ROWS rows
  callgrind  instructions per request in one worker (valgrind --tool=callgrind)
  slow       a mock that answers like a real model (slow_mock.c: 1 s per chat,
             20 SSE events 50 ms apart) at 256 and 1,024 connections: nginx
             proxy_pass, Portkey and aigw with its shipped worker counts;
             streams/s, p99 and the memory of every aigw process under load

Progress goes to stderr, the table to stdout, everything to
tests/bench/results/latest.json (results/ is git-ignored).
Python 3 standard library only, but for the aigw-pg-nginx rows: pgserver.py
sets its server up through psycopg2 (Debian: python3-psycopg2), and needs
PostgreSQL's server binaries (postgresql-15); without either they are skipped.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("AIGW_SRCDIR") or os.path.abspath(os.path.join(BENCH_DIR, "..", ".."))
AIGW_BIN = os.environ.get("AIGW_BIN") or os.path.join(SRCDIR, "aigw")
WORK = os.environ.get("BENCH_WORK") or None
WRK_LUA = os.path.join(BENCH_DIR, "wrk.lua")
SLOW_LUA = os.path.join(BENCH_DIR, "slow.lua")
SLOW_MOCK_C = os.path.join(BENCH_DIR, "slow_mock.c")
FCGI_FLOOR_C = os.path.join(BENCH_DIR, "fcgi_floor.c")
MOCK_REGION = os.path.join(SRCDIR, "tests", "mock_region.py")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"

ALL_SECTIONS = ["matrix", "memory", "syscalls", "stream", "audit", "callgrind", "slow"]
SECTIONS = [s.strip() for s in os.environ.get("BENCH_SECTIONS", ",".join(ALL_SECTIONS)).split(",") if s.strip()]
CONCURRENCY = [int(x) for x in os.environ.get("BENCH_CONCURRENCY", "1 8 32 128").replace(",", " ").split()]
DURATION = int(os.environ.get("BENCH_DURATION", "4"))       # seconds per measured point (wrk: whole seconds)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))           # rounds per point, order reversed every round
WORKERS = int(os.environ.get("BENCH_WORKERS", "4"))
SSE_CONCURRENCY = [int(x) for x in os.environ.get("BENCH_SSE_CONCURRENCY", "32").replace(",", " ").split()]
AUDIT_ROWS = int(os.environ.get("BENCH_AUDIT_ROWS", "3000000"))
AUDIT_CONCURRENCY = int(os.environ.get("BENCH_AUDIT_CONCURRENCY", "32"))
CALLGRIND_N = [int(x) for x in os.environ.get("BENCH_CALLGRIND_N", "100 1100").split()]
# Clients at once: 1 (every write commits alone) and 16 (writes share batches).
CALLGRIND_CONCURRENCY = [int(x) for x in os.environ.get("BENCH_CALLGRIND_CONCURRENCY", "1 16").split()]
STREAM_REPEAT = int(os.environ.get("BENCH_STREAM_REPEAT", "3"))
STREAM_EVENTS = 8            # content events per slow stream
STREAM_DELAY_S = 0.1         # between events
MEMORY_REQUESTS = 10000
SLOW_CONCURRENCY = [int(x) for x in os.environ.get("BENCH_SLOW_CONCURRENCY", "256 1024").replace(",", " ").split()]
SLOW_DURATION = int(os.environ.get("BENCH_SLOW_DURATION", "10"))    # seconds per slow-lane point

# What aigw is meant to reach (printed next to the numbers, "target met" or
# "MISSED"). Zero-latency matrix: against the FastCGI floor at these
# concurrencies, and p99 at one connection. Slow lane: against nginx
# proxy_pass to the same slow mock, and the memory of all aigw processes
# together at the highest slow concurrency. Callgrind: per request.
TARGET_FLOOR_RATIO = 0.75
TARGET_FLOOR_CONCURRENCY = (32, 128)
TARGET_P99_C1_MS = 1.0
TARGET_SLOW_RPS_RATIO = 0.9
TARGET_SLOW_P99_RATIO = 1.5
TARGET_SLOW_PSS_MIB = 256
TARGET_INSTRUCTIONS = 250000
# aigw on PostgreSQL on the same host (aigw-pg-nginx) against the same aigw on
# SQLite (aigw-nginx): at least half its requests/s at 128 connections in the
# zero-latency matrix, and in the slow lane the same streams/s (within 10%)
# besides the slow-lane targets above.
TARGET_PG_RATIO = 0.5
TARGET_PG_CONCURRENCY = 128
TARGET_PG_SLOW_TOLERANCE = 0.10
PG_ENABLED = os.environ.get("BENCH_PG", "1") == "1"
PG_NAME = "aigw-pg-nginx"
PGSERVER_DIR = os.path.join(SRCDIR, "tests", "integration")   # pgserver.py, the integration tests' fixture
BUDGET = float(os.environ.get("BENCH_BUDGET", "540"))
PORTKEY_JS = os.environ.get("PORTKEY_JS") or os.path.join(
    BENCH_DIR, ".portkey", "node_modules", "@portkey-ai", "gateway", "build", "start-server.js")
PORTKEY_UNAVAILABLE = os.environ.get("PORTKEY_UNAVAILABLE", "")
RESULTS = os.environ.get("BENCH_RESULTS") or os.path.join(
    BENCH_DIR, "results",
    "latest.json" if SECTIONS == ALL_SECTIONS else "latest-" + "-".join(SECTIONS) + ".json")

API_VERSION = "2024-10-21"
USER = "bench"
MOCK_KEY = "mock-backend-key"
CHAT_BODY = {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                          {"role": "user", "content": "Say hello in one short sentence."}],
             "max_tokens": 50, "temperature": 0.2}
MOCK_MARK = b"chatcmpl-AbC123"  # only the mock's fixed answer has it

# The mock's answers: a real-looking Azure OpenAI chat completion, and a
# stream of 13 events (prompt filter, role, 9 content deltas, finish, usage)
# and [DONE].
FILTER = '{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},' \
         '"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}'
CHAT_ANSWER = (
    '{"id":"chatcmpl-AbC123","object":"chat.completion","created":1732000000,"model":"gpt-4o-2024-08-06",'
    '"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant",'
    '"content":"Hello! How can I help you today?"},"logprobs":null,"content_filter_results":' + FILTER + '}],'
    '"usage":{"prompt_tokens":24,"completion_tokens":9,"total_tokens":33},"system_fingerprint":"fp_5f20662549",'
    '"prompt_filter_results":[{"prompt_index":0,"content_filter_results":' + FILTER + '}]}')


def _sse_answer():
    head = '"created":1732000000,"id":"chatcmpl-AbC123","model":"gpt-4o-2024-08-06",' \
           '"object":"chat.completion.chunk","system_fingerprint":"fp_5f20662549"'
    ev = ['{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":'
          '[{"prompt_index":0,"content_filter_results":' + FILTER + '}]}']
    deltas = ['{"content":"","role":"assistant"}'] + \
        ['{"content":"%s"}' % w for w in ("Hello", "!", " How", " can", " I", " help", " you", " today", "?")]
    for d in deltas:
        ev.append('{"choices":[{"content_filter_results":{},"delta":%s,"finish_reason":null,"index":0,'
                  '"logprobs":null}],%s}' % (d, head))
    ev.append('{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,'
              '"logprobs":null}],%s}' % head)
    ev.append('{"choices":[],%s,"usage":{"prompt_tokens":24,"completion_tokens":9,"total_tokens":33}}' % head)
    return "".join("data: %s\n\n" % e for e in ev) + "data: [DONE]\n\n"


SSE_ANSWER = _sse_answer()

T0 = time.time()
PROCS = []      # (name, Popen) of everything started, stopped in reverse order


def left():
    return BUDGET - (time.time() - T0)


def log(msg):
    print("[%6.1fs] %s" % (time.time() - T0, msg), file=sys.stderr, flush=True)


# --- processes --------------------------------------------------------------

def spawn(name, argv, env=None, cwd=None, stdin=None):
    """Start argv in its own process group (so the group can be stopped with
    everything it forked); log to WORK/name.log; record the group for run.sh."""
    logf = open(os.path.join(WORK, name + ".log"), "ab")
    p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                         stdin=subprocess.DEVNULL if stdin is None else stdin,
                         start_new_session=True)
    logf.close()
    track(name, p)
    return p


def track(name, p):
    PROCS.append((name, p))
    write_pgids()


def write_pgids():
    """The process groups still running, for run.sh's trap (if this script is
    killed): those of PROCS, and PostgreSQL's postmaster (pg_ctl makes it a
    session leader)."""
    pgids = [p.pid for _, p in PROCS]
    pm = PG["server"].postmaster_pid() if PG["server"] is not None else None
    if pm:
        pgids.append(pm)
    with open(os.path.join(WORK, "pgids"), "w") as f:
        f.write("".join("%d\n" % g for g in pgids))


def stop(p, timeout=10.0, sig=signal.SIGTERM):
    """Stop the process group of p (started by spawn)."""
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    # Leftovers of the group (a web server's FastCGI children) go too.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    PROCS[:] = [x for x in PROCS if x[1] is not p]
    write_pgids()


def stop_all():
    while PROCS:
        stop(PROCS[-1][1], timeout=5)
    stop_postgres()


# --- PostgreSQL on the same host (the aigw-pg-nginx rows) --------------------

PG = {"server": None, "unavailable": None, "version": None}


def postgres():
    """The bench's PostgreSQL (tests/integration/pgserver.py: initdb in a
    temporary directory, fsync on, 127.0.0.1 with passwords, roles aigw_owner
    and aigw), started on the first call, stopped by stop_postgres() (and
    stop_all()). None if it cannot run: the reason, logged once, is
    PG["unavailable"]."""
    if PG["server"] is not None or PG["unavailable"]:
        return PG["server"]
    why = None
    if not PG_ENABLED:
        why = "BENCH_PG=0"
    else:
        if PGSERVER_DIR not in sys.path:
            sys.path.insert(0, PGSERVER_DIR)
        try:
            import pgserver
            import psycopg2  # noqa: F401 -- pgserver creates the roles and databases through it
        except ImportError as e:
            why = "%s: %s in %s (Debian's python3-psycopg2 is for /usr/bin/python3)" % (
                type(e).__name__, e, sys.executable)
        else:
            t = time.time()
            d = os.path.join(WORK, "postgresql")
            os.makedirs(d, exist_ok=True)
            try:
                srv = pgserver.PgServer(d)     # RuntimeError without the server binaries
                PG["server"] = srv             # stop_postgres() closes even a half-started one
                srv.start()
                PG["version"] = text_of([os.path.join(srv.bindir, "postgres"), "--version"])
                write_pgids()
                log("postgresql: %s on 127.0.0.1:%d (%s), started in %.1f s" % (
                    PG["version"], srv.port, srv.datadir, time.time() - t))
            except Exception as e:  # noqa: BLE001 -- reported, not fatal
                why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                stop_postgres()
    if why:
        PG["unavailable"] = why
        log("postgresql: the %s rows are skipped: %s" % (PG_NAME, why))
    return PG["server"]


def stop_postgres():
    """Stop the bench's PostgreSQL and remove its files (its log is kept as
    WORK/postgresql.log). No-op if it is not running."""
    srv, PG["server"] = PG["server"], None
    if srv is None:
        return
    PG["unavailable"] = PG["unavailable"] or "stopped"     # started once per run, not again
    try:
        if srv.logfile and os.path.exists(srv.logfile):
            shutil.copyfile(srv.logfile, os.path.join(WORK, "postgresql.log"))
    except OSError:
        pass
    srv.close()
    write_pgids()


def postgres_pids():
    """PostgreSQL's postmaster and its children (backends, checkpointer, ...)."""
    pm = PG["server"].postmaster_pid() if PG["server"] is not None else None
    return [pm] + children(pm) if pm else []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=15.0, what="server"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (what, proc.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s not listening on %d after %.0fs" % (what, port, timeout))


def wait_unix(path, proc, timeout=15.0, what="server"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (what, proc.returncode))
        s = socket.socket(socket.AF_UNIX)
        try:
            s.settimeout(0.3)
            s.connect(path)
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise RuntimeError("%s not accepting on %s after %.0fs" % (what, path, timeout))


def request(port, method, path, body=None, headers=None, timeout=30.0):
    """(status, body bytes)"""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=hdrs)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st.rsplit(")", 1)[1].split()
        if int(fields[1]) == ppid:
            out.append(int(d))
    return sorted(out)


def smaps(pid):
    """kB: Rss, Pss, Private (clean + dirty) of a process."""
    v = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    v[parts[0][:-1]] = int(parts[1])
    except OSError:
        return None
    return {"rss_kb": v.get("Rss", 0), "pss_kb": v.get("Pss", 0),
            "private_kb": v.get("Private_Clean", 0) + v.get("Private_Dirty", 0)}


def text_of(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# --- the mock region (nginx) ------------------------------------------------

def nginx_main_conf(d, body, workers=2):
    temp = os.path.join(d, "temp")
    os.makedirs(temp, exist_ok=True)
    lines = ["daemon off;", "master_process on;", "worker_processes %d;" % workers,
             "pid %s/nginx.pid;" % d, "error_log %s/error.log warn;" % d]
    if os.geteuid() == 0:
        lines.append("user root root;")
    # 1,024 clients plus 1,024 upstream connections in one worker (the slow
    # lane) need more than the default 1,024 descriptors and connections.
    lines += ["worker_rlimit_nofile 16384;", "events { worker_connections 4096; }", "http {",
              "    default_type application/octet-stream;",
              "    access_log off;",
              "    keepalive_requests 1000000;"]
    lines += ["    %s_temp_path %s/%s;" % (k, temp, k) for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")]
    lines += [body, "}"]
    return "\n".join(lines) + "\n"


def start_nginx(name, body, workers=2):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_main_conf(d, body, workers))
    err = os.path.join(d, "error.log")
    chk = subprocess.run([NGINX, "-t", "-p", d + "/", "-c", conf, "-e", err], capture_output=True, text=True)
    if chk.returncode != 0:
        raise RuntimeError("nginx -t (%s) failed: %s" % (name, chk.stderr))
    return spawn(name, [NGINX, "-p", d + "/", "-c", conf, "-e", err])


class Mock:
    def __init__(self):
        self.port = free_port()
        body = """
    server {
        listen 127.0.0.1:%d;
        client_body_buffer_size 64k;
        location = /_stub_status { stub_status; }
        # The streamed variant: deployments named sse-*.
        location ~ ^/openai/deployments/sse-[^/]+/chat/completions$ {
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            return 200 '%s';
        }
        location ~ ^/openai/deployments/[^/]+/chat/completions$ {
            default_type application/json;
            add_header apim-request-id 6b0b5e3e-6a4f-4d55-9a5e-2f6f0f1c3a77;
            add_header x-ms-region "East US";
            return 200 '%s';
        }
        location / {
            default_type application/json;
            return 404 '{"error":{"code":"404","message":"Resource not found"}}';
        }
    }""" % (self.port, SSE_ANSWER, CHAT_ANSWER)
        self.proc = start_nginx("mock", body)
        wait_port(self.port, self.proc, what="mock nginx")
        self.url = "http://127.0.0.1:%d" % self.port
        self.queries = 0

    def hits(self):
        """Requests the mock has had so far, not counting these status queries."""
        self.queries += 1
        st, body = request(self.port, "GET", "/_stub_status", timeout=5)
        m = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", body)
        return int(m.group(3)) - self.queries


class SlowMock:
    """tests/mock_region.py streaming STREAM_EVENTS events STREAM_DELAY_S apart."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, MOCK_REGION, "--port", "0", "--name", "slow"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        track("slowmock", self.proc)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("mock_region.py did not start: %r" % line)
        self.port = int(line.split()[1])
        self.url = "http://127.0.0.1:%d" % self.port
        st, body = request(self.port, "POST", "/_mock/config", {
            "stream_delay_s": STREAM_DELAY_S, "stream_chunks": STREAM_EVENTS,
            "reply": "Streaming answer, one piece every hundred milliseconds, to see the relay delay."})
        if st != 200:
            raise RuntimeError("mock_region.py config: %s %r" % (st, body))


def build_c(src, name, libs=()):
    """Compile one of the bench's C programs into the work directory (at run
    time, so it always matches this machine's libraries). Returns the path."""
    out = os.path.join(WORK, name)
    if not os.path.exists(out):
        r = subprocess.run(["cc", "-O2", "-o", out, src] + list(libs), capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("cc %s failed: %s" % (os.path.basename(src), (r.stderr or r.stdout).strip()[-500:]))
    return out


class ModelMock:
    """slow_mock.c: answers like a real model (1 s per chat completion, 20 SSE
    events 50 ms apart); GET /stats counts the chat requests it got."""

    MARK = b"chatcmpl-slowmock"     # only its answers have it

    def __init__(self):
        exe = build_c(SLOW_MOCK_C, "slow_mock")
        self.port = free_port()
        self.proc = spawn("slow-mock", [exe, str(self.port)])
        wait_port(self.port, self.proc, what="slow mock")
        self.url = "http://127.0.0.1:%d" % self.port

    def stats(self):
        st, body = request(self.port, "GET", "/stats", timeout=5)
        if st != 200:
            raise RuntimeError("slow mock /stats answered %s" % st)
        return json.loads(body)

    def wait_idle(self, timeout=30.0):
        """Until no request is being answered and none arrived for half a
        second, at most timeout seconds: what a gateway still sends after wrk
        stopped must not run into the next measurement. Returns the last stats."""
        deadline = time.time() + timeout
        last = self.stats()
        while time.time() < deadline:
            time.sleep(0.5)
            now = self.stats()
            if now["active"] == 0 and now["requests"] == last["requests"]:
                return now
            last = now
        return last


# --- the systems --------------------------------------------------------------

class System:
    def __init__(self, name, port, chat_path, sse_path, headers, slow_path=None):
        self.name = name
        self.port = port
        self.chat_path = chat_path
        self.sse_path = sse_path
        self.slow_path = slow_path
        self.headers = headers          # chat requests
        self.sse_headers = headers      # streamed requests (Portkey: another deployment header)
        self.slow_headers = headers     # the slow stream (Portkey: another custom host)
        self.slow_port = port           # the direct call goes to the slow mock itself
        self.ok = True
        self.note = ""
        self.proc = None        # server process
        self.procs = []         # every process of the system
        self.worker_parent = None  # pid whose children are the aigw workers
        self.workers = None        # aigw worker processes it runs
        self.gw = None

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)


def azure_path(deployment):
    return "/openai/deployments/%s/chat/completions?api-version=%s" % (deployment, API_VERSION)


class Gateway:
    """One aigw installation: config, database, user and key. With pg (a
    pgserver.PgServer) its database is a fresh one on that PostgreSQL,
    migrated as its owner (aigw_owner) and used as role aigw, which may only
    read and write rows."""

    def __init__(self, name, mock, slow=None, db_path=None, pg=None):
        self.name = name
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config_path = os.path.join(self.dir, "aigw.json")
        self.pg = pg
        self.pg_db = pg.new_database() if pg is not None else None
        self.db_path = None if pg is not None else db_path or os.path.join(self.dir, "aigw.db")
        key_file = os.path.join(self.dir, "backend.key")
        with open(key_file, "w") as f:
            f.write(MOCK_KEY + "\n")
        os.chmod(key_file, 0o600)
        deployments = lambda region: {"gpt-4o": "gpt-4o-" + region, "gpt-4o-sse": "sse-" + region}
        backends = [
            {"name": "east", "type": "azure", "url": mock.url, "api_key": "file:" + key_file,
             "priority": 1, "deployments": deployments("east"), "timeout_s": 30},
            {"name": "west", "type": "azure", "url": mock.url, "api_key": "file:" + key_file,
             "priority": 2, "deployments": deployments("west"), "timeout_s": 30},
        ]
        if slow is not None:
            backends.append({"name": "slow", "type": "azure", "url": slow.url, "api_key": "file:" + key_file,
                             "priority": 1, "deployments": {"gpt-4o-slow": "slow"}, "timeout_s": 30})
        self.config = {
            "environment": "bench",
            "database": self.pg_database("aigw") if pg is not None else {"path": self.db_path},
            "auth": {"enabled": True, "api_keys": True},
            "limits": {"requests_per_window": 100000000, "window_s": 60,
                       "default_token_budget": 1000000000000, "budget_period": "day"},
            "backends": backends,
            "audit": {"log_bodies": "redacted"},
        }
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        self.key = None

    def pg_database(self, role):
        """database settings on the bench's PostgreSQL signing in as role,
        the password in a file (as tests/integration/conftest.py has them)."""
        pwfile = os.path.join(self.dir, "pg-%s.password" % role)
        with open(pwfile, "w") as f:
            f.write(self.pg.password(role) + "\n")
        os.chmod(pwfile, 0o600)
        return {"url": self.pg.url(role, self.pg_db), "password": "file:" + pwfile,
                "local_path": os.path.join(self.dir, "aigw-pg")}

    def cli(self, *args, config=None):
        r = subprocess.run([AIGW_BIN, "--config", config or self.config_path, *args],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("aigw %s: %s" % (" ".join(args), (r.stderr or r.stdout).strip()))
        return r.stdout

    def setup(self):
        if self.pg is not None:
            # The schema as the database's owner (a config of its own); the
            # gateway's role may not create tables.
            owner = os.path.join(self.dir, "aigw-owner.json")
            with open(owner, "w") as f:
                json.dump(dict(self.config, database=self.pg_database("aigw_owner")), f, indent=2)
            self.cli("db", "migrate", config=owner)
        else:
            self.cli("db", "migrate")
        self.cli("user", "add", USER, "--requests", "100000000", "--window", "60",
                 "--tpm", "1000000000000", "--budget", "1000000000000", "--period", "day")
        out = self.cli("key", "create", USER)
        keys = re.findall(r"aigw_\S+", out)
        if not keys:
            raise RuntimeError("aigw key create printed no key: %r" % out)
        self.key = keys[0]
        return self

    def use_db(self, db_path, key):
        """Point this installation at another database (a filled copy)."""
        self.db_path = db_path
        self.config["database"]["path"] = db_path
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        self.key = key

    def audit_count(self):
        if self.pg is not None:
            return self.pg.query(self.pg_db, "SELECT count(*) AS n FROM audit_log")[0]["n"]
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            return con.execute("SELECT count(*) FROM audit_log").fetchone()[0]
        finally:
            con.close()

    def headers(self):
        return {"api-key": self.key}


LIGHTTPD_CONF = os.path.join(SRCDIR, "webserver-configs", "lighttpd", "aigw.conf")


def shipped_workers(server):
    """The number of aigw workers a server runs when nothing is changed:
    lighttpd's shipped var.aigw_workers, `aigw serve`'s 2 per CPU."""
    if server == "lighttpd":
        m = re.search(r"^var\.aigw_workers\s*=\s*(\d+)", open(LIGHTTPD_CONF).read(), flags=re.M)
        if not m:
            raise RuntimeError("var.aigw_workers not found in webserver-configs/lighttpd/aigw.conf")
        return int(m.group(1))
    return 2 * (os.cpu_count() or 1)


def start_lighttpd(gw, workers=WORKERS):
    """aigw under lighttpd from the shipped config, its var.* values replaced
    (as tests/integration/conftest.py does); workers=None keeps the shipped
    var.aigw_workers. Returns (Popen, port)."""
    port = free_port()
    src = open(LIGHTTPD_CONF).read()
    subst = {
        "aigw_bin": '"%s"' % AIGW_BIN,
        "aigw_config": '"%s"' % gw.config_path,
        "aigw_socket": '"%s/lighttpd-fastcgi.sock"' % gw.dir,
        "aigw_state_dir": '"%s"' % gw.dir,
        "aigw_log": '"%s/lighttpd-error.log"' % gw.dir,
        "aigw_bind": '"127.0.0.1"',
        "aigw_port": str(port),
        "aigw_errors": '"%s/webserver-configs/lighttpd/errors"' % SRCDIR,
    }
    if workers is not None:
        subst["aigw_workers"] = str(workers)
    for k, v in subst.items():
        src, n = re.subn(r"^var\.%s\s*=.*$" % k, lambda m, k=k, v=v: "var.%s = %s" % (k, v), src, flags=re.M)
        if n != 1:
            raise RuntimeError("var.%s not found once in webserver-configs/lighttpd/aigw.conf" % k)
    conf = os.path.join(gw.dir, "lighttpd.conf")
    with open(conf, "w") as f:
        f.write(src)
    p = spawn(gw.name + "-lighttpd", [LIGHTTPD, "-D", "-f", conf])
    wait_port(port, p, what="lighttpd")
    return p, port


def nginx_front_site(upstream, port):
    """webserver-configs/nginx/aigw.conf with its upstream and listen lines
    replaced (as tests/integration/servers.py does)."""
    site = open(os.path.join(SRCDIR, "webserver-configs", "nginx", "aigw.conf")).read()
    site, n1 = re.subn(r"^(\s*)server\s+(unix:\S+|[0-9.]+:[0-9]+|\[[0-9a-fA-F:]+\]:[0-9]+);\s*$",
                       lambda m: "    server %s;" % upstream, site, flags=re.M)
    site, n2 = re.subn(r"^\s*listen\s+[^;]+;\s*$", lambda m: "    listen 127.0.0.1:%d;" % port, site, flags=re.M)
    if n1 != 1 or n2 != 1:
        raise RuntimeError("webserver-configs/nginx/aigw.conf: upstream/listen lines not found once")
    return site


def start_nginx_serve(gw, workers=WORKERS):
    """nginx (shipped site) + `aigw serve` on a unix socket; workers=None
    leaves --workers out (aigw's default). Returns (nginx, serve, port)."""
    sock = os.path.join(gw.dir, "aigw.sock")
    env = dict(os.environ, AIGW_CONFIG=gw.config_path)
    argv = [AIGW_BIN, "--config", gw.config_path, "serve", "--listen", "unix:" + sock,
            "--pid-file", os.path.join(gw.dir, "serve.pid"), "--grace", "5"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    serve = spawn(gw.name + "-serve", argv, env=env)
    wait_unix(sock, serve, what="aigw serve")
    port = free_port()
    site = os.path.join(gw.dir, "nginx-site.conf")
    with open(site, "w") as f:
        f.write(nginx_front_site("unix:" + sock, port))
    ngx = start_nginx(gw.name + "-nginx", "    include %s;" % site)
    wait_port(port, ngx, what="nginx (aigw)")
    return ngx, serve, port


def wait_healthy(port, timeout=20.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            st, body = request(port, "GET", "/healthz", timeout=5)
            if st == 200:
                return
            last = (st, body[:200])
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError("not healthy on port %d: %r" % (port, last))


def aigw_system(name, gw, server, workers=WORKERS):
    """aigw behind lighttpd or nginx; workers=None: as shipped (see shipped_workers)."""
    if server == "lighttpd":
        proc, port = start_lighttpd(gw, workers)
        parent = proc.pid
    else:
        proc, serve, port = start_nginx_serve(gw, workers)
        parent = serve.pid
    wait_healthy(port)
    s = System(name, port, azure_path("gpt-4o"), azure_path("gpt-4o-sse"), gw.headers(),
               slow_path=azure_path("gpt-4o-slow"))
    s.proc, s.worker_parent, s.gw = proc, parent, gw
    s.procs = [proc] if server == "lighttpd" else [proc, serve]
    s.workers = shipped_workers(server) if workers is None else workers
    # lighttpd starts min-procs workers; wait until all are there.
    deadline = time.time() + 10
    while len(children(parent)) < s.workers and time.time() < deadline:
        time.sleep(0.1)
    return s


def pg_system(name, gw_name, mock, model, unavailable, workers=WORKERS):
    """aigw-nginx's twin (nginx + `aigw serve`, the same policy) with its
    database on the bench's PostgreSQL; None if that cannot run or the
    gateway does not start (the reason in unavailable[name], and logged)."""
    pg = postgres()
    if pg is None:
        unavailable[name] = "PostgreSQL rows skipped: %s" % PG["unavailable"]
        return None
    try:
        gw = Gateway(gw_name, mock, model, pg=pg).setup()
        pg_from = pg_log_offset()   # after the migration (its probe for schema_migrations is an ERROR there)
        s = aigw_system(name, gw, "nginx", workers)
    except Exception as e:  # noqa: BLE001 -- reported, not fatal
        unavailable[name] = "did not start: %s" % e
        log("%s did not start: %s" % (name, e))
        return None
    s.pg_log_from = pg_from
    return s


def fcgi_floor_system(mock):
    """nginx (the shipped aigw site, as aigw-nginx) + fcgi_floor.c with
    WORKERS processes relaying to the mock: what any pre-forked FastCGI
    gateway pays before doing anything of its own."""
    exe = build_c(FCGI_FLOOR_C, "fcgi_floor", ["-lfcgi", "-lcurl"])
    d = os.path.join(WORK, "fastcgi-floor")
    os.makedirs(d, exist_ok=True)
    sock = os.path.join(d, "floor.sock")
    floor = spawn("fastcgi-floor", [exe, sock, str(WORKERS), mock.url])
    wait_unix(sock, floor, what="fcgi_floor")
    port = free_port()
    site = os.path.join(d, "nginx-site.conf")
    with open(site, "w") as f:
        f.write(nginx_front_site("unix:" + sock, port))
    ngx = start_nginx("fastcgi-floor-nginx", "    include %s;" % site)
    wait_port(port, ngx, what="nginx (fastcgi-floor)")
    s = System("fastcgi-floor", port, azure_path("gpt-4o-east"), azure_path("sse-east"), {"api-key": MOCK_KEY})
    s.proc, s.procs, s.worker_parent, s.workers = ngx, [ngx, floor], floor.pid, WORKERS
    return s


def proxy_system(name, upstream_port, keepalive=64):
    """nginx proxy_pass to a mock, keep-alive upstream (the system is always
    called nginx-proxy; name is its directory and log)."""
    port = free_port()
    proc = start_nginx(name, """
    upstream mock { server 127.0.0.1:%d; keepalive %d; }
    server {
        listen 127.0.0.1:%d;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }""" % (upstream_port, keepalive, port))
    wait_port(port, proc, what="nginx proxy")
    s = System("nginx-proxy", port, azure_path("gpt-4o-east"), azure_path("sse-east"), {"api-key": MOCK_KEY})
    s.proc, s.procs = proc, [proc]
    return s


def portkey_system(mock, res, slow=None):
    """Portkey routed to the mock, or None (the reason in res["unavailable"])."""
    if PORTKEY_UNAVAILABLE:
        res["unavailable"]["portkey"] = PORTKEY_UNAVAILABLE
        return None
    if not os.path.exists(PORTKEY_JS):
        res["unavailable"]["portkey"] = "not installed (%s missing)" % PORTKEY_JS
        return None
    try:
        pk_proc, pk_port = start_portkey()
    except Exception as e:  # noqa: BLE001 -- reported, not fatal
        res["unavailable"]["portkey"] = "did not start: %s" % e
        return None
    portkey = System("portkey", pk_port, "/v1/chat/completions", "/v1/chat/completions",
                     portkey_headers(mock.url, "gpt-4o-east"), slow_path="/v1/chat/completions")
    portkey.sse_headers = portkey_headers(mock.url, "sse-east")
    if slow is not None:
        portkey.slow_headers = portkey_headers(slow.url, "slow")
    portkey.proc = pk_proc
    portkey.procs = [pk_proc]
    try:
        with open(os.path.join(os.path.dirname(PORTKEY_JS), "..", "package.json")) as f:
            res["machine"]["versions"]["portkey"] = json.load(f).get("version", "")
    except (OSError, ValueError):
        pass
    return portkey


def portkey_headers(host_url, deployment):
    return {"x-portkey-provider": "azure-openai",
            "x-portkey-custom-host": host_url + "/openai",
            "x-portkey-azure-resource-name": "bench",
            "x-portkey-azure-deployment-id": deployment,
            "x-portkey-azure-api-version": API_VERSION,
            "Authorization": "Bearer " + MOCK_KEY}


def start_portkey():
    port = free_port()
    env = dict(os.environ, NODE_ENV="production")
    p = spawn("portkey", ["node", PORTKEY_JS, "--port=%d" % port, "--headless"], env=env,
              cwd=os.path.dirname(PORTKEY_JS))
    wait_port(port, p, timeout=30, what="portkey")
    return p, port


def verify(system, mock):
    """One chat and one streamed request; both must come from the mock."""
    before = mock.hits()
    st, body = request(system.port, "POST", system.chat_path, CHAT_BODY, system.headers)
    hits = mock.hits() - before
    if st != 200 or MOCK_MARK not in body:
        raise RuntimeError("chat request answered %s: %r" % (st, body[:300]))
    if hits != 1:
        raise RuntimeError("chat request reached the mock %d times, not once" % hits)
    st, body = request(system.port, "POST", system.sse_path, dict(CHAT_BODY, stream=True), system.sse_headers)
    if st != 200 or b"data: [DONE]" not in body or b"today" not in body:
        raise RuntimeError("streamed request answered %s: %r" % (st, body[:300]))


# --- wrk ----------------------------------------------------------------------

def run_wrk(system, conc, seconds, sse=False, slow=False, during=None):
    """wrk against system; the chat request (wrk.lua), its SSE variant, or
    with slow=True the streamed request of the slow lane (slow.lua, to the
    system's slow path). during(): called about once a second while wrk runs."""
    if slow:
        path, headers, body, lua = system.slow_path, system.slow_headers, dict(CHAT_BODY, stream=True), SLOW_LUA
    elif sse:
        path, headers, body, lua = system.sse_path, system.sse_headers, dict(CHAT_BODY, stream=True), WRK_LUA
    else:
        path, headers, body, lua = system.chat_path, system.headers, CHAT_BODY, WRK_LUA
    env = dict(os.environ, WRK_BODY=json.dumps(body, separators=(",", ":")),
               WRK_HEADERS="\n".join("%s: %s" % kv for kv in headers.items()))
    cmd = ["wrk", "-t%d" % min(2, conc), "-c%d" % conc, "-d%ds" % seconds, "--timeout", "10s",
           "--latency", "-s", lua, system.url(path)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if during is not None:
            while p.poll() is None:
                during()
                try:
                    p.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
        out, err = p.communicate(timeout=seconds + 60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            d = json.loads(line[len("BENCH_JSON "):])
            d["rps"] = d["requests"] / (d["duration_us"] / 1e6) if d["duration_us"] else 0.0
            return d
    raise RuntimeError("wrk printed no result: %s %s" % (out[-500:], err[-500:]))


def aggregate(runs):
    req = sum(r["requests"] for r in runs)
    dur = sum(r["duration_us"] for r in runs) / 1e6
    err = {k: sum(r["errors"][k] for r in runs) for k in runs[0]["errors"]}
    out = {
        "rps": req / dur if dur else 0.0,
        "p50_ms": statistics.mean(r["p50_us"] for r in runs) / 1000.0,
        "p90_ms": statistics.mean(r["p90_us"] for r in runs) / 1000.0,
        "p99_ms": statistics.mean(r["p99_us"] for r in runs) / 1000.0,
        "max_ms": max(r["max_us"] for r in runs) / 1000.0,
        "requests": req,
        "non_2xx": err["status"],
        "socket_errors": err["connect"] + err["read"] + err["write"] + err["timeout"],
        "rounds_rps": [round(r["rps"], 1) for r in runs],
        "rounds_p50_ms": [r["p50_us"] / 1000.0 for r in runs],
    }
    hits = [r.get("mock_hits") for r in runs]
    if all(h is not None for h in hits):
        out["mock_hits_per_request"] = sum(hits) / req if req else None
    return out


def alternate(systems, conc, sse=False, mock=None):
    """Warm every system up, then ROUNDS rounds of DURATION seconds each,
    the order reversed every round so drift hits all systems alike."""
    for s in systems:
        run_wrk(s, conc, 1, sse)
    runs = {s.name: [] for s in systems}
    for rnd in range(ROUNDS):
        for s in (systems if rnd % 2 == 0 else systems[::-1]):
            before = mock.hits() if mock else None
            r = run_wrk(s, conc, DURATION, sse)
            if mock:
                r["mock_hits"] = mock.hits() - before
            runs[s.name].append(r)
            log("  %-14s c=%-4d %s %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  non-2xx %d" % (
                s.name, conc, "sse " if sse else "chat", r["rps"], r["p50_us"] / 1000, r["p99_us"] / 1000,
                r["errors"]["status"]))
    return {name: aggregate(rs) for name, rs in runs.items()}


# --- sections -------------------------------------------------------------------

WARMUP_S = int(os.environ.get("BENCH_WARMUP", "3"))
WARMUP_PORTKEY_S = int(os.environ.get("BENCH_WARMUP_PORTKEY", "12"))


def section_matrix(systems, mock, res):
    # Warm every system up once at 32 connections; Portkey longer: V8's JIT
    # takes a few thousand requests to reach its steady speed (measured:
    # about 100 req/s in the first seconds, 600-800 after 20 s).
    log("warm-up: %d s per system, %d s for Portkey" % (WARMUP_S, WARMUP_PORTKEY_S))
    for s in systems:
        run_wrk(s, 32, WARMUP_PORTKEY_S if s.name == "portkey" else WARMUP_S)
    res["matrix"] = {"chat": {}, "sse": {}}
    for c in CONCURRENCY:
        log("chat, %d connections" % c)
        agg = alternate(systems, c, mock=mock)
        for name, a in agg.items():
            res["matrix"]["chat"].setdefault(name, {})[str(c)] = a
    # The floor relays answers whole, not as a stream: no SSE point for it.
    sse_systems = [s for s in systems if s.name != "fastcgi-floor"]
    for c in SSE_CONCURRENCY:
        log("stream (SSE from nginx), %d connections" % c)
        agg = alternate(sse_systems, c, sse=True, mock=mock)
        for name, a in agg.items():
            res["matrix"]["sse"].setdefault(name, {})[str(c)] = a
    for kind in ("chat", "sse"):
        m = res["matrix"][kind]
        direct = m.get("direct", {})
        for name, per in m.items():
            for c, a in per.items():
                if c in direct:
                    a["added_p50_ms"] = a["p50_ms"] - direct[c]["p50_ms"]
                    a["added_p99_ms"] = a["p99_ms"] - direct[c]["p99_ms"]
                for other in ("portkey", "nginx-proxy", "fastcgi-floor") + (("aigw-nginx",) if name == PG_NAME else ()):
                    if other in m and c in m[other] and m[other][c]["rps"]:
                        a["rps_ratio_vs_" + other] = a["rps"] / m[other][c]["rps"]
    res["matrix"]["targets"] = matrix_targets(res["matrix"]["chat"])
    pgs = [s for s in systems if s.name == PG_NAME]
    if pgs:
        res["matrix"]["pg_log_problems"] = pg_log_problems(PG_NAME, pgs[0].pg_log_from)


def matrix_targets(chat):
    """aigw against its targets in the zero-latency matrix: requests/s at
    least TARGET_FLOOR_RATIO x the FastCGI floor's at 32 and 128 connections,
    p99 at one connection at most TARGET_P99_C1_MS."""
    out = {}
    for name, per in chat.items():
        if not name.startswith("aigw"):
            continue
        t = {}
        for c in TARGET_FLOOR_CONCURRENCY:
            r = per.get(str(c), {}).get("rps_ratio_vs_fastcgi-floor")
            if r is not None:
                t["floor_ratio_c%d" % c] = {"value": r, "target": TARGET_FLOOR_RATIO, "met": r >= TARGET_FLOOR_RATIO}
        if "1" in per:
            p99 = per["1"]["p99_ms"]
            t["p99_ms_c1"] = {"value": p99, "target": TARGET_P99_C1_MS, "met": p99 <= TARGET_P99_C1_MS}
        # On PostgreSQL: against the same gateway on SQLite.
        r = per.get(str(TARGET_PG_CONCURRENCY), {}).get("rps_ratio_vs_aigw-nginx") if name == PG_NAME else None
        if r is not None:
            t["sqlite_ratio_c%d" % TARGET_PG_CONCURRENCY] = {"value": r, "target": TARGET_PG_RATIO,
                                                             "met": r >= TARGET_PG_RATIO}
        out[name] = t
    return out


# Trouble in the logs of an aigw on PostgreSQL: aigw's errors and warnings
# (a failed batch, a lost connection, ...), nginx's errors, PostgreSQL's
# (a statement cut off by statement_timeout_ms is "ERROR:  canceling
# statement due to statement timeout"), and store_unavailable anywhere.
PG_LOG_PATTERN = re.compile(r"aigw\[\d+\] (?:error|warn): |\b(?:ERROR|FATAL|PANIC|WARNING):  |"
                            r"\[(?:error|crit|alert|emerg)\]|store_unavailable|statement timeout")


def pg_log_offset():
    """The size of PostgreSQL's log now: pg_log_problems() reads on from it."""
    srv = PG["server"]
    return file_size(srv.logfile) or 0 if srv is not None and srv.logfile else 0


def pg_log_problems(gw_name, pg_from=0):
    """Lines of the logs of an aigw on PostgreSQL (aigw serve's, its nginx's
    error log) and of PostgreSQL's own log from byte pg_from on that tell of
    trouble: how many, and the first few."""
    paths = [(os.path.join(WORK, gw_name + "-serve.log"), 0),
             (os.path.join(WORK, gw_name + "-nginx", "error.log"), 0)]
    srv = PG["server"]
    if srv is not None and srv.logfile:
        paths.append((srv.logfile, pg_from))
    out = {"lines": 0, "first": []}
    for path, offset in paths:
        try:
            with open(path, errors="replace") as f:
                f.seek(offset)
                for line in f:
                    if PG_LOG_PATTERN.search(line):
                        out["lines"] += 1
                        if len(out["first"]) < 5:
                            out["first"].append("%s: %s" % (os.path.basename(path), line.strip()[:200]))
        except OSError:
            pass
    return out


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def worker_memory(system):
    pids = children(system.worker_parent)
    per = [dict(pid=p, **m) for p in pids for m in [smaps(p)] if m]
    if not per:
        return None
    return {"workers": len(per),
            "private_kb_avg": statistics.mean(w["private_kb"] for w in per),
            "private_kb_max": max(w["private_kb"] for w in per),
            "pss_kb_avg": statistics.mean(w["pss_kb"] for w in per),
            "rss_kb_avg": statistics.mean(w["rss_kb"] for w in per),
            "per_worker": per}


def section_memory_after(aigws, portkey, mock, res, idle):
    out = {}
    for s in aigws:
        served = s.gw.audit_count()
        if served < MEMORY_REQUESTS and left() > 30:
            log("memory: %s has served %d requests; topping up to %d" % (s.name, served, MEMORY_REQUESTS))
            while served < MEMORY_REQUESTS and left() > 20:
                run_wrk(s, 32, max(1, min(10, (MEMORY_REQUESTS - served) // 500 + 1)))
                served = s.gw.audit_count()
        after = worker_memory(s)
        out[s.name] = {"idle": idle.get(s.name), "after": after, "requests_served": served,
                       "db_bytes": file_size(s.gw.db_path), "wal_bytes": file_size(s.gw.db_path + "-wal")}
        if s.worker_parent != s.proc.pid:   # aigw serve: the master too
            out[s.name]["master_after"] = smaps(s.worker_parent)
    if portkey is not None and portkey.ok:
        out["portkey"] = {"idle": idle.get("portkey"), "after": smaps(portkey.proc.pid)}
    res["memory"] = out


def syscall_profile(system, seconds=3, conc=32):
    """strace -c -f on every aigw worker of system during a short wrk run;
    system calls per request answered."""
    pids = children(system.worker_parent)
    out_file = os.path.join(WORK, "strace-%s.txt" % system.name)
    cmd = ["strace", "-c", "-f", "-o", out_file] + sum((["-p", str(p)] for p in pids), [])
    st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    track("strace", st)
    time.sleep(1.0)
    io0 = {p: proc_io(p) for p in pids}
    r = run_wrk(system, conc, seconds)
    io1 = {p: proc_io(p) for p in pids}
    stop(st, timeout=10, sig=signal.SIGINT)
    io = {}
    for p in pids:
        if io0.get(p) and io1.get(p):
            for k in io1[p]:
                io[k] = io.get(k, 0) + io1[p][k] - io0[p].get(k, 0)
    calls = {}
    if os.path.exists(out_file):
        for line in open(out_file):
            m = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$", line)
            if m and m.group(3) != "total":
                calls[m.group(3)] = int(m.group(1))
    n = r["requests"] or 1
    per = {k: round(v / n, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
    return {"system": system.name, "workers": len(pids), "requests": r["requests"],
            "rps_under_strace": round(r["rps"], 1), "non_2xx": r["errors"]["status"],
            "per_request": per, "total_per_request": round(sum(calls.values()) / n, 1),
            # /proc/PID/io: wchar = bytes handed to write-like calls (sockets too),
            # write_bytes = bytes the workers made the kernel send to storage
            "io_bytes_per_request": {k: round(v / n) for k, v in io.items()
                                     if k in ("rchar", "wchar", "read_bytes", "write_bytes")}}


def proc_io(pid):
    try:
        with open("/proc/%d/io" % pid) as f:
            return {k: int(v) for k, v in (line.split(":") for line in f)}
    except OSError:
        return None


def section_syscalls(system, res):
    res["syscalls"] = syscall_profile(system)


# --- the slow lane: a mock that answers like a real model -----------------------

def system_pids(s):
    """The processes whose memory a system costs: aigw serve's master and
    workers, or the aigw processes lighttpd spawned (not lighttpd: its
    counterpart, nginx in front of aigw serve, is not counted either);
    Portkey's node process; nginx's master and workers."""
    if s.gw is not None:
        if s.worker_parent != s.proc.pid:
            return [s.worker_parent] + children(s.worker_parent)
        return children(s.worker_parent)
    if s.name == "portkey":
        return [s.proc.pid]
    return [s.proc.pid] + children(s.proc.pid)


def pss_sum(s):
    """(kB of Pss summed over the system's processes, how many processes)."""
    per = [m["pss_kb"] for m in (smaps(p) for p in system_pids(s)) if m]
    return sum(per), len(per)


def verify_slow(s, model):
    """A chat and a streamed request through s must come from the slow mock,
    each reaching it exactly once."""
    for stream in (False, True):
        before = model.stats()["requests"]
        st, body = request(s.port, "POST", s.slow_path, dict(CHAT_BODY, stream=True) if stream else CHAT_BODY,
                           s.slow_headers)
        hits = model.stats()["requests"] - before
        what = "streamed" if stream else "chat"
        if st != 200 or ModelMock.MARK not in body or b"milliseconds" not in body or \
                (stream and b"data: [DONE]" not in body):
            raise RuntimeError("%s request answered %s: %r" % (what, st, body[:300]))
        if hits != 1:
            raise RuntimeError("%s request reached the slow mock %d times, not once" % (what, hits))


def slow_systems(mock, res, portkey):
    """nginx proxy_pass (the floor), Portkey, aigw behind nginx + `aigw serve`
    (on SQLite, and on PostgreSQL) and behind lighttpd, aigw with the worker
    counts it ships with; each routed to a slow mock of its own (s.model), so
    that what one system still sends after its run never counts for another."""
    systems = []
    model = ModelMock()
    proxy = proxy_system("slow-nginx-proxy", model.port, keepalive=max(SLOW_CONCURRENCY))
    proxy.slow_path, proxy.model = azure_path("slow"), model
    systems.append(proxy)
    if portkey is None:
        portkey = portkey_system(mock, res)
        if portkey is not None:
            # A fresh Portkey: V8 needs its warm-up (see section_matrix).
            log("slow: warming a fresh Portkey up for %d s" % WARMUP_PORTKEY_S)
            run_wrk(portkey, 32, WARMUP_PORTKEY_S)
    if portkey is not None:
        portkey.model = ModelMock()
        portkey.slow_headers = portkey_headers(portkey.model.url, "slow")
        systems.append(portkey)
    for name, server in (("aigw-nginx", "nginx"), (PG_NAME, "nginx"), ("aigw-lighttpd", "lighttpd")):
        model = ModelMock()
        if name == PG_NAME:
            s = pg_system(name, "slow-" + name, mock, model, res["slow"]["unavailable"], workers=None)
            if s is None:
                stop(model.proc)
                continue
        else:
            gw = Gateway("slow-" + name, mock, model).setup()
            s = aigw_system(name, gw, server, workers=None)
        s.model, s.server = model, server
        systems.append(s)
    return systems


def restart_aigw(s):
    """The same installation started anew: a gateway that serves fewer
    streams than it was sent still has the rest queued (behind lighttpd,
    or in `aigw serve`'s listen queue) and would carry them into the next run."""
    for p in s.procs:
        stop(p)
    n = aigw_system(s.name, s.gw, s.server, workers=None)
    n.model, n.server = s.model, s.server
    n.pg_log_from = getattr(s, "pg_log_from", 0)
    return n


def section_slow(mock, res, portkey):
    """Streams from a mock that takes 1 s per answer, at SLOW_CONCURRENCY
    connections: how many a gateway carries at once, next to nginx."""
    out = {"concurrency": SLOW_CONCURRENCY, "systems": {}, "unavailable": {}}
    res["slow"] = out
    started = []
    try:
        started = slow_systems(mock, res, portkey)
        systems = []
        for s in started:
            try:
                verify_slow(s, s.model)
                log("slow: verified %s (port %d, slow mock on %d)%s" % (
                    s.name, s.port, s.model.port, ", %d aigw workers" % s.workers if s.workers else ""))
                systems.append(s)
            except Exception as e:  # noqa: BLE001
                log("slow: %s failed verification: %s" % (s.name, e))
                out["unavailable"][s.name] = "failed verification: %s" % e
        out["systems_order"] = [s.name for s in systems]
        out["aigw_workers"] = {s.name: s.workers for s in systems if s.gw is not None}
        # Per point about the duration, 1 s of wrk's start and stop and 2 s
        # of the mock going idle (or a restart); 4 s of warm-up per system.
        # Shrink the duration if the budget is short.
        dur = SLOW_DURATION
        points = len(systems) * len(SLOW_CONCURRENCY)
        fixed = len(systems) * 4 + points * 3 + 15
        if left() < fixed + points * dur:
            dur = int((left() - fixed) / max(1, points))
            if dur < 3:
                out["skipped"] = "no time left"
                return
            log("slow: only time for %d s per point" % dur)
        out["duration_s"] = dur
        def settle_into(j, timeout):
            n = settle(systems[j], timeout)
            if n is not systems[j]:
                started.append(n)
                systems[j] = n

        for j, s in enumerate(systems):
            # Warm up without queueing: at most as many streams as aigw has workers.
            run_wrk(s, min(32, s.workers or 32), 2, slow=True)
            settle_into(j, 10.0)
        top = max(SLOW_CONCURRENCY)
        for i, c in enumerate(SLOW_CONCURRENCY):
            order = list(range(len(systems)))
            for j in (order if i % 2 == 0 else order[::-1]):
                out["systems"].setdefault(systems[j].name, {})[str(c)] = slow_point(systems[j], c, dur,
                                                                                     sample=c == top)
                settle_into(j, 0)   # slow_point has waited already
        slow_ratios(out)
        pgs = [s for s in systems if s.name == PG_NAME]
        if pgs:
            out["pg_log_problems"] = pg_log_problems(pgs[0].gw.name, pgs[0].pg_log_from)
    finally:
        for s in started:
            if s is not portkey:    # the matrix's Portkey: main() stops it
                for p in s.procs:
                    stop(p)
            if getattr(s, "model", None) is not None:
                stop(s.model.proc)


def cpu_ticks(pids):
    """utime + stime (clock ticks) of the processes, summed."""
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def settle(s, timeout=10.0):
    """Before the next run: the system's slow mock idle and the system itself
    quiet (under 5% of a CPU; aigw-pg-nginx with PostgreSQL's processes). An
    aigw still busy at its mock is restarted (see restart_aigw); anything
    else (Portkey working off what it had queued) is waited for, up to 20 s
    more. Returns the system to go on with."""
    st = s.model.wait_idle(timeout)
    if st["active"] and s.gw is not None:
        log("slow: %s still has %d streams open at the mock (more queued) after its run: restarting it" % (
            s.name, st["active"]))
        return restart_aigw(s)
    deadline = time.time() + 20.0
    if st["active"]:
        st = s.model.wait_idle(20.0)
    hz = os.sysconf("SC_CLK_TCK")
    while time.time() < deadline:
        pids = system_pids(s)
        if s.gw is not None and s.gw.pg is not None:
            pids += postgres_pids()     # its PostgreSQL too (autovacuum, a checkpoint)
        t = cpu_ticks(pids)
        time.sleep(0.5)
        if (cpu_ticks(pids) - t) / hz < 0.05 * 0.5:
            return s
    log("slow: %s still busy 20 s after its run (%d streams open at its mock)" % (s.name, st["active"]))
    return s


def slow_point(s, conc, dur, sample):
    """One wrk run of streamed requests; with sample=True the system's Pss is
    read about once a second while the load is on (the last reading is the
    one reported: the end of the run, still under load)."""
    before = s.model.stats()
    t0 = time.time()
    samples = []
    in_flight = [0]

    def watch():
        # Streams the gateway has open to the mock at once (aigw today: one per worker).
        in_flight[0] = max(in_flight[0], s.model.stats()["active"])
        # Every connection is in flight after the first second; the last
        # reading must come before wrk stops sending.
        if sample and 1.0 <= time.time() - t0 <= dur - 0.5:
            kb, n = pss_sum(s)
            samples.append({"t_s": round(time.time() - t0, 1), "pss_kb": kb, "processes": n})
            if s.gw is not None and s.gw.pg is not None:
                # PostgreSQL's processes, not counted in the aigw Pss above
                pk = [m["pss_kb"] for m in (smaps(p) for p in postgres_pids()) if m]
                samples[-1].update(postgres_pss_kb=sum(pk), postgres_processes=len(pk))

    r = run_wrk(s, conc, dur, slow=True, during=watch)
    # What reached the mock because of this run: the streams in flight when
    # wrk stopped end within a second or two (their clients are gone); a
    # gateway that still sends streams after 3 s has them queued, and is
    # restarted (settle).
    after = s.model.wait_idle(3.0)
    secs = r["duration_us"] / 1e6 if r["duration_us"] else 0
    ok = r["streams_ok"]
    e = r["errors"]
    a = {"streams_per_s": ok / secs if secs else 0.0, "streams_ok": ok, "requests": r["requests"],
         "p50_ms": r["p50_us"] / 1000.0, "p90_ms": r["p90_us"] / 1000.0, "p99_ms": r["p99_us"] / 1000.0,
         "max_ms": r["max_us"] / 1000.0,
         "non_2xx": e["status"], "socket_errors": e["connect"] + e["read"] + e["write"] + e["timeout"],
         "timeouts": e["timeout"], "streams_cut": r["streams_cut"],
         # The mock's view: what reached it, what it answered to the end,
         # and what was cut off (the streams in flight when wrk stopped).
         "mock_requests": after["requests"] - before["requests"],
         "mock_completed": after["completed"] - before["completed"],
         "mock_aborted": after["aborted"] - before["aborted"],
         "mock_in_flight_max": in_flight[0]}
    a["errors"] = a["non_2xx"] + a["socket_errors"] + a["streams_cut"]
    if not r["requests"]:       # nothing answered within the run: no latency to speak of
        for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            a[k] = None
    a["mock_completed_per_stream"] = a["mock_completed"] / ok if ok else None
    if samples:
        a["pss_kb"] = samples[-1]["pss_kb"]
        a["pss_processes"] = samples[-1]["processes"]
        a["pss_kb_max"] = max(x["pss_kb"] for x in samples)
        a["pss_samples"] = samples
        if "postgres_pss_kb" in samples[-1]:
            a["postgres_pss_kb"] = samples[-1]["postgres_pss_kb"]
            a["postgres_processes"] = samples[-1]["postgres_processes"]
    log("  %-14s c=%-5d %7.1f streams/s  p50 %7s ms  p99 %7s ms  errors %d  at the mock at once %d%s" % (
        s.name, conc, a["streams_per_s"], fmt(a["p50_ms"], "%.1f"), fmt(a["p99_ms"], "%.1f"), a["errors"],
        in_flight[0],
        "  Pss %.0f MiB (%d processes)" % (a["pss_kb"] / 1024, a["pss_processes"]) if "pss_kb" in a else ""))
    return a


def slow_ratios(out):
    """Ratios to nginx proxy_pass and aigw's targets, per concurrency."""
    ngx = out["systems"].get("nginx-proxy", {})
    top = str(max(SLOW_CONCURRENCY))
    for name, per in out["systems"].items():
        for c, a in per.items():
            n = ngx.get(c)
            if n and n["streams_per_s"]:
                a["streams_ratio_vs_nginx"] = a["streams_per_s"] / n["streams_per_s"]
            if n and n["p99_ms"] and a["p99_ms"] is not None:
                a["p99_ratio_vs_nginx"] = a["p99_ms"] / n["p99_ms"]
            if not name.startswith("aigw"):
                continue
            t = {}
            if "streams_ratio_vs_nginx" in a:
                t["streams/s"] = a["streams_ratio_vs_nginx"] >= TARGET_SLOW_RPS_RATIO
            if "p99_ratio_vs_nginx" in a:
                t["p99"] = a["p99_ratio_vs_nginx"] <= TARGET_SLOW_P99_RATIO
            elif n and n["p99_ms"]:     # nothing answered at all
                t["p99"] = False
            if c == top and "pss_kb" in a:
                t["memory"] = a["pss_kb"] / 1024 <= TARGET_SLOW_PSS_MIB
            sq = out["systems"].get("aigw-nginx", {}).get(c) if name == PG_NAME else None
            if sq and sq["streams_per_s"]:
                # on PostgreSQL: the same result as on SQLite
                a["streams_ratio_vs_aigw-nginx"] = a["streams_per_s"] / sq["streams_per_s"]
                t["sqlite"] = abs(a["streams_ratio_vs_aigw-nginx"] - 1) <= TARGET_PG_SLOW_TOLERANCE
            a["targets"] = t
            a["target_met"] = bool(t) and all(t.values())


def stream_once(port, path, headers, body):
    """POST a streamed chat; times (s, from sending) of the first byte and of
    every complete SSE event."""
    data = json.dumps(body).encode()
    head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
           "Content-Length: %d\r\nConnection: close\r\n" % (path, len(data))
    head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        t0 = time.perf_counter()
        s.sendall(head.encode() + data)
        buf = b""
        first = None
        events = []
        while True:
            d = s.recv(65536)
            t = time.perf_counter() - t0
            if not d:
                break
            if first is None:
                first = t
            buf += d
            # An event counts once its terminating blank line has arrived
            # (chunked framing may sit between "data:" and the next event).
            n = 0
            pos = buf.find(b"data:")
            while pos >= 0:
                end = buf.find(b"\n\n", pos)
                if end < 0:
                    break
                n += 1
                pos = buf.find(b"data:", end)
            events += [t] * (n - len(events))
    finally:
        s.close()
    status = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/") else 0
    return {"status": status, "ttfb": first, "events": events, "done": b"[DONE]" in buf}


def section_stream(systems, res):
    """Streams with events every STREAM_DELAY_S through each system. The
    client asks for the usage event itself (as SDK clients usually do): aigw
    asks the backend for it anyway, and the mock spaces every event, so
    without it aigw's stream would have one spaced event more than the
    direct call's."""
    body = dict(CHAT_BODY, stream=True, stream_options={"include_usage": True})
    runs = {s.name: [] for s in systems}
    for rep in range(STREAM_REPEAT):
        for s in (systems if rep % 2 == 0 else systems[::-1]):
            r = stream_once(s.slow_port, s.slow_path, s.slow_headers, body)
            runs[s.name].append(r)
    out = {}
    base = None
    direct = runs.get("direct")
    if direct and all(r["status"] == 200 and r["done"] for r in direct):
        m = min(len(r["events"]) for r in direct)
        # Align from the end: the last events (finish, [DONE]) are always relayed.
        base = [statistics.median(r["events"][len(r["events"]) - m + i] for r in direct) for i in range(m)]
    for s in systems:
        rs = runs[s.name]
        good = [r for r in rs if r["status"] == 200 and r["done"] and r["events"]]
        o = {"runs": len(rs), "ok": len(good)}
        if good:
            o["ttfb_ms"] = statistics.median(r["ttfb"] for r in good) * 1000
            o["first_event_ms"] = statistics.median(r["events"][0] for r in good) * 1000
            o["last_event_ms"] = statistics.median(r["events"][-1] for r in good) * 1000
            o["events"] = statistics.median(len(r["events"]) for r in good)
            gaps = [b - a for r in good for a, b in zip(r["events"], r["events"][1:])]
            o["max_gap_ms"] = max(gaps) * 1000 if gaps else None
            if base:
                delays = []
                for r in good:
                    m = min(len(r["events"]), len(base))
                    ev = r["events"][len(r["events"]) - m:]
                    bs = base[len(base) - m:]
                    delays += [(a - b) * 1000 for a, b in zip(ev, bs)]
                o["relay_delay_ms_mean"] = statistics.mean(delays)
                o["relay_delay_ms_max"] = max(delays)
                # per event (aligned from the end), median over the runs
                m = min(min(len(r["events"]) for r in good), len(base))
                o["relay_delay_ms_per_event"] = [
                    round(statistics.median((r["events"][len(r["events"]) - m + i] - base[len(base) - m + i]) * 1000
                                            for r in good), 1) for i in range(m)]
        else:
            o["error"] = "status %s" % [r["status"] for r in rs]
        out[s.name] = o
    res["stream"] = {"events_every_ms": STREAM_DELAY_S * 1000, "content_events": STREAM_EVENTS,
                     "repeats": STREAM_REPEAT, "systems": out}


FILL_SQL = """
PRAGMA journal_mode=OFF;
PRAGMA synchronous=OFF;
PRAGMA cache_size=-1000000;
PRAGMA temp_store=MEMORY;
BEGIN;
INSERT INTO audit_log (request_id, ts_ms, user_id, operation, model, deployment, backend, attempts,
  attempts_detail, stream, reserved_tokens, budget_period_start, prompt_tokens, completion_tokens,
  total_tokens, latency_ms, status, http_status, error_code, error, client_ip, trace_id,
  request_body, response_body, completed_ms)
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < @ROWS@ - 1),
g AS (SELECT i, @T0@ + i * @STEP@ + abs(random()) % @STEP@ AS ts, abs(random()) AS r, abs(random()) AS r2 FROM n)
SELECT
  -- UUIDv7 like the gateway's: 48-bit millisecond time, version 7, variant 10
  printf('%08x-%04x-7%03x-%04x-%012x', ts >> 16, ts & 65535, r & 4095, 32768 | (r2 & 16383),
         (r2 >> 14) & 281474976710655),
  ts,
  'user' || (r % 500),
  CASE WHEN r % 10 < 7 THEN 'chat.completions' ELSE 'chat' END,
  CASE WHEN r % 5 = 0 THEN 'gpt-4o-mini' ELSE 'gpt-4o' END,
  CASE WHEN r % 5 = 0 THEN 'gpt-4o-mini-' ELSE 'gpt-4o-' END || CASE WHEN r % 50 = 1 THEN 'west' ELSE 'east' END,
  CASE WHEN r % 50 = 1 THEN 'west' ELSE 'east' END,
  CASE WHEN r % 50 = 1 THEN 2 ELSE 1 END,
  CASE WHEN r % 50 = 1
       THEN '[{"backend":"east","status":429,"latency_ms":3.1,"error":"rate limited"},{"backend":"west","status":200,"latency_ms":' || (400 + r2 % 900) || '.4}]'
       ELSE '[{"backend":"east","status":200,"latency_ms":' || (300 + r2 % 900) || '.2}]' END,
  (r % 7 = 0),
  60 + r % 200,
  ts / 86400000 * 86400,
  20 + r % 200, 9 + r2 % 300, 29 + r % 200 + r2 % 300,
  310.5 + r2 % 900,
  CASE WHEN r % 100 = 99 THEN 'refused' WHEN r % 100 = 98 THEN 'error' ELSE 'success' END,
  CASE WHEN r % 100 = 99 THEN 429 WHEN r % 100 = 98 THEN 502 ELSE 200 END,
  CASE WHEN r % 100 = 99 THEN 'rate_limited' WHEN r % 100 = 98 THEN 'backend_error' ELSE NULL END,
  CASE WHEN r % 100 = 99 THEN 'Rate limit exceeded: 100 requests per 60 s.'
       WHEN r % 100 = 98 THEN 'The model backends failed after 3 attempt(s); last: HTTP 500.' ELSE NULL END,
  '10.' || (r % 256) || '.' || (r2 % 256) || '.' || (r % 97),
  printf('%016x%016x', r, r2),
  '{"messages":[{"role":"system","content":"You are a helpful assistant for Contoso customer support. Answer briefly."},{"role":"user","content":"Ticket ' || (r % 1000000) || ': how do I reset the password of my account and keep my saved settings?"}],"max_tokens":' || (50 + r % 200) || ',"temperature":0.7,"user_id":"user' || (r % 500) || '"}',
  CASE WHEN r % 100 >= 98 THEN NULL ELSE
  '{"id":"chatcmpl-' || printf('%x', r2) || '","object":"chat.completion","created":' || (ts / 1000) || ',"model":"gpt-4o-2024-08-06","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"Open Settings, choose Security, then Reset password. Your saved settings are kept; you will be asked to sign in again on your other devices."},"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],"usage":{"prompt_tokens":' || (20 + r % 200) || ',"completion_tokens":' || (9 + r2 % 300) || ',"total_tokens":' || (29 + r % 200 + r2 % 300) || '},"system_fingerprint":"fp_5f20662549"}' END,
  ts + 310 + r2 % 900
FROM g;
COMMIT;
PRAGMA journal_mode=WAL;
"""


def fill_audit(db_path, rows):
    """rows realistic audit rows over the 30 days before now, time-ordered
    UUIDv7 request ids, bodies as log_bodies=redacted stores them."""
    span_ms = 30 * 86400 * 1000
    step = max(1, span_ms // rows)
    t0 = int(time.time() * 1000) - span_ms - 60000
    sql = FILL_SQL.replace("@ROWS@", str(rows)).replace("@T0@", str(t0)).replace("@STEP@", str(step))
    r = subprocess.run(["sqlite3", db_path], input=sql, capture_output=True, text=True, timeout=max(60, left()))
    if r.returncode != 0:
        raise RuntimeError("filling the audit table failed: %s" % r.stderr)


def checkpoint(db_path):
    con = sqlite3.connect(db_path, timeout=30)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def section_audit(mock, res):
    rows = AUDIT_ROWS
    # At about 35 s per million rows (45 to be safe), fit what the budget allows
    # after the measurement itself (about 40 s).
    fit = int(max(0.0, left() - 45) / 45.0 * 1e6)
    if fit < rows:
        log("audit: only time for %d rows of the %d asked" % (fit, rows))
        rows = fit
    if rows < 10000:
        res["audit"] = {"skipped": "not enough time left in the budget"}
        return
    empty = Gateway("audit-empty", mock).setup()
    checkpoint(empty.db_path)
    full = Gateway("audit-full", mock)
    shutil.copyfile(empty.db_path, full.db_path)
    full.use_db(full.db_path, empty.key)
    log("audit: filling a copy of the database with %d rows" % rows)
    t = time.time()
    fill_audit(full.db_path, rows)
    fill_s = time.time() - t
    # Write the filled file back before measuring: its dirty pages would
    # otherwise be flushed during the measurement and stall every fsync.
    t = time.time()
    os.sync()
    sync_s = time.time() - t
    log("audit: filled in %.0f s, written back in %.0f s" % (fill_s, sync_s))
    size = os.path.getsize(full.db_path)
    log("audit: %.2f GB" % (size / 1e9))
    systems = []
    for name, gw in (("audit-empty", empty), ("audit-%s" % human_rows(rows), full)):
        s = aigw_system(name, gw, "lighttpd")
        verify(s, mock)
        systems.append(s)
    agg = alternate(systems, AUDIT_CONCURRENCY, mock=mock)
    out = {"rows": rows, "fill_seconds": round(fill_s, 1), "sync_seconds": round(sync_s, 1), "db_bytes": size,
           "concurrency": AUDIT_CONCURRENCY, "server": "lighttpd"}
    out["empty"] = agg[systems[0].name]
    out["filled"] = agg[systems[1].name]
    out["filled"]["rows_after"] = full.audit_count()
    out["empty"]["rows_after"] = empty.audit_count()
    out["rps_ratio_filled_vs_empty"] = out["filled"]["rps"] / out["empty"]["rps"] if out["empty"]["rps"] else None
    if left() > 25:
        for k, s in (("empty", systems[0]), ("filled", systems[1])):
            out[k]["syscalls"] = syscall_profile(s)
    out["added_p50_ms_filled_vs_empty"] = out["filled"]["p50_ms"] - out["empty"]["p50_ms"]
    res["audit"] = out
    for s in systems:
        for p in s.procs:
            stop(p)
    os.unlink(full.db_path)


def human_rows(n):
    return "%gM" % (n / 1e6) if n >= 1e6 else "%gk" % (n / 1e3)


def callgrind_totals(path):
    with open(path) as f:
        for line in f:
            m = re.match(r"^(?:summary|totals):\s*(\d+)", line)
            if m:
                return int(m.group(1))
    return None


def callgrind_by_object(path):
    """Self cost (Ir) per ELF object, from callgrind's output format
    (names are given once, at the first ob=/cob= of an id)."""
    names = {}
    costs = {}
    ob = None
    skip_next = False
    obj = re.compile(r"^(c?ob)=(?:\((\d+)\))?\s*(.*)$")
    with open(path) as f:
        for line in f:
            c = line[:1]
            if c in "oc" and (line.startswith("ob=") or line.startswith("cob=")):
                m = obj.match(line.rstrip("\n"))
                name = m.group(3) or names.get(m.group(2), "?")
                if m.group(2) and m.group(3):
                    names[m.group(2)] = m.group(3)
                if m.group(1) == "ob":
                    ob = name
            elif line.startswith("calls="):
                skip_next = True    # the next cost line is the callee's inclusive cost
            elif c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and ob:
                    costs[ob] = costs.get(ob, 0) + int(parts[1])
    total = sum(costs.values()) or 1
    return [(os.path.basename(k), v, v / total) for k, v in sorted(costs.items(), key=lambda kv: -kv[1])]


def callgrind_run(gw, n, conc, warm=10):
    """One worker under callgrind behind nginx; warm + n chat requests from conc
    clients at once (each its own keep-alive connection). Returns (total Ir,
    output file, requests not answered 200 with the mock's body)."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    fport = lsock.getsockname()[1]
    out = os.path.join(WORK, "callgrind.c%d.%d.out" % (conc, n))
    env = dict(os.environ, AIGW_CONFIG=gw.config_path)
    # The worker as lighttpd/mod_fcgid start it: the listening socket is fd 0.
    vg = spawn("valgrind-%d-%d" % (conc, n), ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                                             AIGW_BIN], env=env, stdin=lsock.fileno())
    lsock.close()
    port = free_port()
    site = os.path.join(gw.dir, "nginx-site-%d-%d.conf" % (conc, n))
    with open(site, "w") as f:
        f.write(nginx_front_site("127.0.0.1:%d" % fport, port))
    ngx = start_nginx("callgrind-nginx-%d-%d" % (conc, n), "    include %s;" % site, workers=1)
    wait_port(port, ngx, what="nginx (callgrind)")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("GET", "/healthz")
    c.getresponse().read()
    c.close()
    hdrs = dict(gw.headers(), **{"Content-Type": "application/json"})
    data = json.dumps(CHAT_BODY).encode()
    bad = [0]
    lock = threading.Lock()

    def client(count):
        cc = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        for _ in range(count):
            cc.request("POST", azure_path("gpt-4o"), body=data, headers=hdrs)
            r = cc.getresponse()
            body = r.read()
            if r.status != 200 or MOCK_MARK not in body:
                with lock:
                    bad[0] += 1
        cc.close()

    t = time.time()
    total = warm + n
    shares = [total // conc + (1 if i < total % conc else 0) for i in range(conc)]
    threads = [threading.Thread(target=client, args=(k,)) for k in shares if k]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log("callgrind: %d requests from %d client(s) in %.1f s under valgrind (%d not 200)" % (
        total, conc, time.time() - t, bad[0]))
    stop(ngx)
    os.kill(vg.pid, signal.SIGTERM)
    try:
        vg.wait(60)
    except subprocess.TimeoutExpired:
        pass
    stop(vg)
    return callgrind_totals(out), out, bad[0]


def section_callgrind(mock, res):
    if not shutil.which("valgrind"):
        res["callgrind"] = {"skipped": "valgrind not installed"}
        return
    gw = Gateway("callgrind", mock).setup()
    n1, n2 = CALLGRIND_N
    warm = 10
    # At one client every request commits alone; at several, admissions and
    # settlements share group-committed transactions, as under real load.
    by_conc = {}
    for conc in CALLGRIND_CONCURRENCY:
        totals, outs = {}, {}
        for n in (n1, n2):
            totals[n], outs[n], bad = callgrind_run(gw, n, conc, warm)
            if bad:
                res["callgrind"] = {"error": "%d of %d requests under valgrind failed" % (bad, warm + n)}
                return
        by_conc[conc] = (totals, outs)
    conc_main = max(CALLGRIND_CONCURRENCY)
    totals, outs = by_conc[conc_main]
    if not totals.get(n1) or not totals.get(n2):
        res["callgrind"] = {"error": "no callgrind totals (%r)" % totals}
        return
    per = (totals[n2] - totals[n1]) / (n2 - n1)
    per_conc = {str(c): round((t[n2] - t[n1]) / (n2 - n1)) for c, (t, _) in by_conc.items()}
    ann = subprocess.run(["callgrind_annotate", outs[n2]], capture_output=True, text=True, timeout=120).stdout
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(os.path.join(os.path.dirname(RESULTS), "callgrind-annotate.txt"), "w") as f:
        f.write(ann)
    top = []
    for line in ann.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(\S.*)$", line)
        if m and ":" in m.group(2) and not m.group(2).startswith("PROGRAM TOTALS"):
            top.append({"ir": int(m.group(1).replace(",", "")), "function": m.group(2).strip()})
        if len(top) == 15:
            break
    n_total = warm + n2
    inc = subprocess.run(["callgrind_annotate", "--inclusive=yes", outs[n2]], capture_output=True, text=True,
                         timeout=120).stdout
    with open(os.path.join(os.path.dirname(RESULTS), "callgrind-annotate-inclusive.txt"), "w") as f:
        f.write(inc)
    # aigw's own functions, inclusive, per request (the request path only; main/worker_init include start-up)
    own = []
    for line in inc.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(\S*/app/[^:]+\.c):(\w+)", line)
        if m and m.group(3) not in ("main", "worker_run"):
            own.append({"function": m.group(3), "file": os.path.basename(m.group(2)),
                        "ir_per_request": round(int(m.group(1).replace(",", "")) / (n_total + 1))})
        if len(own) == 15:
            break
    objs = callgrind_by_object(outs[n2])
    res["callgrind"] = {
        "instructions_per_request": round(per),
        "instructions_per_request_by_concurrency": per_conc,
        "concurrency": conc_main,
        "method": "Ir(%d requests) - Ir(%d requests), divided by %d; both runs: start-up, /healthz and %d "
                  "warm-up requests, sent by %d client(s) at once; the worker behind nginx (shipped "
                  "config), fd 0 a listening TCP socket" % (n2, n1, n2 - n1, warm, conc_main),
        "totals": {str(k): v for k, v in totals.items()},
        "totals_requests": n_total,
        "top15_self": top,
        "top15_aigw_inclusive_per_request": own,
        "by_object_share_of_run_%d" % n_total: [{"object": o, "share": round(s, 4)} for o, _, s in objs[:10]],
    }


# --- the report -----------------------------------------------------------------

def fmt(v, spec="%.2f", none="-"):
    return none if v is None else spec % v


def print_report(res):
    m = res["machine"]
    print()
    print("aigw benchmark  (%s; %s CPUs, %s; load avg at start %s)" % (
        m["date"], m["nproc"], m["cpu"], m["loadavg_start"]))
    print("aigw %s workers, all policy on (API key auth, rate limit, budget, TPM, validation, redaction, "
          "audit row with redacted bodies, 2 backends); wrk -t2, %d rounds x %d s per point, systems alternated"
          % (WORKERS, ROUNDS, DURATION))
    if "matrix" in res:
        for kind, title in (("chat", "chat completion (526-byte JSON answer)"), ("sse", "stream (13 SSE events)")):
            mt = res["matrix"][kind]
            if not mt:
                continue
            concs = sorted({int(c) for per in mt.values() for c in per})
            print()
            print("%s" % title)
            print("%-14s %5s %10s %9s %9s %10s %8s %8s %8s %8s %6s" % (
                "system", "conc", "req/s", "p50 ms", "p99 ms", "+p50 ms", "x portkey", "x nginx", "x floor",
                "non-2xx", "mock"))
            for c in concs:
                for name in res["systems_order"]:
                    a = mt.get(name, {}).get(str(c))
                    if a is None:
                        continue
                    print("%-14s %5d %10.0f %9.2f %9.2f %10s %8s %8s %8s %8d %6s" % (
                        name, c, a["rps"], a["p50_ms"], a["p99_ms"],
                        "-" if name == "direct" else fmt(a.get("added_p50_ms"), "%+.2f"),
                        fmt(a.get("rps_ratio_vs_portkey"), "%.2f") if name.startswith("aigw") else "",
                        fmt(a.get("rps_ratio_vs_nginx-proxy"), "%.3f") if name.startswith("aigw") else "",
                        fmt(a.get("rps_ratio_vs_fastcgi-floor"), "%.2f") if name.startswith("aigw") else "",
                        a["non_2xx"] + a["socket_errors"], fmt(a.get("mock_hits_per_request"), "%.2f")))
            for name, why in res.get("unavailable", {}).items():
                print("%-14s  n/a: %s" % (name, why))
        print("(+p50: added median latency over the direct call; x portkey / x nginx / x floor: aigw's requests/s "
              "divided by Portkey's / nginx proxy_pass's / the FastCGI floor's; non-2xx: HTTP >= 400 plus socket "
              "errors; mock: requests the mock saw per request answered)")
        for name, t in res["matrix"].get("targets", {}).items():
            parts = ["%.2f x floor at %d connections (target >= %.2f): %s" % (
                         t[k]["value"], c, TARGET_FLOOR_RATIO, "target met" if t[k]["met"] else "MISSED")
                     for c in TARGET_FLOOR_CONCURRENCY for k in ["floor_ratio_c%d" % c] if k in t]
            if "p99_ms_c1" in t:
                parts.append("p99 %.2f ms at 1 connection (target <= %g ms): %s" % (
                    t["p99_ms_c1"]["value"], TARGET_P99_C1_MS, "target met" if t["p99_ms_c1"]["met"] else "MISSED"))
            k = "sqlite_ratio_c%d" % TARGET_PG_CONCURRENCY
            if k in t:
                parts.append("%.2f x aigw-nginx (SQLite) at %d connections (target >= %.2f): %s" % (
                    t[k]["value"], TARGET_PG_CONCURRENCY, TARGET_PG_RATIO, "target met" if t[k]["met"] else "MISSED"))
            for part in parts:
                print("%-14s %s" % (name, part))
        lp = res["matrix"].get("pg_log_problems")
        if lp and lp["lines"]:
            print("%-14s %d log lines of trouble (aigw serve, nginx, PostgreSQL), first: %s" % (
                PG_NAME, lp["lines"], lp["first"][0]))
    if "memory" in res:
        print()
        print("memory per aigw worker (kB, /proc/PID/smaps_rollup)")
        print("%-14s %8s %10s %10s %10s %10s %10s" % ("system", "workers", "priv idle", "priv after",
                                                       "Pss idle", "Pss after", "requests"))
        for name, mm in res["memory"].items():
            if name == "portkey":
                continue
            i, a = mm.get("idle") or {}, mm.get("after") or {}
            print("%-14s %8s %10s %10s %10s %10s %10d" % (
                name, a.get("workers", "-"), fmt(i.get("private_kb_avg"), "%.0f"), fmt(a.get("private_kb_avg"), "%.0f"),
                fmt(i.get("pss_kb_avg"), "%.0f"), fmt(a.get("pss_kb_avg"), "%.0f"), mm["requests_served"]))
        for name, mm in res["memory"].items():
            if mm.get("wal_bytes") is not None:
                print("%-14s database %.1f MB, its WAL file %.1f MB after %d requests" % (
                    name, (mm.get("db_bytes") or 0) / 1e6, mm["wal_bytes"] / 1e6, mm["requests_served"]))
        pk = res["memory"].get("portkey")
        if pk and pk.get("after"):
            print("%-14s %8s %10s %10s %10s %10s   (one node process)" % (
                "portkey", 1, fmt((pk.get("idle") or {}).get("private_kb"), "%.0f"), fmt(pk["after"]["private_kb"], "%.0f"),
                fmt((pk.get("idle") or {}).get("pss_kb"), "%.0f"), fmt(pk["after"]["pss_kb"], "%.0f")))
    if "syscalls" in res:
        sc = res["syscalls"]
        print()
        print("system calls per request in the aigw workers (strace -c -f, %s, %d requests): %.1f in all" % (
            sc["system"], sc["requests"], sc["total_per_request"]))
        print("  " + ", ".join("%s %.2f" % kv for kv in list(sc["per_request"].items())[:12]))
        io = sc.get("io_bytes_per_request", {})
        if io:
            print("  bytes per request (/proc/PID/io): written by write calls %s, to storage %s; read %s" % (
                io.get("wchar"), io.get("write_bytes"), io.get("rchar")))
    if "stream" in res:
        st = res["stream"]
        print()
        print("stream with an event every %.0f ms (%d content events; median of %d; relay delay = event arrival "
              "minus the direct call's)" % (st["events_every_ms"], st["content_events"], st["repeats"]))
        print("%-14s %9s %12s %12s %12s %12s %8s" % ("system", "TTFB ms", "1st event ms", "last ev. ms",
                                                    "relay mean", "relay max", "events"))
        for name in res["systems_order"]:
            o = st["systems"].get(name)
            if o is None:
                continue
            if "error" in o:
                print("%-14s  failed: %s" % (name, o["error"]))
                continue
            print("%-14s %9.1f %12.1f %12.1f %12s %12s %8g" % (
                name, o["ttfb_ms"], o["first_event_ms"], o["last_event_ms"],
                fmt(o.get("relay_delay_ms_mean"), "%+.1f"), fmt(o.get("relay_delay_ms_max"), "%+.1f"), o["events"]))
    if "audit" in res:
        au = res["audit"]
        print()
        if "skipped" in au or "error" in au:
            print("audit table size: %s" % (au.get("skipped") or au.get("error")))
        else:
            print("audit table size (aigw-lighttpd, %d connections; filled copy: %d rows, %.1f GB, filled in %.0f s)" % (
                au["concurrency"], au["rows"], au["db_bytes"] / 1e9, au["fill_seconds"]))
            for k in ("empty", "filled"):
                a = au[k]
                print("  %-8s %10.0f req/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx %d" % (
                    k, a["rps"], a["p50_ms"], a["p99_ms"], a["non_2xx"] + a["socket_errors"]))
            print("  filled/empty throughput %.2f, added p50 %+.2f ms" % (
                au["rps_ratio_filled_vs_empty"], au["added_p50_ms_filled_vs_empty"]))
            for k in ("empty", "filled"):
                sc = au[k].get("syscalls")
                if sc:
                    print("  %-8s system calls per request (strace -c): %.1f; %s" % (
                        k, sc["total_per_request"],
                        ", ".join("%s %.2f" % kv for kv in list(sc["per_request"].items())[:6])))
    if "slow" in res:
        print_slow(res["slow"])
    if "callgrind" in res:
        cg = res["callgrind"]
        print()
        if "instructions_per_request" in cg:
            for c, ipr in sorted(cg.get("instructions_per_request_by_concurrency", {}).items(),
                                 key=lambda kv: int(kv[0])):
                print("instructions per request in one worker (callgrind), %s client(s) at once: %d  "
                      "(target <= %d: %s)" % (c, ipr, TARGET_INSTRUCTIONS,
                                              "target met" if ipr <= TARGET_INSTRUCTIONS else "MISSED"))
            k = [k for k in cg if k.startswith("by_object")][0]
            print("  by object: " + ", ".join("%s %.0f%%" % (o["object"], o["share"] * 100) for o in cg[k][:6]))
            print("  profile of the %s-request run at %s client(s) at once:" % (
                cg["totals_requests"], cg.get("concurrency", 1)))
            print("  top functions, self cost:")
            for t in cg["top15_self"][:15]:
                print("    %12d  %s" % (t["ir"], t["function"][:110]))
            print("  aigw's functions, inclusive, per request:")
            for t in cg["top15_aigw_inclusive_per_request"]:
                print("    %12d  %s (%s)" % (t["ir_per_request"], t["function"], t["file"]))
        else:
            print("callgrind: %s" % (cg.get("skipped") or cg.get("error")))
    for s, why in res.get("skipped_sections", {}).items():
        print("section %s skipped: %s" % (s, why))
    print()
    print("results: %s" % RESULTS)


def print_slow(sl):
    print()
    if "skipped" in sl or "error" in sl:
        print("slow lane: %s" % (sl.get("skipped") or sl.get("error")))
        return
    print("slow lane: streams from a mock that answers like a model (20 SSE events 50 ms apart + usage + [DONE], "
          "about 1 s), %d s per point; aigw as shipped: %s" % (
              sl.get("duration_s", 0), ", ".join("%s %d workers" % kv for kv in sl.get("aigw_workers", {}).items())))
    print("%-14s %5s %10s %9s %9s %8s %9s %9s %6s %7s %9s  %s" % (
        "system", "conc", "streams/s", "p50 ms", "p99 ms", "errors", "x nginx", "p99 x ngx", "mock", "at once",
        "Pss MiB",
        "target (>= %.1f x nginx streams/s, p99 <= %.1f x nginx, aigw Pss <= %d MiB at %d)" % (
            TARGET_SLOW_RPS_RATIO, TARGET_SLOW_P99_RATIO, TARGET_SLOW_PSS_MIB, max(SLOW_CONCURRENCY))))
    for c in sl["concurrency"]:
        for name in sl.get("systems_order", []):
            a = sl["systems"].get(name, {}).get(str(c))
            if a is None:
                continue
            target = ""
            if name.startswith("aigw"):
                missed = [k for k, ok in a.get("targets", {}).items() if not ok]
                target = "target met" if a.get("target_met") else "MISSED" + (" (%s)" % ", ".join(missed)
                                                                              if missed else "")
            print("%-14s %5d %10.1f %9s %9s %8d %9s %9s %6s %7d %9s  %s" % (
                name, c, a["streams_per_s"], fmt(a["p50_ms"], "%.1f"), fmt(a["p99_ms"], "%.1f"), a["errors"],
                fmt(a.get("streams_ratio_vs_nginx"), "%.3f") if name != "nginx-proxy" else "",
                fmt(a.get("p99_ratio_vs_nginx"), "%.2f") if name != "nginx-proxy" else "",
                fmt(a.get("mock_completed_per_stream"), "%.2f"), a.get("mock_in_flight_max", 0),
                fmt(a["pss_kb"] / 1024 if "pss_kb" in a else None, "%.1f", ""), target))
    for name, why in sl.get("unavailable", {}).items():
        print("%-14s  n/a: %s" % (name, why))
    for c in sl["concurrency"]:
        a = sl["systems"].get(PG_NAME, {}).get(str(c))
        if a is None or "streams_ratio_vs_aigw-nginx" not in a:
            continue
        r_ngx, r_sq = a.get("streams_ratio_vs_nginx"), a["streams_ratio_vs_aigw-nginx"]
        ok_ngx = r_ngx is not None and r_ngx >= TARGET_SLOW_RPS_RATIO
        ok_sq = abs(r_sq - 1) <= TARGET_PG_SLOW_TOLERANCE
        print("%-14s %d connections: %s x nginx streams/s (target >= %.1f): %s; %.2f x aigw-nginx (SQLite) "
              "(target within %.0f%%): %s%s" % (
                  PG_NAME, c, fmt(r_ngx, "%.3f"), TARGET_SLOW_RPS_RATIO, "target met" if ok_ngx else "MISSED",
                  r_sq, TARGET_PG_SLOW_TOLERANCE * 100, "target met" if ok_sq else "MISSED",
                  "; PostgreSQL's own %d processes %.0f MiB Pss" % (
                      a["postgres_processes"], a["postgres_pss_kb"] / 1024) if "postgres_pss_kb" in a else ""))
    lp = sl.get("pg_log_problems")
    if lp and lp["lines"]:
        print("%-14s %d log lines of trouble (aigw serve, nginx, PostgreSQL), first: %s" % (
            PG_NAME, lp["lines"], lp["first"][0]))
    print("(streams/s: 2xx answers ending in [DONE]; p50/p99 over every answer wrk got, errors included; errors: "
          "non-2xx, socket errors and timeouts (10 s), streams cut short; mock: streams the mock answered to the end "
          "per stream wrk got whole; at once: most streams open at the mock at one time; Pss: all aigw processes together (serve: master + workers; lighttpd: the aigw "
          "processes it spawned), Portkey's node process, nginx's master + workers, read during the run)")


def machine_info():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = text_of(["git", "-C", SRCDIR, "rev-parse", "--short", "HEAD"])
    dirty = text_of(["git", "-C", SRCDIR, "status", "--porcelain", "--untracked-files=no"])
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(), "cpu": cpu,
            "kernel": os.uname().release, "loadavg_start": open("/proc/loadavg").read().split()[:3],
            "aigw_commit": commit + ("+dirty" if dirty else ""),
            "versions": {"nginx": text_of([NGINX, "-v"]), "lighttpd": text_of([LIGHTTPD, "-v"]).splitlines()[0]
                         if text_of([LIGHTTPD, "-v"]) else "", "wrk": text_of(["wrk", "-v"]).splitlines()[0]
                         if text_of(["wrk", "-v"]) else "", "node": text_of(["node", "-v"]),
                         "sqlite3": text_of(["sqlite3", "-version"]).split(" ")[0]}}


def main():
    global WORK
    own_work = False
    if not WORK:
        import tempfile
        WORK = tempfile.mkdtemp(prefix="aigw-bench.", dir="/tmp")
        own_work = True
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    res = {"machine": machine_info(), "settings": {
        "concurrency": CONCURRENCY, "duration_s": DURATION, "rounds": ROUNDS, "workers": WORKERS,
        "sse_concurrency": SSE_CONCURRENCY, "audit_rows": AUDIT_ROWS, "audit_concurrency": AUDIT_CONCURRENCY,
        "callgrind_n": CALLGRIND_N, "sections": SECTIONS, "budget_s": BUDGET,
        "slow_concurrency": SLOW_CONCURRENCY, "slow_duration_s": SLOW_DURATION,
        "targets": {"aigw_rps_vs_fastcgi_floor_min": TARGET_FLOOR_RATIO,
                    "at_concurrency": list(TARGET_FLOOR_CONCURRENCY), "aigw_p99_ms_c1_max": TARGET_P99_C1_MS,
                    "slow_streams_vs_nginx_min": TARGET_SLOW_RPS_RATIO, "slow_p99_vs_nginx_max": TARGET_SLOW_P99_RATIO,
                    "slow_aigw_pss_mib_max": TARGET_SLOW_PSS_MIB, "instructions_per_request_max": TARGET_INSTRUCTIONS,
                    "pg_rps_vs_sqlite_min": TARGET_PG_RATIO, "pg_at_concurrency": TARGET_PG_CONCURRENCY,
                    "slow_pg_streams_vs_sqlite_within": TARGET_PG_SLOW_TOLERANCE},
        "pg": PG_ENABLED},
        "unavailable": {}, "skipped_sections": {}}
    res["machine"]["versions"]["portkey"] = ""
    status = 0
    try:
        mock = Mock()
        slow = SlowMock() if "stream" in SECTIONS else None
        log("mock region on %d (nginx), slow streaming mock on %s" % (mock.port, slow and slow.port))
        systems = []
        direct = System("direct", mock.port, azure_path("gpt-4o-east"), azure_path("sse-east"),
                        {"api-key": MOCK_KEY}, slow_path=azure_path("slow"))
        if slow is not None:
            direct.slow_port = slow.port
        systems.append(direct)
        need_systems = any(s in SECTIONS for s in ("matrix", "memory", "syscalls", "stream"))
        aigws = []
        portkey = None
        idle = {}
        if need_systems:
            systems.append(proxy_system("nginx-proxy", mock.port))
            if "matrix" in SECTIONS:
                try:
                    systems.append(fcgi_floor_system(mock))
                except Exception as e:  # noqa: BLE001 -- reported, not fatal
                    res["unavailable"]["fastcgi-floor"] = "did not start: %s" % e
            for name, server in (("aigw-lighttpd", "lighttpd"), ("aigw-nginx", "nginx")):
                gw = Gateway(name, mock, slow).setup()
                s = aigw_system(name, gw, server)
                idle[name] = worker_memory(s)
                systems.append(s)
                aigws.append(s)
            # aigw-nginx on PostgreSQL: the matrix only (memory, syscalls and
            # stream stay with the two above).
            if "matrix" in SECTIONS:
                s = pg_system(PG_NAME, PG_NAME, mock, slow, res["unavailable"])
                if s is not None:
                    systems.append(s)
            portkey = portkey_system(mock, res, slow)
            if portkey is not None:
                systems.append(portkey)
        res["systems_order"] = [s.name for s in systems]
        # Every system must really answer from the mock before it is measured.
        for s in list(systems):
            try:
                verify(s, mock)
                log("verified %s (port %d): answers come from the mock" % (s.name, s.port))
            except Exception as e:  # noqa: BLE001
                log("%s failed verification: %s" % (s.name, e))
                res["unavailable"][s.name] = "failed verification: %s" % e
                systems.remove(s)
                if s is portkey:
                    stop(portkey.proc)
                    portkey = None
        if portkey is not None:
            idle["portkey"] = smaps(portkey.proc.pid)

        if "matrix" in SECTIONS:
            section_matrix(systems, mock, res)
        if "memory" in SECTIONS and aigws:
            section_memory_after(aigws, portkey, mock, res, idle)
        if "syscalls" in SECTIONS and aigws:
            if left() > 30:
                log("syscalls: strace -c on the aigw-lighttpd workers")
                section_syscalls(aigws[0], res)
            else:
                res["skipped_sections"]["syscalls"] = "no time left"
        if "stream" in SECTIONS and slow is not None:
            if left() > 30:
                log("stream: events every %d ms" % (STREAM_DELAY_S * 1000))
                st_systems = [direct] + aigws + ([portkey] if portkey is not None else [])
                section_stream(st_systems, res)
            else:
                res["skipped_sections"]["stream"] = "no time left"
        # The matrix systems are no longer needed; Portkey, warmed up, serves
        # the slow lane too (idle meanwhile), and so does PostgreSQL.
        for s in systems:
            if s is portkey and "slow" in SECTIONS:
                continue
            for p in s.procs or ([s.proc] if s.proc else []):
                stop(p)
        if "slow" not in SECTIONS:
            stop_postgres()
        if "callgrind" in SECTIONS:
            if left() > 60:
                log("callgrind: one worker under valgrind")
                section_callgrind(mock, res)
            else:
                res["skipped_sections"]["callgrind"] = "no time left"
        # The slow lane after callgrind (a fixed cost): it shortens its runs
        # to what is left of the budget; audit takes whatever remains after it.
        if "slow" in SECTIONS:
            if left() > 60:
                log("slow: a mock model taking 1 s per answer, %s connections" % SLOW_CONCURRENCY)
                try:
                    section_slow(mock, res, portkey)
                except Exception as e:  # noqa: BLE001 -- reported; the sections after it still run
                    import traceback
                    traceback.print_exc()
                    res.setdefault("slow", {})["error"] = "%s: %s" % (type(e).__name__, e)
            else:
                res["skipped_sections"]["slow"] = "no time left"
            if portkey is not None:
                stop(portkey.proc)
            stop_postgres()     # nothing after the slow lane uses it (its writes would disturb audit)
        if "audit" in SECTIONS:
            section_audit(mock, res)
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        res["error"] = "%s: %s" % (type(e).__name__, e)
        status = 1
    finally:
        stop_all()
        res["machine"]["versions"]["postgresql"] = PG["version"] or ""
        if PG["unavailable"] and PG["unavailable"] != "stopped":
            res["pg_unavailable"] = PG["unavailable"]
        res["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        res["elapsed_s"] = round(time.time() - T0, 1)
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            json.dump(res, f, indent=2)
        if own_work and os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(WORK, ignore_errors=True)
    if "systems_order" in res:
        print_report(res)
    if "error" in res:
        print("bench: error: %s" % res["error"], file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Fixtures for aigw's integration tests: real web servers, real SQLite, mock regions.

Everything runs on 127.0.0.1 in a temporary directory. With
AIGW_TEST_STORE=postgresql the gateways store their state in a real
PostgreSQL (tests/integration/pgserver.py) instead of SQLite: one server for
the session, one database per test, migrated by its owner role and used by
the gateway's own role, which may read and write rows only. The web servers are
started from the configuration files shipped in webserver-configs/, with only
installation paths and ports substituted. Mock regions (tests/mock_region.py)
stand in for Azure OpenAI, which cannot be reached from here.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.client import HTTPConnection

import pytest

SRCDIR = os.environ.get("AIGW_SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AIGW_BIN = os.environ.get("AIGW_BIN") or os.path.join(SRCDIR, "aigw")
MOCK = os.path.join(SRCDIR, "tests", "mock_region.py")
LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
STORE = os.environ.get("AIGW_TEST_STORE", "sqlite")
if STORE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"AIGW_TEST_STORE must be sqlite or postgresql, not {STORE!r}")

# The session's PostgreSQL (pgserver.PgServer) once started, and the database
# each test directory got.
_pg = None
_pg_databases = {}


def postgres():
    """The session's PostgreSQL server, started on first use."""
    global _pg
    if _pg is None:
        import tempfile
        import pgserver
        _pg = pgserver.PgServer(tempfile.mkdtemp(prefix="aigw-pgtests-")).start()
    return _pg


def pg_database_config(tmpdir, role="aigw", same_as=None):
    """database settings for a gateway in tmpdir on its own PostgreSQL database
    (made on first use; or the one of the gateway in same_as, for a second
    host), signing in as role with a password file."""
    pg = postgres()
    if same_as:
        _pg_databases[tmpdir] = _pg_databases[same_as]
    name = _pg_databases.get(tmpdir)
    if name is None:
        name = _pg_databases[tmpdir] = pg.new_database()
    pwfile = os.path.join(tmpdir, f"pg-{role}.password")
    with open(pwfile, "w") as f:
        f.write(pg.password(role) + "\n")
    os.chmod(pwfile, 0o600)
    return {"url": pg.url(role=role, dbname=name), "password": f"file:{pwfile}",
            "local_path": os.path.join(tmpdir, "aigw-pg")}


def sqlite_only(why):
    """Marks a test that is about SQLite itself (its file, its locks): shown as
    skipped, with why, when the suite runs on PostgreSQL."""
    return pytest.mark.skipif(STORE != "sqlite", reason=f"SQLite only: {why}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


def http(method, url, body=None, headers=None, timeout=30):
    """One HTTP request; returns a Response for every status (no exceptions on 4xx/5xx)."""
    data = body
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        data = body.encode()
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers), e.read())


def stop_process(proc, timeout=5):
    """SIGTERM, then SIGKILL if it has not gone after timeout seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


class MockRegion:
    """A mock Azure OpenAI region in its own process."""

    def __init__(self, name, tmpdir):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, MOCK, "--port", "0", "--name", name],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"mock region {name} did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.key_file = os.path.join(tmpdir, f"{name}.key")
        with open(self.key_file, "w") as f:
            f.write(f"key-{name}-secret\n")
        os.chmod(self.key_file, 0o600)

    def control(self, path, body=None):
        r = http("POST" if body is not None else "GET", self.url + path, body)
        assert r.status == 200, r
        return r.json()

    def set(self, **settings):
        return self.control("/_mock/config", settings)

    def reset(self):
        self.control("/_mock/reset", {})
        self.control("/_mock/config", {"expect_key": f"key-{self.name}-secret"})

    def stats(self):
        return self.control("/_mock/stats")

    def down(self, seconds):
        return self.control("/_mock/down", {"seconds": seconds})

    def stop(self):
        stop_process(self.proc)


def backend_config(region, priority, model="gpt-4o", **extra):
    b = {
        "name": region.name,
        "type": "azure",
        "url": region.url,
        "api_key": f"file:{region.key_file}",
        "priority": priority,
        "deployments": {model: f"{model}-{region.name}", "text-embedding-3-small": f"emb-{region.name}"},
        "timeout_s": 5,
    }
    b.update(extra)
    return b


class Gateway:
    """aigw behind a real web server, with its own config and database."""

    def __init__(self, tmpdir, config, server="lighttpd", workers=4):
        self.tmpdir = tmpdir
        self.config = config
        self.server = server
        self.workers = workers
        self.config_path = os.path.join(tmpdir, "aigw.json")
        db = config["database"]
        self.pg_url = db.get("url")
        # SQLite's file, or the prefix of the host's own files beside PostgreSQL.
        self.db_path = db.get("path") or db["local_path"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.write_config()

    def write_config(self):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)

    def cli(self, *args, check=True):
        r = subprocess.run([AIGW_BIN, "--config", self.config_path, *args],
                           capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise AssertionError(f"aigw {' '.join(args)} failed (exit {r.returncode}): {r.stderr}{r.stdout}")
        return r

    def db(self):
        assert not self.pg_url, "a SQLite connection to a gateway on PostgreSQL"
        con = sqlite3.connect(self.db_path, timeout=10)
        con.row_factory = sqlite3.Row
        return con

    def query(self, sql, *params):
        """Rows of sql (with ? parameters) as dicts, from whichever store the gateway uses."""
        if self.pg_url:
            return postgres().query(self.pg_url.rsplit("/", 1)[1], sql, *params)
        con = self.db()
        try:
            return [dict(r) for r in con.execute(sql, params).fetchall()]
        finally:
            con.close()

    def execute(self, sql, *params):
        """Runs a statement that writes (with ? parameters) and commits it."""
        if self.pg_url:
            postgres().query(self.pg_url.rsplit("/", 1)[1], sql, *params)
            return
        con = self.db()
        try:
            with con:
                con.execute(sql, params)
        finally:
            con.close()

    @contextlib.contextmanager
    def writer_lock_held(self):
        """Holds the database's writer lock as another program would: SQLite's
        file lock (BEGIN EXCLUSIVE), or on PostgreSQL the advisory lock the
        gateway's writers take in every write transaction."""
        if self.pg_url:
            con = postgres().connect(self.pg_url.rsplit("/", 1)[1])
            con.autocommit = False
            cur = con.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(7316431000001)")
        else:
            con = sqlite3.connect(self.db_path, timeout=5, isolation_level=None)
            con.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            con.commit() if self.pg_url else con.execute("COMMIT")
            con.close()

    def dump_text(self):
        """Everything the database holds, as text (to look for what must not be there)."""
        if not self.pg_url:
            con = self.db()
            try:
                return "\n".join(con.iterdump())
            finally:
                con.close()
        tables = self.query("SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
        return "\n".join(repr(row) for t in tables
                         for row in self.query(f'SELECT * FROM "{t["table_name"]}"'))

    def audit_rows(self):
        return self.query("SELECT * FROM audit_log ORDER BY id")

    # --- web servers -----------------------------------------------------

    def migrate(self):
        """aigw db migrate: on PostgreSQL as the database's owner, since the
        gateway's own role may not change the schema."""
        if not self.pg_url:
            return self.cli("db", "migrate")
        owner = dict(self.config, database={**self.config["database"],
                                            **pg_database_config(self.tmpdir, "aigw_owner")})
        path = os.path.join(self.tmpdir, "aigw-owner.json")
        with open(path, "w") as f:
            json.dump(owner, f)
        r = subprocess.run([AIGW_BIN, "--config", path, "db", "migrate"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"aigw db migrate as the owner failed: {r.stderr}{r.stdout}"
        return r

    def start(self):
        self.migrate()
        getattr(self, "_start_" + self.server)()
        wait_for_port(self.port)
        # The first request may wait for workers to come up.
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                r = http("GET", self.url + "/healthz", timeout=2)
                if r.status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway under {self.server} not healthy; log:\n{self.error_log()}")

    def _start_lighttpd(self):
        src = open(os.path.join(SRCDIR, "webserver-configs", "lighttpd", "aigw.conf")).read()
        subst = {
            "aigw_bin": f'"{AIGW_BIN}"',
            "aigw_config": f'"{self.config_path}"',
            "aigw_socket": f'"{self.tmpdir}/lighttpd-fastcgi.sock"',
            "aigw_workers": str(self.workers),
            "aigw_state_dir": f'"{self.tmpdir}"',
            "aigw_log": f'"{self.tmpdir}/error.log"',
            "aigw_bind": '"127.0.0.1"',
            "aigw_port": str(self.port),
            "aigw_errors": f'"{SRCDIR}/webserver-configs/lighttpd/errors"',
        }
        for k, v in subst.items():
            src, n = re.subn(rf"^var\.{k}\s*=.*$", f"var.{k} = {v}", src, flags=re.M)
            assert n == 1, f"{k} not found in the shipped lighttpd config"
        conf = os.path.join(self.tmpdir, "lighttpd.conf")
        with open(conf, "w") as f:
            f.write(src)
        self.proc = subprocess.Popen([LIGHTTPD, "-D", "-f", conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.tmpdir, "lighttpd.stderr"), "w"))

    def _start_apache(self):
        import servers
        self.proc = servers.start_apache(self)

    def _start_apache_htaccess(self):
        import servers
        self.proc = servers.start_apache_htaccess(self)

    def _start_nginx(self):
        import servers
        self.proc = servers.start_nginx(self)

    def _start_apache_proxy_fcgi(self):
        import servers
        self.proc = servers.start_apache_proxy_fcgi(self)

    def serve_workers(self):
        """Pids of the workers of `aigw serve` (nginx only)."""
        r = subprocess.run(["pgrep", "-P", str(self.proc.serve.pid)], capture_output=True, text=True)
        return sorted(int(p) for p in r.stdout.split())

    def error_log(self):
        out = []
        for name in ("error.log", "lighttpd.stderr", "serve.log", "apache-error.log", "nginx-error.log"):
            p = os.path.join(self.tmpdir, name)
            if os.path.exists(p):
                out.append(f"--- {name}\n" + open(p, errors="replace").read()[-5000:])
        return "\n".join(out)

    def sanitizer_reports(self):
        """AddressSanitizer/UBSan/LeakSanitizer/ThreadSanitizer reports the workers wrote to the logs."""
        log = self.error_log()
        return [line for line in log.splitlines()
                if "ERROR: AddressSanitizer" in line or "ERROR: LeakSanitizer" in line
                or "runtime error:" in line or "WARNING: ThreadSanitizer" in line]

    def worker_pids(self):
        """Pids of the aigw worker processes started for this gateway."""
        r = subprocess.run(["pgrep", "-f", "-a", "aigw"], capture_output=True, text=True)
        pids = []
        for line in r.stdout.splitlines():
            pid, _, cmd = line.partition(" ")
            try:
                env = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
            except OSError:
                continue
            # AIGW_BIN, or the copy servers.worker_bin() made for the worker user.
            prog = cmd.split(" ", 1)[0]
            if (prog == AIGW_BIN or os.path.basename(prog) == os.path.basename(AIGW_BIN)) \
                    and self.config_path in (env + cmd):
                pids.append(int(pid))
        return pids

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Workers must not outlive the test.
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    # --- requests --------------------------------------------------------

    def post(self, path, body, headers=None, timeout=30):
        return http("POST", self.url + path, body, headers, timeout)

    def get(self, path, headers=None):
        return http("GET", self.url + path, None, headers)

    def delete(self, path, headers=None):
        return http("DELETE", self.url + path, None, headers)


def base_config(tmpdir, backends, **overrides):
    cfg = {
        "environment": "test",
        "database": pg_database_config(tmpdir) if STORE == "postgresql"
        else {"path": os.path.join(tmpdir, "aigw.db")},
        "auth": {"enabled": False},
        "limits": {"requests_per_window": 100000, "window_s": 60, "default_token_budget": 100000000},
        "backends": backends,
        "retry": {"max_attempts": 3, "base_delay_ms": 50, "max_delay_ms": 200, "deadline_s": 20},
        "circuit_breaker": {"failure_threshold": 5, "recovery_timeout_s": 30, "half_open_max_calls": 3},
        "audit": {"log_bodies": "redacted"},
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


@pytest.fixture(scope="session")
def regions(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("regions"))
    rs = {name: MockRegion(name, tmp) for name in ("east", "west", "eu")}
    yield rs
    for r in rs.values():
        r.stop()


@pytest.fixture
def mocks(regions):
    for r in regions.values():
        r.reset()
    return regions


@pytest.fixture
def make_gateway(tmp_path, mocks):
    started = []

    def make(backends=None, server="lighttpd", workers=4, **overrides):
        if backends is None:
            backends = [backend_config(mocks["east"], 1)]
        cfg = base_config(str(tmp_path), backends, **overrides)
        gw = Gateway(str(tmp_path), cfg, server=server, workers=workers)
        started.append(gw)
        return gw.start()

    yield make
    problems = []
    for gw in started:
        gw.stop()
        problems += gw.sanitizer_reports()
    assert not problems, "sanitizer reports in worker logs:\n" + "\n".join(problems)


@pytest.fixture
def gateway(make_gateway):
    """aigw under lighttpd with one backend (east) and authentication off."""
    return make_gateway()


def chat_body(content="Hello", **extra):
    body = {"messages": [{"role": "user", "content": content}], "user_id": "alice"}
    body.update(extra)
    return body


def stream_events(gw, path, body, headers=None, timeout=30):
    """POSTs a streamed request; returns (response, [(seconds since the headers, raw event)])."""
    conn = HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    t0 = time.time()
    buf = b""
    events = []
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            events.append((time.time() - t0, ev.decode()))
    conn.close()
    return resp, events

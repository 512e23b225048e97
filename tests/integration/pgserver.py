"""A real, throwaway PostgreSQL server for aigw's integration tests.

Plain classes and functions, no pytest fixtures; conftest wraps them.

    pg = PgServer(tmpdir).start()       # initdb, pg_ctl start -w, roles, database aigw
    pg.url()                            # postgresql://aigw@127.0.0.1:PORT/aigw
    pg.url("aigw_owner", with_password=True)
    db = pg.new_database("t_chat")      # empty database, same grants as aigw
    pg.query(db, "SELECT count(*) AS n FROM t WHERE k = ?", "x")  # [{'n': 0}]
    pg.restart(); pg.kill(); pg.start()
    pg.close()                          # also run at exit: stop, remove the files

The binaries come from Debian's postgresql-15 package (/usr/lib/postgresql/
<highest version>/bin, or $AIGW_PG_BINDIR); without them the constructor raises
RuntimeError naming the package, and the caller decides whether to skip.

Roles, set up the way a careful operator would (passwords are random, see
password()):

    postgres    superuser (initdb --pwfile)
    aigw_owner  LOGIN; owns database aigw and its schema public; runs
                `aigw db migrate`
    aigw        LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; CONNECT on the
                database, USAGE on schema public, SELECT/INSERT/UPDATE/DELETE
                on its tables and USAGE/SELECT on its sequences, including
                those aigw_owner creates later (ALTER DEFAULT PRIVILEGES).
                Nothing else: no CREATE on the schema, no TEMPORARY on the
                database.

PUBLIC loses CREATE on schema public and CONNECT/TEMPORARY on every
database of ours (and CONNECT on postgres and template1). Every database comes
from a template database (aigw_template, connections not allowed) that already
carries the schema grants and default privileges, so new_database() is one
CREATE DATABASE ... TEMPLATE plus the two database-level grants.

Authentication: TCP (127.0.0.1 only) needs a password (scram-sha-256); the
Unix socket is trust, but its directory is mode 0700 and owned by the server's
user, so only that user (and root) can reach it. Everything here connects over
TCP with the password, as the gateway does.

Who runs the server: postgres refuses to run as root. As root, initdb, pg_ctl
and the server run as the `postgres` system user (created by the Debian
package; $AIGW_PG_USER overrides) through `runuser -u USER --` (setpriv if
runuser is missing). Not as root, they run as the caller.

Where the files are: the server's user must be able to reach its directories.
If it can reach tmpdir (always true when not root; tested with
`runuser -u postgres -- test -x tmpdir` as root) and tmpdir is short enough for
a Unix socket path, the server uses tmpdir/pgdata and tmpdir/pgsock. Otherwise
(as root under pytest's 0700 /tmp/pytest-of-root, say) it uses a fresh
tempfile.mkdtemp(prefix="aigw-pg-") under /tmp, chowned to the server's user;
tmpdir's permissions and those of its parents are never changed. The chosen
directory is .basedir; .datadir, .sockdir and .logfile (in the data directory,
pg_ctl -l) live under it. close() removes what was created there.

Durability: fsync=on, synchronous_commit=on, full_page_writes default (on),
so kill() (SIGKILL of the postmaster and all its children, no shutdown
checkpoint) followed by start() exercises real crash recovery. initdb itself
runs with --no-sync (only initdb's own files, before any test data exists).
"""
import atexit
import decimal
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

PACKAGE = "postgresql-15"
TEMPLATE_DB = "aigw_template"
ROLES = ("postgres", "aigw_owner", "aigw")
START_TIMEOUT = 30.0

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_bindir():
    """Directory with initdb, pg_ctl and postgres: $AIGW_PG_BINDIR, else the
    highest /usr/lib/postgresql/<version>/bin. RuntimeError naming the Debian
    package when there is none."""
    override = os.environ.get("AIGW_PG_BINDIR")
    candidates = [override] if override else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: [int(x) if x.isdigit() else -1
                       for x in re.split(r"[.]", os.path.basename(os.path.dirname(d)))],
        reverse=True)
    for d in candidates:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    where = f"AIGW_PG_BINDIR={override}" if override else "/usr/lib/postgresql/*/bin"
    raise RuntimeError(f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {where}; "
                       f"install the Debian package {PACKAGE} (apt-get install {PACKAGE})")


def free_port():
    """A TCP port on 127.0.0.1 that nothing was bound to a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def translate_placeholders(sql):
    """sqlite3-style SQL to psycopg2's format: each '?' outside string
    literals, quoted identifiers, dollar-quoted strings and comments becomes
    %s, and every literal '%' (anywhere, since psycopg2 formats the whole
    string) becomes %%. Note that PostgreSQL's jsonb operators ?, ?| and ?&
    would be taken for placeholders; write them as jsonb_exists() etc."""
    out = []
    i, n = 0, len(sql)

    def copy_until(j):
        out.append(sql[i:j].replace("%", "%%"))
        return j

    while i < n:
        c = sql[i]
        if c == "?":
            out.append("%s")
            i += 1
        elif c == "%":
            out.append("%%")
            i += 1
        elif c == "'":
            # E'...' allows backslash escapes; '' is a quote in both forms
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] in "_$"))
            j = i + 1
            while j < n:
                if escapes and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    if j + 1 < n and sql[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            i = copy_until(min(j + 1, n))
        elif c == '"':
            j = i + 1
            while j < n:
                if sql[j] == '"':
                    if j + 1 < n and sql[j + 1] == '"':
                        j += 2
                        continue
                    break
                j += 1
            i = copy_until(min(j + 1, n))
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = copy_until(n if j < 0 else j)
        elif c == "/" and sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = copy_until(j)
        elif c == "$" and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$")):
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if m:
                end = sql.find(m.group(0), i + len(m.group(0)))
                i = copy_until(n if end < 0 else end + len(m.group(0)))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _plain(value):
    """psycopg2 value -> what the tests compare against (see PgServer.query)."""
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    return value


def _proc_state(pid):
    """'R', 'S', 'Z', ... for a live pid, None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _alive(pid):
    return _proc_state(pid) not in (None, "Z", "X")


def _children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(d))
    return kids


class PgServer:
    """One PostgreSQL cluster in a temporary directory, on 127.0.0.1:port.

    Attributes: host ("127.0.0.1"), port, bindir, user (OS user running the
    server), basedir, datadir, sockdir, logfile, passwords (role -> password).
    """

    host = "127.0.0.1"

    def __init__(self, tmpdir):
        """tmpdir: a directory owned by the caller (pytest's tmp_path_factory
        dir, say). Nothing is created until start()."""
        self.bindir = find_bindir()
        self.tmpdir = os.path.abspath(str(tmpdir))
        self.is_root = os.geteuid() == 0
        self.user = os.environ.get("AIGW_PG_USER", "postgres") if self.is_root else pwd.getpwuid(os.geteuid()).pw_name
        if self.is_root:
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise RuntimeError(f"running as root, but there is no user {self.user!r} to run PostgreSQL as "
                                   f"(the Debian package {PACKAGE} creates `postgres`)") from None
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
            if self.uid == 0:
                raise RuntimeError("PostgreSQL cannot run as root; set AIGW_PG_USER to an unprivileged user")
        else:
            self.uid, self.gid = os.geteuid(), os.getegid()
        self.port = None
        self.basedir = self.datadir = self.sockdir = self.logfile = None
        self.passwords = {r: secrets.token_urlsafe(18) for r in ROLES}
        self._own_basedir = False     # basedir made by us (mkdtemp): remove it whole
        self._provisioned = False
        self._started_once = False
        self._closed = False
        self._dbcount = 0
        self._lock = threading.RLock()
        self._conns = {}              # (dbname, role) -> cached connection for query()/admin
        atexit.register(self.close)

    # --- processes --------------------------------------------------------------

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
        env.update(LANG="C.UTF-8", TZ="UTC")
        return env

    def _as_user(self, argv):
        if not self.is_root:
            return list(argv)
        if shutil.which("runuser"):
            return ["runuser", "-u", self.user, "--"] + list(argv)
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"] + list(argv)
        raise RuntimeError("running as root, but neither runuser nor setpriv (util-linux) is installed")

    def _run(self, argv, timeout=60, check=True):
        """Run a command as the server's user, cwd "/" (the caller's cwd may not
        be readable by that user). Returns CompletedProcess (text output)."""
        p = subprocess.run(self._as_user(argv), cwd="/", env=self._env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout}")
        return p

    def _bin(self, name):
        return os.path.join(self.bindir, name)

    # --- directories ------------------------------------------------------------

    def _user_can_reach(self, path):
        if not self.is_root:
            return os.access(path, os.X_OK)
        return self._run(["test", "-x", path], check=False).returncode == 0

    def _make_dirs(self):
        # unix socket paths are limited to 107 bytes: base + "/pgsock/.s.PGSQL.65535.lock"
        if len(self.tmpdir) <= 76 and self._user_can_reach(self.tmpdir):
            base = self.tmpdir
        else:
            base = tempfile.mkdtemp(prefix="aigw-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
            self._own_basedir = True
            if self.is_root:
                os.chown(base, self.uid, self.gid)
        datadir, sockdir = os.path.join(base, "pgdata"), os.path.join(base, "pgsock")
        for d in (datadir, sockdir):
            if os.path.lexists(d):
                raise RuntimeError(f"{d} already exists; give PgServer a fresh temporary directory")
        for d in (datadir, sockdir):
            os.mkdir(d, 0o700)
            if self.is_root:
                os.chown(d, self.uid, self.gid)
        self.basedir, self.datadir, self.sockdir = base, datadir, sockdir
        self.logfile = os.path.join(datadir, "server.log")

    def _initdb(self):
        self._make_dirs()
        pwfile = os.path.join(self.basedir, f".pwfile-{os.getpid()}")
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if self.is_root:
                os.fchown(fd, self.uid, self.gid)
            os.write(fd, (self.passwords["postgres"] + "\n").encode())
            os.close(fd)
            self._run([self._bin("initdb"), "-D", self.datadir, "--username=postgres", f"--pwfile={pwfile}",
                       "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
                       "--locale=C.UTF-8", "--no-sync", "--no-instructions"], timeout=120)
        finally:
            os.unlink(pwfile)
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# aigw integration tests\ninclude = 'aigw-test.conf'\n")

    def _write_conf(self):
        path = os.path.join(self.datadir, "aigw-test.conf")
        with open(path, "w") as f:
            f.write(f"""# written by tests/integration/pgserver.py
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.sockdir}'
unix_socket_permissions = 0700
max_connections = 300
shared_buffers = 128MB
fsync = on
synchronous_commit = on
password_encryption = 'scram-sha-256'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
timezone = 'UTC'
""")
        if self.is_root:
            os.chown(path, self.uid, self.gid)

    # --- lifecycle --------------------------------------------------------------

    def postmaster_pid(self):
        """The running postmaster's pid, or None."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                pid = int(f.readline())
        except (TypeError, OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running(self):
        return self.postmaster_pid() is not None

    def start(self):
        """Start the server (initdb and the roles/databases on the first call);
        returns self once it accepts TCP connections. Waits up to 30 s; on
        failure raises RuntimeError with the log's tail. No-op if running."""
        with self._lock:
            if self._closed:
                raise RuntimeError("PgServer was closed")
            if self.running():
                return self
            if self.datadir is None:
                self._initdb()
            for attempt in range(5):
                if self.port is None or (not self._started_once and attempt):
                    self.port = free_port()
                    self._write_conf()
                try:
                    self._pg_ctl_start()
                    break
                except RuntimeError as e:
                    # another process took the port between free_port() and bind():
                    # pick another, but only before the port was handed out
                    if self._started_once or "already in use" not in str(e) or attempt == 4:
                        raise
            self._started_once = True
            if not self._provisioned:
                self._provision()
            return self

    def _pg_ctl_start(self):
        t0 = time.monotonic()
        p = self._run([self._bin("pg_ctl"), "start", "-D", self.datadir, "-l", self.logfile,
                       "-w", "-t", str(int(START_TIMEOUT))], timeout=START_TIMEOUT + 15, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start (pg_ctl exited {p.returncode}):\n{p.stdout}\n"
                               f"--- {self.logfile} ---\n{self.log()}")
        deadline = t0 + START_TIMEOUT
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL started but nothing accepts connections on "
                                       f"{self.host}:{self.port}\n--- {self.logfile} ---\n{self.log()}") from None
                time.sleep(0.02)

    def stop(self, mode="fast"):
        """pg_ctl stop -m fast|immediate|smart -w. No-op if not running.
        "immediate" is a crash as far as the data is concerned (recovery on
        the next start)."""
        if mode not in ("fast", "immediate", "smart"):
            raise ValueError(f"stop mode {mode!r}")
        with self._lock:
            self._drop_connections()
            if not self.running():
                return
            p = self._run([self._bin("pg_ctl"), "stop", "-D", self.datadir, "-m", mode, "-w", "-t", "60"],
                          timeout=75, check=False)
            if p.returncode != 0 and self.running():
                raise RuntimeError(f"pg_ctl stop -m {mode} exited {p.returncode}:\n{p.stdout}\n"
                                   f"--- {self.logfile} ---\n{self.log()}")

    def restart(self):
        """stop() (fast) then start(), same port and data directory."""
        self.stop()
        return self.start()

    def kill(self):
        """Crash: SIGKILL the postmaster and all its children at once (stopped
        first with SIGSTOP so that it can neither fork nor react), and wait
        until they are gone. start() then runs crash recovery. No-op if not
        running. The dead server's postmaster.pid and socket lock file are
        removed (a killed process may linger as a zombie if nothing reaps it,
        and postgres would take it for a running server)."""
        with self._lock:
            self._drop_connections()
            pid = self.postmaster_pid()
            if pid is None:
                return
            os.kill(pid, signal.SIGSTOP)
            victims = _children(pid) + [pid]
            for v in victims:
                try:
                    os.kill(v, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            while any(_alive(v) for v in victims):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres processes {[v for v in victims if _alive(v)]} survived SIGKILL")
                time.sleep(0.01)
            for f in [os.path.join(self.datadir, "postmaster.pid")] + glob.glob(os.path.join(self.sockdir, ".s.PGSQL.*.lock")):
                try:
                    os.unlink(f)
                except FileNotFoundError:
                    pass

    def close(self):
        """Stop the server (immediate, falling back to kill()) and remove the
        directories it used. Idempotent; registered with atexit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.datadir and self.running():
                    try:
                        self.stop("immediate")
                    except Exception:
                        self.kill()
            finally:
                self._drop_connections()
                if self._own_basedir:
                    shutil.rmtree(self.basedir, ignore_errors=True)
                elif self.datadir:
                    shutil.rmtree(self.datadir, ignore_errors=True)
                    shutil.rmtree(self.sockdir, ignore_errors=True)
                try:
                    atexit.unregister(self.close)
                except Exception:
                    pass

    def log(self, lines=60):
        """The last `lines` lines of the server log ('' if there is none yet)."""
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except (TypeError, OSError):
            return ""

    # --- roles, databases, SQL --------------------------------------------------

    def password(self, role):
        """The password of role postgres, aigw_owner or aigw."""
        try:
            return self.passwords[role]
        except KeyError:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}") from None

    def url(self, role="aigw", dbname=None, with_password=False):
        """libpq URI postgresql://ROLE[:PASSWORD]@127.0.0.1:PORT/DBNAME
        (dbname defaults to aigw; the password is percent-encoded)."""
        q = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
        cred = q(role) + (":" + q(self.password(role)) if with_password else "")
        return f"postgresql://{cred}@{self.host}:{self.port}/{q(dbname or 'aigw')}"

    def connect(self, dbname="aigw", role="aigw_owner"):
        """A new psycopg2 connection (TCP, password), autocommit on. The caller
        closes it."""
        import psycopg2
        conn = psycopg2.connect(host=self.host, port=self.port, dbname=dbname, user=role,
                                password=self.password(role), connect_timeout=10,
                                application_name="aigw-tests")
        conn.autocommit = True
        return conn

    def _cached(self, dbname, role):
        with self._lock:
            conn = self._conns.get((dbname, role))
            if conn is None or conn.closed:
                conn = self._conns[(dbname, role)] = self.connect(dbname, role)
            return conn

    def _drop_connections(self):
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            try:
                c.close()
            except Exception:
                pass

    def _admin(self, *statements, dbname="postgres"):
        conn = self._cached(dbname, "postgres")
        with self._lock, conn.cursor() as cur:
            for s in statements:
                cur.execute(s)

    def query(self, dbname, sql, *params, role="aigw_owner"):
        """Run sql (sqlite3-style '?' placeholders, see translate_placeholders)
        with params, in autocommit mode, on a connection cached per
        (dbname, role); returns the rows as dicts, [] for statements without a
        result. Values: int for integer types, float for double precision, str
        for text, bytes for bytea, None for NULL, and numeric (e.g. sum() of
        bigint) as int when integral else float; other types as psycopg2
        returns them (datetime, bool, ...)."""
        import psycopg2
        conn = self._cached(dbname, role)
        try:
            with self._lock, conn.cursor() as cur:
                cur.execute(translate_placeholders(sql), tuple(params))
                if cur.description is None:
                    return []
                names = [d.name for d in cur.description]
                return [{k: _plain(v) for k, v in zip(names, row)} for row in cur.fetchall()]
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if conn.closed:
                with self._lock:
                    if self._conns.get((dbname, role)) is conn:
                        del self._conns[(dbname, role)]
            raise

    def _provision(self):
        pw = self.passwords
        lit = lambda s: "'" + s.replace("'", "''") + "'"  # noqa: E731
        self._admin(
            f"CREATE ROLE aigw_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {lit(pw['aigw_owner'])}",
            f"CREATE ROLE aigw LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {lit(pw['aigw'])}",
            "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC",
            "REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC",
            f"CREATE DATABASE {TEMPLATE_DB} OWNER aigw_owner TEMPLATE template0 ENCODING 'UTF8'",
        )
        # schema grants and default privileges live in the database itself, so
        # every copy of the template carries them
        self._admin(
            "ALTER SCHEMA public OWNER TO aigw_owner",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO aigw",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO aigw",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO aigw",
            "ALTER DEFAULT PRIVILEGES FOR ROLE aigw_owner IN SCHEMA public "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO aigw",
            "ALTER DEFAULT PRIVILEGES FOR ROLE aigw_owner IN SCHEMA public "
            "GRANT USAGE, SELECT ON SEQUENCES TO aigw",
            dbname=TEMPLATE_DB)
        with self._lock:
            conn = self._conns.pop((TEMPLATE_DB, "postgres"))
        conn.close()
        self._admin(f"ALTER DATABASE {TEMPLATE_DB} WITH ALLOW_CONNECTIONS false")
        self._provisioned = True
        self.new_database("aigw")

    def new_database(self, name=None, strategy="WAL_LOG"):
        """Create an empty database owned by aigw_owner, with the same grants
        for role aigw as database aigw (CONNECT; the schema grants and default
        privileges come with the template). name: a lower-case SQL identifier,
        or None for a generated one. Returns the name.

        strategy is CREATE DATABASE's STRATEGY: WAL_LOG (PostgreSQL 15's
        default) writes the template's ~7.5 MB into the WAL; FILE_COPY copies
        the files but forces two checkpoints. Measured here (fsync on): WAL_LOG
        45-55 ms, steady; FILE_COPY 80-120 ms with outliers above 1 s."""
        if name is None:
            with self._lock:
                self._dbcount += 1
                name = f"aigw_t{self._dbcount}_{secrets.token_hex(3)}"
        if not _IDENT.match(name):
            raise ValueError(f"database name {name!r}: use [a-z_][a-z0-9_]*, at most 63 characters")
        if strategy not in ("FILE_COPY", "WAL_LOG"):
            raise ValueError(f"strategy {strategy!r}")
        self._admin(
            f"CREATE DATABASE {name} OWNER aigw_owner TEMPLATE {TEMPLATE_DB} STRATEGY {strategy}",
            f"REVOKE ALL ON DATABASE {name} FROM PUBLIC",
            f"GRANT CONNECT ON DATABASE {name} TO aigw",
        )
        return name

    def drop_database(self, name):
        """DROP DATABASE name WITH (FORCE): disconnects its sessions first."""
        if not _IDENT.match(name) or name == TEMPLATE_DB:
            raise ValueError(f"database name {name!r}")
        with self._lock:
            for key in [k for k in self._conns if k[0] == name]:
                self._conns.pop(key).close()
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<PgServer {self.host}:{self.port} {self.datadir}>"

"""Apache (mod_fcgid) and nginx (+ `aigw serve`) for the integration tests.

Like conftest.Gateway._start_lighttpd, every helper starts the real server on
127.0.0.1 from the configuration shipped in webserver-configs/, with only the
installation values at the top of the shipped file (paths, ports, worker
count) replaced; each replacement must match exactly once. What the shipped
file leaves to the host (loading modules, Listen, pid and temp paths) is
written into a small main configuration in the gateway's tmpdir.

    procs = servers.start_apache(gw)            # vhost: webserver-configs/apache/aigw.conf
    procs = servers.start_apache_htaccess(gw)   # shared hosting: apache/htaccess + aigw-wrapper.sh
    procs = servers.start_nginx(gw)             # nginx/aigw.conf + aigw serve (TCP)
    procs = servers.start_nginx(gw, listen="unix")
    procs = servers.start_apache_proxy_fcgi(gw) # apache/aigw-proxy-fcgi.conf + aigw serve (unix socket)
    servers.stop(procs)                         # or Gateway.stop(): procs acts like a Popen
    servers.reload(procs)                       # make aigw re-read gw.config_path

`gw` is a conftest.Gateway (tmpdir, config, config_path, db_path, port,
workers); the helpers return once the server processes are started, and the
caller waits for gw.port / GET /healthz as Gateway.start() does.

Running as root (as the tests usually do): Apache refuses to run its children
as root, so the aigw workers it spawns run as `nobody`. The helpers then give
nobody what the workers need: tmpdir, the database and its directory, the
configuration and the files it names (the regions' key files) are chowned to
nobody, and every directory above them gets o+x (search only, not read) --
pytest creates /tmp/pytest-of-root and its numbered dirs 0700. Files made
later by a test (a new key file, say) need grant_worker_access(gw, path).
nginx's workers and `aigw serve` run as the caller (root), so nothing is
changed for nginx.
"""
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

# The same as conftest's (not imported from there: conftest imports this module).
SRCDIR = os.environ.get("AIGW_SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AIGW_BIN = os.environ.get("AIGW_BIN") or os.path.join(SRCDIR, "aigw")
CONFIGS = os.path.join(SRCDIR, "webserver-configs")

APACHE = shutil.which("apache2") or shutil.which("httpd") or "/usr/sbin/apache2"
APACHE_MODULES = os.environ.get("APACHE_MODULES") or "/usr/lib/apache2/modules"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# The unprivileged user Apache's children (and so the aigw workers) run as.
WORKER_USER = os.environ.get("AIGW_TEST_WORKER_USER", "nobody")


class ServerProcs:
    """The processes of one started web server, with the parts of the
    subprocess.Popen interface that Gateway.stop() uses (poll, send_signal,
    wait, kill, terminate, pid, returncode).

    server  the web server's Popen (apache2 or the nginx master)
    serve   the `aigw serve` master's Popen (nginx only), else None
    """

    def __init__(self, kind, server, serve=None):
        self.kind = kind
        self.server = server
        self.serve = serve

    def _all(self):
        # nginx before aigw serve: stop taking requests, then drain the workers.
        return [p for p in (self.server, self.serve) if p is not None]

    @property
    def pid(self):
        return self.server.pid

    @property
    def returncode(self):
        return self.server.returncode

    def poll(self):
        alive = [p for p in self._all() if p.poll() is None]
        return None if alive else self.server.returncode

    def send_signal(self, sig):
        """SIGHUP means "reload aigw's configuration" (see reload()); every
        other signal goes to all processes."""
        if sig == signal.SIGHUP:
            self.reload()
            return
        for p in self._all():
            if p.poll() is None:
                p.send_signal(sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        for p in self._all():
            if p.poll() is None:
                p.kill()

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.time() + timeout
        for p in self._all():
            left = None if deadline is None else max(0.0, deadline - time.time())
            p.wait(left)  # raises subprocess.TimeoutExpired like Popen.wait
        return self.server.returncode

    def reload(self):
        """Make aigw re-read its configuration file.

        nginx: SIGHUP to `aigw serve` (new workers, old ones finish first).
        Apache: graceful restart (SIGUSR1); mod_fcgid replaces its workers.
        """
        if self.serve is not None:
            self.serve.send_signal(signal.SIGHUP)
        else:
            self.server.send_signal(signal.SIGUSR1)


# --- substitution in the shipped files ---------------------------------------

def _shipped(*parts):
    with open(os.path.join(CONFIGS, *parts)) as f:
        return f.read()


def _subst(text, pattern, replacement, what):
    """Replace the one line matching pattern (re.M); fail unless exactly one did."""
    out, n = re.subn(pattern, lambda m: replacement, text, flags=re.M)
    assert n == 1, f"{what}: expected exactly one line matching {pattern!r}, found {n}"
    return out


def _subst_apache_defines(text, values, what):
    for name, value in values.items():
        text = _subst(text, rf"^Define\s+{name}\s+.*$", f"Define {name} {value}", what)
    return text


def _subst_shell_vars(text, values, what):
    for name, value in values.items():
        text = _subst(text, rf"^{name}=.*$", f"{name}={value}", what)
    return text


def _write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def _short_dir(preferred, prefix, longest=80, create=True):
    """preferred if short enough for unix socket paths under it (108 bytes
    with the file name), else a new directory in /tmp."""
    if len(preferred) <= longest:
        if create:
            os.makedirs(preferred, exist_ok=True)
        return preferred
    return tempfile.mkdtemp(prefix=prefix)


# --- letting the unprivileged worker user at the gateway's files -------------

def _is_root():
    return os.geteuid() == 0


def _worker_ids():
    pw = pwd.getpwnam(WORKER_USER)
    return pw.pw_uid, pw.pw_gid, grp.getgrgid(pw.pw_gid).gr_name


def _allow_search(path, top):
    """o+x on every directory between top (exclusive) and path, so another
    user can reach path."""
    d = os.path.dirname(path)
    while d.startswith(top + os.sep):
        st = os.stat(d)
        if not st.st_mode & 0o001:
            os.chmod(d, (st.st_mode & 0o7777) | 0o001)
        d = os.path.dirname(d)


def _reachable_by_others(path):
    """True if a user that is neither owner nor group can reach and execute path."""
    d = path
    while True:
        if not os.stat(d).st_mode & 0o001:
            return False
        if d == "/":
            return True
        d = os.path.dirname(d)


_worker_bin = None


def worker_bin():
    """The aigw binary as the worker user can run it: AIGW_BIN itself when
    that user can reach it, else a copy in a directory under the temporary
    directory (a checkout under a mode-700 home, such as /root, is not
    reachable by nobody). Made once per test session."""
    global _worker_bin
    if _worker_bin:
        return _worker_bin
    real = os.path.realpath(AIGW_BIN)
    if not _is_root() or _reachable_by_others(real):
        _worker_bin = AIGW_BIN
        return _worker_bin
    st = os.stat(real)
    d = os.path.join(tempfile.gettempdir(), f"aigw-bin-{os.getuid()}-{st.st_ino}-{int(st.st_mtime)}")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    dst = os.path.join(d, "aigw")
    tmp = dst + f".{os.getpid()}"
    shutil.copy2(real, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)
    _worker_bin = dst
    return _worker_bin


def _config_files(value):
    """Absolute paths of existing files named in the aigw config (file:PATH
    secret references, jwks_file, ...)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _config_files(v)
    elif isinstance(value, list):
        for v in value:
            yield from _config_files(v)
    elif isinstance(value, str):
        path = value[5:] if value.startswith("file:") else value
        if path.startswith("/") and os.path.isfile(path):
            yield path


def grant_worker_access(gw, *paths):
    """Give the worker user (nobody) what aigw needs when the web server runs
    the workers as that user; no-op unless running as root.

    With no paths: tmpdir, the database file, its directory and its -wal/-shm,
    the config file and every file it names under the temp directory. With
    paths: just those (for files a test creates after the start)."""
    if not _is_root():
        return
    uid, gid, _ = _worker_ids()
    # The tests' files live under the temp directory, or under a --basetemp
    # elsewhere: then above the tmpdir's parent (pytest's numbered basetemp).
    tmpdir = os.path.realpath(gw.tmpdir)
    tmproot = os.path.realpath(tempfile.gettempdir())
    if not tmpdir.startswith(tmproot + os.sep):
        tmproot = os.path.dirname(os.path.dirname(tmpdir))
    if not paths:
        db_dir = os.path.dirname(os.path.abspath(gw.db_path))
        paths = [gw.tmpdir, db_dir, gw.config_path]
        paths += [gw.db_path + sfx for sfx in ("", "-wal", "-shm", "-journal")]
        paths += list(_config_files(gw.config))
    for p in paths:
        if not os.path.exists(p):
            continue
        real = os.path.realpath(p)
        # Only what the tests made: never touch system files a config may
        # name (CA bundles, ...) or the directories above the temp directory.
        if real.startswith(tmproot + os.sep):
            _allow_search(real, tmproot)
            os.chown(real, uid, gid)
    assert _reachable_by_others(os.path.realpath(worker_bin())), \
        f"{worker_bin()} and every directory above it must be executable by {WORKER_USER}"


# --- Apache + mod_fcgid -------------------------------------------------------

_APACHE_MODULES = ("mpm_event", "authz_core", "authz_host", "alias", "headers", "mime", "env", "setenvif", "rewrite", "fcgid")


def _apache_main_conf(gw, body):
    """The host's part: what /etc/apache2/apache2.conf, ports.conf and
    mods-enabled/ would give on a Debian host, all paths under tmpdir."""
    t = gw.tmpdir
    run_dir = os.path.join(t, "apache-run")
    os.makedirs(run_dir, exist_ok=True)
    # mod_fcgid creates its socket directory and hands it to User itself
    # (a directory that already exists keeps its owner).
    ipc_dir = _short_dir(os.path.join(t, "fcgid"), "aigw-fcgid-", create=False)
    if _is_root() and os.path.isdir(ipc_dir):
        uid, gid, _ = _worker_ids()
        os.chown(ipc_dir, uid, gid)
    lines = [
        f'ServerRoot "{t}"',
        "ServerName 127.0.0.1",
        f'PidFile "{t}/apache.pid"',
        f'DefaultRuntimeDir "{run_dir}"',
        f"Mutex file:{run_dir} default",
        f'ErrorLog "{t}/apache-error.log"',
        "LogLevel warn",
        f"Listen 127.0.0.1:{gw.port}",
    ]
    for m in _APACHE_MODULES:
        lines.append(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so")
    # mod_mime (AddHandler) wants a types file; nothing here needs one.
    lines.append("TypesConfig /dev/null")
    if _is_root():
        _, _, group = _worker_ids()
        lines += [f"User {WORKER_USER}", f"Group {group}"]
    lines += [
        # A small event MPM: a handful of threads is plenty for the tests.
        "StartServers 1",
        "ServerLimit 4",
        "ThreadsPerChild 16",
        "MaxRequestWorkers 64",
        "MinSpareThreads 4",
        "MaxSpareThreads 32",
        # mod_fcgid's server-wide settings (Debian: mods-available/fcgid.conf).
        f'FcgidIPCDir "{ipc_dir}"',
        f'FcgidProcessTableFile "{t}/fcgid_shm"',
        "FcgidConnectTimeout 20",
        "AddHandler fcgid-script .fcgi",
        # Debian's defaults: nothing outside the configured directories is
        # served, and .ht* files never are.
        "<Directory />",
        "    Options FollowSymLinks",
        "    AllowOverride None",
        "    Require all denied",
        "</Directory>",
        '<FilesMatch "^\\.ht">',
        "    Require all denied",
        "</FilesMatch>",
        body,
    ]
    return "\n".join(lines) + "\n"


def _start_apache_process(gw, conf):
    """apache2 -DFOREGROUND on conf; the main process stays in the foreground
    (children, mod_fcgid's process manager and its aigw workers below it)."""
    check = subprocess.run([APACHE, "-t", "-f", conf], capture_output=True, text=True)
    assert check.returncode == 0, f"apache2 -t failed:\n{check.stdout}{check.stderr}"
    # Errors before Apache opens its ErrorLog land in the same file, where
    # Gateway.error_log() looks.
    stderr = open(os.path.join(gw.tmpdir, "apache-error.log"), "a")
    return subprocess.Popen([APACHE, "-DFOREGROUND", "-f", conf],
                            stdout=subprocess.DEVNULL, stderr=stderr,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"})


def start_apache(gw):
    """Apache 2.4 + mod_fcgid with webserver-configs/apache/aigw.conf (the vhost).

    Apache's workers and log go to tmpdir/apache-error.log (aigw's stderr too),
    the access log to tmpdir/apache-access.log. Returns a ServerProcs."""
    docroot = os.path.join(gw.tmpdir, "htdocs")
    os.makedirs(docroot, exist_ok=True)
    site = _subst_apache_defines(_shipped("apache", "aigw.conf"), {
        "AIGW_BIN": worker_bin(),
        "AIGW_CONFIG": gw.config_path,
        "AIGW_PORT": str(gw.port),
        "AIGW_WORKERS": str(gw.workers),
        "AIGW_DOCROOT": docroot,
        "AIGW_ERROR_LOG": os.path.join(gw.tmpdir, "apache-error.log"),
        "AIGW_ACCESS_LOG": os.path.join(gw.tmpdir, "apache-access.log"),
    }, "webserver-configs/apache/aigw.conf")
    site_path = _write(os.path.join(gw.tmpdir, "apache-aigw.conf"), site)
    conf = _write(os.path.join(gw.tmpdir, "apache.conf"),
                  _apache_main_conf(gw, f'Include "{site_path}"'))
    grant_worker_access(gw)
    return ServerProcs("apache", _start_apache_process(gw, conf))


# Server settings the htaccess file asks the host for (it cannot set them).
HTACCESS_HOST_SETTINGS = """\
FcgidOutputBufferSize 0
FcgidIOTimeout 600
FcgidBusyTimeout 900
FcgidMaxRequestLen 8388608
FcgidMaxProcessesPerClass {workers}
FcgidProcessLifeTime 0
"""


def write_htaccess_site(gw, docroot=None):
    """The shared-hosting account's web directory: the shipped htaccess as
    .htaccess and aigw-wrapper.sh as aigw.fcgi (its AIGW_BIN and AIGW_CONFIG
    lines replaced). The config and database stay outside it, in tmpdir.
    Returns docroot."""
    docroot = docroot or os.path.join(gw.tmpdir, "public_html")
    os.makedirs(docroot, exist_ok=True)
    os.chmod(docroot, 0o755)
    _write(os.path.join(docroot, ".htaccess"), _shipped("apache", "htaccess"))
    wrapper = _subst_shell_vars(_shipped("apache", "aigw-wrapper.sh"), {
        "AIGW_BIN": worker_bin(),
        "AIGW_CONFIG": gw.config_path,
    }, "webserver-configs/apache/aigw-wrapper.sh")
    _write(os.path.join(docroot, "aigw.fcgi"), wrapper, 0o755)
    return docroot


def start_apache_htaccess(gw, host_tuned=True, allow_override="All"):
    """Apache as a shared host configures it, the gateway set up by the
    account with .htaccess only (webserver-configs/apache/htaccess and
    aigw-wrapper.sh, see write_htaccess_site).

    The host part is a DocumentRoot in tmpdir with AllowOverride All, mod_fcgid
    handling *.fcgi and no aigw-specific directives. host_tuned=True adds the
    server settings the htaccess file asks the host for (streaming unbuffered,
    long timeouts, 8 MiB bodies); host_tuned=False is Debian's stock mod_fcgid
    (streams arrive whole at the end, bodies over 128 KiB get 500, 40 s I/O
    timeout). allow_override is the host's AllowOverride for the web
    directory; the htaccess file needs "FileInfo AuthConfig Options=ExecCGI".
    Returns a ServerProcs."""
    docroot = write_htaccess_site(gw)
    host = [
        f'DocumentRoot "{docroot}"',
        f'<Directory "{docroot}">',
        f"    AllowOverride {allow_override}",
        "    Require all granted",
        "</Directory>",
        f'CustomLog "{gw.tmpdir}/apache-access.log" "%h %t \\"%r\\" %>s %b %D"',
    ]
    if host_tuned:
        host.append(HTACCESS_HOST_SETTINGS.format(workers=gw.workers))
    conf = _write(os.path.join(gw.tmpdir, "apache.conf"), _apache_main_conf(gw, "\n".join(host)))
    grant_worker_access(gw)
    return ServerProcs("apache-htaccess", _start_apache_process(gw, conf))


# --- nginx + aigw serve --------------------------------------------------------

def _wait_listening(addr, proc, log, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"aigw serve exited with {proc.returncode}; log:\n{open(log).read()[-3000:]}")
        try:
            if addr.startswith("unix:"):
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(0.2)
                s.connect(addr[5:])
            else:
                host, port = addr.rsplit(":", 1)
                s = socket.create_connection((host, int(port)), timeout=0.2)
            s.close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"aigw serve not listening on {addr} after {timeout}s")


def start_serve(gw, listen="tcp", grace=5):
    """`aigw serve` for gw; listen is "tcp" (127.0.0.1 on a free port),
    "unix" (a socket in tmpdir) or an address. Logs to tmpdir/serve.log.
    Returns (Popen, address) once it accepts connections."""
    if listen == "tcp":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            listen = f"127.0.0.1:{s.getsockname()[1]}"
    elif listen == "unix":
        listen = "unix:" + os.path.join(_short_dir(gw.tmpdir, "aigw-sock-", 90), "aigw.sock")
    log = os.path.join(gw.tmpdir, "serve.log")
    env = dict(os.environ, AIGW_CONFIG=gw.config_path)
    proc = subprocess.Popen(
        [worker_bin(), "--config", gw.config_path, "serve", "--listen", listen,
         "--workers", str(gw.workers), "--pid-file", os.path.join(gw.tmpdir, "serve.pid"),
         "--grace", str(grace)],
        stdout=open(log, "a"), stderr=subprocess.STDOUT, env=env)
    try:
        _wait_listening(listen, proc, log)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return proc, listen


def start_nginx(gw, listen="tcp"):
    """nginx with webserver-configs/nginx/aigw.conf in front of `aigw serve`
    (see start_serve for listen). nginx logs to tmpdir/nginx-error.log and
    tmpdir/nginx-access.log, aigw serve to tmpdir/serve.log. Returns a
    ServerProcs (server = nginx master, serve = aigw serve)."""
    serve, addr = start_serve(gw, listen)
    try:
        site = _shipped("nginx", "aigw.conf")
        site = _subst(site, r"^(\s*)server\s+(unix:\S+|[0-9.]+:[0-9]+|\[[0-9a-fA-F:]+\]:[0-9]+);\s*$",
                      f"    server {addr};", "webserver-configs/nginx/aigw.conf (upstream)")
        site = _subst(site, r"^\s*listen\s+[^;]+;\s*$", f"    listen 127.0.0.1:{gw.port} backlog=4096;",
                      "webserver-configs/nginx/aigw.conf (listen)")
        site_path = _write(os.path.join(gw.tmpdir, "nginx-aigw.conf"), site)
        t = gw.tmpdir
        temp = os.path.join(t, "nginx-temp")
        os.makedirs(temp, exist_ok=True)
        main = [
            "daemon off;",
            "master_process on;",
            "worker_processes 2;",
            f"pid {t}/nginx.pid;",
            f"error_log {t}/nginx-error.log warn;",
        ]
        if _is_root():
            # The workers only need tmpdir (temp files) and the socket of
            # `aigw serve`, which runs as the caller: run them as the caller too.
            main.append("user root root;")
        main += [
            # A proxied request holds two connections (client and aigw) and
            # one nginx worker may take them all: room for 1,024 clients.
            "worker_rlimit_nofile 16384;",
            "events { worker_connections 4096; }",
            "http {",
            "    default_type application/octet-stream;",
            f"    access_log {t}/nginx-access.log;",
            f"    client_body_temp_path {temp}/body;",
            f"    fastcgi_temp_path {temp}/fastcgi;",
            f"    proxy_temp_path {temp}/proxy;",
            f"    scgi_temp_path {temp}/scgi;",
            f"    uwsgi_temp_path {temp}/uwsgi;",
            f"    include {site_path};",
            "}",
        ]
        conf = _write(os.path.join(t, "nginx.conf"), "\n".join(main) + "\n")
        err = os.path.join(t, "nginx-error.log")
        check = subprocess.run([NGINX, "-t", "-p", t + "/", "-c", conf, "-e", err],
                               capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
        nginx = subprocess.Popen([NGINX, "-p", t + "/", "-c", conf, "-e", err],
                                 stdout=subprocess.DEVNULL, stderr=open(err, "a"))
    except Exception:
        serve.terminate()
        serve.wait(10)
        raise
    return ServerProcs("nginx", nginx, serve)


# --- stopping -----------------------------------------------------------------

def stop(procs, timeout=15):
    """Stop what a start_* helper started: SIGTERM (nginx and aigw serve let
    in-flight requests finish), SIGKILL after timeout."""
    if procs is None or procs.poll() is not None:
        return
    procs.send_signal(signal.SIGTERM)
    try:
        procs.wait(timeout)
    except subprocess.TimeoutExpired:
        procs.kill()
        procs.wait()


stop_apache = stop
stop_nginx = stop


def reload(procs):
    """Make aigw re-read its configuration (see ServerProcs.reload)."""
    procs.reload()


# --- Apache + mod_proxy_fcgi + aigw serve --------------------------------------

# Loaded in addition to _APACHE_MODULES (mod_fcgid stays loaded but idle).
_APACHE_PROXY_MODULES = ("proxy", "proxy_fcgi")


def share_socket_with_worker(gw, addr):
    """Let Apache's children (nobody when running as root) connect to the unix
    socket of `aigw serve`, which runs as the caller: the socket's group
    becomes nobody's (the socket is 0660; in production www-data is in group
    aigw) and the directories above it get o+x. No-op for TCP or non-root."""
    if not addr.startswith("unix:") or not _is_root():
        return
    sock = os.path.realpath(addr[5:])
    _, gid, _ = _worker_ids()
    os.chown(sock, -1, gid)
    tmproot = os.path.realpath(tempfile.gettempdir())
    if not sock.startswith(tmproot + os.sep):
        tmproot = os.path.dirname(os.path.dirname(os.path.realpath(gw.tmpdir)))
    _allow_search(sock, tmproot)


def restart_serve(gw, procs):
    """Start `aigw serve` again (after a test stopped procs.serve) on the same
    socket; procs.serve becomes the new process."""
    old = procs.serve.args[procs.serve.args.index("--listen") + 1]
    serve, addr = start_serve(gw, old)
    share_socket_with_worker(gw, addr)
    procs.serve = serve
    return serve


def start_apache_proxy_fcgi(gw):
    """Apache 2.4 + mod_proxy_fcgi with webserver-configs/apache/aigw-proxy-fcgi.conf
    in front of `aigw serve --listen unix:... --workers gw.workers`.

    The shipped file's MPM settings (mpm_event, 1024 threads) replace the
    small ones of _apache_main_conf, as they do on a host. Apache logs to
    tmpdir/apache-error.log and apache-access.log, aigw serve to
    tmpdir/serve.log. Returns a ServerProcs (server = apache2, serve = aigw
    serve)."""
    serve, addr = start_serve(gw, "unix")
    try:
        share_socket_with_worker(gw, addr)
        docroot = os.path.join(gw.tmpdir, "htdocs")
        os.makedirs(docroot, exist_ok=True)
        site = _subst_apache_defines(_shipped("apache", "aigw-proxy-fcgi.conf"), {
            "AIGW_SOCKET": addr[5:],
            "AIGW_SERVER_NAME": "127.0.0.1",
            "AIGW_PORT": str(gw.port),
            "AIGW_DOCROOT": docroot,
            "AIGW_ERROR_LOG": os.path.join(gw.tmpdir, "apache-error.log"),
            "AIGW_ACCESS_LOG": os.path.join(gw.tmpdir, "apache-access.log"),
        }, "webserver-configs/apache/aigw-proxy-fcgi.conf")
        site_path = _write(os.path.join(gw.tmpdir, "apache-aigw-proxy-fcgi.conf"), site)
        body = [f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in _APACHE_PROXY_MODULES]
        body.append(f'Include "{site_path}"')
        conf = _write(os.path.join(gw.tmpdir, "apache.conf"), _apache_main_conf(gw, "\n".join(body)))
        apache = _start_apache_process(gw, conf)
    except Exception:
        serve.terminate()
        serve.wait(10)
        raise
    return ServerProcs("apache-proxy-fcgi", apache, serve)

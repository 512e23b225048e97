/*
 * worker.c - the worker process and its request threads (see worker.h).
 *
 * Each thread has its own FCGX_Request (libfcgi's threaded model) and waits
 * for a connection in its own epoll set, where the listening socket is
 * registered with EPOLLEXCLUSIVE: the kernel wakes one idle thread per
 * connection, so there is neither a stampede nor an accept lock that would
 * make the threads take their requests one after another. The listening
 * socket is non-blocking (a thread woken for a connection another process
 * took just waits again) and an eventfd beside it reaches every waiting
 * thread at once when the process stops. Stop signals are blocked in every thread and read
 * from a signalfd by the main thread, which then stops the acceptors and
 * waits for the in-flight requests to finish: a reload or shutdown never cuts
 * an answer off.
 */
#include "worker.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "backend.h"
#include "db.h"
#include "housekeeping.h"
#include "jwt.h"
#include "log.h"
#include "pipeline.h"
#include "sanitize.h"
#include "secrets.h"
#include "telemetry.h"
#include "transfers.h"

/* A request thread's stack: the deepest path (JSON, regex, TLS, SQLite) uses
 * well under this; sanitizers need several times more. Only touched pages
 * cost memory. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define THREAD_STACK_BYTES (4u << 20)
#else
#define THREAD_STACK_BYTES (512u << 10)
#endif

/* Reading connections per process: reads take microseconds, so a few serve
 * hundreds of threads; more only cost memory. */
static int readers_for(int threads)
{
    int n = 2 + threads / 32;
    return n > 16 ? 16 : n;
}

int worker_threads_for(const struct cfg *cfg)
{
    const char *env = getenv("AIGW_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (!*end && n >= 1 && n <= CFG_MAX_THREADS)
            return (int)n;
        log_warn("AIGW_THREADS=%s is not a number from 1 to %d; using %d", env, CFG_MAX_THREADS,
                 cfg->server.threads_per_worker);
    }
    return cfg->server.threads_per_worker;
}

int worker_init(struct worker *w, struct cfg *cfg, int threads, struct buf *err)
{
    memset(w, 0, sizeof *w);
    w->cfg = cfg;
    w->threads = threads > 0 ? threads : worker_threads_for(cfg);
    w->db = db_open(cfg, readers_for(w->threads), err);
    if (!w->db)
        return -1;
    w->redactor = redactor_new(cfg);
    w->secrets = secrets_new(cfg);
    w->telemetry = telemetry_new(cfg);
    if (!w->redactor || !w->secrets || !w->telemetry) {
        buf_puts(err, "out of memory");
        worker_cleanup(w);
        return -1;
    }
    w->jwks = jwks_new(w, err);
    if (!w->jwks) {
        worker_cleanup(w);
        return -1;
    }
    return 0;
}

void worker_cleanup(struct worker *w)
{
    jwks_free(w->jwks);
    redactor_free(w->redactor);
    secrets_free(w->secrets);
    telemetry_free(w->telemetry);
    db_close(w->db);
    memset(w, 0, sizeof *w);
}

int worker_thread_init(struct worker_thread *t, struct worker *w)
{
    memset(t, 0, sizeof *t);
    t->w = w;
    t->pool = backend_pool_new(w->cfg);
    t->tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    if (!t->pool || !t->tok) {
        backend_pool_free(t->pool);
        if (t->tok)
            json_tokener_free(t->tok);
        return -1;
    }
    if (getrandom(&t->rng, sizeof t->rng, 0) != sizeof t->rng)
        t->rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)t;
    t->req.w = w;
    t->req.t = t;
    t->epfd = -1;
    return 0;
}

void worker_thread_cleanup(struct worker_thread *t)
{
    request_free(&t->req);
    backend_pool_free(t->pool);
    if (t->tok)
        json_tokener_free(t->tok);
    if (t->epfd >= 0)
        close(t->epfd);
    audit_scratch_free(&t->audit_scratch);
    memset(t, 0, sizeof *t);
}

json_object *worker_thread_parse(struct worker_thread *t, const char *text, size_t n)
{
    json_tokener_reset(t->tok);
    json_object *o = json_tokener_parse_ex(t->tok, text, (int)n);
    if (json_tokener_get_error(t->tok) != json_tokener_success) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* --- the request threads ------------------------------------------------------ */

struct server {
    struct worker *w;
    int listen_fd;
    int stop_fd; /* eventfd: readable once the process is stopping */
    unsigned long max_requests;
};

static void server_stop(struct server *s)
{
    uint64_t one = 1;
    if (write(s->stop_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_error("cannot signal the request threads to stop: %s", strerror(errno));
}

static int stopping(const struct server *s)
{
    struct pollfd p = {.fd = s->stop_fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

/* Waits for the next request on the connection the web server kept open
 * (FCGI_KEEP_CONN: nginx's fastcgi_keep_conn, Apache's enablereuse). 0 with
 * a request, 1 when the web server closed it, -1 to stop. */
static int next_on_kept_connection(struct server *s, FCGX_Request *fr)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = fr->ipcFd, .events = POLLIN},
                              {.fd = s->stop_fd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (p[1].revents)
            return -1;
        /* Reads the next request, or finds the connection closed, closes it
         * and tries the (non-blocking) listening socket once. */
        return FCGX_Accept_r(fr) >= 0 ? 0 : 1;
    }
}

/* Waits for the next request: on a kept connection, else a new connection.
 * Each thread waits in its own epoll set holding the listening socket with
 * EPOLLEXCLUSIVE, so the kernel wakes one idle thread (of any process) per
 * connection rather than all of them, and a thread reads its request's
 * parameters while the others go on accepting. 0 with a request, -1 to stop. */
static int accept_next(struct server *s, struct worker_thread *t)
{
    FCGX_Request *fr = &t->fcgi;
    if (fr->ipcFd >= 0) {
        int rc = next_on_kept_connection(s, fr);
        if (rc <= 0)
            return rc;
    }
    for (;;) {
        struct epoll_event ev[2];
        int n = epoll_wait(t->epfd, ev, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("cannot wait for FastCGI connections: %s", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (ev[i].data.fd == s->stop_fd)
                return -1;
        int rc = FCGX_Accept_r(fr);
        if (rc >= 0)
            return 0;
        /* Another thread or process took the connection we were woken for. */
        if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -EINTR || rc == -ECONNABORTED)
            continue;
        log_error("cannot accept FastCGI connections: %s",
                  rc < 0 && rc > -4096 ? strerror(-rc) : "libfcgi error");
        server_stop(s);
        return -1;
    }
}

/* t's epoll set: the listening socket (one waiter woken per connection) and
 * the stop descriptor (every waiter woken). 0 or -1. */
static int watch_listener(struct server *s, struct worker_thread *t)
{
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (t->epfd < 0)
        return -1;
    struct epoll_event l = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = s->listen_fd};
    struct epoll_event st = {.events = EPOLLIN, .data.fd = s->stop_fd};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, s->listen_fd, &l) < 0 ||
        epoll_ctl(t->epfd, EPOLL_CTL_ADD, s->stop_fd, &st) < 0) {
        close(t->epfd);
        t->epfd = -1;
        return -1;
    }
    return 0;
}

static void *request_thread(void *arg)
{
    struct worker_thread *t = arg;
    /* json-c switches to the C locale around every parse with duplocale,
     * which takes glibc's global locale lock unless the thread already uses
     * the static C locale: with hundreds of threads parsing stream events,
     * that lock was a tenth of the worker's time. */
    locale_t c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale)
        uselocale(c_locale);
    struct server *s = t->server;
    struct worker *w = t->w;
    while (!stopping(s) && accept_next(s, t) == 0) {
        struct request *req = &t->req;
        request_reset(req);
        req->fcgi = &t->fcgi;
        pipeline_handle(req);
        req->end_ns = now_ns();
        FCGX_Finish_r(&t->fcgi);
        /* The client has its answer; what follows costs it nothing. */
        pipeline_after_response(req);
        unsigned long served = atomic_fetch_add(&w->served, 1) + 1;
        if (s->max_requests && served >= s->max_requests)
            server_stop(s);
    }
    return NULL;
}

void worker_block_stop_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* Lets this process hold a connection per thread to the web server and to
 * each backend: the soft limit of open files goes up to the hard one. */
static void raise_open_files_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int worker_run(struct worker *w, int listen_fd, unsigned long max_requests)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); /* mod_fcgid's graceful stop: finish the request */
    worker_block_stop_signals();
    raise_open_files_limit();

    if (FCGX_Init() != 0) {
        log_error("FCGX_Init failed");
        return 1;
    }
    int flags = fcntl(listen_fd, F_GETFL);
    if (flags < 0 || fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        log_error("the FastCGI socket (fd %d) is not usable: %s", listen_fd, strerror(errno));
        return 1;
    }
    struct server s = {.w = w, .listen_fd = listen_fd, .max_requests = max_requests};
    s.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGHUP);
    int sig_fd = signalfd(-1, &stop_set, SFD_CLOEXEC);
    if (s.stop_fd < 0 || sig_fd < 0) {
        log_error("cannot create the stop descriptors: %s", strerror(errno));
        return 1;
    }

    struct buf loop_err = {0};
    w->transfers = transfers_start(&loop_err);
    if (!w->transfers)
        log_warn("streams run on their request threads: %s", buf_cstr(&loop_err));
    buf_free(&loop_err);

    struct worker_thread *threads = calloc((size_t)w->threads, sizeof *threads);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK_BYTES);
    int started = 0;
    for (; threads && started < w->threads; started++) {
        struct worker_thread *t = &threads[started];
        if (worker_thread_init(t, w) < 0)
            break;
        t->server = &s;
        if (watch_listener(&s, t) < 0 ||
            FCGX_InitRequest(&t->fcgi, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR) != 0 ||
            pthread_create(&t->tid, &attr, request_thread, t) != 0) {
            worker_thread_cleanup(t);
            break;
        }
    }
    pthread_attr_destroy(&attr);
    if (started < w->threads)
        log_warn("started %d of %d request threads (out of memory or threads)", started,
                 w->threads);
    struct housekeeper *hk = started ? housekeeper_start(w, s.stop_fd) : NULL;
    log_debug("worker ready with %d threads", started);

    /* Wait for a stop signal, or for a thread to stop the server. */
    while (started) {
        struct pollfd p[2] = {{.fd = sig_fd, .events = POLLIN},
                              {.fd = s.stop_fd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[0].revents) {
            struct signalfd_siginfo si;
            if (read(sig_fd, &si, sizeof si) == sizeof si)
                log_debug("signal %u: finishing in-flight requests", si.ssi_signo);
            break;
        }
        if (p[1].revents)
            break;
    }
    server_stop(&s);
    for (int i = 0; i < started; i++) {
        pthread_join(threads[i].tid, NULL);
        FCGX_Free(&threads[i].fcgi, 1); /* closes a connection kept open for more requests */
        worker_thread_cleanup(&threads[i]);
    }
    housekeeper_stop(hk);
    transfers_stop(w->transfers); /* after the threads: no stream is in flight */
    w->transfers = NULL;
    free(threads);
    close(sig_fd);
    close(s.stop_fd);
    return started ? 0 : 1;
}

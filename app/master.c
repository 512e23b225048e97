/*
 * master.c - the pre-forking master behind `aigw serve` (see master.h).
 *
 * The master binds the listening socket once and forks N workers that accept
 * on it. It never handles a request and never opens the database or a backend
 * connection itself (workers open their own after fork). A worker that dies is
 * replaced, with a growing delay when workers keep dying at start. SIGHUP
 * re-reads the configuration and starts a new generation of workers; the old
 * ones finish their in-flight request and exit. SIGTERM stops every worker
 * the same way and waits up to the grace period before killing stragglers.
 */
#include "master.h"

#include <errno.h>
#include <fcgiapp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "health.h"
#include "log.h"
#include "request.h"
#include "worker.h"

#define MAX_WORKERS 512
#define CRASH_WINDOW_S                                                                             \
    2.0 /* a worker dying sooner than this after start counts as a crash loop                      \
         */

struct child {
    pid_t pid;
    int generation;
    double started;
};

static volatile sig_atomic_t got_hup, got_term, got_chld, got_alrm;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        got_hup = 1;
    else if (sig == SIGALRM)
        got_alrm = 1;
    else if (sig == SIGCHLD)
        got_chld = 1;
    else
        got_term = 1;
}

static int spawn_worker(struct cfg *cfg, int listen_fd, struct child *slot, int generation,
                        int threads, unsigned long max_requests)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork failed: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* The child: default signal dispositions, then a normal worker. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGCHLD, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        worker_block_stop_signals();
        struct worker w;
        struct buf err = {0};
        if (worker_init(&w, cfg, threads, &err) < 0) {
            log_error("worker cannot start: %s", buf_cstr(&err));
            _exit(1);
        }
        int rc = worker_run(&w, listen_fd, max_requests);
        worker_cleanup(&w);
        _exit(rc);
    }
    slot->pid = pid;
    slot->generation = generation;
    slot->started = mono_s();
    return 0;
}

/* Probe open backends about as often as a breaker may recover. */
static unsigned probe_interval(const struct cfg *cfg)
{
    double s = cfg->breaker.recovery_timeout_s;
    return s < 1 ? 1 : s > 300 ? 300 : (unsigned)s;
}

static pid_t spawn_prober(struct cfg *cfg)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid < 0 ? 0 : pid;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct worker w;
    struct buf err = {0};
    if (worker_init(&w, cfg, 1, &err) < 0)
        _exit(1);
    health_probe_backends(&w, 0, NULL);
    worker_cleanup(&w);
    _exit(0);
}

static int write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "aigw: cannot write pid file %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    return 0;
}

static void usage(FILE *to)
{
    fputs("usage: aigw [--config PATH] serve --listen ADDR [--workers N] [--threads N]\n"
          "                                  [--pid-file PATH] [--grace SECONDS] [--max-requests "
          "N]\n\n"
          "  --listen ADDR     HOST:PORT (e.g. 127.0.0.1:9000) or unix:/run/aigw/aigw.sock\n"
          "  --workers N       worker processes (default: 2 per CPU)\n"
          "  --threads N       requests each worker serves at once (default: the\n"
          "                    configuration's server.threads_per_worker, 256;\n"
          "                    also $AIGW_THREADS)\n"
          "  --pid-file PATH   write the master's pid here\n"
          "  --grace SECONDS   how long SIGTERM waits for in-flight requests (default 30)\n"
          "  --max-requests N  replace a worker after N requests (default 0: never;\n"
          "                    also $AIGW_MAX_REQUESTS)\n\n"
          "Signals: SIGHUP reloads the configuration gracefully; SIGTERM finishes\n"
          "in-flight requests and exits.\n",
          to);
}

int master_serve(const char *config_path, int argc, char **argv)
{
    const char *listen = NULL, *pid_file = NULL;
    const char *max_env = getenv("AIGW_MAX_REQUESTS");
    unsigned long max_requests = max_env ? strtoul(max_env, NULL, 10) : 0;
    long workers = sysconf(_SC_NPROCESSORS_ONLN) * 2;
    double grace = 30;
    int threads = 0; /* 0: the configuration's (or $AIGW_THREADS) */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "aigw: %s needs a value (see aigw serve --help)\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "--listen") == 0)
            listen = argv[++i];
        else if (strcmp(argv[i], "--workers") == 0) {
            char *end;
            workers = strtol(argv[++i], &end, 10);
            if (*end || workers < 1 || workers > MAX_WORKERS) {
                fprintf(stderr, "aigw: --workers must be between 1 and %d\n", MAX_WORKERS);
                return 2;
            }
        } else if (strcmp(argv[i], "--threads") == 0) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > CFG_MAX_THREADS) {
                fprintf(stderr, "aigw: --threads must be between 1 and %d\n", CFG_MAX_THREADS);
                return 2;
            }
            threads = (int)n;
        } else if (strcmp(argv[i], "--max-requests") == 0) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 0) {
                fprintf(stderr, "aigw: --max-requests must be a whole number >= 0\n");
                return 2;
            }
            max_requests = (unsigned long)n;
        } else if (strcmp(argv[i], "--pid-file") == 0)
            pid_file = argv[++i];
        else if (strcmp(argv[i], "--grace") == 0) {
            char *end;
            grace = strtod(argv[++i], &end);
            if (*end || grace < 0 || grace > 3600) {
                fprintf(stderr, "aigw: --grace must be between 0 and 3600 seconds\n");
                return 2;
            }
        } else {
            fprintf(stderr, "aigw: unknown option %s (see aigw serve --help)\n", argv[i]);
            return 2;
        }
    }
    if (!listen) {
        fprintf(stderr, "aigw: serve needs --listen HOST:PORT or --listen unix:PATH\n");
        return 2;
    }
    if (workers < 1)
        workers = 2;
    const char *path = cfg_default_path(config_path);
    struct buf problems = {0};
    struct cfg *cfg = cfg_load(path, &problems, NULL);
    if (!cfg) {
        fprintf(stderr, "aigw: invalid configuration:\n%s", buf_cstr(&problems));
        buf_free(&problems);
        return 1;
    }
    /* Open the database once so migrations run before any worker starts. */
    {
        struct worker probe;
        struct buf err = {0};
        if (worker_init(&probe, cfg, 1, &err) < 0) {
            fprintf(stderr, "aigw: %s\n", buf_cstr(&err));
            buf_free(&err);
            cfg_free(cfg);
            return 1;
        }
        worker_cleanup(&probe);
        buf_free(&err);
    }
    const char *bind_path = strncmp(listen, "unix:", 5) == 0 ? listen + 5 : listen;
    if (bind_path != listen)
        unlink(bind_path); /* a stale socket from a previous run */
    if (FCGX_Init() != 0) {
        fprintf(stderr, "aigw: FastCGI initialisation failed\n");
        return 1;
    }
    /* The web server opens a connection per request: the backlog holds a
     * burst as large as the threads of every worker (the kernel caps it at
     * net.core.somaxconn). */
    int fd = FCGX_OpenSocket(bind_path, 4096);
    if (fd < 0) {
        fprintf(stderr, "aigw: cannot listen on %s: %s\n", listen, strerror(errno));
        cfg_free(cfg);
        return 1;
    }
    if (bind_path != listen)
        chmod(bind_path, 0660);
    if (pid_file && write_pid_file(pid_file) < 0) {
        cfg_free(cfg);
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    /* Signals are taken only in sigsuspend, so no flag is ever missed. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGALRM);
    sigprocmask(SIG_BLOCK, &block, &old);

    struct child *kids = calloc((size_t)MAX_WORKERS * 2, sizeof *kids);
    int generation = 1;
    double crash_delay = 0;
    log_info("listening on %s with %ld workers of %d threads", listen, workers,
             threads ? threads : worker_threads_for(cfg));
    for (long k = 0; k < workers; k++)
        spawn_worker(cfg, fd, &kids[k], generation, threads ? threads : worker_threads_for(cfg),
                     max_requests);

    pid_t prober = 0;
    unsigned probe_every = probe_interval(cfg);
    alarm(probe_every);
    while (!got_term) {
        sigsuspend(&old);
        if (got_alrm) {
            got_alrm = 0;
            /* The health probe runs in its own short-lived process: the master
             * itself never opens the database or a backend connection. */
            if (prober == 0 || waitpid(prober, NULL, WNOHANG) == prober)
                prober = spawn_prober(cfg);
            alarm(probe_every);
        }
        if (got_chld) {
            got_chld = 0;
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                if (pid == prober) {
                    prober = 0;
                    continue;
                }
                for (int k = 0; k < MAX_WORKERS * 2; k++) {
                    if (kids[k].pid != pid)
                        continue;
                    int current = kids[k].generation == generation;
                    double lived = mono_s() - kids[k].started;
                    kids[k].pid = 0;
                    if (!current || got_term)
                        break;
                    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && max_requests)
                        log_info(
                            "worker %d exited (status 0) after its %lu requests; starting another",
                            (int)pid, max_requests);
                    else if (WIFSIGNALED(status))
                        log_warn("worker %d died (signal %d); starting another", (int)pid,
                                 WTERMSIG(status));
                    else
                        log_warn("worker %d exited (status %d); starting another", (int)pid,
                                 WEXITSTATUS(status));
                    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                    if (lived < CRASH_WINDOW_S && !clean) {
                        crash_delay = crash_delay ? crash_delay * 2 : 0.1;
                        if (crash_delay > 10)
                            crash_delay = 10;
                        struct timespec ts = {(time_t)crash_delay,
                                              (long)((crash_delay - (time_t)crash_delay) * 1e9)};
                        nanosleep(&ts, NULL);
                    } else {
                        crash_delay = 0;
                    }
                    spawn_worker(cfg, fd, &kids[k], generation,
                                 threads ? threads : worker_threads_for(cfg), max_requests);
                    break;
                }
            }
        }
        if (got_hup && !got_term) {
            got_hup = 0;
            struct buf p = {0};
            struct cfg *next = cfg_load(path, &p, NULL);
            if (!next) {
                log_error("reload refused, keeping the running configuration:\n%s", buf_cstr(&p));
                buf_free(&p);
                continue;
            }
            buf_free(&p);
            log_info("reloading %s", path);
            generation++;
            struct cfg *prev = cfg;
            cfg = next;
            /* New workers first, then ask the old ones to finish and leave. */
            long started = 0;
            for (int k = 0; k < MAX_WORKERS * 2 && started < workers; k++)
                if (kids[k].pid == 0) {
                    spawn_worker(cfg, fd, &kids[k], generation,
                                 threads ? threads : worker_threads_for(cfg), max_requests);
                    started++;
                }
            for (int k = 0; k < MAX_WORKERS * 2; k++)
                if (kids[k].pid && kids[k].generation != generation)
                    kill(kids[k].pid, SIGTERM);
            cfg_free(prev); /* children have their own copy of it */
            probe_every = probe_interval(cfg);
        }
    }

    log_info("stopping: waiting up to %.0f s for in-flight requests", grace);
    for (int k = 0; k < MAX_WORKERS * 2; k++)
        if (kids[k].pid)
            kill(kids[k].pid, SIGTERM);
    close(fd);
    double until = mono_s() + grace;
    for (;;) {
        int alive = 0;
        for (int k = 0; k < MAX_WORKERS * 2; k++) {
            if (!kids[k].pid)
                continue;
            if (waitpid(kids[k].pid, NULL, WNOHANG) == kids[k].pid)
                kids[k].pid = 0;
            else
                alive++;
        }
        if (!alive)
            break;
        if (mono_s() > until) {
            for (int k = 0; k < MAX_WORKERS * 2; k++)
                if (kids[k].pid) {
                    log_warn("worker %d did not finish within the grace period; killing it",
                             (int)kids[k].pid);
                    kill(kids[k].pid, SIGKILL);
                    waitpid(kids[k].pid, NULL, 0);
                    kids[k].pid = 0;
                }
            break;
        }
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (pid_file)
        unlink(pid_file);
    if (bind_path != listen)
        unlink(bind_path);
    free(kids);
    cfg_free(cfg);
    log_info("stopped");
    return 0;
}

/*
 * worker.c - the FastCGI accept loop (see worker.h).
 *
 * A stop signal that arrives while the worker waits for a connection ends it
 * at once; one that arrives during a request lets the request finish first,
 * so in-flight answers are never cut off by a reload or shutdown.
 */
#include "worker.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "audit.h"
#include "backend.h"
#include "jwt.h"
#include "log.h"
#include "pipeline.h"
#include "sanitize.h"
#include "secrets.h"
#include "telemetry.h"
#include "store.h"

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t in_request;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
    if (!in_request)
        _exit(0);
}

int worker_init(struct worker *w, struct cfg *cfg, struct buf *err)
{
    memset(w, 0, sizeof *w);
    w->cfg = cfg;
    w->store = store_open(cfg->database.path, cfg->database.synchronous,
                          cfg->database.busy_timeout_ms, err);
    if (!w->store)
        return -1;
    w->pool = backend_pool_new(cfg);
    w->redactor = redactor_new(cfg);
    w->audit_scratch = calloc(1, sizeof *w->audit_scratch);
    w->secrets = secrets_new(cfg);
    w->telemetry = telemetry_new(cfg);
    if (!w->pool || !w->redactor || !w->audit_scratch || !w->secrets || !w->telemetry) {
        buf_puts(err, "out of memory");
        worker_cleanup(w);
        return -1;
    }
    w->jwks = jwks_new(w, err);
    if (!w->jwks) {
        worker_cleanup(w);
        return -1;
    }
    if (getrandom(&w->rng, sizeof w->rng, 0) != sizeof w->rng)
        w->rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;
    return 0;
}

void worker_cleanup(struct worker *w)
{
    jwks_free(w->jwks);
    redactor_free(w->redactor);
    backend_pool_free(w->pool);
    secrets_free(w->secrets);
    telemetry_free(w->telemetry);
    store_close(w->store);
    if (w->audit_scratch) {
        audit_scratch_free(w->audit_scratch);
        free(w->audit_scratch);
    }
    memset(w, 0, sizeof *w);
}

int worker_run(struct worker *w, int listen_fd, unsigned long max_requests)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); /* mod_fcgid's graceful stop: finish the request */

    if (FCGX_Init() != 0) {
        log_error("FCGX_Init failed");
        return 1;
    }
    FCGX_Request fr;
    if (FCGX_InitRequest(&fr, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR) != 0) {
        log_error("FCGX_InitRequest failed");
        return 1;
    }
    struct request req;
    memset(&req, 0, sizeof req);
    req.w = w;
    log_debug("worker ready");
    while (!stop_requested) {
        if (FCGX_Accept_r(&fr) < 0)
            break;
        in_request = 1;
        request_reset(&req);
        req.fcgi = &fr;
        pipeline_handle(&req);
        req.end_ns = now_ns();
        FCGX_Finish_r(&fr);
        /* The client has its answer; what follows costs it nothing. */
        pipeline_after_response(&req);
        in_request = 0;
        if (max_requests && w->served >= max_requests)
            break;
    }
    request_free(&req);
    FCGX_Free(&fr, 0);
    return 0;
}

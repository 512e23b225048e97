/*
 * health.c - probing open backends (see health.h).
 *
 * A probe is GET {url}/openai/models?api-version=... for Azure and
 * GET {url}/models for OpenAI-compatible backends, authenticated with the
 * backend's key. Only a 2xx closes the breaker; the probe never counts as a
 * failure, so a slow probe cannot keep a backend out longer than the breaker
 * itself would.
 */
#include "health.h"

#include <string.h>

#include "backend.h"
#include "breaker.h"
#include "log.h"
#include "store.h"
#include "worker.h"

#define PROBE_TIMEOUT_S 5.0

int health_probe_backends(struct worker *w, int all, FILE *report)
{
    int closed = 0;
    struct buf url = {0}, body = {0}, err = {0};
    struct backend_pool *pool = backend_pool_new(w->cfg);
    if (!pool)
        return -1;
    for (size_t i = 0; i < pool->n; i++) {
        struct backend_conn *c = &pool->conns[i];
        struct breaker_row row;
        if (breaker_read(w, c->cfg->name, &row) < 0) {
            closed = -1;
            break;
        }
        if (!all && row.state == BREAKER_CLOSED)
            continue;
        buf_reset(&url);
        if (c->cfg->type == BACKEND_AZURE)
            buf_printf(&url, "%s/openai/models?api-version=%s", c->cfg->url,
                       c->cfg->api_version ? c->cfg->api_version : "2024-10-21");
        else
            buf_printf(&url, "%s/models", c->cfg->url);
        buf_reset(&err);
        if (backend_load_key(c, w->secrets, 0, &err) < 0) {
            if (report)
                fprintf(report, "%s\tkey unavailable: %s\n", c->cfg->name, buf_cstr(&err));
            continue;
        }
        struct upstream_call call = {0};
        call.url = buf_cstr(&url);
        call.timeout_s = PROBE_TIMEOUT_S;
        call.body_out = &body;
        call.max_body = 1 << 20;
        buf_reset(&body);
        int rc = backend_perform(c, &call);
        upstream_call_free(&call);
        int healthy = rc == 0 && call.status >= 200 && call.status < 300;
        if (report)
            fprintf(report, "%s\t%s\t%s\n", c->cfg->name, store_breaker_state_name(row.state),
                    healthy  ? "healthy"
                    : rc < 0 ? call.error
                             : "unhealthy (HTTP error)");
        if (!healthy || row.state == BREAKER_CLOSED)
            continue;
        /* Close it unless another worker closed it meanwhile. */
        if (breaker_close(w, c->cfg->name) == 1) {
            log_info("backend %s answered its health probe: breaker closed", c->cfg->name);
            closed++;
        }
    }
    backend_pool_free(pool);
    buf_free(&url);
    buf_free(&body);
    buf_free(&err);
    return closed;
}

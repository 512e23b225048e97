/*
 * router.h - which endpoint a request is for.
 *
 * Pipeline stage 2: method and path become an enum route (and the deployment
 * named in an Azure path); unknown paths are 404 and wrong methods 405.
 */
#ifndef AIGW_ROUTER_H
#define AIGW_ROUTER_H

#include <stddef.h>

#include "err.h"

enum route {
    ROUTE_NONE,
    ROUTE_SEED_CHAT,            /* POST /api/chat */
    ROUTE_AZURE_CHAT,           /* POST /openai/deployments/{d}/chat/completions */
    ROUTE_AZURE_EMBED,          /* POST /openai/deployments/{d}/embeddings */
    ROUTE_OAI_CHAT,             /* POST /v1/chat/completions, /openai/v1/chat/completions */
    ROUTE_OAI_EMBED,            /* POST /v1/embeddings, /openai/v1/embeddings */
    ROUTE_MODELS,               /* GET /openai/models, /v1/models */
    ROUTE_RESPONSES,            /* POST /v1/responses, /openai/v1/responses, /openai/responses */
    ROUTE_AZURE_RESPONSES,      /* POST /openai/deployments/{d}/responses */
    ROUTE_RESPONSE_GET,         /* GET {/v1,/openai/v1,/openai}/responses/{id} */
    ROUTE_RESPONSE_DELETE,      /* DELETE the same */
    ROUTE_RESPONSE_INPUT_ITEMS, /* GET .../responses/{id}/input_items */
    ROUTE_HEALTHZ,              /* GET /healthz */
    ROUTE_READYZ,               /* GET /readyz */
    ROUTE_METRICS,              /* GET /metrics */
    ROUTE_ADMIN_API,            /* /admin/api/... (admin_api.c routes within) */
    ROUTE_DASHBOARD,            /* GET /dashboard, /dashboard/app.js, /dashboard/app.css */
};

/* The body a route takes (validate.c checks it as this kind). */
enum api_kind {
    API_NONE,             /* no body: health, metrics, models, stored responses */
    API_SEED_CHAT,        /* POST /api/chat, the seed's own shape */
    API_CHAT_COMPLETIONS, /* Azure/OpenAI chat completions */
    API_EMBEDDINGS,       /* Azure/OpenAI embeddings */
    API_RESPONSES,        /* the Responses API (POST /v1/responses) */
};

/* What the pipeline needs to know of a route, in one place. */
struct route_info {
    const char *operation;  /* the audit log's and the metrics' name */
    int model_call;         /* calls a backend: authenticated, limited, audited */
    enum api_kind kind;     /* the body it takes */
    int deployment_in_path; /* Azure's deployment routes: the path names the model */
    int needs_api_version;  /* ... and the query must carry api-version */
    int stored_response;    /* an id in the path (GET, DELETE of a stored response) */
    int streams;            /* may relay a stream (stream: true) */
};

/* The properties of route; never NULL (ROUTE_NONE has a row too). */
const struct route_info *router_info(enum route route);

#define ROUTER_DEPLOYMENT_MAX 128

/*
 * Matches method and path (without the query string). On success *route is
 * set and segment holds the path's one variable part, decoded: the
 * deployment of an Azure deployment path, or the id of a stored response
 * (empty for other routes).
 */
enum aigw_err router_match(const char *method, const char *path, enum route *route,
                           char segment[ROUTER_DEPLOYMENT_MAX]);

/* Percent-decodes the n bytes at s into out ('+' as a space when
 * plus_is_space, as in a query string); the result must be 1 to out_len-1
 * bytes with no control characters. 0, or -1 (out then holds nothing useful). */
int router_percent_decode(const char *s, size_t n, int plus_is_space, char *out, size_t out_len);

/* 1 for the routes of stored responses (an id in the path, no body). */
int router_is_stored_response(enum route route);

/* The operation name recorded in the audit log for a route. */
const char *router_operation(enum route route);

#endif

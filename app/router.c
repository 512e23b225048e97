/*
 * router.c - maps method and path to an endpoint (see router.h).
 *
 * Paths are compared exactly; the one variable segment (the Azure deployment,
 * or a stored response's id) is percent-decoded and must be a plain name, so
 * "..", "/" and control bytes never reach a backend URL.
 */
#include "router.h"

#include <string.h>

struct route_entry {
    const char *path;
    const char *method;
    enum route route;
};

static const struct route_entry fixed_routes[] = {
    {"/api/chat", "POST", ROUTE_SEED_CHAT},
    {"/v1/chat/completions", "POST", ROUTE_OAI_CHAT},
    {"/openai/v1/chat/completions", "POST", ROUTE_OAI_CHAT},
    {"/v1/embeddings", "POST", ROUTE_OAI_EMBED},
    {"/openai/v1/embeddings", "POST", ROUTE_OAI_EMBED},
    {"/openai/models", "GET", ROUTE_MODELS},
    {"/v1/models", "GET", ROUTE_MODELS},
    {"/openai/v1/models", "GET", ROUTE_MODELS},
    {"/v1/responses", "POST", ROUTE_RESPONSES},
    {"/openai/v1/responses", "POST", ROUTE_RESPONSES},
    {"/openai/responses", "POST", ROUTE_RESPONSES},
    {"/healthz", "GET", ROUTE_HEALTHZ},
    {"/readyz", "GET", ROUTE_READYZ},
    {"/metrics", "GET", ROUTE_METRICS},
    {"/dashboard", "GET", ROUTE_DASHBOARD},
    {"/dashboard/", "GET", ROUTE_DASHBOARD},
    {"/dashboard/app.js", "GET", ROUTE_DASHBOARD},
    {"/dashboard/app.css", "GET", ROUTE_DASHBOARD},
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int router_percent_decode(const char *s, size_t n, int plus_is_space, char *out, size_t out_len)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return -1;
            c = (unsigned char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (c < 0x20 || c == 0x7f || k + 1 >= out_len)
            return -1;
        out[k++] = (char)c;
    }
    out[k] = '\0';
    return k ? 0 : -1;
}

/* Decodes one path segment [s, e) into out; only [A-Za-z0-9._-] may result. */
static int decode_name(const char *s, const char *e, char out[ROUTER_DEPLOYMENT_MAX])
{
    if (router_percent_decode(s, (size_t)(e - s), 0, out, ROUTER_DEPLOYMENT_MAX) < 0 ||
        strspn(out, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
            strlen(out) ||
        strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

/* GET|DELETE {prefix}responses/{id}[/input_items] for the three prefixes a
 * stored response is reached under; AIGW_ERR_NOT_FOUND when path is not one. */
static enum aigw_err match_stored_response(const char *method, const char *path, enum route *route,
                                           char id[ROUTER_DEPLOYMENT_MAX])
{
    static const char *const prefixes[] = {"/v1/responses/", "/openai/v1/responses/",
                                           "/openai/responses/"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (strncmp(path, prefixes[i], n) != 0)
            continue;
        const char *name = path + n, *slash = strchr(name, '/');
        const char *end = slash ? slash : name + strlen(name);
        int items = slash && strcmp(slash, "/input_items") == 0;
        if ((slash && !items) || decode_name(name, end, id) < 0)
            return AIGW_ERR_NOT_FOUND;
        int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
        if (items) {
            if (!get)
                return AIGW_ERR_METHOD_NOT_ALLOWED;
            *route = ROUTE_RESPONSE_INPUT_ITEMS;
        } else if (get) {
            *route = ROUTE_RESPONSE_GET;
        } else if (strcmp(method, "DELETE") == 0) {
            *route = ROUTE_RESPONSE_DELETE;
        } else {
            return AIGW_ERR_METHOD_NOT_ALLOWED;
        }
        return AIGW_OK;
    }
    return AIGW_ERR_NOT_FOUND;
}

int router_is_stored_response(enum route r)
{
    return router_info(r)->stored_response;
}

enum aigw_err router_match(const char *method, const char *path, enum route *route,
                           char deployment[ROUTER_DEPLOYMENT_MAX])
{
    *route = ROUTE_NONE;
    deployment[0] = '\0';
    for (size_t i = 0; i < sizeof fixed_routes / sizeof fixed_routes[0]; i++) {
        if (strcmp(path, fixed_routes[i].path) != 0)
            continue;
        if (strcmp(method, fixed_routes[i].method) != 0 &&
            !(strcmp(method, "HEAD") == 0 && strcmp(fixed_routes[i].method, "GET") == 0))
            return AIGW_ERR_METHOD_NOT_ALLOWED;
        *route = fixed_routes[i].route;
        return AIGW_OK;
    }
    if (strncmp(path, "/admin/api/", 11) == 0) {
        *route = ROUTE_ADMIN_API; /* admin_api.c matches the rest, after authentication */
        return AIGW_OK;
    }
    static const char prefix[] = "/openai/deployments/";
    if (strncmp(path, prefix, sizeof prefix - 1) == 0) {
        const char *name = path + sizeof prefix - 1;
        const char *slash = strchr(name, '/');
        if (!slash)
            return AIGW_ERR_NOT_FOUND;
        enum route r = ROUTE_NONE;
        if (strcmp(slash, "/chat/completions") == 0)
            r = ROUTE_AZURE_CHAT;
        else if (strcmp(slash, "/embeddings") == 0)
            r = ROUTE_AZURE_EMBED;
        else if (strcmp(slash, "/responses") == 0)
            r = ROUTE_AZURE_RESPONSES;
        if (r == ROUTE_NONE || decode_name(name, slash, deployment) < 0)
            return AIGW_ERR_NOT_FOUND;
        if (strcmp(method, "POST") != 0)
            return AIGW_ERR_METHOD_NOT_ALLOWED;
        *route = r;
        return AIGW_OK;
    }
    return match_stored_response(method, path, route, deployment);
}

static const struct route_info route_table[] = {
    /* operation, model call, body kind, deployment in path, api-version, stored, streams */
    [ROUTE_NONE] = {"unknown", 0, API_NONE, 0, 0, 0, 0},
    [ROUTE_SEED_CHAT] = {"chat", 1, API_SEED_CHAT, 0, 0, 0, 0},
    [ROUTE_AZURE_CHAT] = {"chat.completions", 1, API_CHAT_COMPLETIONS, 1, 1, 0, 1},
    [ROUTE_AZURE_EMBED] = {"embeddings", 1, API_EMBEDDINGS, 1, 1, 0, 0},
    [ROUTE_OAI_CHAT] = {"chat.completions", 1, API_CHAT_COMPLETIONS, 0, 0, 0, 1},
    [ROUTE_OAI_EMBED] = {"embeddings", 1, API_EMBEDDINGS, 0, 0, 0, 0},
    [ROUTE_MODELS] = {"models", 0, API_NONE, 0, 0, 0, 0},
    [ROUTE_HEALTHZ] = {"healthz", 0, API_NONE, 0, 0, 0, 0},
    [ROUTE_READYZ] = {"readyz", 0, API_NONE, 0, 0, 0, 0},
    [ROUTE_METRICS] = {"metrics", 0, API_NONE, 0, 0, 0, 0},
    [ROUTE_ADMIN_API] = {"admin", 0, API_NONE, 0, 0, 0, 0},
    [ROUTE_DASHBOARD] = {"dashboard", 0, API_NONE, 0, 0, 0, 0},
    [ROUTE_RESPONSES] = {"responses", 1, API_RESPONSES, 0, 0, 0, 1},
    [ROUTE_AZURE_RESPONSES] = {"responses", 1, API_RESPONSES, 1, 0, 0, 1},
    [ROUTE_RESPONSE_GET] = {"responses.get", 1, API_NONE, 0, 0, 1, 0},
    [ROUTE_RESPONSE_DELETE] = {"responses.delete", 1, API_NONE, 0, 0, 1, 0},
    [ROUTE_RESPONSE_INPUT_ITEMS] = {"responses.input_items", 1, API_NONE, 0, 0, 1, 0},
};

const struct route_info *router_info(enum route route)
{
    if ((unsigned)route >= sizeof route_table / sizeof route_table[0] ||
        !route_table[route].operation)
        return &route_table[ROUTE_NONE];
    return &route_table[route];
}

const char *router_operation(enum route route)
{
    return router_info(route)->operation;
}

/*
 * test_router.c - unit tests for app/router.c: method and path to endpoint.
 *
 * Covers pipeline stage 2 against the HTTP surface in the README's HTTP API table:
 * every route with its method; 405 for a known path with the wrong method
 * and 404 for unknown paths; HEAD on GET routes; the Azure deployment
 * segment percent-decoded, and names that could reach a backend URL as
 * something else ("..", "%2e%2e", "%2F", empty, over-long, control bytes,
 * bad escapes) rejected; router_operation names for the audit log.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "router.h"

static enum route route;
static char dep[ROUTER_DEPLOYMENT_MAX];

static enum aigw_err match(const char *method, const char *path)
{
    memset(dep, 'X', sizeof dep);
    dep[sizeof dep - 1] = '\0';
    route = (enum route) - 1;
    return router_match(method, path, &route, dep);
}

static void expect_route(const char *method, const char *path, enum route want)
{
    enum aigw_err r = match(method, path);
    if (r != AIGW_OK || route != want)
        print_error("%s %s: err %d route %d, want route %d\n", method, path, r, route, want);
    assert_int_equal(r, AIGW_OK);
    assert_int_equal(route, want);
}

static void expect_err(const char *method, const char *path, enum aigw_err want)
{
    enum aigw_err r = match(method, path);
    if (r != want)
        print_error("%s %s: err %d, want %d\n", method, path, r, want);
    assert_int_equal(r, want);
    assert_int_equal(route, ROUTE_NONE);
}

static void test_fixed_routes(void **state)
{
    (void)state;
    expect_route("POST", "/api/chat", ROUTE_SEED_CHAT);
    expect_route("POST", "/v1/chat/completions", ROUTE_OAI_CHAT);
    expect_route("POST", "/openai/v1/chat/completions", ROUTE_OAI_CHAT);
    expect_route("POST", "/v1/embeddings", ROUTE_OAI_EMBED);
    expect_route("POST", "/openai/v1/embeddings", ROUTE_OAI_EMBED);
    expect_route("GET", "/openai/models", ROUTE_MODELS);
    expect_route("GET", "/v1/models", ROUTE_MODELS);
    expect_route("GET", "/openai/v1/models", ROUTE_MODELS);
    expect_route("GET", "/healthz", ROUTE_HEALTHZ);
    expect_route("GET", "/readyz", ROUTE_READYZ);
    expect_route("GET", "/metrics", ROUTE_METRICS);
    /* no deployment on these */
    expect_route("POST", "/v1/chat/completions", ROUTE_OAI_CHAT);
    assert_string_equal(dep, "");
}

static void test_azure_routes(void **state)
{
    (void)state;
    expect_route("POST", "/openai/deployments/gpt-4o/chat/completions", ROUTE_AZURE_CHAT);
    assert_string_equal(dep, "gpt-4o");
    expect_route("POST", "/openai/deployments/text-embedding-3-small/embeddings",
                 ROUTE_AZURE_EMBED);
    assert_string_equal(dep, "text-embedding-3-small");
    expect_route("POST", "/openai/deployments/my_deploy.v2/chat/completions", ROUTE_AZURE_CHAT);
    assert_string_equal(dep, "my_deploy.v2");
    expect_route("POST", "/openai/deployments/A/chat/completions", ROUTE_AZURE_CHAT);
    assert_string_equal(dep, "A");
}

static void test_head_on_get_routes(void **state)
{
    (void)state;
    expect_route("HEAD", "/healthz", ROUTE_HEALTHZ);
    expect_route("HEAD", "/readyz", ROUTE_READYZ);
    expect_route("HEAD", "/v1/models", ROUTE_MODELS);
    /* but not on POST routes */
    expect_err("HEAD", "/api/chat", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("HEAD", "/openai/deployments/d/chat/completions", AIGW_ERR_METHOD_NOT_ALLOWED);
}

static void test_wrong_method_is_405(void **state)
{
    (void)state;
    expect_err("GET", "/api/chat", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("PUT", "/api/chat", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("DELETE", "/v1/chat/completions", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("GET", "/openai/v1/chat/completions", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("GET", "/v1/embeddings", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("POST", "/openai/models", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("POST", "/v1/models", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("POST", "/healthz", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("POST", "/readyz", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("POST", "/metrics", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("GET", "/openai/deployments/gpt-4o/chat/completions", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("PATCH", "/openai/deployments/gpt-4o/embeddings", AIGW_ERR_METHOD_NOT_ALLOWED);
    /* methods are case-sensitive (RFC 9110) */
    expect_err("post", "/api/chat", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("", "/api/chat", AIGW_ERR_METHOD_NOT_ALLOWED);
}

static void test_unknown_paths_are_404(void **state)
{
    (void)state;
    const char *paths[] = {
        "/",
        "",
        "/api",
        "/api/chat/",
        "/api/chat/x",
        "/API/CHAT",
        "//api/chat",
        "/api//chat",
        "/api/chat%20",
        "/v1/completions",
        "/v1/chat/completions/",
        "/v2/chat/completions",
        "/healthz/",
        "/metrics.txt",
        "/openai",
        "/openai/deployments",
        "/openai/deployments/",
        "/openai/deployments/gpt-4o",
        "/openai/deployments/gpt-4o/",
        "/openai/deployments/gpt-4o/completions",
        "/openai/deployments/gpt-4o/chat",
        "/openai/deployments/gpt-4o/chat/completions/",
        "/openai/deployments/gpt-4o/chat/completions/x",
        "/openai/deployments/gpt-4o/embeddings/",
        "/openai/deployments/gpt-4o/images/generations",
        "/openai/deployments/a/b/chat/completions",
        "api/chat",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        expect_err("POST", paths[i], AIGW_ERR_NOT_FOUND);
        expect_err("GET", paths[i], AIGW_ERR_NOT_FOUND);
    }
}

static void test_responses_routes(void **state)
{
    (void)state;
    expect_route("POST", "/v1/responses", ROUTE_RESPONSES);
    expect_route("POST", "/openai/v1/responses", ROUTE_RESPONSES);
    expect_route("POST", "/openai/responses", ROUTE_RESPONSES);
    expect_route("POST", "/openai/deployments/gpt-4o/responses", ROUTE_AZURE_RESPONSES);
    assert_string_equal(dep, "gpt-4o");
    const char *prefixes[] = {"/v1/responses/", "/openai/v1/responses/", "/openai/responses/"};
    for (size_t i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof p, "%sresp_abc123", prefixes[i]);
        expect_route("GET", p, ROUTE_RESPONSE_GET);
        assert_string_equal(dep, "resp_abc123");
        assert_true(router_is_stored_response(route));
        expect_route("HEAD", p, ROUTE_RESPONSE_GET);
        expect_route("DELETE", p, ROUTE_RESPONSE_DELETE);
        expect_err("POST", p, AIGW_ERR_METHOD_NOT_ALLOWED);
        snprintf(p, sizeof p, "%sresp_abc123/input_items", prefixes[i]);
        expect_route("GET", p, ROUTE_RESPONSE_INPUT_ITEMS);
        assert_string_equal(dep, "resp_abc123");
        expect_err("DELETE", p, AIGW_ERR_METHOD_NOT_ALLOWED);
        /* an id that could be something else in a backend URL */
        const char *bad[] = {"..",  "%2e%2e",       "a%2Fb", "", "x/y", "resp_1/input_items/",
                             "a b", "resp_1/cancel"};
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            snprintf(p, sizeof p, "%s%s", prefixes[i], bad[k]);
            expect_err("GET", p, AIGW_ERR_NOT_FOUND);
        }
    }
    assert_false(router_is_stored_response(ROUTE_RESPONSES));
    expect_err("GET", "/v1/responses", AIGW_ERR_METHOD_NOT_ALLOWED);
    assert_string_equal(router_operation(ROUTE_RESPONSES), "responses");
    assert_string_equal(router_operation(ROUTE_AZURE_RESPONSES), "responses");
    assert_string_equal(router_operation(ROUTE_RESPONSE_GET), "responses.get");
    assert_string_equal(router_operation(ROUTE_RESPONSE_DELETE), "responses.delete");
    assert_string_equal(router_operation(ROUTE_RESPONSE_INPUT_ITEMS), "responses.input_items");
}

static void test_deployment_percent_decoded(void **state)
{
    (void)state;
    expect_route("POST", "/openai/deployments/gpt%2D4o/chat/completions", ROUTE_AZURE_CHAT);
    assert_string_equal(dep, "gpt-4o");
    expect_route("POST", "/openai/deployments/%67%70%74/embeddings", ROUTE_AZURE_EMBED);
    assert_string_equal(dep, "gpt");
    expect_route("POST", "/openai/deployments/my%5fdeploy/chat/completions", ROUTE_AZURE_CHAT);
    assert_string_equal(dep, "my_deploy");
    expect_route("POST", "/openai/deployments/v1%2E2/chat/completions", ROUTE_AZURE_CHAT);
    assert_string_equal(dep, "v1.2");
}

static void test_deployment_traversal_rejected(void **state)
{
    (void)state;
    const char *names[] = {
        "..",
        ".",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "%2e.",
        "%2e",
        "a%2Fb",
        "a%2fb",
        "%2F",
        "..%2F..%2Fadmin",
        "%2e%2e%2f%2e%2e",
        "a%5Cb", /* backslash */
        "a%00b", /* NUL */
        "a%0Ab", /* newline: header injection */
        "a%0D%0Ab",
        "a%20b", /* space */
        "a%3Fb", /* '?' would start a query */
        "a%23b", /* '#' */
        "a%26b", /* '&' */
        "a%25b", /* a literal '%' */
        "a+b",
        "a:b",
        "a@b",
        "gpt%", /* truncated escapes */
        "gpt%2",
        "gpt%zz",
        "gpt%g0",
        "%C3%A9", /* non-ASCII */
        "\xc3\xa9",
    };
    char path[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "/openai/deployments/%s/chat/completions", names[i]);
        expect_err("POST", path, AIGW_ERR_NOT_FOUND);
        snprintf(path, sizeof path, "/openai/deployments/%s/embeddings", names[i]);
        expect_err("POST", path, AIGW_ERR_NOT_FOUND);
    }
    /* dots inside a name are fine: Azure deployment names use them */
    expect_route("POST", "/openai/deployments/gpt-4.1-mini/chat/completions", ROUTE_AZURE_CHAT);
    assert_string_equal(dep, "gpt-4.1-mini");
    expect_route("POST", "/openai/deployments/gpt-4%2E1/embeddings", ROUTE_AZURE_EMBED);
    assert_string_equal(dep, "gpt-4.1");
}

static void test_deployment_empty_rejected(void **state)
{
    (void)state;
    expect_err("POST", "/openai/deployments//chat/completions", AIGW_ERR_NOT_FOUND);
    expect_err("POST", "/openai/deployments//embeddings", AIGW_ERR_NOT_FOUND);
}

static void test_deployment_length_bound(void **state)
{
    (void)state;
    char name[ROUTER_DEPLOYMENT_MAX + 8], path[512];
    /* the longest name that fits with its NUL is accepted whole */
    memset(name, 'd', ROUTER_DEPLOYMENT_MAX - 1);
    name[ROUTER_DEPLOYMENT_MAX - 1] = '\0';
    snprintf(path, sizeof path, "/openai/deployments/%s/chat/completions", name);
    expect_route("POST", path, ROUTE_AZURE_CHAT);
    assert_string_equal(dep, name);
    /* one more is refused, not truncated */
    memset(name, 'd', ROUTER_DEPLOYMENT_MAX);
    name[ROUTER_DEPLOYMENT_MAX] = '\0';
    snprintf(path, sizeof path, "/openai/deployments/%s/chat/completions", name);
    expect_err("POST", path, AIGW_ERR_NOT_FOUND);
    /* the bound is on the decoded name: 127 escaped characters still fit */
    struct {
        char s[ROUTER_DEPLOYMENT_MAX * 3 + 1];
    } enc;
    for (int i = 0; i < ROUTER_DEPLOYMENT_MAX - 1; i++)
        memcpy(enc.s + 3 * i, "%61", 3);
    enc.s[3 * (ROUTER_DEPLOYMENT_MAX - 1)] = '\0';
    char longpath[600];
    snprintf(longpath, sizeof longpath, "/openai/deployments/%s/embeddings", enc.s);
    expect_route("POST", longpath, ROUTE_AZURE_EMBED);
    assert_int_equal(strlen(dep), ROUTER_DEPLOYMENT_MAX - 1);
    /* a very long name is refused without overflow */
    static char huge[70000];
    memcpy(huge, "/openai/deployments/", 20);
    memset(huge + 20, 'x', 65000);
    strcpy(huge + 20 + 65000, "/chat/completions");
    expect_err("POST", huge, AIGW_ERR_NOT_FOUND);
}

static void test_failed_match_leaves_no_deployment(void **state)
{
    (void)state;
    /* a refused name leaves the route unset, and an unknown path clears
     * whatever the caller's buffer held */
    assert_int_equal(match("POST", "/openai/deployments/..%2F/chat/completions"),
                     AIGW_ERR_NOT_FOUND);
    assert_int_equal(route, ROUTE_NONE);
    assert_int_equal(match("POST", "/nope"), AIGW_ERR_NOT_FOUND);
    assert_string_equal(dep, "");
    assert_int_equal(match("GET", "/api/chat"), AIGW_ERR_METHOD_NOT_ALLOWED);
    assert_string_equal(dep, "");
}

static void test_operation_names(void **state)
{
    (void)state;
    assert_string_equal(router_operation(ROUTE_SEED_CHAT), "chat");
    assert_string_equal(router_operation(ROUTE_AZURE_CHAT), "chat.completions");
    assert_string_equal(router_operation(ROUTE_OAI_CHAT), "chat.completions");
    assert_string_equal(router_operation(ROUTE_AZURE_EMBED), "embeddings");
    assert_string_equal(router_operation(ROUTE_OAI_EMBED), "embeddings");
    assert_string_equal(router_operation(ROUTE_MODELS), "models");
    assert_string_equal(router_operation(ROUTE_HEALTHZ), "healthz");
    assert_string_equal(router_operation(ROUTE_READYZ), "readyz");
    assert_string_equal(router_operation(ROUTE_METRICS), "metrics");
    assert_string_equal(router_operation(ROUTE_ADMIN_API), "admin");
    assert_string_equal(router_operation(ROUTE_DASHBOARD), "dashboard");
    assert_string_equal(router_operation(ROUTE_NONE), "unknown");
    assert_string_equal(router_operation((enum route)999), "unknown");
}

/* The admin API takes every method and path under its prefix (admin_api.c
 * matches them after authentication); the dashboard is three GET files. */
static void test_admin_and_dashboard_routes(void **state)
{
    (void)state;
    expect_route("GET", "/admin/api/users", ROUTE_ADMIN_API);
    expect_route("PATCH", "/admin/api/users", ROUTE_ADMIN_API);
    expect_route("DELETE", "/admin/api/keys/0123456789ab", ROUTE_ADMIN_API);
    expect_route("GET", "/admin/api/no/such/thing", ROUTE_ADMIN_API);
    expect_err("GET", "/admin/api", AIGW_ERR_NOT_FOUND);
    expect_err("GET", "/admin/users", AIGW_ERR_NOT_FOUND);
    expect_route("GET", "/dashboard", ROUTE_DASHBOARD);
    expect_route("HEAD", "/dashboard/", ROUTE_DASHBOARD);
    expect_route("GET", "/dashboard/app.js", ROUTE_DASHBOARD);
    expect_route("GET", "/dashboard/app.css", ROUTE_DASHBOARD);
    expect_err("POST", "/dashboard", AIGW_ERR_METHOD_NOT_ALLOWED);
    expect_err("GET", "/dashboard/../etc/passwd", AIGW_ERR_NOT_FOUND);
    expect_err("GET", "/dashboard/app.js.map", AIGW_ERR_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_routes),
        cmocka_unit_test(test_azure_routes),
        cmocka_unit_test(test_head_on_get_routes),
        cmocka_unit_test(test_wrong_method_is_405),
        cmocka_unit_test(test_unknown_paths_are_404),
        cmocka_unit_test(test_deployment_percent_decoded),
        cmocka_unit_test(test_deployment_traversal_rejected),
        cmocka_unit_test(test_deployment_empty_rejected),
        cmocka_unit_test(test_deployment_length_bound),
        cmocka_unit_test(test_failed_match_leaves_no_deployment),
        cmocka_unit_test(test_operation_names),
        cmocka_unit_test(test_responses_routes),
        cmocka_unit_test(test_admin_and_dashboard_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * dashboard.c - serves the dashboard's three files (see dashboard.h).
 *
 * The policy allows scripts, styles and fetches from this origin only, no
 * inline script or style, no framing, no forms posting elsewhere: a value
 * that slipped past the page's escaping still could not run.
 */
#include "dashboard.h"

#include <string.h>

#include "admin_api.h"
#include "fcgi_io.h"

#define DASHBOARD_HEADERS                                                                          \
    ADMIN_SECURITY_HEADERS                                                                         \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "              \
    "frame-ancestors 'none'\r\n"                                                                   \
    "X-Frame-Options: DENY\r\n"

void dashboard_serve(struct request *req)
{
    static const struct {
        const char *path, *file, *type;
    } files[] = {
        {"/dashboard", "index.html", "text/html; charset=utf-8"},
        {"/dashboard/", "index.html", "text/html; charset=utf-8"},
        {"/dashboard/app.js", "app.js", "text/javascript; charset=utf-8"},
        {"/dashboard/app.css", "app.css", "text/css; charset=utf-8"},
    };
    req->extra_headers = DASHBOARD_HEADERS;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (strcmp(req->path, files[i].path) != 0)
            continue;
        for (int j = 0; j < n_dashboard_assets; j++)
            if (strcmp(dashboard_assets[j].name, files[i].file) == 0) {
                fcgi_send_body(req, 200, files[i].type, dashboard_assets[j].data,
                               dashboard_assets[j].len);
                return;
            }
    }
    request_fail(req, AIGW_ERR_NOT_FOUND, "", "No dashboard file at %s.", req->path);
}

/*
 * dashboard.h - the operator's dashboard page, served by aigw itself.
 *
 * GET /dashboard, /dashboard/app.js and /dashboard/app.css answer the files
 * of app/dashboard/, compiled into the program (gen-assets.sh): no files on
 * disk, nothing from a CDN. The page holds no data; it reads /admin/api/
 * with the admin credential the operator types in (admin_api.h).
 */
#ifndef AIGW_DASHBOARD_H
#define AIGW_DASHBOARD_H

#include <stddef.h>

#include "request.h"

struct dashboard_asset {
    const char *name; /* index.html, app.js, app.css */
    const char *data;
    size_t len;
};
extern const struct dashboard_asset dashboard_assets[];
extern const int n_dashboard_assets;

/* Answers a ROUTE_DASHBOARD request with its file and a strict
 * Content-Security-Policy. */
void dashboard_serve(struct request *req);

#endif

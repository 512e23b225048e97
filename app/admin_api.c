/*
 * admin_api.c - the operator's JSON API under /admin/api/ (see admin_api.h).
 *
 * Reads borrow a pooled connection for one question; changes go through the
 * group commit with their audit row (operation 'admin', the admin's user id,
 * request_body = {"action", "target", "changes"}) in the same operation, so a
 * change is never made unrecorded. After a change of users, keys or breakers
 * the epochs are bumped and every worker of the host reads them again.
 */
#include "admin_api.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "audit.h"
#include "auth.h"
#include "breaker.h"
#include "db.h"
#include "fcgi_io.h"
#include "limits.h"
#include "store.h"
#include "worker.h"

#define API_PREFIX      "/admin/api/"
#define AUDIT_LIMIT_MAX 500
/* A report's rows in one answer: the newest, by default and at most. */
#define REPORT_ROWS_DEFAULT 1000
#define REPORT_ROWS_MAX     100000
#define NAME_MAX_BYTES      257 /* a user id (256) and its NUL */

/* --- small helpers --------------------------------------------------------- */

void admin_json_report_value(struct buf *b, const char *v)
{
    if (!v) {
        buf_puts(b, "null");
        return;
    }
    char *end;
    strtod(v, &end);
    if (*v && !*end && strcspn(v, "nNiIxX") == strlen(v)) {
        buf_puts(b, v); /* a number: not nan, inf or hex */
        return;
    }
    buf_put_json_string(b, v, strlen(v));
}

static void put_string_or_null(struct buf *b, const char *v)
{
    if (v)
        buf_put_json_string(b, v, strlen(v));
    else
        buf_puts(b, "null");
}

/* A UTC ISO 8601 time as a JSON string, or null for 0. */
static void put_time(struct buf *b, int64_t ms)
{
    if (!ms) {
        buf_puts(b, "null");
        return;
    }
    char t[32];
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(t, sizeof t, "\"%Y-%m-%dT%H:%M:%SZ\"", &tm);
    buf_puts(b, t);
}

/* The query parameter name, decoded into out: 1 found, 0 absent, -1 not a
 * valid value (the caller says which parameter). */
static int query_param(const char *query, const char *name, char *out, size_t out_len)
{
    size_t nl = strlen(name);
    for (const char *p = query; p && *p;) {
        size_t n = strcspn(p, "&");
        if (n > nl && strncmp(p, name, nl) == 0 && p[nl] == '=')
            return router_percent_decode(p + nl + 1, n - nl - 1, 1, out, out_len) < 0 ? -1 : 1;
        p += n;
        if (*p == '&')
            p++;
    }
    return 0;
}

/* A whole number of seconds >= 0 from the query (default when absent). */
static enum aigw_err query_seconds(struct request *req, const char *name, long long dflt,
                                   long long max, long long *out)
{
    char v[32];
    int r = query_param(req->query, name, v, sizeof v);
    *out = dflt;
    if (r == 0)
        return AIGW_OK;
    char *end;
    long long n = r > 0 ? strtoll(v, &end, 10) : -1;
    if (r < 0 || *end || n < 0 || n > max)
        return request_fail(req, AIGW_ERR_INVALID_VALUE, name,
                            "%s must be a whole number from 0 to %lld.", name, max);
    *out = n;
    return AIGW_OK;
}

static void send_out(struct request *req, int status)
{
    buf_putc(&req->out, '\n');
    fcgi_send_json(req, status, req->out.data, req->out.len);
}

/* Gives the reading connection back and answers with the list made in
 * req->out (its closing "]}" added), or 503 when reading it failed (rc < 0). */
static enum aigw_err send_list(struct request *req, struct store *st, int rc)
{
    db_reader_done(req->w->db, st);
    if (rc < 0)
        return request_store_unavailable(req);
    buf_puts(&req->out, "]}");
    send_out(req, 200);
    return AIGW_OK;
}

/* --- the caller -------------------------------------------------------------- */

static enum aigw_err authorize_admin(struct request *req)
{
    const struct cfg *cfg = req->w->cfg;
    if (!cfg->auth.enabled)
        return request_fail(req, AIGW_ERR_FORBIDDEN, "",
                            "The admin API needs authentication, which is off (auth.enabled is "
                            "false in %s).",
                            cfg->path);
    enum aigw_err e = auth_authenticate(req);
    if (e != AIGW_OK)
        return e;
    req->subject = req->caller.user_id;
    if (!auth_has_role(req->caller.roles, cfg->auth.admin_role)) {
        request_fail(req, AIGW_ERR_FORBIDDEN, "",
                     "The admin API needs the %s role (auth.admin_role); %s does not hold it.",
                     cfg->auth.admin_role, req->caller.user_id);
        limits_audit_refusal(req);
        return AIGW_ERR_FORBIDDEN;
    }
    return AIGW_OK;
}

static enum aigw_err api_me(struct request *req, const char *rest)
{
    (void)rest;
    struct buf *o = &req->out;
    buf_reset(o);
    buf_puts(o, "{\"user_id\":");
    put_string_or_null(o, req->caller.user_id);
    buf_puts(o, ",\"roles\":");
    put_string_or_null(o, req->caller.roles);
    buf_puts(o, ",\"via\":");
    put_string_or_null(o, req->caller.via);
    buf_putc(o, '}');
    send_out(req, 200);
    return AIGW_OK;
}

/* --- reports ------------------------------------------------------------------ */

/* A report's rows as JSON objects, keeping only the last limit of them (the
 * newest: every report is in time order) in a ring. */
struct report_json {
    struct buf columns;
    struct buf *ring;
    long limit, rows;
    int failed;
};

static void report_row_json(int ncol, const char *const *names, const char *const *values,
                            void *arg)
{
    struct report_json *r = arg;
    if (!r->rows)
        for (int i = 0; i < ncol; i++) {
            buf_puts(&r->columns, i ? "," : "");
            buf_put_json_string(&r->columns, names[i], strlen(names[i]));
        }
    if (!r->ring && !(r->ring = calloc((size_t)r->limit, sizeof *r->ring))) {
        r->failed = 1;
        return;
    }
    struct buf *b = &r->ring[r->rows++ % r->limit];
    buf_reset(b);
    buf_putc(b, '{');
    for (int i = 0; i < ncol; i++) {
        buf_puts(b, i ? "," : "");
        buf_put_json_string(b, names[i], strlen(names[i]));
        buf_putc(b, ':');
        admin_json_report_value(b, values[i]);
    }
    buf_putc(b, '}');
}

static enum aigw_err api_report(struct request *req, const char *name)
{
    long long since, limit;
    enum aigw_err e = query_seconds(req, "since", 86400, 100LL * 365 * 86400, &since);
    if (e == AIGW_OK)
        e = query_seconds(req, "limit", REPORT_ROWS_DEFAULT, REPORT_ROWS_MAX, &limit);
    if (e == AIGW_OK && limit == 0)
        e = request_fail(req, AIGW_ERR_INVALID_VALUE, "limit",
                         "limit must be a whole number from 1 to %d.", REPORT_ROWS_MAX);
    if (e != AIGW_OK)
        return e;
    struct store *st = db_reader(req->w->db);
    if (!st)
        return request_store_unavailable(req);
    struct report_json r = {.limit = limit};
    long total;
    int rc = store_report_newest(st, name, since ? now_ms() - since * 1000 : 0, limit,
                                 report_row_json, &r, &total);
    db_reader_done(req->w->db, st);
    if (total < 0)
        total = r.rows;
    if (r.failed)
        rc = -1;
    if (rc == -2)
        e = request_fail(req, AIGW_ERR_NOT_FOUND, "",
                         "No report named '%.64s' (usage, budget, errors, latency, failovers, "
                         "refusals, traffic).",
                         name);
    else if (rc < 0)
        e = request_store_unavailable(req);
    else {
        struct buf *o = &req->out;
        buf_reset(o);
        buf_puts(o, "{\"report\":");
        buf_put_json_string(o, name, strlen(name));
        buf_printf(o,
                   ",\"since_s\":%lld,\"total_rows\":%ld,\"truncated\":%s,\"columns\":[%s],"
                   "\"rows\":[",
                   since, total, total > limit ? "true" : "false", buf_cstr(&r.columns));
        long kept = r.rows < limit ? r.rows : limit;
        for (long i = r.rows - kept; i < r.rows; i++) {
            buf_puts(o, i > r.rows - kept ? "," : "");
            buf_puts(o, buf_cstr(&r.ring[i % limit]));
        }
        buf_puts(o, "]}");
        send_out(req, 200);
    }
    for (long i = 0; r.ring && i < limit && i < r.rows; i++)
        buf_free(&r.ring[i]);
    free(r.ring);
    buf_free(&r.columns);
    return e;
}

/* --- users -------------------------------------------------------------------- */

struct user_list {
    struct user_row *rows;
    size_t n, cap;
    int failed;
};

static void collect_user(const struct user_row *u, void *arg)
{
    struct user_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct user_row *rows = realloc(l->rows, cap * sizeof *rows);
        if (!rows) {
            l->failed = 1;
            return;
        }
        l->rows = rows;
        l->cap = cap;
    }
    l->rows[l->n++] = *u;
}

/* One user as the API shows it: the limits in force and this period's spend. */
static int put_user(struct request *req, struct store *st, const struct user_row *u, struct buf *o)
{
    struct caller c;
    auth_limits_in_force(req->w->cfg, u, &c);
    struct admission_state as = {0};
    if (store_admission_state(st, u->user_id, budget_period_start(c.budget_period, now_ms() / 1000),
                              &as) < 0)
        return -1;
    int64_t left = c.token_budget - as.budget_used - as.budget_reserved;
    buf_puts(o, "{\"user_id\":");
    buf_put_json_string(o, u->user_id, strlen(u->user_id));
    buf_puts(o, ",\"roles\":");
    buf_put_json_string(o, u->roles, strlen(u->roles));
    buf_printf(o,
               ",\"requests_per_window\":%ld,\"window_s\":%ld,\"tokens_per_minute\":%ld,"
               "\"token_budget\":%ld,\"budget_period\":\"%s\",\"custom\":{"
               "\"requests_per_window\":%s,\"window_s\":%s,\"tokens_per_minute\":%s,"
               "\"token_budget\":%s,\"budget_period\":%s},\"disabled\":%s,"
               "\"budget_used\":%lld,\"budget_reserved\":%lld,\"budget_remaining\":%lld}",
               c.requests_per_window, c.window_s, c.tokens_per_minute, c.token_budget,
               cfg_period_name(c.budget_period), u->requests_per_window >= 0 ? "true" : "false",
               u->window_s > 0 ? "true" : "false", u->tokens_per_minute >= 0 ? "true" : "false",
               u->token_budget >= 0 ? "true" : "false", u->budget_period[0] ? "true" : "false",
               u->disabled ? "true" : "false", (long long)as.budget_used,
               (long long)as.budget_reserved, (long long)(left > 0 ? left : 0));
    return 0;
}

static enum aigw_err api_users_list(struct request *req, const char *rest)
{
    (void)rest;
    struct store *st = db_reader(req->w->db);
    if (!st)
        return request_store_unavailable(req);
    struct user_list l = {0};
    int rc = store_user_each(st, collect_user, &l);
    struct buf *o = &req->out;
    buf_reset(o);
    buf_puts(o, "{\"users\":[");
    for (size_t i = 0; rc == 0 && !l.failed && i < l.n; i++) {
        buf_puts(o, i ? "," : "");
        rc = put_user(req, st, &l.rows[i], o);
    }
    buf_puts(o, "]}");
    db_reader_done(req->w->db, st);
    free(l.rows);
    if (rc < 0 || l.failed)
        return request_store_unavailable(req);
    send_out(req, 200);
    return AIGW_OK;
}

/* An admin change in one operation of a batch: apply makes it, then its
 * audit row is written; both commit or neither does. */
struct admin_change {
    struct request *req;
    const char *action;
    const char *target;
    json_object *changes; /* what was asked, for the audit row; may be NULL */
    int status;           /* the answer's, if it succeeds */
    enum aigw_err (*apply)(struct admin_change *ch, struct store *st);
    /* the operation's own fields, set afresh by apply on every run */
    struct user_row user;
    int found;
    char key[96], key_id[16];
    unsigned char key_hash[32];
    int64_t expires_ms;
    enum aigw_err outcome;
    char why[256];
};

static int change_in_batch(struct store *st, struct counters *cn, void *arg)
{
    (void)cn;
    struct admin_change *ch = arg;
    ch->why[0] = '\0';
    ch->outcome = ch->apply(ch, st);
    if (ch->outcome == AIGW_ERR_STORE_UNAVAILABLE || ch->outcome == AIGW_ERR_INTERNAL)
        return -1;
    if (ch->outcome != AIGW_OK)
        return 0; /* refused (409, 404): nothing changed, nothing to record */
    struct request *req = ch->req;
    struct buf detail = {0};
    buf_puts(&detail, "{\"action\":");
    buf_put_json_string(&detail, ch->action, strlen(ch->action));
    buf_puts(&detail, ",\"target\":");
    buf_put_json_string(&detail, ch->target, strlen(ch->target));
    buf_puts(&detail, ",\"changes\":");
    buf_puts(&detail, ch->changes
                          ? json_object_to_json_string_ext(ch->changes, JSON_C_TO_STRING_PLAIN)
                          : "{}");
    buf_putc(&detail, '}');
    struct audit_row row;
    req->http_status = ch->status;
    audit_fill(req, "success", &row, &req->t->audit_scratch);
    row.request_body = buf_cstr(&detail);
    row.response_body = NULL; /* a created key's text is never written */
    row.attempts_detail = NULL;
    int rc = store_audit_insert(st, &row);
    buf_free(&detail);
    return rc;
}

/* Runs ch in a batch; AIGW_OK when it committed, else the error is set on req. */
static enum aigw_err run_change(struct admin_change *ch, enum epoch_kind changed)
{
    struct request *req = ch->req;
    if (db_write(req->w->db, change_in_batch, ch) < 0)
        return request_store_unavailable(req);
    if (ch->outcome != AIGW_OK)
        return request_fail(req, ch->outcome, "", "%s", ch->why);
    db_rows_changed(req->w->db, changed);
    return AIGW_OK;
}

/* The request body as a JSON object; NULL with the error set. */
static json_object *body_object(struct request *req)
{
    const char *s = req->body.data ? buf_cstr(&req->body) : "";
    enum json_tokener_error jerr = json_tokener_success;
    json_object *o = strlen(s) == req->body.len ? json_tokener_parse_verbose(s, &jerr) : NULL;
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        request_fail(req, AIGW_ERR_INVALID_JSON, "", "The body must be a JSON object (%s).",
                     jerr != json_tokener_success ? json_tokener_error_desc(jerr) : "got none");
        return NULL;
    }
    return o;
}

/* A limit field: a whole number >= 0, or null for the configuration's default. */
static enum aigw_err read_limit(struct request *req, json_object *v, const char *field,
                                int64_t *out)
{
    if (!v) {
        *out = -1;
        return AIGW_OK;
    }
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
        json_object_get_int64(v) > (1LL << 50))
        return request_fail(req, AIGW_ERR_INVALID_VALUE, field,
                            "%s must be a whole number >= 0, or null for the default.", field);
    *out = json_object_get_int64(v);
    return AIGW_OK;
}

/* Applies the body's fields to u; create allows user_id and not disabled. */
static enum aigw_err read_user_fields(struct request *req, json_object *body, int create,
                                      struct user_row *u, const char **user_id)
{
    *user_id = NULL;
    json_object_object_foreach(body, key, v)
    {
        enum aigw_err e = AIGW_OK;
        if (strcmp(key, "user_id") == 0) {
            if (!json_object_is_type(v, json_type_string) ||
                !auth_printable(json_object_get_string(v), USER_ID_MAX))
                return request_fail(req, AIGW_ERR_INVALID_VALUE, "user_id",
                                    "user_id must be 1 to 256 printable characters.");
            *user_id = json_object_get_string(v);
        } else if (strcmp(key, "roles") == 0) {
            const char *r =
                json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
            if (!r || !*r || !auth_printable(r, sizeof u->roles - 1))
                return request_fail(req, AIGW_ERR_INVALID_VALUE, "roles",
                                    "roles must be a comma-separated list such as "
                                    "\"AI.User,AI.Admin\" (1 to 511 printable characters).");
            snprintf(u->roles, sizeof u->roles, "%s", r);
        } else if (strcmp(key, "requests_per_window") == 0) {
            e = read_limit(req, v, key, &u->requests_per_window);
        } else if (strcmp(key, "window_s") == 0) {
            e = read_limit(req, v, key, &u->window_s);
            if (e == AIGW_OK && u->window_s == 0)
                u->window_s = -1;
        } else if (strcmp(key, "tokens_per_minute") == 0) {
            e = read_limit(req, v, key, &u->tokens_per_minute);
        } else if (strcmp(key, "token_budget") == 0) {
            e = read_limit(req, v, key, &u->token_budget);
        } else if (strcmp(key, "budget_period") == 0) {
            const char *p =
                v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
            if (v && (!p || (strcmp(p, "day") && strcmp(p, "month") && strcmp(p, "total"))))
                return request_fail(req, AIGW_ERR_INVALID_VALUE, "budget_period",
                                    "budget_period must be \"day\", \"month\", \"total\", or "
                                    "null for the default.");
            snprintf(u->budget_period, sizeof u->budget_period, "%s", p ? p : "");
        } else if (strcmp(key, "disabled") == 0 && !create) {
            if (!json_object_is_type(v, json_type_boolean))
                return request_fail(req, AIGW_ERR_INVALID_VALUE, "disabled",
                                    "disabled must be true or false.");
            u->disabled = json_object_get_boolean(v);
        } else {
            return request_fail(req, AIGW_ERR_INVALID_VALUE, key,
                                "Unknown field '%.64s' (user_id, roles, requests_per_window, "
                                "window_s, tokens_per_minute, token_budget, budget_period%s).",
                                key, create ? "" : ", disabled");
        }
        if (e != AIGW_OK)
            return e;
    }
    if (!*user_id)
        return request_fail(req, AIGW_ERR_MISSING_FIELD, "user_id", "user_id is required.");
    return AIGW_OK;
}

static enum aigw_err apply_user_create(struct admin_change *ch, struct store *st)
{
    struct user_row existing;
    int found = store_user_get(st, ch->user.user_id, &existing);
    if (found < 0)
        return AIGW_ERR_STORE_UNAVAILABLE;
    if (found) {
        snprintf(ch->why, sizeof ch->why, "User %.200s exists already (change it with PATCH).",
                 ch->user.user_id);
        return AIGW_ERR_ALREADY_EXISTS;
    }
    return store_user_insert(st, &ch->user, now_ms()) < 0 ? AIGW_ERR_STORE_UNAVAILABLE : AIGW_OK;
}

/* The changed fields of the body, applied to the row as it is now. */
static enum aigw_err apply_user_update(struct admin_change *ch, struct store *st)
{
    struct request *req = ch->req;
    struct user_row u;
    int found = store_user_get(st, ch->target, &u);
    if (found < 0)
        return AIGW_ERR_STORE_UNAVAILABLE;
    if (!found) {
        snprintf(ch->why, sizeof ch->why, "No user %.200s (create it with POST).", ch->target);
        return AIGW_ERR_NOT_FOUND;
    }
    const char *id;
    /* Checked before the batch; here only applied onto the current row. */
    json_object *body = ch->changes;
    enum aigw_err saved = req->err;
    if (read_user_fields(req, body, 0, &u, &id) != AIGW_OK) {
        req->err = saved;
        return AIGW_ERR_INVALID_VALUE;
    }
    ch->user = u;
    /* New limits apply at once: the rate state measured against the old ones goes. */
    if (store_user_update(st, &u) < 0 || store_rate_reset(st, u.user_id) < 0)
        return AIGW_ERR_STORE_UNAVAILABLE;
    return AIGW_OK;
}

/* Answers with one user, read again after the change. */
static enum aigw_err send_user(struct request *req, const char *user_id, int status)
{
    struct store *st = db_reader(req->w->db);
    if (!st)
        return request_store_unavailable(req);
    struct user_row u;
    int found = store_user_get(st, user_id, &u);
    buf_reset(&req->out);
    int rc = found > 0 ? put_user(req, st, &u, &req->out) : -1;
    db_reader_done(req->w->db, st);
    if (rc < 0)
        return request_store_unavailable(req);
    send_out(req, status);
    return AIGW_OK;
}

static enum aigw_err api_user_write(struct request *req, int create)
{
    json_object *body = body_object(req);
    if (!body)
        return req->err;
    struct admin_change ch = {.req = req,
                              .action = create ? "user.create" : "user.update",
                              .changes = body,
                              .status = create ? 201 : 200,
                              .apply = create ? apply_user_create : apply_user_update};
    struct user_row *u = &ch.user;
    snprintf(u->roles, sizeof u->roles, "AI.User");
    u->requests_per_window = u->window_s = u->tokens_per_minute = u->token_budget = -1;
    const char *id;
    enum aigw_err e = read_user_fields(req, body, create, u, &id);
    char target[NAME_MAX_BYTES];
    if (e == AIGW_OK) {
        snprintf(target, sizeof target, "%s", id);
        snprintf(u->user_id, sizeof u->user_id, "%s", id);
        ch.target = target;
        e = run_change(&ch, EPOCH_AUTH);
    }
    json_object_put(body);
    return e == AIGW_OK ? send_user(req, target, ch.status) : e;
}

static enum aigw_err api_user_create(struct request *req, const char *rest)
{
    (void)rest;
    return api_user_write(req, 1);
}

static enum aigw_err api_user_update(struct request *req, const char *rest)
{
    (void)rest;
    return api_user_write(req, 0);
}

/* --- keys ----------------------------------------------------------------------- */

static void put_key(const struct key_row *k, void *arg)
{
    struct buf *o = arg;
    if (o->data[o->len - 1] == '}')
        buf_putc(o, ',');
    buf_puts(o, "{\"key_id\":");
    buf_put_json_string(o, k->key_id, strlen(k->key_id));
    buf_puts(o, ",\"user_id\":");
    buf_put_json_string(o, k->user_id, strlen(k->user_id));
    buf_puts(o, ",\"created\":");
    put_time(o, k->created_ms);
    buf_puts(o, ",\"expires\":");
    put_time(o, k->expires_ms);
    buf_puts(o, ",\"revoked\":");
    put_time(o, k->revoked_ms);
    buf_putc(o, '}');
}

static enum aigw_err api_keys_list(struct request *req, const char *rest)
{
    (void)rest;
    char user[NAME_MAX_BYTES];
    int has = query_param(req->query, "user", user, sizeof user);
    if (has < 0)
        return request_fail(req, AIGW_ERR_INVALID_VALUE, "user",
                            "user must be a user id of 1 to 256 printable characters.");
    struct store *st = db_reader(req->w->db);
    if (!st)
        return request_store_unavailable(req);
    struct buf *o = &req->out;
    buf_reset(o);
    buf_puts(o, "{\"keys\":[");
    int rc = store_key_each(st, has ? user : NULL, put_key, o);
    return send_list(req, st, rc);
}

static enum aigw_err apply_key_create(struct admin_change *ch, struct store *st)
{
    struct user_row u;
    int found = store_user_get(st, ch->target, &u);
    if (found < 0)
        return AIGW_ERR_STORE_UNAVAILABLE;
    if (!found) {
        snprintf(ch->why, sizeof ch->why, "No user %.200s (create the user first).", ch->target);
        return AIGW_ERR_NOT_FOUND;
    }
    if (auth_key_generate(ch->key, sizeof ch->key, ch->key_id, sizeof ch->key_id, ch->key_hash) < 0)
        return AIGW_ERR_INTERNAL;
    /* The key's id goes into the audit row; its text never does. */
    json_object_object_add(ch->changes, "key_id", json_object_new_string(ch->key_id));
    return store_key_insert(st, ch->key_id, ch->key_hash, u.user_id, now_ms(), ch->expires_ms) < 0
               ? AIGW_ERR_STORE_UNAVAILABLE
               : AIGW_OK;
}

static enum aigw_err api_key_create(struct request *req, const char *rest)
{
    (void)rest;
    json_object *body = body_object(req);
    if (!body)
        return req->err;
    struct admin_change ch = {
        .req = req, .action = "key.create", .status = 201, .apply = apply_key_create};
    enum aigw_err e = AIGW_OK;
    json_object_object_foreach(body, key, v)
    {
        if (strcmp(key, "user_id") == 0 && json_object_is_type(v, json_type_string) &&
            auth_printable(json_object_get_string(v), USER_ID_MAX)) {
            ch.target = json_object_get_string(v);
        } else if (strcmp(key, "expires_in") == 0 && v) {
            long long d = json_object_is_type(v, json_type_string)
                              ? admin_parse_duration(json_object_get_string(v))
                              : -1;
            if (d <= 0) {
                e = request_fail(req, AIGW_ERR_INVALID_VALUE, "expires_in",
                                 "expires_in must be a duration such as \"90d\", \"12h\" or "
                                 "\"30m\".");
                break;
            }
            ch.expires_ms = now_ms() + d * 1000;
        } else if (strcmp(key, "expires_in") != 0) {
            e = request_fail(req, AIGW_ERR_INVALID_VALUE, key,
                             strcmp(key, "user_id") == 0
                                 ? "user_id must be 1 to 256 printable characters."
                                 : "Unknown field (user_id, expires_in).");
            break;
        }
    }
    if (e == AIGW_OK && !ch.target)
        e = request_fail(req, AIGW_ERR_MISSING_FIELD, "user_id", "user_id is required.");
    ch.changes = json_object_new_object();
    if (e == AIGW_OK && ch.expires_ms)
        json_object_object_add(ch.changes, "expires_ms", json_object_new_int64(ch.expires_ms));
    if (e == AIGW_OK)
        e = run_change(&ch, EPOCH_AUTH);
    if (e == AIGW_OK) {
        struct buf *o = &req->out;
        buf_reset(o);
        buf_puts(o, "{\"key_id\":");
        buf_put_json_string(o, ch.key_id, strlen(ch.key_id));
        buf_puts(o, ",\"user_id\":");
        buf_put_json_string(o, ch.target, strlen(ch.target));
        buf_puts(o, ",\"key\":");
        buf_put_json_string(o, ch.key, strlen(ch.key));
        buf_puts(o, ",\"expires\":");
        put_time(o, ch.expires_ms);
        buf_putc(o, '}');
        send_out(req, 201);
        /* Shown once: no copy stays in this worker's memory. */
        buf_wipe(o);
    }
    memset(ch.key, 0, sizeof ch.key);
    json_object_put(ch.changes);
    json_object_put(body);
    return e;
}

static enum aigw_err apply_key_revoke(struct admin_change *ch, struct store *st)
{
    int r = store_key_revoke(st, ch->target, now_ms());
    if (r < 0)
        return AIGW_ERR_STORE_UNAVAILABLE;
    if (r == 0) {
        snprintf(ch->why, sizeof ch->why, "No active key %.64s.", ch->target);
        return AIGW_ERR_NOT_FOUND;
    }
    return AIGW_OK;
}

static enum aigw_err api_key_revoke(struct request *req, const char *rest)
{
    char id[64];
    if (router_percent_decode(rest, strlen(rest), 0, id, sizeof id) < 0 || strchr(id, '/'))
        return request_fail(req, AIGW_ERR_NOT_FOUND, "", "No such key id.");
    struct admin_change ch = {
        .req = req, .action = "key.revoke", .target = id, .status = 200, .apply = apply_key_revoke};
    enum aigw_err e = run_change(&ch, EPOCH_AUTH);
    if (e != AIGW_OK)
        return e;
    struct buf *o = &req->out;
    buf_reset(o);
    buf_puts(o, "{\"key_id\":");
    buf_put_json_string(o, id, strlen(id));
    buf_puts(o, ",\"revoked\":");
    put_time(o, now_ms());
    buf_putc(o, '}');
    send_out(req, 200);
    return AIGW_OK;
}

/* --- breakers --------------------------------------------------------------------- */

static enum aigw_err api_breakers(struct request *req, const char *rest)
{
    (void)rest;
    const struct cfg *cfg = req->w->cfg;
    struct store *st = db_reader(req->w->db);
    if (!st)
        return request_store_unavailable(req);
    struct buf *o = &req->out;
    buf_reset(o);
    buf_puts(o, "{\"backends\":[");
    int rc = 0;
    for (size_t i = 0; i < cfg->n_backends && rc == 0; i++) {
        struct breaker_row row;
        rc = store_breaker_get(st, cfg->backends[i].name, &row);
        buf_puts(o, i ? ",{\"name\":" : "{\"name\":");
        buf_put_json_string(o, cfg->backends[i].name, strlen(cfg->backends[i].name));
        buf_printf(o, ",\"priority\":%d,\"state\":\"%s\",\"failures\":%d,\"open_until\":",
                   cfg->backends[i].priority, store_breaker_state_name(row.state), row.failures);
        put_time(o, row.state != BREAKER_CLOSED ? row.open_until_ms : 0);
        buf_puts(o, ",\"last_error\":");
        put_string_or_null(o, row.last_error[0] ? row.last_error : NULL);
        buf_putc(o, '}');
    }
    return send_list(req, st, rc);
}

static enum aigw_err apply_breaker_reset(struct admin_change *ch, struct store *st)
{
    return breaker_reset(st, ch->target) < 0 ? AIGW_ERR_STORE_UNAVAILABLE : AIGW_OK;
}

/* rest is "{name}/reset". */
static enum aigw_err api_breaker_reset(struct request *req, const char *rest)
{
    const char *slash = strchr(rest, '/');
    char name[NAME_MAX_BYTES];
    if (!slash || strcmp(slash, "/reset") != 0)
        return request_fail(req, AIGW_ERR_NOT_FOUND, "",
                            "No endpoint at %s (POST /admin/api/breakers/NAME/reset).", req->path);
    size_t i = 0;
    const struct cfg *cfg = req->w->cfg;
    if (router_percent_decode(rest, (size_t)(slash - rest), 0, name, sizeof name) == 0)
        while (i < cfg->n_backends && strcmp(cfg->backends[i].name, name) != 0)
            i++;
    else
        i = cfg->n_backends;
    if (i == cfg->n_backends)
        return request_fail(req, AIGW_ERR_NOT_FOUND, "", "No backend of that name in %s.",
                            cfg->path);
    struct admin_change ch = {.req = req,
                              .action = "breaker.reset",
                              .target = cfg->backends[i].name,
                              .status = 200,
                              .apply = apply_breaker_reset};
    enum aigw_err e = run_change(&ch, EPOCH_BREAKERS);
    if (e != AIGW_OK)
        return e;
    struct buf *o = &req->out;
    buf_reset(o);
    buf_puts(o, "{\"name\":");
    buf_put_json_string(o, ch.target, strlen(ch.target));
    buf_puts(o, ",\"state\":\"closed\"}");
    send_out(req, 200);
    return AIGW_OK;
}

/* --- audit rows ------------------------------------------------------------------- */

static void put_audit_brief(const struct audit_brief *b, void *arg)
{
    struct buf *o = arg;
    if (o->data[o->len - 1] == '}')
        buf_putc(o, ',');
    buf_puts(o, "{\"request_id\":");
    put_string_or_null(o, b->request_id);
    buf_puts(o, ",\"time\":");
    put_time(o, b->ts_ms);
    buf_printf(o, ",\"ts_ms\":%lld,\"user_id\":", (long long)b->ts_ms);
    put_string_or_null(o, b->user_id);
    buf_puts(o, ",\"operation\":");
    put_string_or_null(o, b->operation);
    buf_puts(o, ",\"model\":");
    put_string_or_null(o, b->model);
    buf_puts(o, ",\"backend\":");
    put_string_or_null(o, b->backend);
    buf_puts(o, ",\"status\":");
    put_string_or_null(o, b->status);
    if (b->http_status)
        buf_printf(o, ",\"http_status\":%d", b->http_status);
    else
        buf_puts(o, ",\"http_status\":null");
    buf_printf(o, ",\"total_tokens\":%lld", (long long)b->total_tokens);
    if (b->latency_ms >= 0)
        buf_printf(o, ",\"latency_ms\":%.3f", b->latency_ms);
    else
        buf_puts(o, ",\"latency_ms\":null");
    buf_puts(o, ",\"error_code\":");
    put_string_or_null(o, b->error_code);
    buf_putc(o, '}');
}

static enum aigw_err api_audit(struct request *req, const char *rest)
{
    (void)rest;
    long long since, limit;
    enum aigw_err e = query_seconds(req, "since", 86400, 100LL * 365 * 86400, &since);
    if (e == AIGW_OK)
        e = query_seconds(req, "limit", 50, AUDIT_LIMIT_MAX, &limit);
    if (e == AIGW_OK && limit == 0)
        e = request_fail(req, AIGW_ERR_INVALID_VALUE, "limit",
                         "limit must be a whole number from 1 to %d.", AUDIT_LIMIT_MAX);
    if (e != AIGW_OK)
        return e;
    char user[NAME_MAX_BYTES], rid[64];
    int has_user = query_param(req->query, "user", user, sizeof user);
    int has_rid = query_param(req->query, "request_id", rid, sizeof rid);
    if (has_user < 0 || has_rid < 0)
        return request_fail(req, AIGW_ERR_INVALID_VALUE, has_user < 0 ? "user" : "request_id",
                            "%s must be 1 to %d printable characters.",
                            has_user < 0 ? "user" : "request_id", has_user < 0 ? 256 : 63);
    struct store *st = db_reader(req->w->db);
    if (!st)
        return request_store_unavailable(req);
    struct buf *o = &req->out;
    buf_reset(o);
    buf_puts(o, "{\"rows\":[");
    int rc = store_audit_recent(st, since ? now_ms() - since * 1000 : 0, has_user ? user : NULL,
                                has_rid ? rid : NULL, (int)limit, put_audit_brief, o);
    return send_list(req, st, rc);
}

/* --- routing ---------------------------------------------------------------------- */

static const struct endpoint {
    const char *method;
    const char *path; /* after /admin/api/; a trailing '/' takes the rest as an argument */
    enum aigw_err (*handle)(struct request *req, const char *rest);
} endpoints[] = {
    {"GET", "me", api_me},
    {"GET", "reports/", api_report},
    {"GET", "users", api_users_list},
    {"POST", "users", api_user_create},
    {"PATCH", "users", api_user_update},
    {"GET", "keys", api_keys_list},
    {"POST", "keys", api_key_create},
    {"DELETE", "keys/", api_key_revoke},
    {"GET", "breakers", api_breakers},
    {"POST", "breakers/", api_breaker_reset},
    {"GET", "audit", api_audit},
};

/* The endpoint for method and sub (the path after the prefix); NULL with
 * the error set when there is none. *rest gets the argument part. */
static const struct endpoint *find_endpoint(struct request *req, const char *sub, const char **rest)
{
    int path_known = 0;
    const char *method = strcmp(req->method, "HEAD") == 0 ? "GET" : req->method;
    for (size_t i = 0; i < sizeof endpoints / sizeof endpoints[0]; i++) {
        const struct endpoint *ep = &endpoints[i];
        size_t n = strlen(ep->path);
        int prefix = ep->path[n - 1] == '/';
        int match = prefix ? strncmp(sub, ep->path, n) == 0 && sub[n] : strcmp(sub, ep->path) == 0;
        if (!match)
            continue;
        path_known = 1;
        if (strcmp(method, ep->method) == 0) {
            *rest = sub + (prefix ? n : strlen(sub));
            return ep;
        }
    }
    if (path_known)
        request_fail(req, AIGW_ERR_METHOD_NOT_ALLOWED, "", "Method %s is not allowed on %s.",
                     req->method, req->path);
    else
        request_fail(req, AIGW_ERR_NOT_FOUND, "",
                     "No admin endpoint at %s (see docs/ADMIN_API.md).", req->path);
    return NULL;
}

void admin_api_handle(struct request *req)
{
    req->extra_headers = ADMIN_SECURITY_HEADERS;
    const char *sub = req->path + (sizeof API_PREFIX - 1);
    const char *rest = NULL;
    /* Credentials first: an unauthenticated caller learns nothing, not even
     * which paths exist. */
    if (authorize_admin(req) != AIGW_OK)
        return;
    const struct endpoint *ep = find_endpoint(req, sub, &rest);
    if (ep)
        ep->handle(req, rest);
}

/*
 * admin.c - the operator's command line (see admin.h).
 *
 * Every command has --help, prints one clear line on failure and exits
 * non-zero. Commands work on the same database the workers use, in short
 * transactions, so they are safe to run while the gateway serves traffic.
 */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin_api.h"
#include "auth.h"
#include "breaker.h"
#include "config.h"
#include "epoch.h"
#include "health.h"
#include "limits.h"
#include "request.h"
#include "secrets.h"
#include "store.h"
#include "worker.h"

static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

static struct cfg *load_config(const char *path)
{
    struct buf problems = {0};
    const char *p = cfg_default_path(path);
    struct cfg *cfg = cfg_load(p, &problems, NULL);
    if (!cfg)
        fprintf(stderr, "aigw: invalid configuration:\n%s", buf_cstr(&problems));
    buf_free(&problems);
    return cfg;
}

static struct store *open_store(struct cfg *cfg)
{
    struct buf err = {0};
    struct store *s = store_open(cfg, &err);
    if (!s)
        fprintf(stderr, "aigw: %s\n", buf_cstr(&err));
    buf_free(&err);
    return s;
}

/* What most commands need: the configuration and the database. */
struct admin_ctx {
    struct cfg *cfg;
    struct store *s;
};

/* Loads the configuration and opens the database; 0, or -1 with the reason printed. */
static int admin_open(const char *config_path, struct admin_ctx *ctx)
{
    ctx->s = NULL;
    ctx->cfg = load_config(config_path);
    if (!ctx->cfg)
        return -1;
    ctx->s = open_store(ctx->cfg);
    if (!ctx->s) {
        cfg_free(ctx->cfg);
        ctx->cfg = NULL;
        return -1;
    }
    return 0;
}

/* Closes the database; running workers then read users, keys and breakers
 * again (a command may have changed any of them). */
static void admin_close(struct admin_ctx *ctx)
{
    store_close(ctx->s);
    if (ctx->cfg && ctx->s)
        epochs_bump_all(ctx->cfg->database.local_path);
    cfg_free(ctx->cfg);
}

long long admin_parse_duration(const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0)
        return -1;
    long long mult = 1;
    if (*end == 'd')
        mult = 86400;
    else if (*end == 'h')
        mult = 3600;
    else if (*end == 'm')
        mult = 60;
    else if (*end == 's' || *end == '\0')
        mult = 1;
    else
        return -1;
    if (*end && end[1] != '\0')
        return -1;
    if (v > (long long)1e12 / mult)
        return -1;
    return v * mult;
}

int admin_check_config(const char *config_path, int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        printf("usage: aigw [--config PATH] check-config\n\n"
               "Checks the configuration file and names every problem with its JSON path.\n"
               "Also resolves every secret reference (without printing values).\n");
        return 0;
    }
    const char *path = cfg_default_path(config_path);
    struct buf problems = {0}, warnings = {0};
    struct cfg *cfg = cfg_load(path, &problems, &warnings);
    if (warnings.len)
        fprintf(stderr, "%s", buf_cstr(&warnings));
    if (!cfg) {
        fprintf(stderr, "%s", buf_cstr(&problems));
        buf_free(&problems);
        buf_free(&warnings);
        return 1;
    }
    /* Every secret reference must resolve (values are never printed). */
    FILE *quiet = fopen("/dev/null", "w");
    int bad = secrets_check_all(cfg, quiet ? quiet : stderr) > 0;
    if (quiet)
        fclose(quiet);
    if (bad)
        fprintf(stderr, "%s: some secret references do not resolve; see 'aigw secrets check'\n",
                path);
    if (!bad)
        printf("%s: OK (%zu backend(s), auth %s)\n", path, cfg->n_backends,
               cfg->auth.enabled ? "enabled" : "DISABLED");
    cfg_free(cfg);
    buf_free(&problems);
    buf_free(&warnings);
    return bad;
}

/* The configured database as an operator names it (a URL holds no password). */
static const char *database_name(const struct cfg *cfg)
{
    return cfg->database.url ? cfg->database.url : cfg->database.path;
}

static const char db_usage[] =
    "usage: aigw [--config PATH] db migrate\n"
    "       aigw [--config PATH] db copy --from SQLITE_PATH\n\n"
    "migrate  creates the database if needed and applies pending schema migrations.\n"
    "copy     copies every row of the SQLite database at SQLITE_PATH (users, keys,\n"
    "         limits and budgets, breakers, metrics, rollups, the audit table) into\n"
    "         the configured database, which must be migrated and empty: the move to\n"
    "         PostgreSQL. One transaction: on any error nothing is copied.\n";

static void print_copied(const char *table, long rows, void *arg)
{
    (void)arg;
    printf("%-16s %ld row(s)\n", table, rows);
}

/* aigw db copy --from PATH: the configured database is the destination. */
static int db_copy(const char *config_path, int argc, char **argv)
{
    const char *from = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
            from = argv[++i];
        else {
            fprintf(stderr, "aigw: db copy: unexpected argument %s\n%s", argv[i], db_usage);
            return 2;
        }
    }
    if (!from) {
        fprintf(stderr, "aigw: db copy needs --from SQLITE_PATH\n%s", db_usage);
        return 2;
    }
    if (access(from, R_OK) != 0) {
        fprintf(stderr, "aigw: db copy: cannot read %s: %s\n", from, strerror(errno));
        return 1;
    }
    struct admin_ctx ctx;
    if (admin_open(config_path, &ctx) < 0)
        return 1;
    /* The source as the configuration would name it, opened without
     * migrating: it is only read. */
    struct cfg src_cfg = *ctx.cfg;
    src_cfg.database.url = NULL;
    src_cfg.database.path = (char *)from;
    struct buf err = {0};
    struct store *src = store_open_connection(&src_cfg, &err);
    int rc = 1;
    if (!src)
        fprintf(stderr, "aigw: db copy: %s\n", buf_cstr(&err));
    else if (store_copy(src, ctx.s, print_copied, NULL, &err) < 0)
        fprintf(stderr, "aigw: db copy: %s; nothing was copied\n", buf_cstr(&err));
    else {
        printf("copied %s into %s\n", from, database_name(ctx.cfg));
        rc = 0;
    }
    store_close(src);
    buf_free(&err);
    admin_close(&ctx);
    return rc;
}

int admin_db(const char *config_path, int argc, char **argv)
{
    if (argc >= 2 && !wants_help(argc, argv) && strcmp(argv[1], "copy") == 0)
        return db_copy(config_path, argc, argv);
    if (argc < 2 || wants_help(argc, argv) || strcmp(argv[1], "migrate") != 0) {
        fputs(db_usage, argc < 2 || !wants_help(argc, argv) ? stderr : stdout);
        return argc < 2 || !wants_help(argc, argv);
    }
    struct admin_ctx ctx;
    if (admin_open(config_path, &ctx) < 0) /* store_open applies the migrations */
        return 1;
    printf("database %s is up to date\n", database_name(ctx.cfg));
    admin_close(&ctx);
    return 0;
}

/* --- users ----------------------------------------------------------------- */

static const char user_usage[] =
    "usage: aigw [--config PATH] user add USER [options]\n"
    "       aigw [--config PATH] user set USER [options] [--enable]\n"
    "       aigw [--config PATH] user disable USER\n"
    "       aigw [--config PATH] user list\n\n"
    "options:\n"
    "  --roles R1,R2        roles (default AI.User)\n"
    "  --requests N         requests per window (default: limits.requests_per_window)\n"
    "  --window SECONDS     the rate window (default: limits.window_s)\n"
    "  --tpm N              tokens per minute (0 = none)\n"
    "  --budget N           token budget per period\n"
    "  --period P           day, month or total\n"
    "  use 'default' as a value to fall back to the configuration's default\n";

static int parse_limit(const char *opt, const char *v, int64_t *out)
{
    if (strcmp(v, "default") == 0) {
        *out = -1;
        return 0;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < 0) {
        fprintf(stderr, "aigw: %s needs a whole number >= 0 or 'default' (got '%s')\n", opt, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int parse_user_options(int argc, char **argv, int start, struct user_row *u, int *enable)
{
    for (int i = start; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--enable") == 0 && enable) {
            *enable = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "aigw: %s needs a value (see aigw user --help)\n", o);
            return -1;
        }
        const char *v = argv[++i];
        if (strcmp(o, "--roles") == 0) {
            if (strlen(v) >= sizeof u->roles) {
                fprintf(stderr, "aigw: --roles is too long\n");
                return -1;
            }
            snprintf(u->roles, sizeof u->roles, "%s", v);
        } else if (strcmp(o, "--requests") == 0) {
            if (parse_limit(o, v, &u->requests_per_window) < 0)
                return -1;
        } else if (strcmp(o, "--window") == 0) {
            if (parse_limit(o, v, &u->window_s) < 0)
                return -1;
        } else if (strcmp(o, "--tpm") == 0) {
            if (parse_limit(o, v, &u->tokens_per_minute) < 0)
                return -1;
        } else if (strcmp(o, "--budget") == 0) {
            if (parse_limit(o, v, &u->token_budget) < 0)
                return -1;
        } else if (strcmp(o, "--period") == 0) {
            if (strcmp(v, "default") == 0)
                u->budget_period[0] = '\0';
            else if (strcmp(v, "day") && strcmp(v, "month") && strcmp(v, "total")) {
                fprintf(stderr, "aigw: --period must be day, month, total or default\n");
                return -1;
            } else
                snprintf(u->budget_period, sizeof u->budget_period, "%s", v);
        } else {
            fprintf(stderr, "aigw: unknown option %s (see aigw user --help)\n", o);
            return -1;
        }
    }
    return 0;
}

static void print_limit(int64_t v)
{
    if (v < 0)
        printf("\tdefault");
    else
        printf("\t%lld", (long long)v);
}

static void print_user(const struct user_row *u, void *arg)
{
    (void)arg;
    printf("%s\t%s", u->user_id, u->roles);
    print_limit(u->requests_per_window);
    print_limit(u->window_s);
    print_limit(u->tokens_per_minute);
    print_limit(u->token_budget);
    printf("\t%s\t%s\n", u->budget_period[0] ? u->budget_period : "default",
           u->disabled ? "disabled" : "enabled");
}

int admin_user(const char *config_path, int argc, char **argv)
{
    if (argc < 2 || wants_help(argc, argv)) {
        fputs(user_usage, argc < 2 ? stderr : stdout);
        return argc < 2;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "list") && strcmp(sub, "add") && strcmp(sub, "set") && strcmp(sub, "disable")) {
        fprintf(stderr, "aigw: unknown user command '%s' (add, set, disable, list)\n", sub);
        return 1;
    }
    if (strcmp(sub, "list") != 0 && (argc < 3 || !auth_printable(argv[2], USER_ID_MAX))) {
        fprintf(stderr, "aigw: user %s needs a USER of 1 to 256 printable characters\n", sub);
        return 1;
    }
    struct admin_ctx ctx;
    if (admin_open(config_path, &ctx) < 0)
        return 1;
    struct store *s = ctx.s;
    int rc = 1;
    if (strcmp(sub, "list") == 0) {
        printf("user\troles\trequests\twindow_s\ttpm\tbudget\tperiod\tstate\n");
        rc = store_user_each(s, print_user, NULL) < 0;
        goto out;
    }
    struct user_row u;
    int found = store_user_get(s, argv[2], &u);
    if (found < 0) {
        fprintf(stderr, "aigw: database error: %s\n", store_errmsg(s));
        goto out;
    }
    if (strcmp(sub, "add") == 0) {
        if (found) {
            fprintf(stderr, "aigw: user %s already exists (use 'aigw user set')\n", argv[2]);
            goto out;
        }
        memset(&u, 0, sizeof u);
        snprintf(u.user_id, sizeof u.user_id, "%s", argv[2]);
        snprintf(u.roles, sizeof u.roles, "AI.User");
        u.requests_per_window = u.window_s = u.tokens_per_minute = u.token_budget = -1;
        if (parse_user_options(argc, argv, 3, &u, NULL) < 0)
            goto out;
        if (store_user_insert(s, &u, now_ms()) < 0) {
            fprintf(stderr, "aigw: cannot add user: %s\n", store_errmsg(s));
            goto out;
        }
        printf("user %s added\n", u.user_id);
        rc = 0;
        goto out;
    }
    if (!found) {
        fprintf(stderr, "aigw: no user %s (add it with 'aigw user add')\n", argv[2]);
        goto out;
    }
    int enable = 0;
    if (strcmp(sub, "disable") == 0) {
        u.disabled = 1;
    } else {
        if (parse_user_options(argc, argv, 3, &u, &enable) < 0)
            goto out;
        if (enable)
            u.disabled = 0;
    }
    /* New limits apply at once: the rate state measured against the old ones goes. */
    if (store_user_update(s, &u) < 0 || store_rate_reset(s, u.user_id) < 0) {
        fprintf(stderr, "aigw: cannot update user: %s\n", store_errmsg(s));
        goto out;
    }
    printf("user %s %s\n", u.user_id, strcmp(sub, "disable") == 0 ? "disabled" : "updated");
    rc = 0;
out:
    admin_close(&ctx);
    return rc;
}

/* --- keys ------------------------------------------------------------------ */

static void format_time(int64_t ms, char *out, size_t n)
{
    if (!ms) {
        snprintf(out, n, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void print_key(const struct key_row *k, void *arg)
{
    (void)arg;
    char created[32], expires[32], revoked[32];
    format_time(k->created_ms, created, sizeof created);
    format_time(k->expires_ms, expires, sizeof expires);
    format_time(k->revoked_ms, revoked, sizeof revoked);
    printf("%s\t%s\t%s\t%s\t%s\n", k->key_id, k->user_id, created, expires, revoked);
}

int admin_key(const char *config_path, int argc, char **argv)
{
    if (argc < 2 || wants_help(argc, argv)) {
        fputs("usage: aigw [--config PATH] key create USER [--expires DURATION]\n"
              "       aigw [--config PATH] key list [USER]\n"
              "       aigw [--config PATH] key revoke KEY_ID\n\n"
              "A created key is printed once; only its SHA-256 is stored.\n"
              "DURATION is like 90d, 24h, 30m.\n",
              argc < 2 ? stderr : stdout);
        return argc < 2;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "create") && strcmp(sub, "list") && strcmp(sub, "revoke")) {
        fprintf(stderr, "aigw: unknown key command '%s' (create, list, revoke)\n", sub);
        return 1;
    }
    if ((strcmp(sub, "create") == 0 || strcmp(sub, "revoke") == 0) && argc < 3) {
        fprintf(stderr, "aigw: key %s needs %s\n", sub,
                strcmp(sub, "create") == 0 ? "USER" : "KEY_ID");
        return 1;
    }
    int64_t expires = 0;
    if (strcmp(sub, "create") == 0) {
        for (int i = 3; i < argc; i++) {
            if (strcmp(argv[i], "--expires") == 0 && i + 1 < argc) {
                long long d = admin_parse_duration(argv[++i]);
                if (d <= 0) {
                    fprintf(stderr, "aigw: --expires needs a duration like 90d or 12h\n");
                    return 1;
                }
                expires = now_ms() + d * 1000;
            } else {
                fprintf(stderr, "aigw: unknown option %s (see aigw key --help)\n", argv[i]);
                return 1;
            }
        }
    }
    struct admin_ctx ctx;
    if (admin_open(config_path, &ctx) < 0)
        return 1;
    struct store *s = ctx.s;
    int rc = 1;
    if (strcmp(sub, "list") == 0) {
        printf("key_id\tuser\tcreated\texpires\trevoked\n");
        rc = store_key_each(s, argc > 2 ? argv[2] : NULL, print_key, NULL) < 0;
    } else if (strcmp(sub, "revoke") == 0) {
        int r = store_key_revoke(s, argv[2], now_ms());
        if (r < 0)
            fprintf(stderr, "aigw: database error: %s\n", store_errmsg(s));
        else if (r == 0)
            fprintf(stderr, "aigw: no active key %s\n", argv[2]);
        else {
            printf("key %s revoked\n", argv[2]);
            rc = 0;
        }
    } else {
        struct user_row u;
        int found = store_user_get(s, argv[2], &u);
        if (found <= 0) {
            fprintf(stderr, "aigw: no user %s (add it first with 'aigw user add %s')\n", argv[2],
                    argv[2]);
            goto out;
        }
        char key[96], key_id[16];
        unsigned char hash[32];
        if (auth_key_generate(key, sizeof key, key_id, sizeof key_id, hash) < 0 ||
            store_key_insert(s, key_id, hash, u.user_id, now_ms(), expires) < 0) {
            fprintf(stderr, "aigw: cannot create key: %s\n", store_errmsg(s));
            goto out;
        }
        printf("%s\n", key);
        fprintf(stderr, "key %s created for %s; it is shown only this once\n", key_id, u.user_id);
        memset(key, 0, sizeof key);
        rc = 0;
    }
out:
    admin_close(&ctx);
    return rc;
}

/* --- backends -------------------------------------------------------------- */

int admin_backend(const char *config_path, int argc, char **argv)
{
    if (argc < 2 || wants_help(argc, argv) ||
        (strcmp(argv[1], "status") && strcmp(argv[1], "reset") && strcmp(argv[1], "probe"))) {
        fputs("usage: aigw [--config PATH] backend status\n"
              "       aigw [--config PATH] backend reset NAME\n"
              "       aigw [--config PATH] backend probe [--all]\n\n"
              "status shows each backend's circuit breaker; reset closes one; probe asks\n"
              "each open backend for its model list and closes the breakers of those that\n"
              "answer (run it from cron where the web server spawns the workers).\n",
              wants_help(argc, argv) ? stdout : stderr);
        return !wants_help(argc, argv);
    }
    if (strcmp(argv[1], "probe") == 0) {
        struct cfg *cfg = load_config(config_path);
        if (!cfg)
            return 1;
        struct worker w;
        struct buf err = {0};
        int rc = 1;
        if (worker_init(&w, cfg, 1, &err) < 0) {
            fprintf(stderr, "aigw: %s\n", buf_cstr(&err));
        } else {
            int all = argc > 2 && strcmp(argv[2], "--all") == 0;
            int n = health_probe_backends(&w, all, stdout);
            if (n >= 0) {
                printf("closed %d breaker(s)\n", n);
                rc = 0;
            }
            worker_cleanup(&w);
        }
        buf_free(&err);
        cfg_free(cfg);
        return rc;
    }
    struct admin_ctx ctx;
    if (admin_open(config_path, &ctx) < 0)
        return 1;
    const struct cfg *cfg = ctx.cfg;
    struct store *s = ctx.s;
    int rc = 1;
    if (strcmp(argv[1], "status") == 0) {
        printf("backend\tpriority\tstate\tfailures\topen_until\tlast_error\n");
        for (size_t i = 0; i < cfg->n_backends; i++) {
            struct breaker_row row;
            if (store_breaker_get(s, cfg->backends[i].name, &row) < 0)
                goto out;
            char until[32];
            format_time(row.state != BREAKER_CLOSED ? row.open_until_ms : 0, until, sizeof until);
            printf("%s\t%d\t%s\t%d\t%s\t%s\n", cfg->backends[i].name, cfg->backends[i].priority,
                   store_breaker_state_name(row.state), row.failures, until,
                   row.last_error[0] ? row.last_error : "-");
        }
        rc = 0;
        goto out;
    }
    if (argc < 3) {
        fprintf(stderr, "aigw: backend reset needs NAME\n");
        goto out;
    }
    size_t i = 0;
    while (i < cfg->n_backends && strcmp(cfg->backends[i].name, argv[2]) != 0)
        i++;
    if (i == cfg->n_backends) {
        fprintf(stderr, "aigw: no backend named %s in %s\n", argv[2], cfg->path);
        goto out;
    }
    if (breaker_reset(s, argv[2]) < 0) {
        fprintf(stderr, "aigw: database error: %s\n", store_errmsg(s));
        goto out;
    }
    printf("backend %s reset (closed)\n", argv[2]);
    rc = 0;
out:
    admin_close(&ctx);
    return rc;
}

/* --- audit ----------------------------------------------------------------- */

int admin_audit(const char *config_path, int argc, char **argv)
{
    if (argc < 2 || wants_help(argc, argv) ||
        (strcmp(argv[1], "prune") && strcmp(argv[1], "sweep"))) {
        fputs(
            "usage: aigw [--config PATH] audit prune --older-than DURATION\n"
            "       aigw [--config PATH] audit sweep [--older-than DURATION]\n\n"
            "prune deletes completed audit rows older than DURATION (e.g. 90d) in small batches.\n"
            "sweep marks pending rows of requests whose worker died 'abandoned' and charges\n"
            "their reserved tokens to the budget, since a backend may have billed the call\n"
            "(default: older than the request deadline).\n",
            wants_help(argc, argv) ? stdout : stderr);
        return !wants_help(argc, argv);
    }
    long long older = -1;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--older-than") == 0 && i + 1 < argc)
            older = admin_parse_duration(argv[++i]);
        else {
            fprintf(stderr, "aigw: unknown option %s (see aigw audit --help)\n", argv[i]);
            return 1;
        }
    }
    int prune = strcmp(argv[1], "prune") == 0;
    if (prune && older < 0) {
        fprintf(stderr, "aigw: audit prune needs --older-than DURATION (e.g. 90d)\n");
        return 1;
    }
    struct cfg *cfg = load_config(config_path);
    if (!cfg)
        return 1;
    struct store *st = open_store(cfg);
    int rc = 1;
    if (!st)
        goto out;
    if (prune) {
        long total = 0;
        int n;
        do {
            /* Small batches, each its own transaction, so workers never wait long. */
            n = limits_prune_audit(st, older * 1000, 1000);
            if (n < 0) {
                fprintf(stderr, "aigw: database error: %s\n", store_errmsg(st));
                goto out;
            }
            total += n;
        } while (n == 1000);
        printf("deleted %ld audit row(s)\n", total);
        rc = 0;
    } else {
        int64_t age = older >= 0 ? older * 1000 : (int64_t)(cfg->retry.deadline_s * 1000) + 60000;
        long total = 0;
        int n;
        while ((n = limits_sweep_abandoned(st, age)) > 0)
            total += n;
        if (n < 0) {
            fprintf(stderr, "aigw: database error: %s\n", store_errmsg(st));
            goto out;
        }
        printf("marked %ld request(s) abandoned\n", total);
        rc = 0;
    }
out:
    store_close(st);
    cfg_free(cfg);
    return rc;
}

/* --- reports ----------------------------------------------------------------- */

enum report_format { FORMAT_TABLE, FORMAT_CSV, FORMAT_JSON };

struct report_out {
    enum report_format format;
    int rows;
};

static void csv_field(const char *v)
{
    if (!v)
        return;
    if (!strpbrk(v, ",\"\n")) {
        fputs(v, stdout);
        return;
    }
    putchar('"');
    for (const char *p = v; *p; p++) {
        if (*p == '"')
            putchar('"');
        putchar(*p);
    }
    putchar('"');
}

static void json_field(const char *v)
{
    struct buf b = {0};
    admin_json_report_value(&b, v);
    fputs(buf_cstr(&b), stdout);
    buf_free(&b);
}

static void report_row(int ncol, const char *const *names, const char *const *values, void *arg)
{
    struct report_out *o = arg;
    if (o->rows == 0 && o->format != FORMAT_JSON) {
        for (int i = 0; i < ncol; i++) {
            fputs(i ? (o->format == FORMAT_CSV ? "," : "\t") : "", stdout);
            fputs(names[i], stdout);
        }
        putchar('\n');
    }
    if (o->format == FORMAT_JSON) {
        fputs(o->rows ? ",\n  {" : "[\n  {", stdout);
        for (int i = 0; i < ncol; i++) {
            printf("%s\"%s\": ", i ? ", " : "", names[i]);
            json_field(values[i]);
        }
        putchar('}');
    } else {
        for (int i = 0; i < ncol; i++) {
            fputs(i ? (o->format == FORMAT_CSV ? "," : "\t") : "", stdout);
            if (o->format == FORMAT_CSV)
                csv_field(values[i]);
            else
                fputs(values[i] ? values[i] : "-", stdout);
        }
        putchar('\n');
    }
    o->rows++;
}

int admin_report(const char *config_path, int argc, char **argv)
{
    static const char usage[] =
        "usage: aigw [--config PATH] report REPORT [--since DURATION] [--format table|csv|json]\n\n"
        "reports (views in sql/reports.sql, also queryable with sqlite3):\n"
        "  usage      requests and tokens per user per day\n"
        "  budget     spend against budget per user and period\n"
        "  errors     error rate per backend per hour\n"
        "  latency    p50/p95/p99 latency per backend per hour\n"
        "  failovers  requests that needed more than one attempt, from where to where\n"
        "  refusals   the most frequent reasons requests were refused\n"
        "  traffic    requests and tokens per hour, all users together\n"
        "--since defaults to 24h (e.g. 7d, 90m; 0 for everything).\n";
    if (argc < 2 || wants_help(argc, argv)) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2;
    }
    const char *name = argv[1];
    long long since = 86400;
    struct report_out o = {FORMAT_TABLE, 0};
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
            since = admin_parse_duration(argv[++i]);
            if (since < 0) {
                fprintf(stderr, "aigw: --since needs a duration like 24h, 7d or 0\n");
                return 1;
            }
        } else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc) {
            const char *f = argv[++i];
            if (strcmp(f, "table") == 0)
                o.format = FORMAT_TABLE;
            else if (strcmp(f, "csv") == 0)
                o.format = FORMAT_CSV;
            else if (strcmp(f, "json") == 0)
                o.format = FORMAT_JSON;
            else {
                fprintf(stderr, "aigw: --format must be table, csv or json\n");
                return 1;
            }
        } else {
            fprintf(stderr, "aigw: unknown option %s (see aigw report --help)\n", argv[i]);
            return 1;
        }
    }
    struct admin_ctx ctx;
    if (admin_open(config_path, &ctx) < 0)
        return 1;
    int rc = 1;
    int64_t since_ms = since == 0 ? 0 : now_ms() - since * 1000;
    int r = store_report(ctx.s, name, since_ms, report_row, &o);
    if (r == -2)
        fprintf(stderr,
                "aigw: unknown report '%s' (usage, budget, errors, latency, failovers, refusals, "
                "traffic)\n",
                name);
    else if (r < 0)
        fprintf(stderr, "aigw: database error: %s\n", store_errmsg(ctx.s));
    else {
        if (o.format == FORMAT_JSON)
            puts(o.rows ? "\n]" : "[]");
        rc = 0;
    }
    admin_close(&ctx);
    return rc;
}

int admin_secrets(const char *config_path, int argc, char **argv)
{
    if (argc < 2 || wants_help(argc, argv) || strcmp(argv[1], "check") != 0) {
        fputs("usage: aigw [--config PATH] secrets check\n\n"
              "Resolves every secret reference in the configuration (env:, file:, keyvault:)\n"
              "and prints, for each, its JSON path, the reference and ok or the error.\n"
              "Values are never printed.\n",
              wants_help(argc, argv) ? stdout : stderr);
        return !wants_help(argc, argv);
    }
    struct cfg *cfg = load_config(config_path);
    if (!cfg)
        return 1;
    int failed = secrets_check_all(cfg, stdout);
    cfg_free(cfg);
    return failed ? 1 : 0;
}

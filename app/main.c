/*
 * main.c - the aigw command: FastCGI worker by default, or an operator command.
 *
 * Started by a web server with a listening socket on fd 0 (lighttpd's
 * bin-path, Apache's mod_fcgid), aigw is a worker. `aigw serve` runs its own
 * pre-forking master. Everything else is an operator command (admin.c).
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "log.h"
#include "master.h"
#include "store.h"
#include "worker.h"

static const char usage[] =
    "usage: aigw [--config PATH] [COMMAND] [ARGS]\n\n"
    "With no command and a FastCGI socket on standard input, aigw serves requests\n"
    "(as started by lighttpd's bin-path or Apache's mod_fcgid).\n\n"
    "commands:\n"
    "  serve --listen ADDR --workers N   pre-forking FastCGI server (for nginx)\n"
    "  check-config                      validate the configuration\n"
    "  db migrate                        create or upgrade the database\n"
    "  user add|set|list|disable         manage users, roles, limits and budgets\n"
    "  key create|list|revoke            manage gateway API keys\n"
    "  backend status|reset              circuit breakers of the backends\n"
    "  audit prune|sweep                 delete old audit rows; release abandoned requests\n"
    "  report usage|budget|errors|latency|failovers|refusals   reports over the audit log\n"
    "  secrets check                     resolve every secret reference (values never shown)\n\n"
    "The configuration is --config PATH, else $AIGW_CONFIG, else /etc/aigw/aigw.json.\n"
    "Each command takes --help.\n";

/* 1 when fd 0 is a listening socket (the web server's FastCGI convention). */
static int stdin_is_listen_socket(void)
{
    int type;
    socklen_t len = sizeof type;
    if (getsockopt(0, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return 0;
    int acc = 0;
    len = sizeof acc;
    return getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == 0 && acc;
}

static int run_fastcgi_worker(const char *config_path)
{
    struct buf problems = {0};
    const char *path = cfg_default_path(config_path);
    struct cfg *cfg = cfg_load(path, &problems, NULL);
    if (!cfg) {
        /* One line per problem into the web server's error log. */
        fprintf(stderr, "aigw: cannot start, invalid configuration:\n%s", buf_cstr(&problems));
        buf_free(&problems);
        return 1;
    }
    buf_free(&problems);
    worker_block_stop_signals();
    struct worker w;
    struct buf err = {0};
    if (worker_init(&w, cfg, 0, &err) < 0) {
        log_error("cannot start: %s", buf_cstr(&err));
        buf_free(&err);
        cfg_free(cfg);
        return 1;
    }
    buf_free(&err);
    const char *max = getenv("AIGW_MAX_REQUESTS");
    int rc = worker_run(&w, 0, max ? strtoul(max, NULL, 10) : 0);
    worker_cleanup(&w);
    cfg_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[i + 1];
            i += 2;
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_path = argv[i] + 9;
            i++;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("aigw %s\n", PACKAGE_VERSION);
            return 0;
        } else {
            fprintf(stderr, "aigw: unknown option %s (see aigw --help)\n", argv[i]);
            return 2;
        }
    }
    if (getenv("AIGW_DEBUG"))
        log_set_level(LOG_DEBUG);
    store_global_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc;
    if (i >= argc) {
        if (!stdin_is_listen_socket()) {
            fputs(usage, stderr);
            fputs("\naigw: no command given and standard input is not a FastCGI socket\n", stderr);
            rc = 2;
        } else {
            rc = run_fastcgi_worker(config_path);
        }
    } else {
        const char *cmd = argv[i];
        int n = argc - i;
        char **args = argv + i;
        if (strcmp(cmd, "serve") == 0)
            rc = master_serve(config_path, n, args);
        else if (strcmp(cmd, "check-config") == 0)
            rc = admin_check_config(config_path, n, args);
        else if (strcmp(cmd, "db") == 0)
            rc = admin_db(config_path, n, args);
        else if (strcmp(cmd, "user") == 0)
            rc = admin_user(config_path, n, args);
        else if (strcmp(cmd, "key") == 0)
            rc = admin_key(config_path, n, args);
        else if (strcmp(cmd, "backend") == 0)
            rc = admin_backend(config_path, n, args);
        else if (strcmp(cmd, "audit") == 0)
            rc = admin_audit(config_path, n, args);
        else if (strcmp(cmd, "report") == 0)
            rc = admin_report(config_path, n, args);
        else if (strcmp(cmd, "secrets") == 0)
            rc = admin_secrets(config_path, n, args);
        else if (strcmp(cmd, "help") == 0) {
            fputs(usage, stdout);
            rc = 0;
        } else {
            fprintf(stderr, "aigw: unknown command '%s' (see aigw --help)\n", cmd);
            rc = 2;
        }
    }
    curl_global_cleanup();
    return rc;
}

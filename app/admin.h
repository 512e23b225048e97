/*
 * admin.h - the operator's commands: check-config, db, user, key, backend, audit.
 */
#ifndef AIGW_ADMIN_H
#define AIGW_ADMIN_H

/* Each returns the process exit status; argv[0] is the command's name. */
int admin_check_config(const char *config_path, int argc, char **argv);
int admin_db(const char *config_path, int argc, char **argv);
int admin_user(const char *config_path, int argc, char **argv);
int admin_key(const char *config_path, int argc, char **argv);
int admin_backend(const char *config_path, int argc, char **argv);
int admin_audit(const char *config_path, int argc, char **argv);
int admin_report(const char *config_path, int argc, char **argv);
int admin_secrets(const char *config_path, int argc, char **argv);

/* Parses "90d", "24h", "30m", "45s" (or plain seconds) into seconds; -1 if invalid. */
long long admin_parse_duration(const char *s);

#endif

/*
 * master.h - `aigw serve`: a pre-forking FastCGI master in the style of php-fpm.
 */
#ifndef AIGW_MASTER_H
#define AIGW_MASTER_H

/* Runs the master until SIGTERM/SIGINT; returns the exit status. */
int master_serve(const char *config_path, int argc, char **argv);

#endif

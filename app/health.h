/*
 * health.h - active health checks of backends whose breaker is open.
 *
 * The seed's _schedule_health_check: an open backend is probed with a cheap
 * request (its model list, never a billed completion) and its breaker is
 * closed when it answers. `aigw serve`'s master runs this periodically in a
 * short-lived child; where the web server spawns the workers, run
 * `aigw backend probe` from cron.
 */
#ifndef AIGW_HEALTH_H
#define AIGW_HEALTH_H

#include <stdio.h>

#include "request.h"

/* Probes every backend whose breaker is open (every backend with all set),
 * closing the breakers of those that answer. Prints one line per probe to
 * report when not NULL. Returns how many were closed, or -1. */
int health_probe_backends(struct worker *w, int all, FILE *report);

#endif

/*
 * housekeeping.h - the database work no request should wait for.
 *
 * WAL checkpoints, the sweep of rows left 'pending' by a dead worker, and
 * retention pruning run in one background thread of one process per host:
 * every worker process starts the thread, and the one whose thread holds the
 * election lock (byte 1 of the writer lock file, an OFD lock the kernel drops
 * when its process dies) does the work; the others try again every few
 * seconds, so a new housekeeper takes over when the old one's process ends.
 * This works the same under `aigw serve`, lighttpd's spawner and mod_fcgid.
 * Its writes go through the group commit like everyone else's.
 */
#ifndef AIGW_HOUSEKEEPING_H
#define AIGW_HOUSEKEEPING_H

struct worker;
struct housekeeper;

/* Starts the thread for w; it ends when stop_fd becomes readable. NULL when
 * it cannot start (logged; the host then relies on another process). */
struct housekeeper *housekeeper_start(struct worker *w, int stop_fd);
/* Waits for the thread to end and frees it. NULL is allowed. */
void housekeeper_stop(struct housekeeper *h);

#endif

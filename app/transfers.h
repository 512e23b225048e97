/*
 * transfers.h - one loop per worker process that drives its streamed backend
 * calls.
 *
 * A streamed answer arrives as events tens of milliseconds apart for seconds
 * on end. Driven by curl_easy_perform, every event would wake the request's
 * own thread (a context switch and a handful of polls per event, times a
 * thousand streams). Instead the request thread hands the configured easy
 * handle to its process's loop and waits: one thread runs every stream of the
 * process with curl_multi_socket_action on epoll, and the handle's callbacks
 * (the SSE parser, the redactor, the writes to the web server) run on that
 * thread while the request's own thread sleeps. The request's state thus has
 * one user at a time: the handover and the return are under the loop's lock.
 *
 * A client that reads slowly must not hold up the others: a write callback
 * asks transfers_relay_blocked before it writes, and when the web server's
 * socket is full the transfer pauses until the socket drains.
 */
#ifndef AIGW_TRANSFERS_H
#define AIGW_TRANSFERS_H

#include <curl/curl.h>

#include "buf.h"

struct transfers;

/* Starts a loop and its thread. NULL with err set when it cannot. */
struct transfers *transfers_start(struct buf *err);

/* Stops the loop once no transfer is in flight, joins its thread and frees
 * it. NULL is ignored. */
void transfers_stop(struct transfers *loop);

/* Runs curl (configured, in no multi handle) to completion on the loop and
 * returns its result, as curl_easy_perform would. relay_fd is the descriptor
 * the write callback writes to (-1: none). Called from a request thread,
 * which waits meanwhile; the handle's CURLOPT_PRIVATE is the loop's while it
 * runs and unset after. */
CURLcode transfers_perform(struct transfers *loop, CURL *curl, int relay_fd);

/* From a write callback of curl: 1 when the transfer's relay descriptor
 * cannot take a write now, in which case the loop watches it and the
 * callback must return CURL_WRITEFUNC_PAUSE (it is called again with the
 * same data once the descriptor drains). 0 when the write may go ahead, and
 * always for a handle that is not running on a loop. */
int transfers_relay_blocked(CURL *curl);

#endif

/*
 * pipeline.h - one request, start to finish.
 *
 * pipeline_handle reads as the list of stages in docs/ARCHITECTURE.md:
 * read, route, authenticate, validate, admit, dispatch (with sanitize and
 * respond), settle. pipeline_after_response is the post-response work a
 * worker does once the client has its answer.
 */
#ifndef AIGW_PIPELINE_H
#define AIGW_PIPELINE_H

#include "request.h"

void pipeline_handle(struct request *req);
void pipeline_after_response(struct request *req);

#endif

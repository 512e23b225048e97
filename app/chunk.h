/*
 * chunk.h - reading a stream event in place: where its delta texts are.
 *
 * A streamed answer is a few hundred chat.completion.chunk events, and almost
 * every one is {"id":..., "choices":[{"index":0, "delta":{"content":"..."},
 * "finish_reason":null}], ...}. To redact it the relay needs only the content
 * strings; building a json-c tree of every event and printing it again was
 * most of the relay's work. chunk_scan checks the whole event strictly and
 * records where each choice's content string lies, so the relay can copy the
 * event's bytes and put the redacted text in those places. An event of any
 * other shape (a usage object, a finishing choice, duplicate keys, anything
 * unusual) is left to the json-c path, which handles every case.
 */
#ifndef AIGW_CHUNK_H
#define AIGW_CHUNK_H

#include <stddef.h>

#include "buf.h"

#define CHUNK_MAX_CHOICES 8 /* more in one event: the json-c path */

struct chunk_choice {
    int index;
    size_t content_at, content_end; /* the content string's token, quotes included */
};

struct chunk_scan {
    struct chunk_choice choice[CHUNK_MAX_CHOICES];
    int n;
};

/*
 * Scans text[0, len). Returns 1 when it is one valid JSON object whose
 * choices all carry a content string, none has a finish_reason, no usage
 * object is present, and no key of interest repeats: out then says where
 * the content strings are, in order. Returns 0 for any other event.
 */
int chunk_scan(const char *text, size_t len, struct chunk_scan *out);

/* Decodes the JSON string token text[at, end) (quotes included) into out as
 * UTF-8 bytes. 0, or -1 when it is not a valid string. */
int chunk_string_decode(const char *text, size_t at, size_t end, struct buf *out);

#endif

/*
 * fuzz_sse.c - libFuzzer target for the backend-answer path: the SSE event
 * parser (backend.c, sse_feed), the stream relay (proxy.c, on_stream_event)
 * and the checks of whole answers (chat.c, chat_accept; proxy.c, proxy_accept).
 *
 * Those functions are static and sit behind a libcurl call, so this target is
 * a unity build: it includes the three .c files itself (run.sh links every
 * other app object, see the fuzz-unity line) and drives them as libcurl
 * would, with the answer body arriving in pieces of fuzzed sizes. The
 * client's side of the FastCGI connection is a stream that keeps what is
 * written (and can close, like a client going away).
 *
 * Properties checked on every input:
 *  - sse_feed hands over the same events whatever the piece sizes (the
 *    whole body at once is the reference);
 *  - what the relay writes is well-formed SSE: every line is "data: ..." or
 *    empty, so the client sees the events the relay meant to send;
 *  - no choice's content, as a client reassembles it by index, contains a
 *    match of a redaction pattern, however the backend split it;
 *  - for a well-formed stream (indexes below MAX_STREAM_CHOICES, each choice
 *    finished, nothing after its finish), each choice's content is exactly
 *    redact_text of what the backend sent for it: nothing lost, nothing moved;
 *  - usage the gateway asked for on its own behalf never reaches the client.
 *
 * Input: byte 0 holds flags (bit 0: the client asked for usage; bit 1: the
 * client goes away after some bytes; bits 2-4: when; bits 5-7: the largest
 * piece, 1 to 128 bytes); the rest is the backend's answer body.
 */
// fuzz-unity: backend.c proxy.c chat.c
#include "../../app/backend.c"
#include "../../app/chat.c"
#include "../../app/proxy.c"

#include <regex.h>
#include <stdint.h>

#include "fuzz_common.h"

#define MAX_CLIENT_CHOICES 64 /* distinct choice indexes tracked per input */

static struct worker w;
static struct worker_thread thread; /* the request thread: its JSON tokener */
static regex_t res[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* The seed's key pattern and a short one the fuzzer can reach. */
    w.cfg =
        fuzz_cfg("{\"redaction\": {\"patterns\": [\"sk-[a-zA-Z0-9]{48}\", \"key-[0-9a-f]{6}\"], "
                 "\"max_match_chars\": 64}, " FUZZ_BACKENDS "}");
    w.redactor = redactor_new(w.cfg);
    FUZZ_CHECK(w.redactor, "redactor_new");
    thread.w = &w;
    thread.tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    FUZZ_CHECK(thread.tok, "json_tokener_new_ex");
    for (size_t i = 0; i < 2; i++)
        FUZZ_CHECK(regcomp(&res[i], w.cfg->redaction.patterns[i], REG_EXTENDED) == 0, "regcomp");
    return 0;
}

/* --- the client's end of the FastCGI connection ------------------------------------ */

struct client {
    unsigned char window[256]; /* small, so that the library flushes often */
    struct buf received;
    size_t close_after; /* 0: never goes away */
};

static void client_take(FCGX_Stream *st, int do_close)
{
    (void)do_close;
    struct client *c = st->data;
    buf_append(&c->received, c->window, (size_t)(st->wrNext - c->window));
    st->wrNext = c->window;
    if (c->close_after && c->received.len >= c->close_after)
        st->isClosed = 1;
}

/* --- recording what sse_feed hands over ---------------------------------------------- */

struct recorder {
    struct buf events; /* each: size_t length, then the bytes */
    size_t n;
    struct stream_ctx *relay; /* also relay each event, when set */
    int relay_failed;
};

static int record_event(void *arg, const char *data, size_t len)
{
    struct recorder *r = arg;
    FUZZ_CHECK(data[len] == '\0',
               "an event's data is not NUL-terminated (json_tokener_parse needs it)");
    buf_append(&r->events, &len, sizeof len);
    buf_append(&r->events, data, len);
    r->n++;
    if (!r->relay)
        return 0;
    int rc = on_stream_event(r->relay, data, len);
    if (rc < 0)
        r->relay_failed = 1;
    return rc;
}

/* Feeds body to a fresh call in pieces of 1..max_piece bytes (a PRNG seeded
 * with seed picks them; max_piece 0 means all at once). */
static int feed(struct upstream_call *call, const char *body, size_t n, size_t max_piece,
                uint32_t seed)
{
    size_t at = 0;
    uint32_t x = seed * 2654435761u + 1;
    while (at < n) {
        size_t piece = n - at;
        if (max_piece) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            size_t p = 1 + x % max_piece;
            if (p < piece)
                piece = p;
        }
        if (sse_feed(call, body + at, piece) < 0)
            return -1;
        at += piece;
    }
    return 0;
}

/* --- choices as a client sees them ---------------------------------------------------- */

struct choice {
    long long index;
    struct buf sent;     /* content the backend sent */
    struct buf received; /* content the client got */
    int finished;
    int after_finish; /* the backend sent content after finish_reason */
    int has_nul;
};

struct choices {
    struct choice v[MAX_CLIENT_CHOICES];
    size_t n;
    int irregular; /* an index the relay does not promise to keep apart */
    int too_many;
};

static struct choice *choice_of(struct choices *cs, long long index)
{
    for (size_t i = 0; i < cs->n; i++)
        if (cs->v[i].index == index)
            return &cs->v[i];
    if (cs->n == MAX_CLIENT_CHOICES) {
        cs->too_many = 1;
        return NULL;
    }
    struct choice *c = &cs->v[cs->n++];
    memset(c, 0, sizeof *c);
    c->index = index;
    return c;
}

/* Walks the choices of one chunk: sent (what the backend sent) or not (what
 * the client received). The index is read as proxy.c reads it. */
static void walk_chunk(struct choices *cs, json_object *chunk, int sent)
{
    json_object *choices;
    if (!json_object_object_get_ex(chunk, "choices", &choices) ||
        !json_object_is_type(choices, json_type_array))
        return;
    for (size_t i = 0; i < json_object_array_length(choices); i++) {
        json_object *c = json_object_array_get_idx(choices, i), *idx, *delta, *content, *fr;
        if (!json_object_is_type(c, json_type_object))
            continue;
        long long index = 0;
        if (json_object_object_get_ex(c, "index", &idx)) {
            index = json_object_get_int(idx);
            if (sent && (!json_object_is_type(idx, json_type_int) || index < 0 ||
                         index >= MAX_STREAM_CHOICES || json_object_get_int64(idx) != index))
                cs->irregular = 1;
        }
        struct choice *ch = choice_of(cs, index);
        if (!ch)
            continue;
        int has_content = json_object_object_get_ex(c, "delta", &delta) &&
                          json_object_is_type(delta, json_type_object) &&
                          json_object_object_get_ex(delta, "content", &content) &&
                          json_object_is_type(content, json_type_string);
        if (has_content) {
            const char *s = json_object_get_string(content);
            size_t n = (size_t)json_object_get_string_len(content);
            if (sent) {
                if (ch->finished && n)
                    ch->after_finish = 1;
                if (memchr(s, '\0', n))
                    ch->has_nul = 1;
            }
            buf_append(sent ? &ch->sent : &ch->received, s, n);
        }
        if (sent && json_object_object_get_ex(c, "finish_reason", &fr) &&
            !json_object_is_type(fr, json_type_null))
            ch->finished = 1;
    }
}

static void choices_free(struct choices *cs)
{
    for (size_t i = 0; i < cs->n; i++) {
        buf_free(&cs->v[i].sent);
        buf_free(&cs->v[i].received);
    }
}

/* The first redaction pattern matching in s (any NUL-separated part), or NULL. */
static const char *leaked(const char *s, size_t n)
{
    struct buf part = {0};
    const char *hit = NULL;
    for (size_t start = 0; start <= n && !hit;) {
        const char *nul = memchr(s + start, '\0', n - start);
        size_t end = nul ? (size_t)(nul - s) : n;
        buf_reset(&part);
        buf_append(&part, s + start, end - start);
        for (size_t i = 0; i < 2 && !hit; i++)
            if (regexec(&res[i], buf_cstr(&part), 0, NULL, 0) == 0)
                hit = w.cfg->redaction.patterns[i];
        start = end + 1;
    }
    buf_free(&part);
    return hit;
}

/* --- the checks ----------------------------------------------------------------------- */

static void check_relay(const struct recorder *rec, const struct client *cl, int include_usage,
                        int clean_newlines)
{
    /* The body the client got: after the FastCGI headers. */
    const char *all = cl->received.data ? cl->received.data : "";
    const char *hdr_end = memmem(all, cl->received.len, "\r\n\r\n", 4);
    if (!hdr_end)
        return; /* nothing relayed (or the client left during the headers) */
    const char *body = hdr_end + 4;
    size_t body_len = cl->received.len - (size_t)(body - all);

    /* Framing: only "data: ..." lines and the blank lines ending events. */
    int framed = 1;
    for (size_t at = 0; at < body_len;) {
        const char *nl = memchr(body + at, '\n', body_len - at);
        size_t len = nl ? (size_t)(nl - body - at) : body_len - at;
        if (nl && len > 0 && (len < 6 || memcmp(body + at, "data: ", 6) != 0))
            framed = 0;
        at += len + 1;
    }
    FUZZ_CHECK(
        framed || !clean_newlines,
        "the relay wrote a line that is not \"data: ...\": a client loses or misreads events\n"
        "  relayed: %.400s",
        body);
    if (!framed)
        return;

    /* What the backend sent, per choice. */
    struct choices cs = {0};
    const char *p = rec->events.data;
    for (size_t i = 0; i < rec->n; i++) {
        size_t len;
        memcpy(&len, p, sizeof len);
        const char *data = p + sizeof len;
        p = data + len;
        json_object *chunk = json_tokener_parse(data); /* NUL-terminated: checked in record_event */
        if (chunk && json_object_is_type(chunk, json_type_object))
            walk_chunk(&cs, chunk, 1);
        else if (strcmp(data, "[DONE]") != 0)
            cs.irregular = 1; /* the relay drops events that are not chunks: not well-formed */
        json_object_put(chunk);
    }
    /* What the client received, per choice. */
    for (size_t at = 0; at < body_len;) {
        const char *end = memmem(body + at, body_len - at, "\n\n", 2); /* data may hold NULs */
        size_t len = end ? (size_t)(end - body - at) : body_len - at;
        if (len > 6 && memcmp(body + at, "data: ", 6) == 0) {
            struct buf ev = {0};
            buf_append(&ev, body + at + 6, len - 6);
            json_object *chunk = json_tokener_parse(buf_cstr(&ev)), *usage;
            if (chunk && json_object_is_type(chunk, json_type_object)) {
                walk_chunk(&cs, chunk, 0);
                FUZZ_CHECK(include_usage || !json_object_object_get_ex(chunk, "usage", &usage) ||
                               !json_object_is_type(usage, json_type_object),
                           "usage the client did not ask for was relayed: %s", buf_cstr(&ev));
            }
            json_object_put(chunk);
            buf_free(&ev);
        }
        at += len + 2;
    }

    for (size_t i = 0; i < cs.n && !cs.too_many; i++) {
        const struct choice *c = &cs.v[i];
        if (c->after_finish)
            continue; /* the backend broke the protocol for this choice */
        const char *hit = leaked(c->received.data ? c->received.data : "", c->received.len);
        FUZZ_CHECK(!hit,
                   "choice %lld reached the client with a match of %s in its content%s:\n  %.300s",
                   c->index, hit, c->has_nul ? " (the backend's content held a NUL)" : "",
                   buf_cstr((struct buf *)&c->received));
        if (cs.irregular || !c->finished || rec->relay_failed)
            continue;
        struct buf want = {0};
        redact_text(w.redactor, buf_cstr((struct buf *)&c->sent), c->sent.len, &want);
        FUZZ_CHECK((want.len == c->received.len &&
                    memcmp(buf_cstr(&want), buf_cstr((struct buf *)&c->received), want.len) == 0),
                   "choice %lld: the client got other content than the backend sent (redacted):\n"
                   "  got:  %.300s\n  want: %.300s",
                   c->index, buf_cstr((struct buf *)&c->received), buf_cstr(&want));
        buf_free(&want);
    }
    choices_free(&cs);
}

/* Whole (non-stream) answers: chat_accept and proxy_accept must not trip on
 * anything, and chat_accept's yes means chat_handle can read choices[0].message. */
static void check_answers(const char *body, size_t n)
{
    struct request req;
    memset(&req, 0, sizeof req);
    req.w = &w;
    req.t = &thread;
    buf_append(&req.upstream, body, n);
    struct chat_ctx ctx = {0};
    if (chat_accept(&req, &ctx) == 0) {
        json_object *choices, *c0, *msg;
        FUZZ_CHECK(json_object_object_get_ex(ctx.answer, "choices", &choices) &&
                       (c0 = json_object_array_get_idx(choices, 0)) &&
                       json_object_object_get_ex(c0, "message", &msg) &&
                       json_object_is_type(msg, json_type_object),
                   "chat_accept accepted an answer chat_handle cannot read");
    }
    json_object_put(ctx.answer);
    proxy_accept(&req, NULL);
    request_free(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    /* The body in its own allocation, so ASan sees reads past it. */
    size_t n = size - 1;
    char *body = malloc(n ? n : 1);
    memcpy(body, data + 1, n);

    /* The reference: the whole body in one piece, events only recorded. */
    struct recorder whole = {0};
    struct upstream_call a = {0};
    a.on_event = record_event;
    a.arg = &whole;
    int rc_whole = feed(&a, body, n, 0, 0);

    /* The same body in pieces, each event relayed to the client. */
    struct client cl = {0};
    if (flags & 2)
        cl.close_after = 1 + 97 * ((flags >> 2) & 7);
    FCGX_Stream out = {0};
    out.wrNext = cl.window;
    out.stop = cl.window + sizeof cl.window;
    out.emptyBuffProc = client_take;
    out.data = &cl;
    FCGX_Request fcgi = {0};
    fcgi.out = &out;
    struct request req;
    memset(&req, 0, sizeof req);
    req.w = &w;
    req.t = &thread;
    req.fcgi = &fcgi;
    snprintf(req.request_id, sizeof req.request_id, "fuzz");
    req.in.include_usage = flags & 1;
    struct stream_ctx s = {.req = &req};
    struct recorder pieces = {.relay = &s};
    struct upstream_call b = {0};
    b.on_event = record_event;
    b.arg = &pieces;
    int rc_pieces = feed(&b, body, n, (size_t)1 << (flags >> 5), flags);
    if (out.wrNext != cl.window)
        client_take(&out, 0);

    FUZZ_CHECK(rc_whole == 0, "sse_feed refused a body of %zu bytes", n);
    if (rc_pieces == 0 || pieces.relay_failed) {
        /* Pieces deliver what the whole delivers (up to where the client left). */
        FUZZ_CHECK(pieces.n <= whole.n && (pieces.relay_failed || pieces.n == whole.n),
                   "%zu events from pieces of at most %u bytes, %zu from the whole body", pieces.n,
                   1u << (flags >> 5), whole.n);
        FUZZ_CHECK(
            pieces.events.len <= whole.events.len &&
                memcmp(buf_cstr(&pieces.events), buf_cstr(&whole.events), pieces.events.len) == 0,
            "events from pieces differ from the whole body's");
    }
    if (getenv("FUZZ_SSE_DUMP")) {
        /* For whoever debugs a regression: what the client received. */
        fprintf(stderr, "--- relayed (%zu bytes) ---\n", cl.received.len);
        fwrite(buf_cstr(&cl.received), 1, cl.received.len, stderr);
        fprintf(stderr, "--- end ---\n");
    }
    if (!pieces.relay_failed) {
        /* A lone CR ends a line for an SSE client but not for sse_feed: such
         * bodies are ambiguous already, so framing is judged without them. */
        int clean_newlines = 1;
        for (size_t i = 0; i < n; i++)
            if (body[i] == '\r' && (i + 1 == n || body[i + 1] != '\n'))
                clean_newlines = 0;
        check_relay(&pieces, &cl, flags & 1, clean_newlines);
    }
    check_answers(body, n);

    for (int i = 0; i < MAX_STREAM_CHOICES; i++)
        buf_free(&s.pending[i]);
    buf_free(&s.event);
    buf_free(&s.clean);
    buf_free(&s.piece);
    buf_free(&s.rewritten);
    upstream_call_free(&a);
    upstream_call_free(&b);
    buf_free(&whole.events);
    buf_free(&pieces.events);
    buf_free(&cl.received);
    request_free(&req);
    free(body);
    return 0;
}

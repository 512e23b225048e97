/*
 * slow_mock.c - a mock model region that takes as long as a real model: the
 * "slow" lane of tests/bench/bench.py.
 *
 *   cc -O2 slow_mock.c -o slow_mock && ./slow_mock PORT   (127.0.0.1:PORT only)
 *
 * POST .../chat/completions (Azure: /openai/deployments/{dep}/chat/completions
 * ?api-version=...; OpenAI-type: any path ending in /chat/completions):
 *   - without "stream": true: after CHAT_DELAY_MS, a chat.completion with usage;
 *   - with "stream": true: 200 text/event-stream at once, then EVENTS
 *     chat.completion.chunk events EVENT_GAP_MS apart (the first with the
 *     role, the last with finish_reason "stop"), a usage chunk (choices: [],
 *     as OpenAI sends with stream_options.include_usage) and "data: [DONE]".
 * GET .../models: a model list (aigw's health probe).
 * GET /stats: {"requests": chat requests received, "streams", "chats",
 *   "active": being answered now, "max_active", "completed", "aborted"}.
 * HTTP/1.1 keep-alive (and pipelining); Content-Length or chunked bodies.
 *
 * Why C and not Node: a Node http mock spent 80% of a CPU at 1,024 streams
 * and its 50 ms timers slipped (p50 1.19 s for a 1.0 s stream, p99 2.4 s,
 * called directly); this one event loop needs a few percent, so the mock is
 * not what the gateways under test compete with for the machine's CPUs.
 * Every delay of a kind is the same, so each kind of timer is a FIFO queue
 * and the loop sleeps until the earliest head.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHAT_DELAY_MS 1000
#define EVENTS        20
#define EVENT_GAP_MS  50
#define MAX_HEAD      65536
#define MAX_BODY      (8 << 20)
#define MODEL         "gpt-4o-2024-08-06"

/* One word per content event: EVENTS - 1 of them (the last event only finishes). */
static const char *const WORDS[EVENTS - 1] = {
    "Hello",  "!",          " I",    " am",    " a",     " slow",  " mock",
    " model", " answering", " one",  " piece", " every", " fifty", " milliseconds",
    " like",  " a",         " real", " one",   "."};

struct conn {
    int fd;
    char *in; /* bytes read, not yet consumed */
    size_t in_n, in_cap;
    char *out; /* bytes the socket did not take yet */
    size_t out_n, out_cap;
    int busy;          /* a chat request is being answered */
    int stream, event; /* streamed answer; next event to send */
    int close_after;   /* "Connection: close" */
    int dead;          /* closed; freed when it leaves its queue */
    int queued;
    int out_on; /* EPOLLOUT requested */
    long seq;
    long long due;     /* ms, when queued */
    struct conn *next; /* in a timer queue, or in the graveyard */
};

struct queue {
    struct conn *head, *tail;
};

static struct queue chat_q, event_q;
static struct conn *graveyard; /* closed, not queued: freed after the loop turn */
static int ep;
static long seq;
static struct {
    long requests, streams, chats, active, max_active, completed, aborted;
} st;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void push(struct queue *q, struct conn *c, long long due)
{
    c->due = due;
    c->next = NULL;
    c->queued = 1;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
}

static struct conn *pop(struct queue *q)
{
    struct conn *c = q->head;
    q->head = c->next;
    if (!q->head)
        q->tail = NULL;
    c->queued = 0;
    return c;
}

static void grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    *cap = need < 4096 ? 4096 : need * 2;
    if (!(*p = realloc(*p, *cap))) {
        perror("realloc");
        exit(1);
    }
}

static void conn_free(struct conn *c)
{
    free(c->in);
    free(c->out);
    free(c);
}

/* The peer is gone (or broke the protocol). A request still being answered
 * counts as aborted. The memory goes only when nothing can use it any more:
 * after this loop turn, or when the connection leaves its timer queue. */
static void conn_close(struct conn *c)
{
    if (c->dead)
        return;
    if (c->busy) {
        st.active--;
        st.aborted++;
        c->busy = 0;
    }
    close(c->fd); /* also leaves the epoll set */
    c->dead = 1;
    if (!c->queued) {
        c->next = graveyard;
        graveyard = c;
    }
}

static void want_out(struct conn *c, int on)
{
    if (c->out_on == on)
        return;
    c->out_on = on;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void flush_out(struct conn *c)
{
    size_t off = 0;
    while (off < c->out_n) {
        ssize_t n = write(c->fd, c->out + off, c->out_n - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        off += (size_t)n;
    }
    memmove(c->out, c->out + off, c->out_n - off);
    c->out_n -= off;
    want_out(c, c->out_n > 0);
    if (!c->out_n && c->close_after && !c->busy)
        conn_close(c);
}

static void send_bytes(struct conn *c, const char *p, size_t n)
{
    if (c->dead)
        return;
    int was_empty = c->out_n == 0;
    grow(&c->out, &c->out_cap, c->out_n + n);
    memcpy(c->out + c->out_n, p, n);
    c->out_n += n;
    if (was_empty)
        flush_out(c); /* else EPOLLOUT is on and flushes it */
}

static void send_simple(struct conn *c, int status, const char *ctype, const char *body)
{
    char head[256];
    size_t bl = strlen(body);
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                      status == 200   ? "OK"
                      : status == 404 ? "Not Found"
                                      : "Bad Request",
                      ctype, bl, c->close_after ? "Connection: close\r\n" : "");
    send_bytes(c, head, (size_t)hl);
    send_bytes(c, body, bl);
}

/* One SSE event as one HTTP chunk. */
static void send_event(struct conn *c, const char *json)
{
    char buf[2048];
    size_t jl = strlen(json);
    int n = snprintf(buf, sizeof buf, "%zx\r\ndata: %s\n\n\r\n", jl + 8, json);
    send_bytes(c, buf, (size_t)n);
}

static void answer_done(struct conn *c)
{
    if (!c->busy) /* closed meanwhile: counted as aborted */
        return;
    c->busy = 0;
    st.active--;
    st.completed++;
}

static void chat_answer(struct conn *c)
{
    char body[1024], content[512] = "";
    for (int i = 0; i < EVENTS - 1; i++)
        strcat(content, WORDS[i]);
    snprintf(body, sizeof body,
             "{\"id\":\"chatcmpl-slowmock%ld\",\"object\":\"chat.completion\",\"created\":%ld,"
             "\"model\":\"" MODEL "\","
             "\"choices\":[{\"index\":0,\"finish_reason\":\"stop\",\"logprobs\":null,"
             "\"message\":{\"role\":\"assistant\",\"content\":\"%s\"}}],"
             "\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":%d,\"total_tokens\":%d},"
             "\"system_fingerprint\":\"fp_slowmock\"}",
             c->seq, (long)time(NULL), content, EVENTS - 1, 24 + EVENTS - 1);
    answer_done(c);
    send_simple(c, 200, "application/json", body);
}

static void stream_event(struct conn *c)
{
    char ev[1024], delta[128];
    int i = c->event++;
    if (i < EVENTS) {
        if (i == 0)
            snprintf(delta, sizeof delta, "{\"role\":\"assistant\",\"content\":\"%s\"}", WORDS[0]);
        else if (i < EVENTS - 1)
            snprintf(delta, sizeof delta, "{\"content\":\"%s\"}", WORDS[i]);
        else
            strcpy(delta, "{}");
        snprintf(
            ev, sizeof ev,
            "{\"id\":\"chatcmpl-slowmock%ld\",\"object\":\"chat.completion.chunk\",\"created\":%ld,"
            "\"model\":\"" MODEL
            "\",\"system_fingerprint\":\"fp_slowmock\",\"choices\":[{\"index\":0,"
            "\"delta\":%s,\"logprobs\":null,\"finish_reason\":%s}]}",
            c->seq, (long)time(NULL), delta, i == EVENTS - 1 ? "\"stop\"" : "null");
        send_event(c, ev);
        if (i < EVENTS - 1)
            return;
    }
    /* Right after the last event: the stream takes EVENTS x EVENT_GAP_MS, as long as a chat answer.
     */
    snprintf(
        ev, sizeof ev,
        "{\"id\":\"chatcmpl-slowmock%ld\",\"object\":\"chat.completion.chunk\",\"created\":%ld,"
        "\"model\":\"" MODEL "\",\"system_fingerprint\":\"fp_slowmock\",\"choices\":[],"
        "\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":%d,\"total_tokens\":%d}}",
        c->seq, (long)time(NULL), EVENTS - 1, 24 + EVENTS - 1);
    send_event(c, ev);
    send_event(c, "[DONE]");
    answer_done(c);
    send_bytes(c, "0\r\n\r\n", 5);
}

/* "stream": true anywhere in the body (the requests here are small, flat JSON). */
static int wants_stream(const char *b, size_t n)
{
    const char *p = memmem(b, n, "\"stream\"", 8);
    if (!p)
        return 0;
    p += 8;
    while (p < b + n && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ':'))
        p++;
    return (size_t)(b + n - p) >= 4 && memcmp(p, "true", 4) == 0;
}

static void handle(struct conn *c, const char *method, const char *path, const char *body,
                   size_t bl)
{
    size_t pl = strlen(path);
    if (strcmp(method, "GET") == 0 && strcmp(path, "/stats") == 0) {
        char js[512];
        snprintf(
            js, sizeof js,
            "{\"requests\":%ld,\"streams\":%ld,\"chats\":%ld,\"active\":%ld,\"max_active\":%ld,"
            "\"completed\":%ld,\"aborted\":%ld}",
            st.requests, st.streams, st.chats, st.active, st.max_active, st.completed, st.aborted);
        send_simple(c, 200, "application/json", js);
    } else if (strcmp(method, "GET") == 0 && pl >= 6 && strcmp(path + pl - 6, "models") == 0) {
        send_simple(c, 200, "application/json",
                    "{\"object\":\"list\",\"data\":[{\"id\":\"" MODEL "\",\"object\":\"model\"}]}");
    } else if (strcmp(method, "POST") == 0 && pl >= 17 &&
               strcmp(path + pl - 17, "/chat/completions") == 0) {
        st.requests++;
        if (++st.active > st.max_active)
            st.max_active = st.active;
        c->busy = 1;
        c->seq = ++seq;
        c->event = 0;
        c->stream = wants_stream(body, bl);
        if (c->stream) {
            st.streams++;
            static const char head[] =
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
            send_bytes(c, head, sizeof head - 1);
            push(&event_q, c, now_ms() + EVENT_GAP_MS);
        } else {
            st.chats++;
            push(&chat_q, c, now_ms() + CHAT_DELAY_MS);
        }
    } else {
        send_simple(c, 404, "application/json",
                    "{\"error\":{\"code\":\"404\",\"message\":\"Resource not found\"}}");
    }
}

/* Decode a chunked body in place; its length, or -1 while incomplete, -2 if malformed. */
static long dechunk(char *p, size_t n, size_t *used)
{
    size_t r = 0, w = 0;
    for (;;) {
        char *eol = memmem(p + r, n - r, "\r\n", 2);
        if (!eol)
            return -1;
        char *end;
        unsigned long len = strtoul(p + r, &end, 16);
        if (end == p + r)
            return -2;
        r = (size_t)(eol - p) + 2;
        if (len == 0) {
            char *fin = memmem(p + r, n - r, "\r\n", 2); /* no trailers expected */
            if (!fin)
                return -1;
            *used = (size_t)(fin - p) + 2;
            return (long)w;
        }
        if (len > MAX_BODY || n - r < len + 2)
            return len > MAX_BODY ? -2 : -1;
        memmove(p + w, p + r, len);
        w += len;
        r += len + 2;
    }
}

/* Answer every complete request in the input, until one must wait for its timer. */
static void parse(struct conn *c)
{
    while (!c->dead && !c->busy && c->in_n) {
        char *eoh = memmem(c->in, c->in_n, "\r\n\r\n", 4);
        if (!eoh) {
            if (c->in_n > MAX_HEAD)
                conn_close(c);
            return;
        }
        size_t hl = (size_t)(eoh - c->in) + 4;
        char method[16], path[4096];
        if (sscanf(c->in, "%15s %4095s", method, path) != 2) {
            conn_close(c);
            return;
        }
        char *q = strchr(path, '?');
        if (q)
            *q = 0;
        long cl = 0;
        int chunked = 0;
        c->close_after = 0;
        for (char *h = memmem(c->in, hl, "\r\n", 2) + 2; h < eoh;
             h = memmem(h, (size_t)(eoh + 2 - h), "\r\n", 2) + 2) {
            if (strncasecmp(h, "content-length:", 15) == 0)
                cl = strtol(h + 15, NULL, 10);
            else if (strncasecmp(h, "transfer-encoding:", 18) == 0 &&
                     strncasecmp(h + 18, " chunked", 8) == 0)
                chunked = 1;
            else if (strncasecmp(h, "connection:", 11) == 0 &&
                     strncasecmp(h + 11, " close", 6) == 0)
                c->close_after = 1;
        }
        size_t used;
        long bl;
        if (chunked) {
            bl = dechunk(c->in + hl, c->in_n - hl, &used);
            if (bl == -1)
                return;
        } else {
            if (cl < 0 || cl > MAX_BODY)
                bl = -2;
            else if (c->in_n - hl < (size_t)cl)
                return;
            else
                bl = cl, used = (size_t)cl;
        }
        if (bl < 0) {
            conn_close(c);
            return;
        }
        handle(c, method, path, c->in + hl, (size_t)bl);
        if (c->dead)
            return;
        memmove(c->in, c->in + hl + used, c->in_n - hl - used);
        c->in_n -= hl + used;
    }
}

static void on_input(struct conn *c)
{
    for (;;) {
        grow(&c->in, &c->in_cap, c->in_n + 16384);
        ssize_t n = read(c->fd, c->in + c->in_n, c->in_cap - c->in_n);
        if (n > 0) {
            c->in_n += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        conn_close(c); /* EOF or error: the peer is gone */
        return;
    }
    parse(c);
}

static void run_timers(void)
{
    long long now = now_ms();
    while (chat_q.head && chat_q.head->due <= now) {
        struct conn *c = pop(&chat_q);
        if (c->dead) {
            conn_free(c);
            continue;
        }
        chat_answer(c);
        if (!c->dead && !c->queued)
            parse(c);
    }
    while (event_q.head && event_q.head->due <= now) {
        struct conn *c = pop(&event_q);
        if (c->dead) {
            conn_free(c);
            continue;
        }
        stream_event(c);
        if (c->dead)
            continue;
        if (c->busy)
            push(&event_q, c, now + EVENT_GAP_MS);
        else
            parse(c);
    }
}

static int next_timeout(void)
{
    long long due = -1;
    if (chat_q.head)
        due = chat_q.head->due;
    if (event_q.head && (due < 0 || event_q.head->due < due))
        due = event_q.head->due;
    if (due < 0)
        return -1;
    long long t = due - now_ms();
    return t < 0 ? 0 : (int)t;
}

int main(int argc, char **argv)
{
    int port = argc == 2 ? atoi(argv[1]) : 0;
    if (port <= 0) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
    printf("READY %d\n", port);
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, next_timeout());
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (c->dead)
                continue;
            if (evs[i].events & EPOLLOUT)
                flush_out(c);
            if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                on_input(c);
        }
        run_timers();
        while (graveyard) {
            struct conn *c = graveyard;
            graveyard = c->next;
            conn_free(c);
        }
    }
}

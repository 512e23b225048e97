/*
 * test_transfers.c - unit tests for app/transfers.c, the loop that drives a
 * process's streamed backend calls.
 *
 * A small HTTP server on 127.0.0.1 (a thread per connection) answers each
 * request after a delay with a body of a given size. Covered: many request
 * threads handing transfers to one loop at once all get their whole answers,
 * in about one answer's time rather than one after another; a refused
 * connection comes back as libcurl's error, as curl_easy_perform reports it;
 * a transfer whose relay descriptor is full pauses without holding up
 * another transfer, and finishes whole once the descriptor drains; a handle
 * that is not on a loop is never told to pause.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "transfers.h"

/* --- the HTTP server ----------------------------------------------------------- */

struct server {
    int fd;
    int port;
    int delay_ms;
    size_t body_bytes;
};

struct conn {
    struct server *s;
    int fd;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double clock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *serve_conn(void *arg)
{
    struct conn *c = arg;
    char req[4096];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t n = read(c->fd, req + got, sizeof req - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    sleep_ms(c->s->delay_ms);
    char head[160];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                      c->s->body_bytes);
    char *body = malloc(c->s->body_bytes);
    for (size_t i = 0; i < c->s->body_bytes; i++)
        body[i] = (char)('a' + i % 26);
    if (write(c->fd, head, (size_t)hl) == hl) {
        size_t off = 0;
        while (off < c->s->body_bytes) {
            ssize_t n = write(c->fd, body + off, c->s->body_bytes - off);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
    }
    free(body);
    close(c->fd);
    free(c);
    return NULL;
}

static void *accept_loop(void *arg)
{
    struct server *s = arg;
    for (;;) {
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        struct conn *c = malloc(sizeof *c);
        c->s = s;
        c->fd = fd;
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, c);
        pthread_detach(t);
    }
}

/* Stops accepting: the accept thread leaves. */
static void server_stop(struct server *s)
{
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
}

static void server_start(struct server *s, int delay_ms, size_t body_bytes)
{
    s->delay_ms = delay_ms;
    s->body_bytes = body_bytes;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->fd, 128), 0);
    socklen_t len = sizeof a;
    getsockname(s->fd, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, accept_loop, s);
    pthread_detach(t);
}

/* --- the callers ------------------------------------------------------------------ */

struct fetcher {
    struct transfers *loop;
    int port;
    int relay_fd; /* -1: the body is only counted */
    size_t bytes; /* body bytes received */
    int pauses;   /* times the callback was told to wait */
    CURLcode result;
    double took_s;
    CURL *curl;
};

static size_t on_data(char *data, size_t size, size_t nmemb, void *arg)
{
    struct fetcher *c = arg;
    size_t n = size * nmemb;
    if (c->relay_fd >= 0) {
        if (transfers_relay_blocked(c->curl)) {
            c->pauses++;
            return CURL_WRITEFUNC_PAUSE;
        }
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(c->relay_fd, data + off, n - off);
            if (w <= 0)
                return 0;
            off += (size_t)w;
        }
    }
    c->bytes += n;
    return n;
}

static void *call(void *arg)
{
    struct fetcher *c = arg;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", c->port);
    c->curl = curl_easy_init();
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
    double t0 = clock_s();
    c->result = transfers_perform(c->loop, c->curl, c->relay_fd);
    c->took_s = clock_s() - t0;
    curl_easy_cleanup(c->curl);
    return NULL;
}

/* --- the tests ------------------------------------------------------------------- */

static void test_many_threads_share_one_loop(void **state)
{
    (void)state;
    static struct server s;
    server_start(&s, 300, 5000);
    struct buf err = {0};
    struct transfers *loop = transfers_start(&err);
    assert_non_null(loop);
    enum { N = 32 };
    struct fetcher c[N];
    pthread_t t[N];
    double t0 = clock_s();
    for (int i = 0; i < N; i++) {
        c[i] = (struct fetcher){.loop = loop, .port = s.port, .relay_fd = -1};
        pthread_create(&t[i], NULL, call, &c[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].result, CURLE_OK);
        assert_int_equal(c[i].bytes, 5000);
    }
    /* One after another this would take 32 x 0.3 s. */
    assert_true(clock_s() - t0 < 3.0);
    transfers_stop(loop);
    server_stop(&s);
}

static void test_refused_connection_is_curls_error(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd); /* nothing listens on the port now */
    struct buf err = {0};
    struct transfers *loop = transfers_start(&err);
    assert_non_null(loop);
    struct fetcher c = {.loop = loop, .port = ntohs(a.sin_port), .relay_fd = -1};
    call(&c);
    assert_int_equal(c.result, CURLE_COULDNT_CONNECT);
    transfers_stop(loop);
}

static void test_full_relay_pauses_only_its_own_transfer(void **state)
{
    (void)state;
    static struct server big, small;
    server_start(&big, 0, 4u << 20);
    server_start(&small, 100, 1000);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int sndbuf = 16384;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct buf err = {0};
    struct transfers *loop = transfers_start(&err);
    assert_non_null(loop);
    /* Nobody reads sv[1] yet: the big answer fills the socket and waits. */
    struct fetcher stuck = {.loop = loop, .port = big.port, .relay_fd = sv[0]};
    pthread_t ts;
    pthread_create(&ts, NULL, call, &stuck);
    sleep_ms(500);
    struct fetcher other = {.loop = loop, .port = small.port, .relay_fd = -1};
    call(&other);
    assert_int_equal(other.result, CURLE_OK);
    assert_int_equal(other.bytes, 1000);
    assert_true(other.took_s < 2.0);
    /* Now drain the socket: the big answer resumes and arrives whole. */
    size_t drained = 0;
    char chunk[65536];
    while (drained < (4u << 20)) {
        ssize_t n = read(sv[1], chunk, sizeof chunk);
        assert_true(n > 0);
        for (ssize_t i = 0; i < n; i++)
            assert_int_equal(chunk[i], 'a' + (drained + (size_t)i) % 26);
        drained += (size_t)n;
    }
    pthread_join(ts, NULL);
    assert_int_equal(stuck.result, CURLE_OK);
    assert_int_equal(stuck.bytes, 4u << 20);
    assert_true(stuck.pauses > 0);
    transfers_stop(loop);
    close(sv[0]);
    close(sv[1]);
    server_stop(&big);
    server_stop(&small);
}

static void test_handle_off_any_loop_never_pauses(void **state)
{
    (void)state;
    CURL *curl = curl_easy_init();
    assert_int_equal(transfers_relay_blocked(curl), 0);
    curl_easy_cleanup(curl);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_threads_share_one_loop),
        cmocka_unit_test(test_refused_connection_is_curls_error),
        cmocka_unit_test(test_full_relay_pauses_only_its_own_transfer),
        cmocka_unit_test(test_handle_off_any_loop_never_pauses),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}

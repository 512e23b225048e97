/*
 * transfers.c - the loop that drives a process's streamed backend calls (see
 * transfers.h).
 *
 * The loop thread owns a CURLM and an epoll set holding three kinds of
 * descriptor, told apart by the epoll tag:
 *   0                      the eventfd a request thread writes after queueing
 *                          a transfer (and transfers_stop, to stop the loop);
 *   SOCKET_TAG | fd        a socket libcurl asked to watch;
 *   a struct transfer *    the relay descriptor of a paused transfer, watched
 *                          for EPOLLOUT until the web server drains it.
 * Only the loop thread touches the CURLM and the handles it runs. The queue,
 * each transfer's done flag and the stop flag are under the loop's mutex.
 */
#include "transfers.h"

#include <errno.h>
#include <locale.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "request.h" /* mono_s */

#define SOCKET_TAG (UINT64_C(1) << 63)

/* The loop's own stack: libcurl's callbacks run the SSE parser, JSON and the
 * redactor on it, like a request thread's. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LOOP_STACK_BYTES (4u << 20)
#else
#define LOOP_STACK_BYTES (1u << 20)
#endif

struct transfer {
    CURL *curl;
    int relay_fd;
    int paused; /* loop thread only: relay_fd is in the epoll set */
    int done;   /* under loop->mu */
    CURLcode result;
    pthread_cond_t finished;
    struct transfer *next; /* in the submission queue */
    struct transfers *loop;
};

struct transfers {
    pthread_mutex_t mu;
    struct transfer *queue, *queue_tail; /* submitted, not yet in multi */
    int stopping;                        /* no new transfer is coming */
    pthread_t tid;
    int wake_fd;
    int epfd;
    CURLM *multi;
    int running;         /* loop thread only: transfers in multi */
    int64_t deadline_ms; /* loop thread only: libcurl's timer, -1 unset */
};

static int64_t mono_ms(void)
{
    return (int64_t)(mono_s() * 1000.0);
}

/* libcurl's CURLMOPT_SOCKETFUNCTION: keep the epoll set in step. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct transfers *loop = arg;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    struct epoll_event ev = {.data.u64 = SOCKET_TAG | (uint64_t)(unsigned)fd};
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 &&
        (errno != ENOENT || epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)) {
        log_error("cannot watch a backend socket: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* libcurl's CURLMOPT_TIMERFUNCTION: when to call it back without an event. */
static int on_timer(CURLM *multi, long timeout_ms, void *arg)
{
    (void)multi;
    struct transfers *loop = arg;
    loop->deadline_ms = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    return 0;
}

int transfers_relay_blocked(CURL *curl)
{
    struct transfer *x = NULL;
    if (curl_easy_getinfo(curl, CURLINFO_PRIVATE, (char **)&x) != CURLE_OK || !x || x->relay_fd < 0)
        return 0;
    struct pollfd p = {.fd = x->relay_fd, .events = POLLOUT};
    if (poll(&p, 1, 0) != 0)
        return 0; /* writable, or failed: the write says which */
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = x};
    if (epoll_ctl(x->loop->epfd, EPOLL_CTL_ADD, x->relay_fd, &ev) < 0)
        return 0; /* cannot wait for it here: let the write block */
    x->paused = 1;
    return 1;
}

static void unwatch_relay(struct transfers *loop, struct transfer *x)
{
    if (x->paused) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, x->relay_fd, NULL);
        x->paused = 0;
    }
}

/* Moves the queued transfers into the multi handle. */
static void admit_queued(struct transfers *loop)
{
    uint64_t n;
    if (read(loop->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_error("cannot read the transfer loop's wake-up: %s", strerror(errno));
    pthread_mutex_lock(&loop->mu);
    struct transfer *x = loop->queue;
    loop->queue = loop->queue_tail = NULL;
    pthread_mutex_unlock(&loop->mu);
    while (x) {
        struct transfer *next = x->next;
        CURLMcode mc = curl_multi_add_handle(loop->multi, x->curl);
        if (mc != CURLM_OK) {
            log_error("cannot start a backend transfer: %s", curl_multi_strerror(mc));
            pthread_mutex_lock(&loop->mu);
            x->result = CURLE_FAILED_INIT;
            x->done = 1;
            pthread_cond_signal(&x->finished);
            pthread_mutex_unlock(&loop->mu);
        } else {
            loop->running++;
        }
        x = next;
    }
}

/* Hands every finished transfer back to its request thread. */
static void finish_done(struct transfers *loop)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(loop->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *curl = msg->easy_handle;
        CURLcode result = msg->data.result;
        struct transfer *x = NULL;
        curl_easy_getinfo(curl, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(loop->multi, curl);
        loop->running--;
        if (!x)
            continue;
        unwatch_relay(loop, x);
        pthread_mutex_lock(&loop->mu);
        x->result = result;
        x->done = 1;
        pthread_cond_signal(&x->finished);
        pthread_mutex_unlock(&loop->mu);
    }
}

static int loop_should_end(struct transfers *loop)
{
    if (loop->running)
        return 0;
    pthread_mutex_lock(&loop->mu);
    int end = loop->stopping && !loop->queue;
    pthread_mutex_unlock(&loop->mu);
    return end;
}

static void *loop_thread(void *arg)
{
    struct transfers *loop = arg;
    /* The callbacks parse JSON: see request_thread in worker.c. */
    locale_t c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale)
        uselocale(c_locale);
    struct epoll_event evs[64];
    while (!loop_should_end(loop)) {
        int wait = -1;
        if (loop->deadline_ms >= 0) {
            int64_t left = loop->deadline_ms - mono_ms();
            wait = left < 0 ? 0 : left > 60000 ? 60000 : (int)left;
        }
        int n = epoll_wait(loop->epfd, evs, (int)(sizeof evs / sizeof evs[0]), wait);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("the transfer loop cannot wait: %s", strerror(errno));
            break;
        }
        int still;
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == 0) {
                admit_queued(loop);
            } else if (tag & SOCKET_TAG) {
                int mask = 0;
                if (evs[i].events & EPOLLIN)
                    mask |= CURL_CSELECT_IN;
                if (evs[i].events & EPOLLOUT)
                    mask |= CURL_CSELECT_OUT;
                if (evs[i].events & (EPOLLERR | EPOLLHUP))
                    mask |= CURL_CSELECT_ERR;
                curl_multi_socket_action(loop->multi, (curl_socket_t)(tag & ~SOCKET_TAG), mask,
                                         &still);
            } else {
                struct transfer *x = evs[i].data.ptr;
                unwatch_relay(loop, x);
                curl_easy_pause(x->curl, CURLPAUSE_CONT);
            }
        }
        if (loop->deadline_ms >= 0 && mono_ms() >= loop->deadline_ms) {
            loop->deadline_ms = -1;
            curl_multi_socket_action(loop->multi, CURL_SOCKET_TIMEOUT, 0, &still);
        }
        finish_done(loop);
    }
    if (c_locale) {
        uselocale(LC_GLOBAL_LOCALE);
        freelocale(c_locale);
    }
    return NULL;
}

static void loop_free(struct transfers *loop)
{
    if (loop->multi)
        curl_multi_cleanup(loop->multi);
    if (loop->epfd >= 0)
        close(loop->epfd);
    if (loop->wake_fd >= 0)
        close(loop->wake_fd);
    pthread_mutex_destroy(&loop->mu);
    free(loop);
}

struct transfers *transfers_start(struct buf *err)
{
    struct transfers *loop = calloc(1, sizeof *loop);
    if (!loop) {
        buf_puts(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&loop->mu, NULL);
    loop->deadline_ms = -1;
    loop->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->multi = curl_multi_init();
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (loop->wake_fd < 0 || loop->epfd < 0 || !loop->multi ||
        epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wake_fd, &ev) < 0) {
        buf_printf(err, "cannot set up the transfer loop: %s", strerror(errno));
        loop_free(loop);
        return NULL;
    }
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETDATA, loop);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERDATA, loop);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, LOOP_STACK_BYTES);
    int rc = pthread_create(&loop->tid, &attr, loop_thread, loop);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        buf_printf(err, "cannot start the transfer loop: %s", strerror(rc));
        loop_free(loop);
        return NULL;
    }
    return loop;
}

static void wake(struct transfers *loop)
{
    uint64_t one = 1;
    if (write(loop->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_error("cannot wake the transfer loop: %s", strerror(errno));
}

void transfers_stop(struct transfers *loop)
{
    if (!loop)
        return;
    pthread_mutex_lock(&loop->mu);
    loop->stopping = 1;
    pthread_mutex_unlock(&loop->mu);
    wake(loop);
    pthread_join(loop->tid, NULL);
    loop_free(loop);
}

CURLcode transfers_perform(struct transfers *loop, CURL *curl, int relay_fd)
{
    pthread_mutex_lock(&loop->mu);
    if (loop->stopping) {
        pthread_mutex_unlock(&loop->mu);
        return curl_easy_perform(curl); /* the loop is going away: run it here */
    }
    struct transfer x = {.curl = curl, .relay_fd = relay_fd, .loop = loop};
    pthread_cond_init(&x.finished, NULL);
    curl_easy_setopt(curl, CURLOPT_PRIVATE, (char *)&x);
    if (loop->queue_tail)
        loop->queue_tail->next = &x;
    else
        loop->queue = &x;
    loop->queue_tail = &x;
    pthread_mutex_unlock(&loop->mu);
    wake(loop);
    pthread_mutex_lock(&loop->mu);
    while (!x.done)
        pthread_cond_wait(&x.finished, &loop->mu);
    CURLcode rc = x.result;
    pthread_mutex_unlock(&loop->mu);
    curl_easy_setopt(curl, CURLOPT_PRIVATE, (char *)NULL);
    pthread_cond_destroy(&x.finished);
    return rc;
}

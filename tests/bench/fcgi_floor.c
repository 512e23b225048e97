/*
 * fcgi_floor.c - the "fastcgi-floor" system of tests/bench/bench.py: the
 * least a pre-forked FastCGI gateway has to do. Per request it reads the
 * body, POSTs it to MOCK_BASE + REQUEST_URI with one kept-alive libcurl easy
 * handle per process, and writes back Status, Content-Type and the answer.
 * No policy, no database, no streaming (the answer is relayed whole).
 *
 *   cc -O2 fcgi_floor.c -lfcgi -lcurl -o fcgi_floor
 *   fcgi_floor SOCKET_PATH PROCESSES MOCK_BASE_URL
 */
#include <fcgiapp.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct buf {
    char *p;
    size_t n, cap;
};

static size_t put(char *d, size_t sz, size_t n, void *arg)
{
    struct buf *b = arg;
    size_t len = sz * n;
    if (b->n + len > b->cap) {
        b->cap = (b->n + len) * 2;
        if (!(b->p = realloc(b->p, b->cap)))
            return 0;
    }
    memcpy(b->p + b->n, d, len);
    b->n += len;
    return len;
}

static void serve(int fd, const char *base)
{
    FCGX_Request rq;
    CURL *h = curl_easy_init();
    struct buf in = {0}, out = {0};
    char url[8192], key[512];
    FCGX_InitRequest(&rq, fd, 0);
    while (FCGX_Accept_r(&rq) >= 0) {
        const char *cl = FCGX_GetParam("CONTENT_LENGTH", rq.envp);
        const char *uri = FCGX_GetParam("REQUEST_URI", rq.envp);
        const char *api_key = FCGX_GetParam("HTTP_API_KEY", rq.envp);
        size_t len = cl ? strtoul(cl, NULL, 10) : 0;
        in.n = out.n = 0;
        if (len > in.cap && !(in.p = realloc(in.p, in.cap = len)))
            break;
        in.n = FCGX_GetStr(in.p, (int)len, rq.in);
        snprintf(url, sizeof url, "%s%s", base, uri ? uri : "/");
        snprintf(key, sizeof key, "api-key: %s", api_key ? api_key : "");
        struct curl_slist *hd =
            curl_slist_append(curl_slist_append(NULL, "Content-Type: application/json"), key);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, in.p ? in.p : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)in.n);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, put);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
        long status = 502;
        char *ctype = NULL;
        if (curl_easy_perform(h) == CURLE_OK) {
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ctype);
        }
        FCGX_FPrintF(rq.out, "Status: %ld\r\nContent-Type: %s\r\n\r\n", status,
                     ctype ? ctype : "application/json");
        FCGX_PutStr(out.p ? out.p : "", (int)out.n, rq.out);
        curl_slist_free_all(hd);
        FCGX_Finish_r(&rq);
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s SOCKET_PATH PROCESSES MOCK_BASE_URL\n", argv[0]);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_ALL);
    FCGX_Init();
    int fd = FCGX_OpenSocket(argv[1], 1024);
    if (fd < 0) {
        perror("FCGX_OpenSocket");
        return 1;
    }
    for (int i = 0; i < atoi(argv[2]); i++)
        if (fork() == 0)
            serve(fd, argv[3]);
    while (wait(NULL) > 0) /* the bench stops the whole process group */
        ;
    return 0;
}

/*
 * secrets.c - env: and file: secret references (see secrets.h).
 *
 * A secret file readable by group or others is refused: a key that anyone on
 * the host can read is not a secret.
 */
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "request.h"

#define SECRET_FILE_MAX 65536

/* Expands ${env} in ref into out. */
static void expand_env(const char *ref, const char *environment, struct buf *out)
{
    buf_reset(out);
    const char *p = ref;
    const char *hit;
    while ((hit = strstr(p, "${env}")) != NULL) {
        buf_append(out, p, (size_t)(hit - p));
        buf_puts(out, environment ? environment : "");
        p = hit + 6;
    }
    buf_puts(out, p);
}

static void trim_newline(struct buf *b)
{
    while (b->len > 0 && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == '\r'))
        b->data[--b->len] = '\0';
}

int secret_resolve(const char *ref, const char *environment, struct buf *out, struct buf *err)
{
    struct buf name = {0};
    int rc = -1;
    expand_env(ref, environment, &name);
    const char *n = buf_cstr(&name);
    buf_reset(out);
    if (strncmp(n, "env:", 4) == 0) {
        const char *v = getenv(n + 4);
        if (!v || !*v) {
            buf_printf(err, "environment variable %s (from secret reference %s) is not set", n + 4, ref);
            goto done;
        }
        buf_puts(out, v);
        rc = 0;
    } else if (strncmp(n, "file:", 5) == 0) {
        const char *path = n + 5;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat sb;
        if (fd < 0) {
            buf_printf(err, "cannot open secret file %s: %s", path, strerror(errno));
            goto done;
        }
        if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
            buf_printf(err, "secret file %s is not a regular file", path);
            close(fd);
            goto done;
        }
        if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
            buf_printf(err, "secret file %s is readable by others (mode %03o); run chmod 600 %s",
                       path, (unsigned)(sb.st_mode & 0777), path);
            close(fd);
            goto done;
        }
        char chunk[4096];
        ssize_t r;
        while ((r = read(fd, chunk, sizeof chunk)) > 0 && out->len < SECRET_FILE_MAX)
            buf_append(out, chunk, (size_t)r);
        close(fd);
        if (r < 0) {
            buf_printf(err, "cannot read secret file %s: %s", path, strerror(errno));
            goto done;
        }
        trim_newline(out);
        if (out->len == 0) {
            buf_printf(err, "secret file %s is empty", path);
            goto done;
        }
        rc = 0;
    } else if (strncmp(n, "keyvault:", 9) == 0) {
        buf_printf(err, "secret reference %s: Key Vault references are not supported by this build", ref);
    } else {
        buf_puts(out, n); /* a literal; check-config warns about it */
        rc = 0;
    }
done:
    buf_free(&name);
    return rc;
}

/* --- the per-worker cache --------------------------------------------------- */

struct secret_entry {
    char *ref;
    struct buf value;
    int64_t fetched_ms;
};

struct secrets {
    const struct cfg *cfg;
    struct secret_entry *entries;
    size_t n, cap;
};

struct secrets *secrets_new(const struct cfg *cfg)
{
    struct secrets *s = calloc(1, sizeof *s);
    if (s)
        s->cfg = cfg;
    return s;
}

static void wipe(struct buf *b)
{
    if (b->data)
        memset(b->data, 0, b->cap);
    buf_free(b);
}

void secrets_free(struct secrets *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->entries[i].ref);
        wipe(&s->entries[i].value);
    }
    free(s->entries);
    free(s);
}

int secrets_get(struct secrets *s, const char *ref, int force, struct buf *out, struct buf *err)
{
    int64_t now = now_ms();
    struct secret_entry *e = NULL;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->entries[i].ref, ref) == 0)
            e = &s->entries[i];
    if (e && !force && now - e->fetched_ms < (int64_t)s->cfg->secrets.cache_ttl_s * 1000) {
        buf_reset(out);
        return buf_append(out, e->value.data, e->value.len);
    }
    struct buf fresh = {0};
    if (secret_resolve(ref, s->cfg->environment, &fresh, err) < 0) {
        wipe(&fresh);
        return -1;
    }
    if (!e) {
        if (s->n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 8;
            struct secret_entry *n = realloc(s->entries, cap * sizeof *n);
            if (!n) {
                wipe(&fresh);
                return -1;
            }
            s->entries = n;
            s->cap = cap;
        }
        e = &s->entries[s->n++];
        memset(e, 0, sizeof *e);
        e->ref = strdup(ref);
    }
    wipe(&e->value);
    e->value = fresh;
    e->fetched_ms = now;
    buf_reset(out);
    return buf_append(out, e->value.data, e->value.len);
}

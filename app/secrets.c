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

/*
 * epoch.c - the shared change counters (see epoch.h).
 *
 * The file holds a magic number and one 64-bit counter per kind, each on a
 * cache line of its own. It is created with the database's permissions in
 * mind (0660) and grown to one page; a file some other way is refused.
 */
#include "epoch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define EPOCH_FILE_SIZE 4096
#define EPOCH_MAGIC     0x6169677765706f31ull /* "aigwepo1" */

struct epoch_page {
    _Atomic uint64_t magic;
    char pad0[56];
    struct {
        _Atomic uint64_t n;
        char pad[56];
    } counter[EPOCH__COUNT];
};

_Static_assert(sizeof(struct epoch_page) <= EPOCH_FILE_SIZE, "epoch page fits the file");

struct epochs {
    struct epoch_page *page;
};

struct epochs *epochs_open(const char *db_path, int create, struct buf *err)
{
    char path[4096];
    if (db_path[0] == ':' || strncmp(db_path, "file:", 5) == 0) {
        buf_printf(err, "%s is not a file beside which counters can live", db_path);
        return NULL;
    }
    if (snprintf(path, sizeof path, "%s-epochs", db_path) >= (int)sizeof path) {
        buf_printf(err, "the database path %s is too long", db_path);
        return NULL;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0660);
    if (fd < 0) {
        buf_printf(err, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        buf_printf(err, "%s is not a regular file", path);
        close(fd);
        return NULL;
    }
    /* Growing to the full size is idempotent: two processes racing agree. */
    if (sb.st_size < EPOCH_FILE_SIZE && ftruncate(fd, EPOCH_FILE_SIZE) < 0) {
        buf_printf(err, "cannot size %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, EPOCH_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        buf_printf(err, "cannot map %s: %s", path, strerror(errno));
        return NULL;
    }
    struct epochs *e = calloc(1, sizeof *e);
    if (!e) {
        munmap(p, EPOCH_FILE_SIZE);
        buf_puts(err, "out of memory");
        return NULL;
    }
    e->page = p;
    /* A new file is all zeros, which is a valid state: stamp it. A file with
     * another magic was not written by aigw: refuse to trust it. */
    uint64_t zero = 0;
    if (!atomic_compare_exchange_strong(&e->page->magic, &zero, EPOCH_MAGIC) &&
        zero != EPOCH_MAGIC) {
        buf_printf(err, "%s was not made by aigw (remove it; it is made again)", path);
        epochs_close(e);
        return NULL;
    }
    return e;
}

void epochs_close(struct epochs *e)
{
    if (!e)
        return;
    munmap(e->page, EPOCH_FILE_SIZE);
    free(e);
}

uint64_t epochs_read(const struct epochs *e, enum epoch_kind kind)
{
    return atomic_load_explicit(&e->page->counter[kind].n, memory_order_acquire);
}

void epochs_bump(struct epochs *e, enum epoch_kind kind)
{
    atomic_fetch_add_explicit(&e->page->counter[kind].n, 1, memory_order_acq_rel);
}

void epochs_bump_all(const char *db_path)
{
    struct buf err = {0};
    struct epochs *e = epochs_open(db_path, 0, &err);
    buf_free(&err);
    if (!e)
        return;
    for (int k = 0; k < EPOCH__COUNT; k++)
        epochs_bump(e, (enum epoch_kind)k);
    epochs_close(e);
}

/* io/atomicfile.c — see atomicfile.h. */
#include "io/atomicfile.h"

#include "core/base/common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int atomic_write_all(int fd, const void *buf, uint64_t n) {
    const uint8_t *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (r == 0) return EIO;
        p += r;
        n -= (uint64_t)r;
    }
    return 0;
}

int atomic_write_fail(const char *path, int err, const char *what) {
    if (err == ENOSPC || err == EDQUOT)
        return TT_FAIL(-err, "writing %s failed: no space left on the device; free space or write it elsewhere", path);
    return TT_FAIL(-err, "%s %s failed: %s", what, path, strerror(err));
}

void atomic_sync_dir_of(const char *path) {
    char *copy = strdup(path);
    TT_ASSERT(copy);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (dfd < 0) return; /* best effort */
    (void)fsync(dfd);
    close(dfd);
}

int atomic_partial_open(const char *path, char **tmp_out) {
    size_t tl = strlen(path) + 16;
    char *tmp = tt_xmalloc(tl);
    snprintf(tmp, tl, "%s.partial", path);
    tt_partial_note(tmp); /* removed if a signal ends the process before the rename */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return TT_FAIL(-e, "cannot create %s: %s", path, strerror(e));
    }
    *tmp_out = tmp;
    return fd;
}

int atomic_partial_close(int fd, char *tmp, const char *path) {
    int rc = 0;
    if (fsync(fd) != 0) rc = atomic_write_fail(path, errno, "syncing");
    if (close(fd) != 0 && rc == 0) rc = atomic_write_fail(path, errno, "closing");
    if (rc) {
        unlink(tmp);
        free(tmp);
    }
    return rc;
}

int atomic_write_partial_parts(const char *path, const void *const *parts, const size_t *sizes, int nparts,
                               char **tmp_out) {
    char *tmp;
    int fd = atomic_partial_open(path, &tmp);
    if (fd < 0) return fd;
    int err = 0;
    for (int i = 0; i < nparts && !err; i++) err = atomic_write_all(fd, parts[i], sizes[i]);
    if (err) {
        close(fd);
        unlink(tmp);
        free(tmp);
        return atomic_write_fail(path, err, "writing");
    }
    int rc = atomic_partial_close(fd, tmp, path);
    if (rc == 0) *tmp_out = tmp;
    return rc;
}

int atomic_write_partial(const char *path, const void *data, size_t len, char **tmp_out) {
    return atomic_write_partial_parts(path, &data, &len, 1, tmp_out);
}

int atomic_commit(char *tmp, const char *path) {
    int rc = 0;
    if (rename(tmp, path) != 0) {
        rc = atomic_write_fail(path, errno, "renaming into place");
        unlink(tmp);
    } else {
        atomic_sync_dir_of(path);
    }
    free(tmp);
    return rc;
}

int atomic_write_parts(const char *path, const void *const *parts, const size_t *sizes, int nparts) {
    char *tmp = NULL;
    int rc = atomic_write_partial_parts(path, parts, sizes, nparts, &tmp);
    return rc ? rc : atomic_commit(tmp, path);
}

int atomic_write_file(const char *path, const void *data, size_t len) {
    return atomic_write_parts(path, &data, &len, 1);
}

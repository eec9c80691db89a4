/* io/atomicfile.c — see atomicfile.h. */
#include "io/atomicfile.h"

#include "core/base/common.h"

#include <errno.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

int atomic_fs_room(const char *path, int is_dir, uint64_t *avail, uint64_t *dev) {
    char d[4096], up[4096];
    if (snprintf(d, sizeof d, "%s", path) >= (int)sizeof d) return -1;
    struct statvfs vs;
    struct stat sb;
    for (int up_one = !is_dir;; up_one = 1) {
        if (up_one) { /* dirname writes into its argument or returns a static ".": through a copy */
            memcpy(up, d, sizeof up);
            snprintf(d, sizeof d, "%s", dirname(up));
        }
        if (stat(d, &sb) == 0) break;
        if (errno != ENOENT || strcmp(d, ".") == 0 || strcmp(d, "/") == 0) return -1;
    }
    if (statvfs(d, &vs) != 0) return -1;
    *avail = (uint64_t)vs.f_bavail * vs.f_frsize;
    *dev = (uint64_t)sb.st_dev;
    return 0;
}

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
        return TT_FAIL(-err, "writing %s failed: %s; free space or write it elsewhere", path,
                       err == EDQUOT ? "the disk quota is used up" : "no space left on the device");
    if (err == EFBIG) { /* the process's file size limit (tools/main.c ignores SIGXFSZ so that a write says so), or
                         * the file system's largest file (FAT32's 4 GiB) */
        if (tt_rlimit_set(RLIMIT_FSIZE, NULL))
            return TT_FAIL(-err, "writing %s failed: the file size limit (ulimit -f) is reached; raise it and run "
                                 "again", path);
        return TT_FAIL(-err, "writing %s failed: its file system cannot hold a file that large; write it elsewhere",
                       path);
    }
    if (err == ENOENT && strcmp(what, "renaming into place") == 0)
        return TT_FAIL(-err, "renaming into place %s failed: its folder, or the file %s.partial being written, was "
                             "removed or moved meanwhile; run again where the folder is", path, path);
    if (err == EROFS) return TT_FAIL(-err, "%s %s failed: its file system became read-only; write it elsewhere", what, path);
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

int atomic_partial_open(const char *path, atomic_partial *p) {
    p->fd = tt_partial_open(path, &p->tmp); /* on failure p->tmp is NULL: nothing of ours to remove */
    return p->fd < 0 ? p->fd : 0;
}

void atomic_partial_drop(atomic_partial *p) {
    if (!p->tmp) return;
    unlink(p->tmp);
    close(p->fd);
    free(p->tmp);
    p->tmp = NULL;
    p->fd = -1;
}

int atomic_write_partial_parts(const char *path, const void *const *parts, const size_t *sizes, int nparts,
                               atomic_partial *p) {
    int rc = atomic_partial_open(path, p);
    if (rc) return rc;
    int err = 0;
    for (int i = 0; i < nparts && !err; i++) err = atomic_write_all(p->fd, parts[i], sizes[i]);
    if (err) rc = atomic_write_fail(path, err, "writing");
    else if (fsync(p->fd) != 0) rc = atomic_write_fail(path, errno, "syncing");
    if (rc) atomic_partial_drop(p);
    return rc;
}

int atomic_write_partial(const char *path, const void *data, size_t len, atomic_partial *p) {
    return atomic_write_partial_parts(path, &data, &len, 1, p);
}

int atomic_commit(atomic_partial *p, const char *path) {
    TT_ASSERT(p->tmp);
    int rc = 0;
    if (fsync(p->fd) != 0) rc = atomic_write_fail(path, errno, "syncing");
    else if (rename(p->tmp, path) != 0) rc = atomic_write_fail(path, errno, "renaming into place");
    if (rc) {
        atomic_partial_drop(p);
        return rc;
    }
    close(p->fd); /* synced before the rename: nothing left for close to report */
    free(p->tmp);
    p->tmp = NULL;
    p->fd = -1;
    atomic_sync_dir_of(path);
    return 0;
}

int atomic_write_parts(const char *path, const void *const *parts, const size_t *sizes, int nparts) {
    atomic_partial p;
    int rc = atomic_write_partial_parts(path, parts, sizes, nparts, &p);
    return rc ? rc : atomic_commit(&p, path);
}

int atomic_write_file(const char *path, const void *data, size_t len) {
    return atomic_write_parts(path, &data, &len, 1);
}

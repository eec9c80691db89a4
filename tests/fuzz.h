/* tests/fuzz.h — what the libFuzzer targets (tests/fuzz_*.c) share.
 *
 * Parsers that take a path or a directory are fuzzed through real files: the
 * input is written into a private directory (made once per process, removed
 * at exit) and the parser opens it exactly as the commands do. The writes go
 * to $TMPDIR (default /tmp); a tmpfs there keeps the runs fast.
 *
 * Where a format has a checksum the targets re-forge it (as a forger would):
 * otherwise nearly every mutation would stop at the checksum comparison,
 * which the unit tests already cover, and the structural checks behind it
 * would never be reached. */
#ifndef TT_FUZZ_H
#define TT_FUZZ_H

#include "core/base/common.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_fuzz_dir[512];

static void fuzz_cleanup(void) {
    if (!g_fuzz_dir[0]) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_fuzz_dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_fuzz_dir);
}

/* The process's private directory (created on the first call). */
static inline const char *fuzz_dir(void) {
    if (!g_fuzz_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_fuzz_dir, sizeof g_fuzz_dir, "%s/tt-fuzz.XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(g_fuzz_dir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(fuzz_cleanup);
    }
    return g_fuzz_dir;
}

/* Writes n bytes as the whole file fuzz_dir()/name; returns its path (a
 * static buffer, valid until the next call). Aborts if the write fails: a
 * short file would be a false finding. */
static inline const char *fuzz_put(const char *name, const void *data, size_t n) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const uint8_t *p = data;
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, p + done, n - done);
        if (w <= 0) {
            perror(path);
            abort();
        }
        done += (size_t)w;
    }
    close(fd);
    return path;
}

/* An exact-size heap copy of the input, so ASan catches a read past its end
 * (libFuzzer's own buffer may be larger). */
static inline uint8_t *fuzz_copy(const uint8_t *data, size_t size) {
    uint8_t *b = malloc(size ? size : 1);
    if (!b) abort();
    if (size) memcpy(b, data, size);
    return b;
}

static inline uint32_t fuzz_ld32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t fuzz_ld64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

#endif

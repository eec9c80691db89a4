/* tests/test_uring.c — the io_uring read engine against files with a known
 * pattern (each 8-byte word holds its own byte offset plus a per-file salt):
 * every queue depth / chunk size / buffer kind, concurrent reads and their
 * tags, reads past the end, the zero-filled tail of an unpadded file, injected
 * faults and short reads, the open errors, and the statistics; all of it
 * for both engines (io_uring, and the pread threads that stand in where
 * io_uring is refused), and the fallback from one to the other under a
 * seccomp filter that refuses io_uring_setup, as Docker's default profile
 * does, and the page cache where a filesystem refuses O_DIRECT (a filter
 * again). Tests the threads only (and says so) when io_uring is not available;
 * falls back to buffered reads (and says so) when the temp directory does
 * not support O_DIRECT. */
#include "io/uring.h"

#include "core/base/common.h"
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MiB (1024ull * 1024ull)
#define KiB 1024ull

static char g_dir[512];
static char g_fa[600], g_fb[600];       /* padded file, unpadded file */
static const uint64_t SIZE_A = 4 * MiB + 20 * KiB;
static const uint64_t SIZE_B = 1 * MiB + 1000; /* not a multiple of 4096 */
static const uint64_t SALT_A = 0xA1ull << 48, SALT_B = 0xB2ull << 48;
static int g_direct = 1;
static int g_engine = UR_ENGINE_URING; /* the engine under test */

static uint64_t pat(uint64_t off, uint64_t salt) { return off + salt; }

static int write_pattern(const char *path, uint64_t size, uint64_t salt) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return -1;
    uint64_t *buf = tt_xmalloc(MiB);
    for (uint64_t o = 0; o < size; o += MiB) {
        uint64_t n = size - o < MiB ? size - o : MiB;
        for (uint64_t i = 0; i < n / 8; i++) buf[i] = pat(o + 8 * i, salt);
        if (write(fd, buf, n) != (ssize_t)n) { free(buf); close(fd); return -1; }
    }
    free(buf);
    return close(fd);
}

/* Checks that buf holds file bytes [off, off+len) (zeros past size). Returns
 * the number of wrong words (reports the first). */
static uint64_t check_range(const void *buf, uint64_t off, uint64_t len, uint64_t size,
                            uint64_t salt, const char *what) {
    const uint64_t *w = buf;
    uint64_t bad = 0;
    for (uint64_t i = 0; i < len / 8; i++) {
        uint64_t o = off + 8 * i;
        uint64_t want = o < size ? pat(o, salt) : 0;
        if (w[i] != want) {
            if (!bad)
                fprintf(stderr, "%s: word at file offset %llu is %#llx, want %#llx\n", what,
                        (unsigned long long)o, (unsigned long long)w[i],
                        (unsigned long long)want);
            bad++;
        }
    }
    if (bad) tt_test_failures++;
    return bad;
}

static uring_reader *open_or_die(const char *path, unsigned qd, uint64_t chunk) {
    uring_opts o;
    uring_opts_default(&o);
    o.qd = qd;
    o.chunk = chunk;
    o.direct = g_direct;
    o.engine = g_engine;
    uring_reader *r = NULL;
    int rc = uring_reader_open(&r, path, &o);
    if (rc) {
        fprintf(stderr, "uring_reader_open(%s) failed: %d %s\n", path, rc, tt_lasterr());
        exit(1);
    }
    unsigned nw;
    const char *en = uring_reader_engine(r, &nw);
    CHECK_MSG(!strcmp(en, g_engine == UR_ENGINE_URING ? "io_uring" : "threads"), "engine %s", en);
    CHECK_EQ_INT(nw, g_engine == UR_ENGINE_URING ? 0 : qd < UR_THREADS_MAX ? qd : UR_THREADS_MAX);
    return r;
}

/* Registers buf with r; returns 1 when the ring now reads into it with
 * READ_FIXED (never for the threads engine, whose registration is a no-op).
 * Under a small locked-memory limit (non-root, `ulimit -l` 8 MiB) a closed
 * ring's registration is released a moment after close, so -ENOMEM is retried
 * for a while; if it persists, the message must say what to do and the test
 * goes on with plain reads. */
static int g_reg_refused;
static int register_or_note(uring_reader *r, void *buf, size_t len) {
    int rc = -ENOMEM;
    for (int i = 0; i < 100 && rc == -ENOMEM; i++) {
        rc = uring_reader_register(r, buf, len);
        if (rc == -ENOMEM) usleep(10 * 1000);
    }
    if (rc == -ENOMEM) {
        CHECK_MSG(strstr(tt_lasterr(), "ulimit -l") != NULL, "message: %s", tt_lasterr());
        if (!g_reg_refused++)
            fprintf(stderr, "note: registration refused, going on with plain reads: %s\n",
                    tt_lasterr());
        return 0;
    }
    CHECK_MSG(rc == 0, "register: %d %s", rc, tt_lasterr());
    return rc == 0 && g_engine == UR_ENGINE_URING;
}

/* every qd x chunk x (registered or not): whole file and a middle range */
static void test_matrix(void) {
    static const unsigned qds[] = {1, 4, 32};
    static const uint64_t chunks[] = {4 * KiB, 64 * KiB, 1 * MiB};
    uint8_t *buf = iobuf_alloc(SIZE_A);
    CHECK(buf != NULL);
    for (int reg = 0; reg < 2; reg++)
        for (size_t qi = 0; qi < 3; qi++)
            for (size_t ci = 0; ci < 3; ci++) {
                uring_reader *r = open_or_die(g_fa, qds[qi], chunks[ci]);
                CHECK_EQ_INT(uring_reader_file_size(r), SIZE_A);
                if (reg) register_or_note(r, buf, SIZE_A);
                char what[96];
                snprintf(what, sizeof what, "qd %u chunk %llu %s", qds[qi],
                         (unsigned long long)chunks[ci], reg ? "registered" : "plain");
                memset(buf, 0xEE, SIZE_A);
                CHECK_EQ_INT(uring_reader_read(r, buf, 0, SIZE_A), 0);
                check_range(buf, 0, SIZE_A, SIZE_A, SALT_A, what);
                uint64_t off = 12 * KiB, len = 2 * MiB + 8 * KiB;
                memset(buf, 0xEE, SIZE_A);
                CHECK_EQ_INT(uring_reader_read(r, buf + 4096, off, len), 0);
                check_range(buf + 4096, off, len, SIZE_A, SALT_A, what);
                /* nothing outside the destination was written */
                CHECK(buf[4095] == 0xEE && buf[4096 + len] == 0xEE);
                uring_stats st;
                uring_reader_stats(r, &st);
                uint64_t reqs = tt_div_up(SIZE_A, chunks[ci]) + tt_div_up(len, chunks[ci]);
                CHECK_EQ_INT(st.bytes, SIZE_A + len);
                CHECK_EQ_INT(st.requests, reqs + st.short_reads);
                uint64_t tag;
                CHECK_EQ_INT(uring_reader_wait(r, &tag), -EAGAIN);
                uring_reader_close(r);
            }
    iobuf_free(buf, SIZE_A);
}

/* many reads in flight at once, with distinct tags, some registered */
static void test_concurrent(void) {
    enum { NJ = 12 };
    uint64_t total = 0, offs[NJ], lens[NJ], dsto[NJ];
    for (int i = 0; i < NJ; i++) {
        offs[i] = (uint64_t)((i * 37) % 600) * 4096;
        lens[i] = (uint64_t)(1 + (i * 13) % 40) * 4096 * (i % 3 == 0 ? 8 : 1);
        dsto[i] = total;
        total += lens[i];
    }
    uint8_t *buf = iobuf_alloc(total);
    for (int pass = 0; pass < 2; pass++) {
        uring_reader *r = open_or_die(g_fa, 8, 64 * KiB);
        /* pass 1: only the first half of the buffer is registered */
        if (pass) register_or_note(r, buf, dsto[NJ / 2]);
        memset(buf, 0xEE, total);
        for (int i = 0; i < NJ; i++)
            CHECK_EQ_INT(uring_reader_submit(r, buf + dsto[i], offs[i], lens[i], 1000 + i), 0);
        int seen[NJ] = {0}, n = 0;
        for (;;) {
            uint64_t tag = 0;
            int rc = uring_reader_wait(r, &tag);
            if (rc == -EAGAIN) break;
            CHECK_EQ_INT(rc, 0);
            CHECK(tag >= 1000 && tag < 1000 + NJ);
            if (tag >= 1000 && tag < 1000 + NJ) seen[tag - 1000]++;
            n++;
        }
        CHECK_EQ_INT(n, NJ);
        for (int i = 0; i < NJ; i++) {
            CHECK_EQ_INT(seen[i], 1);
            check_range(buf + dsto[i], offs[i], lens[i], SIZE_A, SALT_A, "concurrent");
        }
        /* interleaved: submit, wait for one, submit more, a sync read between */
        memset(buf, 0xEE, total);
        int next = 0, got = 0;
        memset(seen, 0, sizeof seen);
        while (got < NJ) {
            while (next < NJ && next - got < 3) {
                CHECK_EQ_INT(uring_reader_submit(r, buf + dsto[next], offs[next], lens[next],
                                                 2000 + next), 0);
                next++;
            }
            if (got == 4) {
                uint8_t *tmp = iobuf_alloc(64 * KiB);
                CHECK_EQ_INT(uring_reader_read(r, tmp, 1 * MiB, 64 * KiB), 0);
                check_range(tmp, 1 * MiB, 64 * KiB, SIZE_A, SALT_A, "sync among async");
                iobuf_free(tmp, 64 * KiB);
            }
            uint64_t tag = 0;
            int rc = uring_reader_wait(r, &tag);
            CHECK_EQ_INT(rc, 0);
            if (rc) break;
            CHECK(tag >= 2000 && tag < 2000 + NJ);
            if (tag >= 2000 && tag < 2000 + NJ) seen[tag - 2000]++;
            got++;
        }
        for (int i = 0; i < NJ; i++) {
            CHECK_EQ_INT(seen[i], 1);
            check_range(buf + dsto[i], offs[i], lens[i], SIZE_A, SALT_A, "interleaved");
        }
        uint64_t tag;
        CHECK_EQ_INT(uring_reader_wait(r, &tag), -EAGAIN);
        uring_reader_close(r);
    }
    iobuf_free(buf, total);
}

/* qd 1: reads complete, and are returned, in submission order; a zero-length
 * read comes back too */
static void test_order(void) {
    uring_reader *r = open_or_die(g_fa, 1, 64 * KiB);
    uint8_t *buf = iobuf_alloc(5 * 128 * KiB);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(uring_reader_submit(r, buf + i * 128 * KiB, (uint64_t)i * 256 * KiB,
                                         128 * KiB, 10 + i), 0);
    CHECK_EQ_INT(uring_reader_submit(r, buf, 0, 0, 99), 0);
    uint64_t tag;
    CHECK_EQ_INT(uring_reader_wait(r, &tag), 0);
    CHECK_EQ_INT(tag, 99); /* finished at submit time */
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(uring_reader_wait(r, &tag), 0);
        CHECK_EQ_INT(tag, 10 + i);
        check_range(buf + i * 128 * KiB, (uint64_t)i * 256 * KiB, 128 * KiB, SIZE_A, SALT_A,
                    "ordered");
    }
    CHECK_EQ_INT(uring_reader_wait(r, &tag), -EAGAIN);
    iobuf_free(buf, 5 * 128 * KiB);
    uring_reader_close(r);
}

/* registered buffers: a read that starts outside the registered range and
 * runs into it is clipped at the boundary (chunk 192K does not divide 1M) */
static void test_register_boundary(void) {
    uring_reader *r = open_or_die(g_fa, 4, 192 * KiB);
    uint8_t *buf = iobuf_alloc(2 * MiB);
    int reg = register_or_note(r, buf + 1 * MiB, 1 * MiB);
    CHECK_EQ_INT(uring_reader_read(r, buf, 8 * KiB, 2 * MiB), 0);
    check_range(buf, 8 * KiB, 2 * MiB, SIZE_A, SALT_A, "straddling registration");
    uring_stats st;
    uring_reader_stats(r, &st);
    /* 6 + 6 when clipped at 1 MiB, else 11 */
    CHECK_EQ_INT(st.requests - st.short_reads, reg ? 12 : 11);
    iobuf_free(buf, 2 * MiB);
    uring_reader_close(r);
}

/* a registration of more than 1 GiB is split into pieces; a read across the
 * 1 GiB boundary becomes two READ_FIXED requests */
static void test_register_big(void) {
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || (uint64_t)pages * (uint64_t)psz < 6ull * 1024 * MiB) {
        fprintf(stderr, "note: skipping the >1 GiB registration case (little free memory)\n");
        return;
    }
    size_t len = (size_t)(1024 * MiB + 2 * MiB);
    uint8_t *buf = iobuf_alloc(len);
    CHECK(buf != NULL);
    if (!buf) return;
    uring_reader *r = open_or_die(g_fa, 4, 1 * MiB);
    int rc = uring_reader_register(r, buf, len);
    int fixed = g_engine == UR_ENGINE_URING;
    if (rc == -ENOMEM && fixed) {
        /* the locked-memory limit is below 1 GiB: the message must say what to do */
        CHECK(strstr(tt_lasterr(), "ulimit -l") != NULL);
        fprintf(stderr, "note: >1 GiB registration refused (%s)\n", tt_lasterr());
    } else {
        CHECK_EQ_INT(rc, 0);
        uint8_t *dst = buf + 1024 * MiB - 512 * KiB;
        CHECK_EQ_INT(uring_reader_read(r, dst, 64 * KiB, 1 * MiB), 0);
        check_range(dst, 64 * KiB, 1 * MiB, SIZE_A, SALT_A, "across the 1 GiB piece");
        uring_stats st;
        uring_reader_stats(r, &st);
        CHECK_EQ_INT(st.requests - st.short_reads, fixed ? 2 : 1);
    }
    uring_reader_close(r);
    iobuf_free(buf, len);
}

/* reads past the end of the file are a user-level error; the zero-filled tail
 * of an unpadded file is not */
static void test_eof(void) {
    uring_reader *r = open_or_die(g_fb, 4, 4 * KiB);
    uint64_t padded = tt_align_up(SIZE_B, 4096);
    uint8_t *buf = iobuf_alloc(padded + 8192);
    memset(buf, 0xFF, padded);
    CHECK_EQ_INT(uring_reader_read(r, buf, 0, padded), 0);
    check_range(buf, 0, padded, SIZE_B, SALT_B, "unpadded file (zero tail)");
    memset(buf, 0xFF, 4096);
    CHECK_EQ_INT(uring_reader_read(r, buf, padded - 4096, 4096), 0);
    check_range(buf, padded - 4096, 4096, SIZE_B, SALT_B, "last block");

    CHECK_EQ_INT(uring_reader_submit(r, buf, padded, 4096, 1), -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), g_fb) != NULL, "message: %s", tt_lasterr());
    CHECK_EQ_INT(uring_reader_submit(r, buf, padded - 4096, 8192, 2), -EINVAL);
    CHECK_EQ_INT(uring_reader_read(r, buf, padded - 4096, 8192), -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), g_fb) != NULL && strstr(tt_lasterr(), "end of the file"),
              "message: %s", tt_lasterr());
    CHECK_EQ_INT(uring_reader_submit(r, buf, UINT64_MAX - 4095, 4096, 3), -EINVAL);
    uint64_t tag;
    CHECK_EQ_INT(uring_reader_wait(r, &tag), -EAGAIN); /* nothing was queued */
    /* still usable */
    CHECK_EQ_INT(uring_reader_read(r, buf, 0, 8192), 0);
    check_range(buf, 0, 8192, SIZE_B, SALT_B, "after EOF errors");
    iobuf_free(buf, padded + 8192);
    uring_reader_close(r);
}

/* an injected error fails its read with that errno and a message naming the
 * file and the offset; the reader goes on working */
static void test_fault(void) {
    uint8_t *buf = iobuf_alloc(2 * MiB);
    /* qd 1: the second request is the one at off + 64K */
    uring_reader *r = open_or_die(g_fa, 1, 64 * KiB);
    uring_reader_inject_fault(r, 2, EIO);
    CHECK_EQ_INT(uring_reader_read(r, buf, 128 * KiB, 256 * KiB), -EIO);
    char want[700];
    snprintf(want, sizeof want, "read of %s at offset %llu (65536 bytes) failed: %s", g_fa,
             (unsigned long long)(192 * KiB), strerror(EIO));
    CHECK_MSG(strstr(tt_lasterr(), want) != NULL, "message: '%s', want '%s'", tt_lasterr(), want);
    uring_stats st;
    uring_reader_stats(r, &st);
    CHECK_EQ_INT(st.requests, 2); /* stopped issuing after the failure */
    CHECK_EQ_INT(uring_reader_read(r, buf, 128 * KiB, 256 * KiB), 0);
    check_range(buf, 128 * KiB, 256 * KiB, SIZE_A, SALT_A, "after a fault");
    uring_reader_close(r);

    /* qd 8, two reads in flight: the failed one comes back once, with its
     * errno, after all of its requests drained; the other one is intact */
    r = open_or_die(g_fa, 8, 64 * KiB);
    register_or_note(r, buf, 2 * MiB);
    memset(buf, 0xEE, 2 * MiB);
    uring_reader_inject_fault(r, 3, ENOSPC);
    CHECK_EQ_INT(uring_reader_submit(r, buf, 0, 1 * MiB, 1), 0);
    CHECK_EQ_INT(uring_reader_submit(r, buf + 1 * MiB, 2 * MiB, 1 * MiB, 2), 0);
    int nfail = 0, seen1 = 0, seen2 = 0;
    for (;;) {
        uint64_t tag = 0;
        int rc = uring_reader_wait(r, &tag);
        if (rc == -EAGAIN) break;
        if (tag == 1) seen1++;
        if (tag == 2) seen2++;
        if (rc) {
            nfail++;
            CHECK_EQ_INT(rc, -ENOSPC);
            CHECK_MSG(strstr(tt_lasterr(), g_fa) && strstr(tt_lasterr(), "at offset "),
                      "message: %s", tt_lasterr());
        } else {
            check_range(buf + (tag - 1) * MiB, (tag - 1) * 2 * MiB, 1 * MiB, SIZE_A, SALT_A,
                        "the read that did not fail");
        }
    }
    CHECK_EQ_INT(nfail, 1);
    CHECK_EQ_INT(seen1, 1);
    CHECK_EQ_INT(seen2, 1);
    uring_reader_stats(r, &st);
    uint64_t before = st.requests;
    /* no stray completion of the failed read shows up later */
    memset(buf, 0xEE, 2 * MiB);
    CHECK_EQ_INT(uring_reader_read(r, buf, 1 * MiB, 2 * MiB), 0);
    check_range(buf, 1 * MiB, 2 * MiB, SIZE_A, SALT_A, "reuse after a fault");
    uring_reader_stats(r, &st);
    CHECK_EQ_INT(st.requests - before, 32 + st.short_reads);
    uring_reader_close(r);
    iobuf_free(buf, 2 * MiB);
}

/* short reads are resubmitted for the remainder; the data is right only if
 * they are (the hook scribbles over the part it pretends was not read) */
static void test_short(void) {
    uint8_t *buf = iobuf_alloc(2 * MiB);
    for (int reg = 0; reg < 2; reg++) {
        uring_reader *r = open_or_die(g_fa, 4, 64 * KiB);
        if (reg) register_or_note(r, buf, 2 * MiB);
        memset(buf, 0xEE, 2 * MiB);
        uring_reader_inject_short(r, 3);
        CHECK_EQ_INT(uring_reader_read(r, buf, 256 * KiB, 1 * MiB), 0);
        check_range(buf, 256 * KiB, 1 * MiB, SIZE_A, SALT_A, "short read retried");
        uring_stats st;
        uring_reader_stats(r, &st);
        CHECK_EQ_INT(st.short_reads, 1);
        CHECK_EQ_INT(st.requests, 16 + 1);
        CHECK_EQ_INT(st.bytes, 1 * MiB);
        /* the very next completion, in a single-request read */
        memset(buf, 0xEE, 64 * KiB);
        uring_reader_inject_short(r, 1);
        CHECK_EQ_INT(uring_reader_read(r, buf, 64 * KiB, 64 * KiB), 0);
        check_range(buf, 64 * KiB, 64 * KiB, SIZE_A, SALT_A, "short first completion");
        uring_reader_stats(r, &st);
        CHECK_EQ_INT(st.short_reads, 2);
        CHECK_EQ_INT(st.requests, 16 + 1 + 2);
        uring_reader_close(r);
    }
    iobuf_free(buf, 2 * MiB);
}

static void test_open_errors(void) {
    uring_reader *r = (uring_reader *)1;
    char p[700];
    snprintf(p, sizeof p, "%s/does-not-exist.tier", g_dir);
    CHECK_EQ_INT(uring_reader_open(&r, p, NULL), -ENOENT);
    CHECK(r == NULL);
    CHECK_MSG(strstr(tt_lasterr(), p) != NULL, "message: %s", tt_lasterr());
    CHECK_EQ_INT(uring_reader_open(&r, g_dir, NULL), -EISDIR);
    CHECK_MSG(strstr(tt_lasterr(), g_dir) && strstr(tt_lasterr(), "directory"), "message: %s",
              tt_lasterr());
    uring_opts o;
    uring_opts_default(&o);
    o.direct = 0;
    CHECK_EQ_INT(uring_reader_open(&r, g_dir, &o), -EISDIR);
    CHECK_EQ_INT(uring_reader_open(&r, "/dev/null", &o), -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "/dev/null") != NULL, "message: %s", tt_lasterr());
    o.qd = 0;
    CHECK_EQ_INT(uring_reader_open(&r, g_fa, &o), -EINVAL);
    uring_opts_default(&o);
    o.chunk = 1000;
    CHECK_EQ_INT(uring_reader_open(&r, g_fa, &o), -EINVAL);
    CHECK(r == NULL);
    uring_reader_close(NULL);
    iobuf_free(NULL, 0);
}

/* closing a reader with reads still queued and in flight waits for what is
 * being read (no buffer is written after close; ASan/TSan would see it) */
static void test_close_busy(void) {
    uint8_t *buf = iobuf_alloc(4 * MiB);
    uring_reader *r = open_or_die(g_fa, 2, 64 * KiB);
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(uring_reader_submit(r, buf + (uint64_t)i * 512 * KiB, (uint64_t)i * 512 * KiB, 512 * KiB, i), 0);
    uring_reader_close(r);
    iobuf_free(buf, 4 * MiB);
}

/* The threads engine's close with preads about to run (each worker sleeps 50 ms
 * first; one job waited for, then 10 ms for the workers to take the next
 * requests): close waits for the reads the workers hold and drops the queued
 * ones, so the buffer, refilled after close, keeps what it was given (a worker
 * left running would read into it, and touch the freed reader, which ASan
 * reports). A close that finds no read held proves nothing: it is tried again,
 * up to 5 times, and must have found some once. */
static void test_close_inflight(void) {
    if (g_engine != UR_ENGINE_THREADS) return; /* io_uring's close drains the ring: test_close_busy */
    uint8_t *buf = iobuf_alloc(4 * MiB);
    int held = 0;
    for (int attempt = 0; attempt < 5 && !held; attempt++) {
        uring_reader *r = open_or_die(g_fa, 4, 256 * KiB);
        uring_reader_inject_delay(r, 50 * 1000);
        for (int i = 0; i < 8; i++)
            CHECK_EQ_INT(uring_reader_submit(r, buf + (uint64_t)i * 512 * KiB, (uint64_t)i * 512 * KiB, 512 * KiB, i),
                         0);
        uint64_t tag;
        CHECK_EQ_INT(uring_reader_wait(r, &tag), 0);
        struct timespec settle = {0, 10 * 1000 * 1000};
        nanosleep(&settle, NULL);
        double t0 = tt_now();
        uring_reader_close(r);
        held = tt_now() - t0 >= 0.02;
        memset(buf, 0xa5, 4 * MiB);
        struct timespec pause = {0, 150 * 1000 * 1000}; /* longer than a worker's delay and read */
        nanosleep(&pause, NULL);
        size_t bad = 0;
        for (size_t i = 0; i < 4 * MiB; i++) bad += buf[i] != 0xa5;
        CHECK_MSG(bad == 0, "%zu bytes of the buffer changed after close", bad);
    }
    CHECK_MSG(held, "in 5 tries, close never found a worker's read to wait for");
    iobuf_free(buf, 4 * MiB);
}

/* reads run in parallel: io_uring keeps qd requests in flight; the threads
 * run several preads at once (timing decides how many overlap, so the best
 * of a few tries counts: a serialised engine never shows 2) */
static void test_parallel(void) {
    const unsigned qd = 4;
    unsigned best = 0;
    uint8_t *buf = iobuf_alloc(SIZE_A);
    for (int t = 0; t < 8 && best < 2; t++) {
        uring_reader *r = open_or_die(g_fa, qd, 1 * MiB);
        CHECK_EQ_INT(uring_reader_read(r, buf, 0, 4 * MiB), 0);
        uring_stats st;
        uring_reader_stats(r, &st);
        CHECK(st.max_inflight >= 1 && st.max_inflight <= qd);
        if (g_engine == UR_ENGINE_URING) CHECK_EQ_INT(st.max_inflight, qd);
        if (st.max_inflight > best) best = st.max_inflight;
        uring_reader_close(r);
    }
    CHECK_MSG(best >= 2, "at most %u read(s) at once in 8 tries", best);
    iobuf_free(buf, SIZE_A);
}

/* errors the kernel reports, through the engine: a file cut short after open
 * (end of file where the size said more) and a destination it cannot write */
static void test_kernel_errors(void) {
    char p[700];
    snprintf(p, sizeof p, "%s/cut.bin", g_dir);
    CHECK_EQ_INT(write_pattern(p, 1 * MiB, SALT_A), 0);
    uring_reader *r = open_or_die(p, 4, 64 * KiB);
    CHECK_EQ_INT(truncate(p, 256 * KiB), 0);
    uint8_t *buf = iobuf_alloc(128 * KiB);
    CHECK_EQ_INT(uring_reader_read(r, buf, 512 * KiB, 64 * KiB), -EIO);
    CHECK_MSG(strstr(tt_lasterr(), p) && strstr(tt_lasterr(), "unexpected end of file"), "message: %s", tt_lasterr());
    CHECK_EQ_INT(uring_reader_read(r, buf, 0, 128 * KiB), 0); /* what is left still reads */
    check_range(buf, 0, 128 * KiB, 1 * MiB, SALT_A, "after the file was cut");
    void *ro = mmap(NULL, 64 * KiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ro != MAP_FAILED);
    if (ro != MAP_FAILED) {
        uint64_t tag = 0;
        CHECK_EQ_INT(uring_reader_submit(r, ro, 0, 64 * KiB, 7), 0);
        CHECK_EQ_INT(uring_reader_wait(r, &tag), -EFAULT);
        CHECK_EQ_INT(tag, 7);
        CHECK_MSG(strstr(tt_lasterr(), p) && strstr(tt_lasterr(), strerror(EFAULT)), "message: %s", tt_lasterr());
        munmap(ro, 64 * KiB);
    }
    iobuf_free(buf, 128 * KiB);
    uring_reader_close(r);
    unlink(p);
}

/* TT_IO_ENGINE chooses where opts say auto; an unknown value is refused by
 * name; opts that name an engine win over it */
static void test_engine_env(int have_uring) {
    uring_opts o;
    uring_opts_default(&o);
    o.direct = g_direct;
    CHECK_EQ_INT(o.engine, UR_ENGINE_AUTO);
    uring_reader *r = NULL;
    setenv("TT_IO_ENGINE", "threads", 1);
    CHECK_EQ_INT(uring_reader_open(&r, g_fa, &o), 0);
    if (r) CHECK(!strcmp(uring_reader_engine(r, NULL), "threads"));
    uring_reader_close(r);
    if (have_uring) {
        o.engine = UR_ENGINE_URING;
        CHECK_EQ_INT(uring_reader_open(&r, g_fa, &o), 0);
        if (r) CHECK(!strcmp(uring_reader_engine(r, NULL), "io_uring"));
        uring_reader_close(r);
        o.engine = UR_ENGINE_AUTO;
        setenv("TT_IO_ENGINE", "uring", 1);
        CHECK_EQ_INT(uring_reader_open(&r, g_fa, &o), 0);
        if (r) CHECK(!strcmp(uring_reader_engine(r, NULL), "io_uring"));
        uring_reader_close(r);
    }
    setenv("TT_IO_ENGINE", "fast", 1);
    r = (uring_reader *)1;
    CHECK_EQ_INT(uring_reader_open(&r, g_fa, &o), -EINVAL);
    CHECK(r == NULL);
    CHECK_MSG(strstr(tt_lasterr(), "TT_IO_ENGINE=fast") && strstr(tt_lasterr(), "auto, uring or threads"),
              "message: %s", tt_lasterr());
    unsetenv("TT_IO_ENGINE");
}

#if defined(__x86_64__)
/* Installs a seccomp filter for the rest of this process. Returns 0, or -1
 * where seccomp filters cannot be installed. */
static int seccomp_install(struct sock_filter *f, unsigned short n) {
    struct sock_fprog prog = {n, f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) ? -1 : 0;
}

/* Refuses system call nr (io_uring_setup or io_uring_register) with err from
 * now on, as Docker's default seccomp profile does (EPERM), or an old
 * kernel's locked-memory accounting (ENOMEM). */
static int refuse_io_uring(int nr, int err) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    return seccomp_install(f, (unsigned short)(sizeof f / sizeof f[0]));
}

/* Refuses O_DIRECT opens with EINVAL from now on, as a filesystem without
 * direct IO does. */
static int refuse_o_direct(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])), /* flags, low word */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, O_DIRECT, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EINVAL & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    return seccomp_install(f, (unsigned short)(sizeof f / sizeof f[0]));
}

/* Runs body(arg) in a child whose stderr goes to log (cap bytes, NUL-ended);
 * the child exits 77 where body cannot install its filter. Returns 1 when the
 * child ran (its exit status checked: 0), 0 when it skipped (said so). */
static int in_child(void (*body)(const void *), const void *arg, const char *what, char *log, size_t cap) {
    char errpath[700];
    snprintf(errpath, sizeof errpath, "%s/child.err", g_dir);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 2) < 0) _exit(3);
        body(arg);
        fflush(stderr);
        _exit(tt_test_failures ? 1 : 0);
    }
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
    FILE *f = fopen(errpath, "r");
    size_t n = f ? fread(log, 1, cap - 1, f) : 0;
    log[n] = '\0';
    if (f) fclose(f);
    unlink(errpath);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        fprintf(stderr, "note: cannot install a seccomp filter here; the %s case is skipped\n", what);
        return 0;
    }
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child status %#x; its stderr:\n%s", what, st, log);
    return 1;
}

typedef struct refusal {
    int nr, err;
} refusal;

static void child_fallback(const void *arg) {
    const refusal *rf = arg;
    if (refuse_io_uring(rf->nr, rf->err)) _exit(77);
    unsetenv("TT_IO_ENGINE");
    uring_opts o;
    uring_opts_default(&o);
    o.direct = g_direct;
    uring_reader *r = NULL;
    uint8_t *buf = iobuf_alloc(SIZE_A);
    for (int k = 0; k < 2; k++) { /* twice: the note comes once */
        CHECK_EQ_INT(uring_reader_open(&r, g_fa, &o), 0);
        if (!r) _exit(1);
        CHECK(!strcmp(uring_reader_engine(r, NULL), "threads"));
        CHECK_EQ_INT(uring_reader_register(r, buf, SIZE_A), 0);
        CHECK_EQ_INT(uring_reader_read(r, buf, 0, SIZE_A), 0);
        check_range(buf, 0, SIZE_A, SIZE_A, SALT_A, "fallback read");
        uring_reader_close(r);
    }
    o.engine = UR_ENGINE_URING;
    CHECK_EQ_INT(uring_reader_open(&r, g_fa, &o), -rf->err);
    CHECK_MSG(strstr(tt_lasterr(), rf->err == EPERM ? "io_uring is not available on this system" : "out of locked memory"),
              "message: %s", tt_lasterr());
    iobuf_free(buf, SIZE_A);
}

static void child_no_direct(const void *arg) {
    (void)arg;
    if (refuse_o_direct()) _exit(77);
    uint8_t *buf = iobuf_alloc(SIZE_B + 8192);
    for (int e = UR_ENGINE_URING; e <= UR_ENGINE_THREADS; e++) {
        uring_opts o;
        uring_opts_default(&o);
        o.engine = e;
        o.chunk = 64 * KiB;
        uring_reader *r = NULL;
        CHECK_EQ_INT(uring_reader_open(&r, g_fb, &o), 0);
        if (!r) _exit(1);
        CHECK_EQ_INT(uring_reader_direct(r), 0);
        uint64_t padded = tt_align_up(SIZE_B, 4096);
        memset(buf, 0xEE, padded);
        CHECK_EQ_INT(uring_reader_read(r, buf, 0, padded), 0);
        check_range(buf, 0, padded, SIZE_B, SALT_B, "page cache after O_DIRECT was refused");
        uring_reader_close(r);
    }
    iobuf_free(buf, SIZE_B + 8192);
}

/* Once, in log: want is there, and not a second time. */
static void said_once(const char *log, const char *want, const char *then) {
    const char *a = strstr(log, want);
    CHECK_MSG(a && strstr(a, then), "stderr lacks '%s ... %s': %s", want, then, log);
    CHECK_MSG(a && !strstr(a + strlen(want), want), "said more than once: %s", log);
}
#endif

/* In a child under a filter refusing io_uring (system call nr, errno err):
 * auto falls back to the threads with one line on stderr (once per process)
 * that gives the reason, reads right; uring is refused with its sentence. */
static void test_fallback(int nr, int err) {
#if !defined(__x86_64__)
    (void)nr, (void)err;
    fprintf(stderr, "note: the seccomp cases are written for x86-64; skipped\n");
#else
    char log[4096];
    refusal rf = {nr, err};
    if (!in_child(child_fallback, &rf, "io_uring fallback", log, sizeof log)) return;
    char want[200];
    snprintf(want, sizeof want, "io_uring is not available here (%s: %s; %s",
             nr == __NR_io_uring_setup ? "io_uring_setup" : "io_uring_register", strerror(err),
             err == EPERM ? "kernel.io_uring_disabled, a seccomp filter" : "the locked-memory limit");
    said_once(log, want, "reading with 16 pread threads instead");
#endif
}

/* In a child under a filter refusing O_DIRECT opens: a reader asked for
 * O_DIRECT reads through the page cache, says so once, and reads right on
 * both engines. */
static void test_no_direct(void) {
#if defined(__x86_64__)
    char log[4096];
    if (!in_child(child_no_direct, NULL, "O_DIRECT fallback", log, sizeof log)) return;
    char want[800];
    snprintf(want, sizeof want, "tiertrain: %s is on a filesystem without direct IO", g_fb);
    said_once(log, want, "reading it through the page cache instead");
#endif
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/tt-uring.XXXXXX", tmp);
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "cannot create a directory under %s\n", tmp);
        return 1;
    }
    snprintf(g_fa, sizeof g_fa, "%s/a.bin", g_dir);
    snprintf(g_fb, sizeof g_fb, "%s/b.bin", g_dir);
    if (write_pattern(g_fa, SIZE_A, SALT_A) || write_pattern(g_fb, SIZE_B, SALT_B)) {
        fprintf(stderr, "cannot write the test files in %s\n", g_dir);
        return 1;
    }

    unsetenv("TT_IO_ENGINE"); /* the engine is the test's to choose */
    uring_reader *r = NULL;
    uring_opts o;
    uring_opts_default(&o);
    o.engine = UR_ENGINE_URING;
    int rc = uring_reader_open(&r, g_fa, &o), have_uring = 1;
    if (rc && strstr(tt_lasterr(), "io_uring is not available")) {
        fprintf(stderr, "note: testing the threads engine only: %s\n", tt_lasterr());
        have_uring = 0;
        o.engine = UR_ENGINE_THREADS;
        rc = uring_reader_open(&r, g_fa, &o);
    }
    if (rc) {
        fprintf(stderr, "open failed: %s\n", tt_lasterr());
        return 1;
    }
    if (!uring_reader_direct(r)) {
        fprintf(stderr, "note: %s does not support O_DIRECT; testing buffered reads only\n", g_dir);
        g_direct = 0;
    }
    uring_reader_close(r);
    const int direct_ok = g_direct;

    for (int engine = have_uring ? UR_ENGINE_URING : UR_ENGINE_THREADS; engine <= UR_ENGINE_THREADS; engine++) {
        g_engine = engine;
        for (int mode = direct_ok; mode >= 0; mode--) {
            g_direct = mode;
            fprintf(stderr, "-- %s, %s reads\n", engine == UR_ENGINE_URING ? "io_uring" : "threads",
                    mode ? "O_DIRECT" : "buffered");
            test_matrix();
            test_concurrent();
            test_order();
            test_register_boundary();
            test_eof();
            test_fault();
            test_short();
            test_close_busy();
            test_close_inflight();
            test_kernel_errors();
            if (mode) test_parallel(); /* O_DIRECT: each read waits for the disk, so they overlap */
        }
        g_direct = direct_ok;
        test_register_big();
    }
    test_open_errors();
    test_engine_env(have_uring);
    if (have_uring) {
        test_fallback(__NR_io_uring_setup, EPERM);
        test_fallback(__NR_io_uring_setup, ENOMEM);
        test_fallback(__NR_io_uring_register, EPERM);
    }
    if (direct_ok) test_no_direct();

    unlink(g_fa);
    unlink(g_fb);
    rmdir(g_dir);
    TEST_END();
}

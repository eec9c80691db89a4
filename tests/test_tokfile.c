/* tests/test_tokfile.c — token files: write/read round trip (header bytes
 * checked field by field), streaming across the writer's buffer, an empty
 * file, abort and failed opens leaving nothing behind, and every kind of
 * damage (truncated, extra bytes, wrong magic / version / dtype, bad vocab or
 * eot, a token >= vocab, too short, missing, a directory) giving -EINVAL (or
 * -ENOENT / -EISDIR) with the file named in the message; a file rewritten
 * in place while it is read stops train_eval_with before it scores the
 * rewritten windows. */
#include "core/base/common.h"
#include "core/tokfile.h"
#include "core/train.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static char g_dir[512];

static const char *path_of(const char *name) {
    static char p[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, name);
    return p[k];
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void wr64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

static void expect_bad(const char *p, int rc_expected, const char *needle) {
    tokfile *tf = NULL;
    int rc = tokfile_open(p, &tf);
    CHECK_MSG(rc == rc_expected, "%s: rc %d, expected %d (%s)", needle, rc, rc_expected, tt_lasterr());
    CHECK(tf == NULL);
    CHECK_MSG(strstr(tt_lasterr(), p) != NULL, "message lacks the file name: %s", tt_lasterr());
    CHECK_MSG(strstr(tt_lasterr(), needle) != NULL, "message lacks '%s': %s", needle, tt_lasterr());
    tokfile_close(tf);
}

/* Writes n tokens (i * 7919 % vocab, appended in chunks of `chunk`). */
static int write_file(const char *p, uint64_t n, uint32_t vocab, uint32_t eot, size_t chunk) {
    tokfile_writer *w;
    int rc = tokfile_write_open(p, vocab, eot, &w);
    if (rc) return rc;
    uint32_t *buf = malloc(chunk * sizeof *buf);
    uint64_t i = 0;
    while (i < n) {
        size_t k = 0;
        for (; k < chunk && i < n; k++, i++) buf[k] = (uint32_t)(i * 7919u % vocab);
        rc = tokfile_append(w, buf, k);
        if (rc) { free(buf); tokfile_write_abort(w); return rc; }
    }
    free(buf);
    CHECK_EQ_INT(tokfile_write_count(w), n);
    return tokfile_write_finish(w);
}

static void test_round_trip(void) {
    const char *p = path_of("a.tok");
    /* 600k tokens: more than two of the writer's 256k-token buffers, odd chunk size */
    uint64_t n = 600001;
    int rc = write_file(p, n, 50257, 50256, 9999);
    CHECK_MSG(rc == 0, "write: %s", tt_lasterr());
    CHECK(!fixture_exists(path_of("a.tok.partial")));
    uint64_t sz;
    uint8_t *raw = fixture_slurp(p, &sz);
    CHECK(raw && sz == 32 + 4 * n);
    if (raw && sz >= 32) { /* the header, field by field (docs/FORMAT.md) */
        CHECK(memcmp(raw, "TTTOKENS", 8) == 0);
        CHECK_EQ_INT(rd32(raw + 8), 1);
        CHECK_EQ_INT(rd32(raw + 12), 1);
        CHECK_EQ_INT(rd64(raw + 16), n);
        CHECK_EQ_INT(rd32(raw + 24), 50257);
        CHECK_EQ_INT(rd32(raw + 28), 50256);
        CHECK_EQ_INT(rd32(raw + 32 + 4 * 12345), 12345u * 7919u % 50257u); /* little-endian tokens */
    }
    free(raw);
    tokfile *tf;
    rc = tokfile_open(p, &tf);
    CHECK_MSG(rc == 0, "open: %s", tt_lasterr());
    if (rc == 0) {
        CHECK_EQ_INT(tokfile_count(tf), n);
        CHECK_EQ_INT(tokfile_vocab(tf), 50257);
        CHECK_EQ_INT(tokfile_eot(tf), 50256);
        CHECK(strcmp(tokfile_path(tf), p) == 0);
        const uint32_t *t = tokfile_tokens(tf);
        uint64_t bad = 0;
        for (uint64_t i = 0; i < n; i++) bad += t[i] != (uint32_t)(i * 7919u % 50257u);
        CHECK_EQ_INT(bad, 0);
        tokfile_close(tf);
    }
    /* rewriting replaces the old file atomically */
    rc = write_file(p, 10, 257, 256, 3);
    CHECK(rc == 0);
    rc = tokfile_open(p, &tf);
    CHECK(rc == 0 && tokfile_count(tf) == 10 && tokfile_vocab(tf) == 257);
    if (rc == 0) tokfile_close(tf);
    /* an empty token file is valid */
    p = path_of("empty.tok");
    CHECK(write_file(p, 0, 257, 256, 1) == 0);
    rc = tokfile_open(p, &tf);
    CHECK(rc == 0 && tokfile_count(tf) == 0);
    if (rc == 0) tokfile_close(tf);
}

static void test_abort(void) {
    const char *p = path_of("aborted.tok");
    tokfile_writer *w;
    CHECK(tokfile_write_open(p, 257, 256, &w) == 0);
    CHECK(fixture_exists(path_of("aborted.tok.partial"))); /* written under the temporary name */
    CHECK(!fixture_exists(p));
    uint32_t t[3] = {1, 2, 256};
    CHECK(tokfile_append(w, t, 3) == 0);
    tokfile_write_abort(w);
    CHECK(!fixture_exists(p));
    CHECK(!fixture_exists(path_of("aborted.tok.partial")));
    /* aborting a rewrite leaves the old file as it was */
    p = path_of("keep.tok");
    CHECK(write_file(p, 5, 257, 256, 5) == 0);
    CHECK(tokfile_write_open(p, 300, 299, &w) == 0);
    CHECK(tokfile_append(w, t, 3) == 0);
    tokfile_write_abort(w);
    tokfile *tf;
    CHECK(tokfile_open(p, &tf) == 0 && tokfile_count(tf) == 5 && tokfile_vocab(tf) == 257);
    tokfile_close(tf);
    /* the writer refuses a directory and a missing folder, naming the path */
    w = NULL;
    CHECK(tokfile_write_open(g_dir, 257, 256, &w) == -EISDIR && w == NULL);
    CHECK(strstr(tt_lasterr(), g_dir) && strstr(tt_lasterr(), "is a directory"));
    p = path_of("no/such/dir/x.tok");
    CHECK(tokfile_write_open(p, 257, 256, &w) == -ENOENT && w == NULL);
    CHECK(strstr(tt_lasterr(), p) && strstr(tt_lasterr(), "folder does not exist"));
    tokfile_write_abort(NULL);
    tokfile_close(NULL);
}

/* Writes n bytes of b as DIR/name and expects opening it to fail with -EINVAL
 * and needle in the message. */
static void expect_bad_bytes(const char *name, const void *b, uint64_t n, const char *needle) {
    const char *p = path_of(name);
    fixture_spit(p, b, n);
    expect_bad(p, -EINVAL, needle);
}

/* One header or token field of a good file overwritten (little-endian). */
static const struct {
    const char *name;
    uint64_t off;
    int width; /* 4 or 8 bytes */
    uint64_t value;
    const char *needle;
} k_patch[] = {
    {"version.tok", 8, 4, 3, "version 3"},
    {"dtype.tok", 12, 4, 2, "dtype 2"},
    {"eot.tok", 28, 4, 257, "header is corrupt"}, /* eot == vocab */
    {"vocab0.tok", 24, 4, 0, "header is corrupt"},
    {"count.tok", 16, 8, 1001, "is truncated"}, /* count says one more token than the file holds */
    {"huge-count.tok", 16, 8, UINT64_MAX / 2, "is truncated"}, /* 4 * count would overflow */
    {"token.tok", 32 + 4 * 777, 4, 257, "token 777 is 257, not below the vocab size 257"}, /* token == vocab */
    {"token-last.tok", 32 + 4 * 999, 4, 0xFFFFFFFFu, "token 999 is 4294967295"}, /* the last token */
};

static void test_damage(void) {
    const char *good = path_of("good.tok");
    CHECK(write_file(good, 1000, 257, 256, 100) == 0);
    uint64_t sz;
    uint8_t *raw = fixture_slurp(good, &sz);
    TT_ASSERT(raw && sz == 32 + 4000);
    uint8_t *b = malloc(sz + 8);

    expect_bad_bytes("truncated.tok", raw, sz - 4, "is truncated");
    expect_bad_bytes("half-token.tok", raw, sz - 2, "is truncated");
    expect_bad_bytes("header-only.tok", raw, 32, "is truncated");
    expect_bad_bytes("short.tok", raw, 20, "too short to be a token file");
    expect_bad_bytes("zero.tok", raw, 0, "too short to be a token file");

    memcpy(b, raw, sz);
    memset(b + sz, 0, 8);
    expect_bad_bytes("extra.tok", b, sz + 8, "bytes follow the header");

    memcpy(b, raw, sz);
    memcpy(b, "TTTOKENZ", 8);
    expect_bad_bytes("magic.tok", b, sz, "not a tiertrain token file");

    for (size_t i = 0; i < sizeof k_patch / sizeof *k_patch; i++) {
        memcpy(b, raw, sz);
        if (k_patch[i].width == 4) wr32(b + k_patch[i].off, (uint32_t)k_patch[i].value);
        else wr64(b + k_patch[i].off, k_patch[i].value);
        expect_bad_bytes(k_patch[i].name, b, sz, k_patch[i].needle);
    }

    expect_bad(path_of("missing.tok"), -ENOENT, "does not exist");
    expect_bad(g_dir, -EISDIR, "is a directory");
    free(b);
    free(raw);
}

/* Version 2: tokens with per-token flags, written in pieces, read back; damage refused. */
static void test_v2(void) {
    const char *p = path_of("v2.tok");
    tokfile_writer *w;
    CHECK(tokfile_write_open_v2(p, 300, 299, &w) == 0);
    uint32_t tok[10];
    uint8_t fl[10];
    for (int i = 0; i < 10; i++) {
        tok[i] = (uint32_t)(i * 31 % 300);
        fl[i] = (uint8_t)((i % 4 == 0 ? TOKFILE_START : 0) | (i % 4 >= 2 ? TOKFILE_TRAIN : 0));
    }
    CHECK(tokfile_append_flags(w, tok, fl, 6) == 0 && tokfile_append_flags(w, tok + 6, fl + 6, 4) == 0);
    CHECK(tokfile_write_finish(w) == 0);
    tokfile *tf;
    CHECK_MSG(tokfile_open(p, &tf) == 0, "%s", tt_lasterr());
    CHECK(tokfile_count(tf) == 10 && tokfile_flags(tf) && memcmp(tokfile_flags(tf), fl, 10) == 0 &&
          memcmp(tokfile_tokens(tf), tok, sizeof tok) == 0);
    tokfile_close(tf);
    uint64_t sz;
    uint8_t *raw = fixture_slurp(p, &sz);
    TT_ASSERT(raw && sz == 32 + 50);
    CHECK(raw[8] == 2);
    uint8_t *b = malloc(sz);
    memcpy(b, raw, sz);
    b[32 + 40 + 5] = 4;
    expect_bad_bytes("v2-flag.tok", b, sz, "token 5 has flags 4");
    memcpy(b, raw, sz);
    b[32 + 40] = TOKFILE_TRAIN;
    expect_bad_bytes("v2-first.tok", b, sz, "the first token must start an example");
    expect_bad_bytes("v2-no-flags.tok", raw, sz - 10, "is truncated");
    wr32(b + 8, 1); /* version 1 with the flags after the tokens: extra bytes */
    memcpy(b + 32, raw + 32, sz - 32);
    expect_bad_bytes("v1-with-flags.tok", b, sz, "bytes follow the header");
    /* a version-1 file has no flags */
    CHECK(write_file(path_of("v1.tok"), 10, 257, 256, 100) == 0);
    CHECK(tokfile_open(path_of("v1.tok"), &tf) == 0 && tokfile_flags(tf) == NULL);
    tokfile_close(tf);
    free(b);
    free(raw);
}

/* train_eval_with's evaluator for test_changed_while_read: the first batch
 * rewrites the file in place (same size, another mtime), as another program
 * writing into it would. */
typedef struct rewrite_ctx {
    const char *path;
    int calls;
} rewrite_ctx;
static int rewrite_on_first(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, double *loss) {
    rewrite_ctx *r = ctx;
    (void)in, (void)tgt, (void)wt;
    *loss = 0;
    if (r->calls++ == 0) {
        int fd = open(r->path, O_WRONLY);
        uint8_t ff[64];
        memset(ff, 0xff, sizeof ff); /* ids beyond any vocabulary: the embedding's assertion if they were read */
        CHECK(fd >= 0 && pwrite(fd, ff, sizeof ff, 4096) == (ssize_t)sizeof ff);
        struct timespec ts[2] = {{1000000000, 0}, {1000000000, 0}}; /* an mtime the writer cannot have given it */
        CHECK(futimens(fd, ts) == 0);
        close(fd);
    }
    return 0;
}

static void test_changed_while_read(void) {
    const char *p = path_of("changed.tok");
    CHECK(write_file(p, 20000, 257, 256, 4096) == 0);
    tokfile *tf = NULL;
    CHECK(tokfile_open(p, &tf) == 0);
    if (!tf) return;
    CHECK(tokfile_check(tf) == 0);
    tt_tokens tok = {.t = tokfile_tokens(tf), .n = tokfile_count(tf), .file = tf};
    rewrite_ctx r = {p, 0};
    double loss = 0;
    int rc = train_eval_with(rewrite_on_first, &r, 2, 32, 1, &tok, 10000, &loss);
    CHECK_EQ_INT(rc, -EIO);
    CHECK_EQ_INT(r.calls, 1); /* the second batch, read after the rewrite, was not scored */
    CHECK(strstr(tt_lasterr(), "changed.tok was modified while this run was reading it") != NULL);
    CHECK_EQ_INT(tokfile_check(tf), -EIO);
    tokfile_close(tf);
}

int main(void) {
    char *tmp = fixture_tmpdir();
    snprintf(g_dir, sizeof g_dir, "%s", tmp);
    free(tmp);
    test_round_trip();
    test_abort();
    test_damage();
    test_v2();
    test_changed_while_read();
    fixture_rm_rf(g_dir);
    TEST_END();
}

/* tests/test_lz4page.c — the lz4 page codec: round trips of zeros, random
 * (incompressible: pages stored raw), 2:4-sparse and unstructured-sparse data
 * at lengths around the page size and of several MiB; a too-small output
 * buffer; and corrupt inputs (bad header fields, truncation, page sizes out of
 * range, pages that decompress to the wrong length, random byte flips over
 * many seeds), which must give -EINVAL with a message and never touch memory
 * out of bounds (buffers are malloc'ed to their exact size so ASan sees it). */
#include "io/lz4page.h"

#include "core/base/common.h"
#include "tests/test.h"

#include <errno.h>
#include <lz4.h>
#include <string.h>

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint32_t ld32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void st32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

enum { K_ZERO, K_RANDOM, K_SPARSE24, K_SPARSE_RUNS, K_TEXT };

static void fill(uint8_t *p, uint64_t n, int kind) {
    switch (kind) {
    case K_ZERO: memset(p, 0, n); break;
    case K_RANDOM:
        for (uint64_t i = 0; i < n; i++) p[i] = (uint8_t)rnd();
        break;
    case K_SPARSE24: /* bf16 weights, 2 of every 4 zero, at random positions */
        for (uint64_t g = 0; g < n; g += 8) {
            uint64_t keep = rnd() % 6; /* one of the 6 patterns of 2 out of 4 */
            static const uint8_t pats[6] = {0x3, 0x5, 0x9, 0x6, 0xA, 0xC};
            for (int e = 0; e < 4; e++) {
                uint16_t v = (pats[keep] >> e & 1) ? (uint16_t)(rnd() | 1) : 0;
                for (int b = 0; b < 2; b++)
                    if (g + 2 * e + b < n) p[g + 2 * e + b] = (uint8_t)(v >> (8 * b));
            }
        }
        break;
    case K_SPARSE_RUNS: /* unstructured pruning by rows: long zero runs */
        for (uint64_t i = 0; i < n; i++) p[i] = ((i / 512) % 3 == 0) ? (uint8_t)rnd() : 0;
        break;
    default:
        for (uint64_t i = 0; i < n; i++) p[i] = (uint8_t)("the quick brown fox "[i % 20] + (i / 4096) % 3);
        break;
    }
}

/* compresses into an exactly bound-sized buffer; returns it (caller frees) */
static uint8_t *compress_exact(const uint8_t *raw, uint64_t n, uint64_t *stored) {
    uint64_t bound = lz4page_bound(n);
    uint8_t *dst = tt_xmalloc(bound);
    int rc = lz4page_compress(raw, n, dst, bound, stored);
    CHECK_EQ_INT(rc, 0);
    if (rc) { free(dst); return NULL; }
    CHECK(*stored <= bound);
    return dst;
}

/* round trip; returns the stored size (0 on failure) */
static uint64_t roundtrip(uint64_t n, int kind) {
    uint8_t *raw = tt_xmalloc(n);
    fill(raw, n, kind);
    uint64_t stored = 0;
    uint8_t *z = compress_exact(raw, n, &stored);
    if (!z) { free(raw); return 0; }
    /* stored exactly: copy to a buffer of exactly stored bytes */
    uint8_t *zz = tt_xmalloc(stored);
    memcpy(zz, z, stored);
    uint8_t *back = tt_xmalloc(n);
    if (n) memset(back, 0x77, n);
    int rc = lz4page_decompress(zz, stored, back, n);
    CHECK_MSG(rc == 0, "n %llu kind %d: %s", (unsigned long long)n, kind, tt_lasterr());
    CHECK_MSG(n == 0 || memcmp(raw, back, n) == 0, "n %llu kind %d: data differs",
              (unsigned long long)n, kind);
    /* header fields as documented */
    uint64_t np = (n + LZ4PAGE_SIZE - 1) / LZ4PAGE_SIZE;
    CHECK_EQ_INT(ld32(zz), LZ4PAGE_MAGIC);
    CHECK_EQ_INT(ld32(zz + 4), LZ4PAGE_SIZE);
    CHECK_EQ_INT(ld32(zz + 8) | (uint64_t)ld32(zz + 12) << 32, n);
    CHECK_EQ_INT(ld32(zz + 16), np);
    CHECK_EQ_INT(ld32(zz + 20), 0);
    uint64_t sum = 24 + 4 * np;
    for (uint64_t i = 0; i < np; i++) {
        uint32_t cs = ld32(zz + 24 + 4 * i);
        uint32_t pr = (uint32_t)(n - i * LZ4PAGE_SIZE < LZ4PAGE_SIZE ? n - i * LZ4PAGE_SIZE
                                                                     : LZ4PAGE_SIZE);
        CHECK(cs >= 1 && cs <= pr);
        if (kind == K_RANDOM) CHECK_EQ_INT(cs, pr);       /* incompressible: raw */
        if (kind == K_ZERO && pr > 64) CHECK(cs < pr / 10); /* zeros: tiny */
        sum += cs;
    }
    CHECK_EQ_INT(sum, stored);
    free(raw);
    free(z);
    free(zz);
    free(back);
    return stored;
}

static void test_roundtrips(void) {
    static const uint64_t lens[] = {0, 1, 2, 7, 4095, 4096, LZ4PAGE_SIZE - 1, LZ4PAGE_SIZE,
                                    LZ4PAGE_SIZE + 1, 3 * LZ4PAGE_SIZE + 17,
                                    5 * 1024 * 1024 + 123};
    for (int kind = K_ZERO; kind <= K_TEXT; kind++)
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) roundtrip(lens[i], kind);
    uint64_t big = 6ull << 20;
    uint64_t z = roundtrip(big, K_ZERO);
    CHECK_MSG(z > 0 && z < big / 100, "zeros: %llu stored for %llu", (unsigned long long)z,
              (unsigned long long)big);
    uint64_t r = roundtrip(big, K_RANDOM);
    CHECK_EQ_INT(r, lz4page_bound(big)); /* every page raw */
    uint64_t s = roundtrip(big, K_SPARSE_RUNS);
    CHECK(s > 0 && s < big * 6 / 10);
    roundtrip(big, K_SPARSE24);
    CHECK_EQ_INT(lz4page_bound(0), 24);
    CHECK_EQ_INT(lz4page_bound(1), 24 + 4 + 1);
    CHECK_EQ_INT(lz4page_bound(LZ4PAGE_SIZE + 1), 24 + 8 + LZ4PAGE_SIZE + 1);
}

static void test_nospace(void) {
    uint64_t n = 3 * LZ4PAGE_SIZE;
    uint8_t *raw = tt_xmalloc(n);
    fill(raw, n, K_RANDOM);
    for (uint64_t cap = 0; cap < lz4page_bound(n); cap += 4099) {
        uint8_t *dst = tt_xmalloc(cap);
        uint64_t st = 0;
        CHECK_EQ_INT(lz4page_compress(raw, n, dst, cap, &st), -ENOSPC);
        CHECK(tt_lasterr()[0] != 0);
        free(dst);
    }
    /* a compressible extent fits in much less than the bound */
    fill(raw, n, K_ZERO);
    uint8_t *dst = tt_xmalloc(1024);
    uint64_t st = 0;
    CHECK_EQ_INT(lz4page_compress(raw, n, dst, 1024, &st), 0);
    uint8_t *back = tt_xmalloc(n);
    CHECK_EQ_INT(lz4page_decompress(dst, st, back, n), 0);
    CHECK(memcmp(raw, back, n) == 0);
    free(back);
    free(dst);
    free(raw);
}

/* decompress a modified copy (exactly len bytes); expects -EINVAL */
static void expect_corrupt(const uint8_t *src, uint64_t len, uint64_t raw_len, const char *what) {
    uint8_t *c = tt_xmalloc(len);
    if (len) memcpy(c, src, len);
    uint8_t *out = tt_xmalloc(raw_len);
    int rc = lz4page_decompress(len ? c : NULL, len, raw_len ? out : NULL, raw_len);
    CHECK_MSG(rc == -EINVAL, "%s: rc %d", what, rc);
    CHECK_MSG(strstr(tt_lasterr(), "lz4 page") != NULL, "%s: message '%s'", what, tt_lasterr());
    free(c);
    free(out);
}

static void test_corrupt_fields(void) {
    uint64_t n = 4 * LZ4PAGE_SIZE + 100;
    uint8_t *raw = tt_xmalloc(n);
    fill(raw, n, K_SPARSE_RUNS);
    memset(raw + LZ4PAGE_SIZE, 0, LZ4PAGE_SIZE);          /* page 1: compressible */
    fill(raw + 2 * LZ4PAGE_SIZE, LZ4PAGE_SIZE, K_RANDOM); /* page 2: raw */
    uint64_t st = 0;
    uint8_t *z = compress_exact(raw, n, &st);
    uint8_t *m = tt_xmalloc(st);
    CHECK(ld32(z + 24 + 8) == LZ4PAGE_SIZE); /* page 2 stored raw */
    CHECK(ld32(z + 24 + 4) < 1000);          /* page 1 compressed */

#define MUTATE(what, stmt)                                                     \
    do {                                                                       \
        memcpy(m, z, st);                                                      \
        stmt;                                                                  \
        expect_corrupt(m, st, n, what);                                        \
    } while (0)
    MUTATE("bad magic", m[0] ^= 1);
    MUTATE("bad page size", st32(m + 4, LZ4PAGE_SIZE * 2));
    MUTATE("raw_len changed", m[8] ^= 1);
    MUTATE("raw_len huge", m[15] = 0x80);
    MUTATE("npages +1", st32(m + 16, ld32(m + 16) + 1));
    MUTATE("npages -1", st32(m + 16, ld32(m + 16) - 1));
    MUTATE("npages huge", st32(m + 16, 0xFFFFFFFFu));
    MUTATE("reserved", m[20] = 1);
    MUTATE("csize 0", st32(m + 24, 0));
    MUTATE("csize > page", st32(m + 24 + 4, LZ4PAGE_SIZE + 1));
    MUTATE("csize huge", st32(m + 24 + 4, 0xFFFFFFF0u));
    MUTATE("last csize > last page", st32(m + 24 + 16, 101));
    MUTATE("csize shifted", (st32(m + 24, ld32(m + 24) - 1), st32(m + 28, ld32(m + 28) + 1)));
    MUTATE("compressed page marked raw-sized -1", st32(m + 24 + 8, LZ4PAGE_SIZE - 1));
#undef MUTATE
    /* wrong expected raw length */
    {
        uint8_t *out = tt_xmalloc(n + 1);
        CHECK_EQ_INT(lz4page_decompress(z, st, out, n - 1), -EINVAL);
        CHECK_EQ_INT(lz4page_decompress(z, st, out, n + 1), -EINVAL);
        free(out);
    }
    /* truncated, or with a byte too many */
    expect_corrupt(z, st - 1, n, "truncated by 1");
    expect_corrupt(z, st / 2, n, "truncated by half");
    expect_corrupt(z, 24 + 4, n, "only part of the table");
    expect_corrupt(z, 23, n, "shorter than the header");
    expect_corrupt(z, 0, n, "empty");
    {
        uint8_t *big = tt_xmalloc(st + 1);
        memcpy(big, z, st);
        big[st] = 0;
        expect_corrupt(big, st + 1, n, "one byte too many");
        free(big);
    }
    for (uint64_t cut = 0; cut < st; cut += 97) expect_corrupt(z, cut, n, "truncated");

    free(m);
    free(z);
    free(raw);
}

/* pages whose lz4 stream is valid but of the wrong raw length */
static void test_wrong_length_pages(void) {
    int cap = LZ4_compressBound(2 * LZ4PAGE_SIZE);
    char *zeros = tt_xcalloc(2 * LZ4PAGE_SIZE, 1);
    char *c = tt_xmalloc((size_t)cap);
    /* a stream of 60000 bytes where the page holds 65536 */
    int cs = LZ4_compress_default(zeros, c, 60000, cap);
    CHECK(cs > 0 && cs < 1000);
    uint64_t st = 24 + 4 + (uint64_t)cs;
    uint8_t *m = tt_xmalloc(st);
    st32(m, LZ4PAGE_MAGIC);
    st32(m + 4, LZ4PAGE_SIZE);
    st32(m + 8, LZ4PAGE_SIZE);
    st32(m + 12, 0);
    st32(m + 16, 1);
    st32(m + 20, 0);
    st32(m + 24, (uint32_t)cs);
    memcpy(m + 28, c, (size_t)cs);
    expect_corrupt(m, st, LZ4PAGE_SIZE, "page decompresses short");
    /* the same stream, but control: a 60000-byte extent decodes fine */
    st32(m + 8, 60000);
    {
        uint8_t *out = tt_xmalloc(60000);
        CHECK_EQ_INT(lz4page_decompress(m, st, out, 60000), 0);
        free(out);
    }
    free(m);
    /* a stream of 2000 bytes where the (only, last) page holds 1000 */
    cs = LZ4_compress_default(zeros, c, 2000, cap);
    CHECK(cs > 0 && cs < 1000);
    st = 24 + 4 + (uint64_t)cs;
    m = tt_xmalloc(st);
    st32(m, LZ4PAGE_MAGIC);
    st32(m + 4, LZ4PAGE_SIZE);
    st32(m + 8, 1000);
    st32(m + 12, 0);
    st32(m + 16, 1);
    st32(m + 20, 0);
    st32(m + 24, (uint32_t)cs);
    memcpy(m + 28, c, (size_t)cs);
    expect_corrupt(m, st, 1000, "page decompresses long");
    free(m);
    free(c);
    free(zeros);
}

/* random byte flips: header/table flips are always caught; flips in page
 * data give -EINVAL or (in raw pages or literals) a clean success, and ASan
 * sees no out-of-bounds access either way */
static void test_flips(void) {
    uint64_t n = 5 * LZ4PAGE_SIZE + 3000;
    uint8_t *raw = tt_xmalloc(n);
    fill(raw, n, K_TEXT);
    fill(raw + LZ4PAGE_SIZE, LZ4PAGE_SIZE, K_SPARSE24);
    fill(raw + 3 * LZ4PAGE_SIZE, LZ4PAGE_SIZE, K_RANDOM);
    uint64_t st = 0;
    uint8_t *z = compress_exact(raw, n, &st);
    uint64_t table = 24 + 4 * 6;
    uint8_t *m = tt_xmalloc(st);
    uint8_t *out = tt_xmalloc(n);
    int caught = 0, passed = 0;
    for (int seed = 0; seed < 3000; seed++) {
        g_rng = 1000 + (uint64_t)seed;
        memcpy(m, z, st);
        int nflip = 1 + (int)(rnd() % 4);
        int in_hdr = 0;
        uint64_t first = 0;
        for (int f = 0; f < nflip; f++) {
            /* half the flips aimed at the header and table */
            uint64_t pos = (rnd() & 1) ? rnd() % table : rnd() % st;
            if (f == 0) first = pos;
            if (pos < table) in_hdr = 1;
            m[pos] ^= (uint8_t)(1 + rnd() % 255);
        }
        int rc = lz4page_decompress(m, st, out, n);
        CHECK_MSG(rc == 0 || rc == -EINVAL, "seed %d: rc %d", seed, rc);
        if (nflip == 1 && in_hdr)
            CHECK_MSG(rc == -EINVAL, "seed %d: flip at %llu not caught", seed,
                      (unsigned long long)first);
        if (rc == -EINVAL) caught++;
        else passed++;
    }
    CHECK(caught > 1000);
    fprintf(stderr, "flips: %d caught, %d decoded (flips in raw pages or literals)\n", caught,
            passed);
    /* garbage of every small length, and random garbage after a valid header */
    for (int seed = 0; seed < 500; seed++) {
        uint64_t len = rnd() % 300;
        uint8_t *g = tt_xmalloc(len);
        for (uint64_t i = 0; i < len; i++) g[i] = (uint8_t)rnd();
        if (len >= 24 && (seed & 1)) {
            memcpy(g, z, 24); /* valid header, garbage table/pages */
            CHECK_EQ_INT(lz4page_decompress(g, len, out, n), -EINVAL);
        } else {
            CHECK_EQ_INT(lz4page_decompress(len ? g : NULL, len, out, n), -EINVAL);
        }
        free(g);
    }
    free(out);
    free(m);
    free(z);
    free(raw);
}

int main(void) {
    test_roundtrips();
    test_nospace();
    test_corrupt_fields();
    test_wrong_length_pages();
    test_flips();
    TEST_END();
}

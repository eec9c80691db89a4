/* tests/test_tier_corpus.c — malformed store headers and directories.
 *
 * 1. Builds a valid micro store, applies each mutation of the table below and
 *    re-forges the header and metadata checksums (so that the structural
 *    validation, not the checksum, must catch the lie): every one must be
 *    refused with -EINVAL and a message naming the file; under ASan nothing
 *    may be read out of bounds.
 * 2. Replays every file of tests/corpus/tier/: "ok-*" must parse, "bad-*"
 *    must be refused. Those files were written by this program with
 *    TT_WRITE_CORPUS=tests/corpus/tier; they also seed the fuzzer
 *    (tests/fuzz_tier.c).
 */
#include "core/base/common.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <xxhash.h>

static void put32(uint8_t *b, uint64_t off, uint32_t v) { memcpy(b + off, &v, 4); }
static void put64(uint8_t *b, uint64_t off, uint64_t v) { memcpy(b + off, &v, 8); }
static uint32_t get32(const uint8_t *b, uint64_t off) { uint32_t v; memcpy(&v, b + off, 4); return v; }
static uint64_t get64(const uint8_t *b, uint64_t off) { uint64_t v; memcpy(&v, b + off, 8); return v; }

/* Re-forges the checksums (docs/FORMAT.md: meta checksum at 56, header checksum at 120). */
static void forge(uint8_t *b, uint64_t len) {
    uint64_t msize = get64(b, 24);
    if (msize <= len - 128) put64(b, 56, XXH3_64bits(b + 128, msize));
    put64(b, 120, XXH3_64bits(b, 120));
}

/* The smallest model with every structural feature: 2 layers, hidden 32,
 * 2 heads / 1 KV head of 16, ffn 32, vocab 16 (a store of ~20 KB). */
static void nano_config(tt_config *c) {
    fixture_micro_config(c);
    snprintf(c->name, sizeof c->name, "nano");
    c->hidden = 32; c->vocab = 16; c->head_dim = 16; c->n_heads = 2; c->n_kv_heads = 1; c->ffn = 32;
    for (uint32_t l = 0; l < c->n_layers; l++) c->layers[l] = (tt_layer_dims){2, 1, 32, 0};
}

/* Offsets inside the nano image (2 layers, 4 extents). */
#define CFG 128u
#define LAY 256u
#define EXT (LAY + 16u * 2u)
#define TEN (EXT + 48u * 4u)
#define X(e) (EXT + 48u * (e))
#define T(t) (TEN + 112u * (t))

typedef struct mutation {
    const char *name;
    int pruned;              /* applies to the pruned image */
    uint64_t off;            /* byte offset to change */
    int width;               /* 4 or 8 */
    int64_t value;           /* new value, or delta when is_delta */
    int is_delta;
    int64_t truncate;        /* > 0: cut the image to this many bytes (before forging) */
} mutation;

#define MAP_OFF (-1) /* resolved at run time: start of the pruning map */

static const mutation g_mut[] = {
    {"version", 0, 8, 4, 2, 0, 0},
    {"header-bytes", 0, 12, 4, 64, 0, 0},
    {"meta-offset", 0, 16, 8, 0, 0, 0},
    {"meta-size-huge", 0, 24, 8, 1ll << 40, 0, 0},
    {"meta-size-short", 0, 24, 8, -16, 1, 0},
    {"data-offset-unaligned", 0, 32, 8, 1, 1, 0},
    {"data-offset-past-end", 0, 32, 8, 1ll << 30, 0, 0},
    {"file-size-lie", 0, 40, 8, 4096, 1, 0},
    {"n-tensors", 0, 48, 4, -1, 1, 0},
    {"n-extents", 0, 52, 4, 1, 1, 0},
    {"flags", 0, 64, 4, 4, 0, 0},
    {"layers-zero", 0, CFG + 0, 4, 0, 0, 0},
    {"layers-huge", 0, CFG + 0, 4, 5000, 0, 0},
    {"layers-more", 0, CFG + 0, 4, 3, 0, 0},
    {"hidden-zero", 0, CFG + 4, 4, 0, 0, 0},
    {"vocab-zero", 0, CFG + 8, 4, 0, 0, 0},
    {"head-dim-odd", 0, CFG + 12, 4, 17, 0, 0},
    {"kv-not-divisor", 0, CFG + 20, 4, 3, 0, 0},
    {"ffn-zero", 0, CFG + 24, 4, 0, 0, 0},
    {"bos-past-vocab", 0, CFG + 36, 4, 16, 0, 0},
    {"eps-zero", 0, CFG + 44, 4, 0, 0, 0},
    {"rope-type", 0, CFG + 52, 4, 7, 0, 0},
    {"layer-heads", 0, LAY + 0, 4, 3, 0, 0},
    {"layer-kv-zero", 0, LAY + 4, 4, 0, 0, 0},
    {"layer-ffn-bigger", 0, LAY + 8, 4, 33, 0, 0},
    {"layer-ffn-unmarked", 0, LAY + 8, 4, 16, 0, 0},
    {"layer-flag", 0, LAY + 12, 4, 2, 0, 0},
    {"extent-unaligned", 0, X(0) + 0, 8, 1, 1, 0},
    {"extent-overlap", 0, X(1) + 0, 8, -4096, 1, 0},
    {"extent-before-data", 0, X(0) + 0, 8, 0, 0, 0},
    {"extent-past-end", 0, X(3) + 8, 8, 1ll << 32, 0, 0},
    {"extent-stored-ne-raw", 0, X(1) + 8, 8, -256, 1, 0},
    {"extent-codec", 0, X(0) + 32, 4, 9, 0, 0},
    {"extent-raw-huge", 0, X(2) + 16, 8, 1ll << 41, 0, 0},
    {"extent-first-tensor", 0, X(1) + 40, 4, 5, 0, 0},
    {"extent-n-tensors", 0, X(1) + 44, 4, 1000, 0, 0},
    {"tensor-name", 0, T(0) + 0, 4, 0x41414141, 0, 0},
    {"tensor-rows", 0, T(2) + 80, 8, 65, 0, 0},
    {"tensor-ndim", 0, T(1) + 72, 4, 2, 0, 0},
    {"tensor-extent", 0, T(2) + 68, 4, 2, 0, 0},
    {"norm-as-nf4", 0, T(1) + 64, 4, 3, 0, 0},
    {"tensor-dtype", 0, T(2) + 64, 4, 99, 0, 0},
    {"tensor-nbytes", 0, T(2) + 104, 8, 1, 1, 0},
    {"tensor-offset-past-extent", 0, T(2) + 96, 8, 1ll << 33, 0, 0},
    {"tensor-overlap", 0, T(3) + 96, 8, -256, 1, 0},
    {"tensor-offset-unaligned", 0, T(3) + 96, 8, 8, 1, 0},
    {"truncated", 0, 0, 0, 0, 0, 4096},
    {"truncated-header", 0, 0, 0, 0, 0, 100},
    {"map-kv-range", 1, MAP_OFF, 4, 1, 0, 0},
    {"map-ffn-order", 1, MAP_OFF, 4, 0, 0, 0}, /* second ffn index set to the first's value below */
};
#define N_MUT (sizeof g_mut / sizeof g_mut[0])

static uint8_t *make_image(const char *dir, int pruned, uint64_t *len) {
    tt_config c;
    nano_config(&c);
    tier_prune_map map;
    memset(&map, 0, sizeof map);
    static uint32_t kv[1] = {0}, ffn[16];
    if (pruned) {
        TT_ASSERT(config_prune(&c, 0.5, 1, 2) == 0);
        TT_ASSERT(c.layers[1].n_kv_heads == 1 && c.layers[1].ffn == 16);
        for (uint32_t i = 0; i < 16; i++) ffn[i] = 2 * i;
        map.kv[1] = kv;
        map.ffn[1] = ffn;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/img%d.tier", dir, pruned);
    uint32_t *dt = fixture_dtypes(&c, TT_DTYPE_NF4DQ);
    int rc = fixture_write_store(path, &c, dt, pruned ? &map : NULL, 0, 0);
    free(dt);
    TT_ASSERT(rc == 0);
    uint8_t *img = fixture_slurp(path, len);
    TT_ASSERT(img);
    return img;
}

static void write_file(const char *dir, const char *name, const uint8_t *b, uint64_t n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fixture_spit(path, b, n);
}

static void run_mutations(const char *tmp, const char *corpus_out) {
    uint64_t len[2];
    uint8_t *img[2] = {make_image(tmp, 0, &len[0]), make_image(tmp, 1, &len[1])};
    for (int p = 0; p < 2; p++) {
        CHECK_MSG(tier_parse_buffer(img[p], len[p], "good.tier") == 0, "valid image refused: %s", tt_lasterr());
        if (corpus_out) write_file(corpus_out, p ? "ok-pruned.tier" : "ok-micro.tier", img[p], len[p]);
    }
    for (size_t i = 0; i < N_MUT; i++) {
        const mutation *m = &g_mut[i];
        uint64_t n = len[m->pruned];
        uint8_t *b = malloc(n);
        memcpy(b, img[m->pruned], n);
        if (m->truncate) {
            n -= (uint64_t)m->truncate < n ? (uint64_t)m->truncate : n;
            if (m->truncate == 100) n = 100;
        } else {
            uint64_t off = m->off;
            if ((int64_t)off == MAP_OFF) off = 128 + get64(b, 24) - 4u * (1 + 16); /* map = kv[1], ffn[16] */
            if (strcmp(m->name, "map-ffn-order") == 0) {
                off += 8; /* ffn[1] := ffn[0] */
                put32(b, off, get32(b, off - 4));
            } else if (m->width == 4) {
                put32(b, off, (uint32_t)(m->is_delta ? (int64_t)get32(b, off) + m->value : m->value));
            } else {
                put64(b, off, (uint64_t)(m->is_delta ? (int64_t)get64(b, off) + m->value : m->value));
            }
        }
        if (n >= 128) forge(b, n);
        /* An exact-size copy, so ASan catches any read past the end. */
        uint8_t *exact = malloc(n ? n : 1);
        memcpy(exact, b, n);
        int rc = tier_parse_buffer(exact, n, "bad.tier");
        CHECK_MSG(rc == -EINVAL, "mutation %s: expected -EINVAL, got %d (%s)", m->name, rc, tt_lasterr());
        CHECK_MSG(strstr(tt_lasterr(), "bad.tier") != NULL, "mutation %s: message does not name the file: %s",
                  m->name, tt_lasterr());
        if (corpus_out) {
            char name[128];
            snprintf(name, sizeof name, "bad-%s.tier", m->name);
            write_file(corpus_out, name, exact, n);
        }
        free(exact);
        free(b);
    }
    free(img[0]);
    free(img[1]);
}

/* The source record (flags bit 1, after the pruning map): written and read
 * back; a name the writer refuses leaves nothing; forged lengths and bytes
 * (checksums re-forged) are refused naming the file. */
static void test_source(const char *tmp) {
    tt_config c;
    nano_config(&c);
    char path[600];
    snprintf(path, sizeof path, "%s/src.tier", tmp);
    uint32_t *dt = fixture_dtypes(&c, TT_DTYPE_F32);
    static const char name[] = "meta-llama/Llama-3.1-8B";
    tier_write_opts o = {dt, NULL, 0, name};
    tier_writer *w;
    CHECK(tier_writer_open(&w, path, &c, &o) == 0);
    tier_writer_abort(w);
    o.source = "bad\x1b[0m";
    CHECK(tier_writer_open(&w, path, &c, &o) == -EINVAL && strstr(tt_lasterr(), "control characters"));
    o.source = "";
    CHECK(tier_writer_open(&w, path, &c, &o) == -EINVAL);
    CHECK(!fixture_exists(path));
    CHECK(fixture_write_store(path, &c, dt, NULL, 0, 0) == 0); /* no source: for the size comparison below */
    uint64_t n0;
    free(fixture_slurp(path, &n0));
    o.source = name;
    CHECK(fixture_write_store_opts(path, &c, &o, 0) == 0);
    free(dt);
    tier_store *s;
    CHECK_MSG(tier_open(&s, path) == 0, "%s", tt_lasterr());
    CHECK(s && tier_source(s) && strcmp(tier_source(s), name) == 0);
    tier_close(s);
    uint64_t n;
    uint8_t *img = fixture_slurp(path, &n);
    TT_ASSERT(img);
    CHECK(n == n0); /* the record fits in the metadata's page */
    uint64_t msize = get64(img, 24), at = 128 + msize - (4 + sizeof name - 1); /* the record's length field */
    CHECK_EQ_INT(get32(img, at), sizeof name - 1);
    struct { const char *what; uint64_t off; uint32_t value; int width; } lie[] = {
        {"length 0", at, 0, 4}, {"length past the metadata", at, 60, 4}, {"length beyond the limit", at, 5000, 4},
        {"an escape byte", at + 6, 0x1b, 1}, {"a NUL byte", at + 4, 0, 1}, {"a malformed UTF-8 byte", at + 5, 0xc3, 1},
        {"no source flag", 64, 0, 4},
    };
    for (size_t i = 0; i < sizeof lie / sizeof *lie; i++) {
        uint8_t *b = malloc(n);
        memcpy(b, img, n);
        if (lie[i].width == 4) put32(b, lie[i].off, lie[i].value);
        else b[lie[i].off] = (uint8_t)lie[i].value;
        forge(b, n);
        int rc = tier_parse_buffer(b, n, "forged-source.tier");
        CHECK_MSG(rc == -EINVAL && strstr(tt_lasterr(), "forged-source.tier"), "%s: rc %d (%s)", lie[i].what, rc,
                  tt_lasterr());
        free(b);
    }
    free(img);
}

/* One file of tests/corpus/tier (fixture_replay_corpus). */
static void replay_one(const char *path, const char *name, const uint8_t *b, uint64_t n, int ok) {
    (void)path;
    int rc = tier_parse_buffer(b, n, name);
    if (ok) CHECK_MSG(rc == 0, "%s refused: %s", name, tt_lasterr());
    else CHECK_MSG(rc == -EINVAL, "%s accepted or wrong error %d", name, rc);
}

int main(void) {
    char *tmp = fixture_tmpdir();
    const char *out = getenv("TT_WRITE_CORPUS");
    run_mutations(tmp, out && *out ? out : NULL);
    test_source(tmp);
    fixture_replay_corpus("tests/corpus/tier", replay_one, 2, 40);
    fixture_rm_rf(tmp);
    free(tmp);
    TEST_END();
}

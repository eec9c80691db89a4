/* tests/fixtures.h — small models, stores and file helpers shared by the tests. */
#ifndef TT_FIXTURES_H
#define TT_FIXTURES_H

#include "core/base/common.h"
#include "core/base/config.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "core/base/rng.h"
#include "io/tier.h"
#include "tests/test.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A micro LLaMA: 2 layers, hidden 64, 4 heads / 2 KV heads of 16, ffn 96,
 * vocab 32 — every structural feature of the real ones at a few KB. */
static inline void fixture_micro_config(tt_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "micro");
    c->n_layers = 2; c->hidden = 64; c->vocab = 32; c->head_dim = 16;
    c->n_heads = 4; c->n_kv_heads = 2; c->ffn = 96; c->max_pos = 128;
    c->bos_id = 1; c->eos_id = 2; c->rms_eps = 1e-5f; c->rope_theta = 10000.f;
    for (uint32_t l = 0; l < c->n_layers; l++) c->layers[l] = (tt_layer_dims){4, 2, 96, 0};
}

/* A fresh temporary directory path (created); caller frees. */
static inline char *fixture_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/tt-test.XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    if (!d) { perror("mkdtemp"); exit(1); }
    return strdup(d);
}

/* rm -rf dir (a fixture_tmpdir); only warns when that fails. */
static inline void fixture_rm_rf(const char *dir) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

/* The whole file in malloc'ed memory (one spare byte), its size in *len; NULL on any error. */
static inline uint8_t *fixture_slurp(const char *path, uint64_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); fclose(f); return NULL; }
    fclose(f);
    *len = (uint64_t)n;
    return b;
}

/* Writes n bytes as the whole file path; aborts the test if any is not written. */
static inline void fixture_spit(const char *path, const void *b, uint64_t n) {
    FILE *f = fopen(path, "wb");
    TT_ASSERT(f && fwrite(b, 1, n, f) == n);
    fclose(f);
}

/* Does path exist (any kind of file)? */
static inline int fixture_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Checks one corpus file (path, its name, its bytes): ok = "ok-*", else "bad-*". */
typedef void fixture_corpus_fn(const char *path, const char *name, const uint8_t *b, uint64_t n, int ok);

/* Replays every "ok-*" / "bad-*" file of dirpath through check; the corpus
 * must hold at least min_ok / min_bad of them. */
static inline void fixture_replay_corpus(const char *dirpath, fixture_corpus_fn *check, int min_ok, int min_bad) {
    DIR *d = opendir(dirpath);
    CHECK_MSG(d != NULL, "corpus directory %s is missing (run from the repository root)", dirpath);
    if (!d) return;
    int nok = 0, nbad = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int ok = strncmp(e->d_name, "ok-", 3) == 0, bad = strncmp(e->d_name, "bad-", 4) == 0;
        if (!ok && !bad) continue;
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dirpath, e->d_name);
        uint64_t n;
        uint8_t *b = fixture_slurp(path, &n);
        CHECK(b != NULL);
        if (!b) continue;
        check(path, e->d_name, b, n, ok);
        if (ok) nok++;
        else nbad++;
        free(b);
    }
    closedir(d);
    CHECK_MSG(nok >= min_ok && nbad >= min_bad, "corpus too small: %d ok, %d bad files", nok, nbad);
}

/* Deterministic value of element j of tensor i (any dtype's input). */
static inline float fixture_value(uint32_t i, uint64_t j) {
    return (float)((int)((i * 7919u + j * 104729u) % 2001u) - 1000) / 1000.0f;
}

/* x NF4-quantized (nf4_quantize_tensor) into a fresh 16-byte-aligned blob
 * sized by nf4_layout_of(n, dq); caller frees. */
static inline uint8_t *fixture_nf4_blob(const float *x, uint64_t n, int dq) {
    nf4_layout L;
    nf4_layout_of(n, dq, &L);
    uint8_t *blob = aligned_alloc(16, L.total);
    TT_ASSERT(blob);
    nf4_quantize_tensor(x, n, dq, blob);
    return blob;
}

/* Dtype per tensor: projections lin, norms f32, embedding/lm_head bf16 (f32
 * when lin is f32). Caller frees. */
static inline uint32_t *fixture_dtypes(const tt_config *c, uint32_t lin) {
    uint32_t n = config_n_tensors(c);
    uint32_t *d = calloc(n, sizeof *d);
    tt_tensor_desc t;
    for (uint32_t i = 0; i < n; i++) {
        config_tensor(c, i, &t);
        d[i] = t.role == TT_ROLE_LINEAR ? lin : t.role == TT_ROLE_NORM ? TT_DTYPE_F32
             : lin == TT_DTYPE_F32 ? TT_DTYPE_F32 : TT_DTYPE_BF16;
    }
    return d;
}

/* Byte j of tensor i in fixture stores: a hash (incompressible), except that
 * zero_pct bytes of every 100 are zero. */
static inline uint8_t fixture_byte(uint32_t i, uint64_t j, int zero_pct) {
    if ((j % 100) < (uint64_t)zero_pct) return 0;
    uint32_t x = i * 0x9E3779B1u + (uint32_t)j * 0x85EBCA77u + (uint32_t)(j >> 32);
    x ^= x >> 15; x *= 0x2C1B3C6Du; x ^= x >> 12; x *= 0x297A2D39u; x ^= x >> 15;
    return (uint8_t)(x >> 24);
}

/* Writes a store whose tensor bytes are a deterministic pattern (the exact
 * bytes are what the tests compare; for NF4 tensors they are not a valid
 * quantization, which the store does not care about). zero_frac_pct percent
 * of each 100 bytes are zero (for lz4 tests). Returns the writer's rc. */
static inline int fixture_write_store_opts(const char *path, const tt_config *c, const tier_write_opts *o,
                                           int zero_pct) {
    tier_writer *w;
    int rc = tier_writer_open(&w, path, c, o);
    if (rc) return rc;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        uint64_t nb = tier_writer_tensor_bytes(w, i);
        uint8_t *b = malloc(nb);
        for (uint64_t j = 0; j < nb; j++) b[j] = fixture_byte(i, j, zero_pct);
        /* write in two uneven pieces to exercise streaming */
        uint64_t half = nb / 3;
        rc = tier_writer_write(w, i, b, half);
        if (rc == 0) rc = tier_writer_write(w, i, b + half, nb - half);
        free(b);
        if (rc) { tier_writer_abort(w); return rc; }
    }
    return tier_writer_finish(w);
}

/* The same with the dtypes, pruning map and lz4 choice alone (no source record). */
static inline int fixture_write_store(const char *path, const tt_config *c, const uint32_t *dtypes,
                                      const tier_prune_map *map, int lz4, int zero_pct) {
    tier_write_opts o = {dtypes, map, lz4, NULL};
    return fixture_write_store_opts(path, c, &o, zero_pct);
}

/* Random weights for tensor i (a store_write fill callback, ctx a
 * fixture_fill_ctx): projections N(0, wstd), norms 1 + N(0, 0.1), embedding
 * and lm_head N(0, 0.5). Deterministic from (seed, i). */
typedef struct fixture_fill_ctx {
    uint64_t seed;
    float wstd;
} fixture_fill_ctx;

static inline int fixture_fill(void *ctx, uint32_t i, const tt_tensor_desc *d, float *out) {
    const fixture_fill_ctx *fc = ctx;
    tt_rng r;
    rng_seed(&r, fc->seed, i);
    for (uint64_t j = 0; j < d->rows * d->cols; j++) {
        double g = rng_normal(&r);
        out[j] = (float)(d->role == TT_ROLE_NORM ? 1.0 + 0.1 * g : d->role == TT_ROLE_LINEAR ? fc->wstd * g : 0.5 * g);
    }
    return 0;
}

/* Writes a store with real weights: projections N(0, wstd) encoded as lin
 * (f32, bf16, nf4, nf4-dq), norms 1 + N(0, 0.1), embedding and lm_head
 * N(0, 0.5). Deterministic from seed. With sparse24, the projections 2:4
 * sparse (the last two of every four values 0) and the store's extents
 * lz4-compressed where that saves 1/8 (f32 layers do). Returns the writer's rc. */
static inline int fixture_write_model_ex(const char *path, const tt_config *c, uint32_t lin, float wstd, uint64_t seed,
                                         int sparse24) {
    uint32_t *dt = fixture_dtypes(c, lin);
    tier_write_opts o = {dt, NULL, sparse24, NULL};
    tier_writer *w;
    int rc = tier_writer_open(&w, path, c, &o);
    if (rc) { free(dt); return rc; }
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(c) && rc == 0; i++) {
        config_tensor(c, i, &d);
        uint64_t n = d.rows * d.cols;
        float *v = malloc(n * sizeof *v);
        fixture_fill_ctx fc = {seed, wstd};
        fixture_fill(&fc, i, &d, v);
        if (sparse24 && d.role == TT_ROLE_LINEAR)
            for (uint64_t j = 2; j < n; j += 4) v[j] = v[j + 1 < n ? j + 1 : j] = 0.f;
        uint64_t nb = tier_writer_tensor_bytes(w, i);
        uint8_t *b = calloc(1, nb);
        if (dt[i] == TT_DTYPE_F32) memcpy(b, v, n * 4);
        else if (dt[i] == TT_DTYPE_BF16) for (uint64_t j = 0; j < n; j++) ((uint16_t *)b)[j] = f32_to_bf16(v[j]);
        else nf4_quantize_tensor(v, n, dt[i] == TT_DTYPE_NF4DQ, b);
        rc = tier_writer_write(w, i, b, nb);
        free(b);
        free(v);
    }
    free(dt);
    if (rc) { tier_writer_abort(w); return rc; }
    return tier_writer_finish(w);
}
static inline int fixture_write_model(const char *path, const tt_config *c, uint32_t lin, float wstd, uint64_t seed) {
    return fixture_write_model_ex(path, c, lin, wstd, seed, 0);
}

/* 1 when the files at a and b exist and hold the same bytes. */
static inline int fixture_same_file(const char *a, const char *b) {
    uint64_t na = 0, nb = 0; /* set by fixture_slurp; initialised for gcc's -Wmaybe-uninitialized when inlined */
    uint8_t *x = fixture_slurp(a, &na), *y = fixture_slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

#endif

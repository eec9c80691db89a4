/* tests/test_ckpt.c — forged checkpoints (io/ckpt.c): a valid checkpoint is
 * rewritten with one field at its limit and the checksum recomputed, so
 * only the reader's checks stand between it and the run — a parameter count
 * that wraps the size products, an absurd or out-of-run step, another
 * element size, impossible hyper-parameters, another record size or
 * version, a truncated file. Each is refused with a message naming the file
 * and the field; the genuine file still reads back. */
#include "core/base/common.h"
#include "io/ckpt.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <stddef.h>
#include <string.h>
#include <xxhash.h>

#define HDR 32 /* magic, version, record bytes, payload bytes, checksum (io/ckpt.c) */

static char g_dir[600], g_path[700];

static uint8_t *slurp(size_t *n) {
    FILE *f = fopen(g_path, "rb");
    TT_ASSERT(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = tt_xmalloc(*n);
    TT_ASSERT(fread(b, 1, *n, f) == *n);
    fclose(f);
    return b;
}

/* Writes b (n bytes) as the checkpoint with a fresh checksum over its payload (unless keep_sum). */
static void spit(uint8_t *b, size_t n, int resum) {
    if (resum) {
        uint64_t sum = XXH3_64bits(b + HDR, n - HDR);
        memcpy(b + 24, &sum, 8);
    }
    FILE *f = fopen(g_path, "wb");
    TT_ASSERT(f && fwrite(b, 1, n, f) == n);
    fclose(f);
}

/* The genuine file with the record changed by edit, then read: refused naming field. */
static void forged(const uint8_t *good, size_t n, void (*edit)(ckpt_state *), const char *field, const char *what) {
    uint8_t *b = tt_xmalloc(n);
    memcpy(b, good, n);
    ckpt_state st;
    memcpy(&st, b + HDR, sizeof st);
    edit(&st);
    memcpy(b + HDR, &st, sizeof st);
    spit(b, n, 1);
    void *p;
    float *m, *v;
    int rc = ckpt_read(g_dir, &st, &p, &m, &v);
    CHECK_MSG(rc != 0, "%s: a forged checkpoint was accepted", what);
    CHECK_MSG(rc == 0 || (strstr(tt_lasterr(), g_path) && strstr(tt_lasterr(), field)), "%s: '%s' lacks the file or '%s'",
              what, tt_lasterr(), field);
    if (rc == 0) { free(p); free(m); free(v); }
    free(b);
}

static void e_wrap(ckpt_state *s) { s->n_params += 1ull << 62; } /* x 12 bytes wraps to the same total */
static void e_big(ckpt_state *s) { s->n_params = UINT64_MAX; }
static void e_step(ckpt_state *s) { s->step = 1ull << 62; }
static void e_step_past(ckpt_state *s) { s->step = (uint64_t)s->steps + 1; }
static void e_steps(ckpt_state *s) { s->steps = 0x80000000u; s->step = 1; }
static void e_real(ckpt_state *s) { s->real_bytes = 16; }
static void e_rank(ckpt_state *s) { s->rank = 0; }
static void e_alpha(ckpt_state *s) { s->alpha = 1.0f / 0.0f; }
static void e_dropout(ckpt_state *s) { s->dropout = 5; }
static void e_seq(ckpt_state *s) { s->seq = 0; }
static void e_rslora(ckpt_state *s) { s->rslora = 2; }
static void e_no_pack(ckpt_state *s) { s->no_pack = 2; }

int main(void) {
    char *dir = fixture_tmpdir();
    snprintf(g_dir, sizeof g_dir, "%s", dir);
    snprintf(g_path, sizeof g_path, "%s/" CKPT_FILE, dir);
    ckpt_state st = {0};
    st.step = 3; st.seed = 1; st.model_fp = 7; st.n_params = 100; st.real_bytes = 4; st.rank = 4; st.targets = 127;
    st.alpha = 8; st.steps = 10; st.seq = 16; st.micro_batch = 2; st.accum = 1; st.warmup = 2; st.lr = 1e-3f;
    st.min_lr = 1e-4f; st.b1 = 0.9f; st.b2 = 0.999f; st.eps = 1e-8f; st.clip = 1;
    float params[100], m[100], v[100];
    for (int i = 0; i < 100; i++) params[i] = m[i] = v[i] = (float)i;
    CHECK(ckpt_write(dir, &st, params, m, v) == 0);
    size_t n;
    uint8_t *good = slurp(&n);
    /* the genuine file reads back */
    ckpt_state got;
    void *p;
    float *gm, *gv;
    CHECK_MSG(ckpt_read(dir, &got, &p, &gm, &gv) == 0, "%s", tt_lasterr());
    CHECK(got.n_params == 100 && got.step == 3 && memcmp(p, params, sizeof params) == 0);
    free(p); free(gm); free(gv);

    forged(good, n, e_wrap, "n_params", "n_params + 2^62");
    forged(good, n, e_big, "n_params", "n_params 2^64 - 1");
    forged(good, n, e_step, "step", "step 2^62");
    forged(good, n, e_step_past, "step", "step past the run's steps");
    forged(good, n, e_steps, "step", "steps 2^31");
    forged(good, n, e_real, "real_bytes", "real_bytes 16");
    forged(good, n, e_rank, "rank", "rank 0");
    forged(good, n, e_alpha, "alpha", "alpha inf");
    forged(good, n, e_dropout, "dropout", "dropout 5");
    forged(good, n, e_seq, "seq", "seq 0");
    forged(good, n, e_rslora, "impossible values", "rslora 2");
    forged(good, n, e_no_pack, "impossible values", "no_pack 2");

    /* a record of the size written before --rslora (CKPT_STATE_V1_BYTES) reads as rslora 0, with the same
     * parameters; the payload after it moves up by the 8 bytes it lacks */
    {
        size_t d = sizeof(ckpt_state) - CKPT_STATE_V1_BYTES, n1 = n - d;
        uint8_t *old = tt_xmalloc(n);
        memcpy(old, good, HDR + CKPT_STATE_V1_BYTES);
        memcpy(old + HDR + CKPT_STATE_V1_BYTES, good + HDR + sizeof(ckpt_state), n - HDR - sizeof(ckpt_state));
        uint32_t sb = CKPT_STATE_V1_BYTES;
        uint64_t pay = n1 - HDR;
        memcpy(old + 12, &sb, 4);
        memcpy(old + 16, &pay, 8);
        spit(old, n1, 1);
        memset(&got, 0xff, sizeof got);
        CHECK_MSG(ckpt_read(dir, &got, &p, &gm, &gv) == 0, "an old-size record: %s", tt_lasterr());
        CHECK(got.rslora == 0 && got.no_pack == 0 && got.act_bf16 == 0 && got.n_params == 100 && got.step == 3);
        CHECK(memcmp(p, params, sizeof params) == 0 && memcmp(gv, v, sizeof v) == 0);
        free(p); free(gm); free(gv);
        /* the new record size with the old payload length: refused, not read past the end */
        sb = sizeof(ckpt_state);
        memcpy(old + 12, &sb, 4);
        spit(old, n1, 1);
        CHECK(ckpt_read(dir, &got, &p, &gm, &gv) != 0 && strstr(tt_lasterr(), "n_params"));
        free(old);
    }
    /* rslora round-trips */
    st.rslora = 1;
    CHECK(ckpt_write(dir, &st, params, m, v) == 0);
    CHECK(ckpt_read(dir, &got, &p, &gm, &gv) == 0 && got.rslora == 1);
    free(p); free(gm); free(gv);

    /* the header: another record size, another version, an unchanged checksum, a truncation */
    uint8_t *b = tt_xmalloc(n);
    memcpy(b, good, n);
    uint32_t x = 9999;
    memcpy(b + 12, &x, 4);
    spit(b, n, 1);
    CHECK(ckpt_read(dir, &got, &p, &gm, &gv) != 0 && strstr(tt_lasterr(), "run record is 9999 bytes"));
    memcpy(b, good, n);
    x = 2;
    memcpy(b + 8, &x, 4);
    spit(b, n, 1);
    CHECK(ckpt_read(dir, &got, &p, &gm, &gv) != 0 && strstr(tt_lasterr(), "version 2 is not supported"));
    memcpy(b, good, n);
    b[HDR + offsetof(ckpt_state, step)] ^= 1; /* without a fresh checksum */
    spit(b, n, 0);
    CHECK(ckpt_read(dir, &got, &p, &gm, &gv) != 0 && strstr(tt_lasterr(), "checksum"));
    spit(good, n - 5, 0);
    CHECK(ckpt_read(dir, &got, &p, &gm, &gv) != 0 && strstr(tt_lasterr(), "truncated"));
    free(b);
    free(good);
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}

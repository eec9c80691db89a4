/* tests/test_ckpt.c — forged checkpoints (io/ckpt.c): a valid checkpoint is
 * rewritten with one field at its limit and the checksum recomputed, so
 * only the reader's checks stand between it and the run — a parameter count
 * that wraps the size products, an absurd or out-of-run step, another
 * element size, impossible hyper-parameters, another record size or
 * version, a truncated file, a data mixture's record with a source count
 * past its arrays or weights that are not a distribution. Each is refused
 * with a message naming the file and the field; the genuine file still reads
 * back, and a one-source run still writes the record it wrote before mixtures.
 * The streamed writer and reader (full training's, a tensor at a time) give
 * the same bytes and refuse the same damage. */
#include "core/base/common.h"
#include "io/ckpt.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <stddef.h>
#include <string.h>
#include <unistd.h>
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

/* The genuine file (its run record rec bytes) with the record changed by edit, then read: refused naming field. */
static void forged(const uint8_t *good, size_t n, size_t rec, void (*edit)(ckpt_state *), const char *field,
                   const char *what) {
    uint8_t *b = tt_xmalloc(n);
    memcpy(b, good, n);
    ckpt_state st;
    memset(&st, 0, sizeof st);
    memcpy(&st, b + HDR, rec);
    edit(&st);
    memcpy(b + HDR, &st, rec);
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
/* the data mixture's record */
static void e_mix_n(ckpt_state *s) { s->mix_n = 17; }  /* would index past its 16-entry arrays */
static void e_mix_n_huge(ckpt_state *s) { s->mix_n = 0xffffffffu; }
static void e_mix_one(ckpt_state *s) { s->mix_n = 1; } /* one source writes the shorter record */
static void e_mix_mode(ckpt_state *s) { s->mix_mode = 2; }
static void e_mix_nan(ckpt_state *s) { s->mix_w[0] = 0.0 / 0.0; }
static void e_mix_sum(ckpt_state *s) { s->mix_w[0] = 0.9; }
static void e_mix_neg(ckpt_state *s) { s->mix_base[0] = -0.5; s->mix_base[1] = 1.5; }
static void e_mix_every(ckpt_state *s) { s->mix_every = 0; }
static void e_mix_tau(ckpt_state *s) { s->mix_tau = 0.0f / 0.0f; }
static void e_mix_ref(ckpt_state *s) { s->mix_ref[1] = 1.0 / 0.0; }

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

    /* one source writes the record it always had (CKPT_STATE_V2_BYTES) */
    CHECK_EQ_INT(n, HDR + CKPT_STATE_V2_BYTES + sizeof params + sizeof m + sizeof v);
    const size_t r2 = CKPT_STATE_V2_BYTES;
    forged(good, n, r2, e_wrap, "n_params", "n_params + 2^62");
    forged(good, n, r2, e_big, "n_params", "n_params 2^64 - 1");
    forged(good, n, r2, e_step, "step", "step 2^62");
    forged(good, n, r2, e_step_past, "step", "step past the run's steps");
    forged(good, n, r2, e_steps, "step", "steps 2^31");
    forged(good, n, r2, e_real, "real_bytes", "real_bytes 16");
    forged(good, n, r2, e_rank, "rank", "rank 0");
    forged(good, n, r2, e_alpha, "alpha", "alpha inf");
    forged(good, n, r2, e_dropout, "dropout", "dropout 5");
    forged(good, n, r2, e_seq, "seq", "seq 0");
    forged(good, n, r2, e_rslora, "impossible values", "rslora 2");
    forged(good, n, r2, e_no_pack, "impossible values", "no_pack 2");

    /* a record of the size written before --rslora (CKPT_STATE_V1_BYTES) reads as rslora 0, with the same
     * parameters; the payload after it moves up by the 8 bytes it lacks */
    {
        size_t d = CKPT_STATE_V2_BYTES - CKPT_STATE_V1_BYTES, n1 = n - d;
        uint8_t *old = tt_xmalloc(n);
        memcpy(old, good, HDR + CKPT_STATE_V1_BYTES);
        memcpy(old + HDR + CKPT_STATE_V1_BYTES, good + HDR + CKPT_STATE_V2_BYTES, n - HDR - CKPT_STATE_V2_BYTES);
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
        /* the newer record size with the old payload length: refused, not read past the end */
        sb = CKPT_STATE_V2_BYTES;
        memcpy(old + 12, &sb, 4);
        spit(old, n1, 1);
        CHECK(ckpt_read(dir, &got, &p, &gm, &gv) != 0 && strstr(tt_lasterr(), "n_params"));
        free(old);
    }
    /* a data mixture writes the whole record (its sources, weights, reference losses) and reads it back */
    {
        ckpt_state mx = st;
        mx.mix_n = 2; mx.mix_mode = 1; mx.mix_every = 4; mx.mix_tau = 0.25f;
        mx.mix_base[0] = 0.25; mx.mix_base[1] = 0.75; mx.mix_w[0] = 0.6; mx.mix_w[1] = 0.4;
        mx.mix_ref[0] = 3.5; mx.mix_ref[1] = 2.25; mx.mix_tokens[0] = 1000; mx.mix_tokens[1] = 77;
        mx.mix_hash[0] = 0x1234; mx.mix_hash[1] = 0x5678;
        CHECK(ckpt_write(dir, &mx, params, m, v) == 0);
        size_t nm;
        uint8_t *mgood = slurp(&nm);
        CHECK_EQ_INT(nm, HDR + CKPT_STATE_V3_BYTES + sizeof params + sizeof m + sizeof v);
        memset(&got, 0, sizeof got);
        CHECK_MSG(ckpt_read(dir, &got, &p, &gm, &gv) == 0, "a mixture record: %s", tt_lasterr());
        CHECK(memcmp(&got, &mx, sizeof got) == 0 && memcmp(p, params, sizeof params) == 0);
        free(p); free(gm); free(gv);
        const size_t rm = CKPT_STATE_V3_BYTES;
        forged(mgood, nm, rm, e_mix_n, "mix_n", "mix_n 17");
        forged(mgood, nm, rm, e_mix_n_huge, "mix_n", "mix_n 2^32 - 1");
        forged(mgood, nm, rm, e_mix_one, "mix_n", "mix_n 1");
        forged(mgood, nm, rm, e_mix_mode, "mode", "mix_mode 2");
        forged(mgood, nm, rm, e_mix_nan, "mix weights", "a NaN weight");
        forged(mgood, nm, rm, e_mix_sum, "mix weights", "weights adding up to 1.3");
        forged(mgood, nm, rm, e_mix_neg, "mix weights", "a negative base weight");
        forged(mgood, nm, rm, e_mix_every, "--mix-every", "mix_every 0");
        forged(mgood, nm, rm, e_mix_tau, "--mix-temp", "mix_tau NaN");
        forged(mgood, nm, rm, e_mix_ref, "reference loss", "an infinite reference loss");
        /* a static mixture needs neither --mix-every nor a reference */
        mx.mix_mode = 0; mx.mix_every = 0; mx.mix_tau = 0; mx.mix_ref[0] = mx.mix_ref[1] = 0;
        CHECK(ckpt_write(dir, &mx, params, m, v) == 0);
        CHECK_MSG(ckpt_read(dir, &got, &p, &gm, &gv) == 0, "a static mixture: %s", tt_lasterr());
        free(p); free(gm); free(gv);
        free(mgood);
    }
    /* a full-training record (train --full): the whole record, the optimizer fields round-trip; impossible
     * values are refused */
    {
        ckpt_state fs = st;
        fs.full = 1; fs.rank = 0; fs.targets = 0; fs.alpha = 0; fs.optim = 1;
        fs.galore_rank = 16; fs.galore_every = 200; fs.galore_scale = 0.25f;
        CHECK(ckpt_write(dir, &fs, params, m, v) == 0);
        size_t nf;
        uint8_t *fgood = slurp(&nf);
        CHECK_EQ_INT(nf, HDR + CKPT_STATE_V4_BYTES + sizeof params + sizeof m + sizeof v);
        memset(&got, 0, sizeof got);
        CHECK_MSG(ckpt_read(dir, &got, &p, &gm, &gv) == 0, "a full-training record: %s", tt_lasterr());
        CHECK(memcmp(&got, &fs, sizeof got) == 0);
        free(p); free(gm); free(gv);
        /* with the weights' identity: the record up to it, which round-trips */
        fs.weights_fp = 0x1234567890abcdefull;
        CHECK(ckpt_write(dir, &fs, params, m, v) == 0);
        free(slurp(&nf));
        CHECK_EQ_INT(nf, HDR + CKPT_STATE_V5_BYTES + sizeof params + sizeof m + sizeof v);
        CHECK_MSG(ckpt_read(dir, &got, &p, &gm, &gv) == 0, "a record with weights_fp: %s", tt_lasterr());
        CHECK(memcmp(&got, &fs, sizeof got) == 0);
        free(p); free(gm); free(gv);
        fs.weights_fp = 0;
        fs.galore_scale = NAN;
        CHECK(ckpt_write(dir, &fs, params, m, v) == 0);
        CHECK(ckpt_read(dir, &got, &p, &gm, &gv) != 0 && strstr(tt_lasterr(), "full-training record"));
        fs.galore_scale = 0.25f;
        fs.rank = 4; /* a LoRA rank in a full record */
        CHECK(ckpt_write(dir, &fs, params, m, v) == 0);
        CHECK(ckpt_read(dir, &got, &p, &gm, &gv) != 0 && strstr(tt_lasterr(), "full-training record"));
        free(fgood);
    }
    /* a LoRA run of one source that records the weights' identity writes the record up to it: it reads back
     * with the mixture and full-training fields zero */
    {
        ckpt_state ws = st;
        ws.weights_fp = 42;
        CHECK(ckpt_write(dir, &ws, params, m, v) == 0);
        size_t nw;
        free(slurp(&nw));
        CHECK_EQ_INT(nw, HDR + CKPT_STATE_V5_BYTES + sizeof params + sizeof m + sizeof v);
        memset(&got, 0xff, sizeof got);
        CHECK_MSG(ckpt_read(dir, &got, &p, &gm, &gv) == 0, "a LoRA record with weights_fp: %s", tt_lasterr());
        CHECK(got.weights_fp == 42 && got.mix_n == 0 && got.full == 0 && got.step == st.step && got.val_hash == 0 &&
              got.eval_tokens == 0);
        free(p); free(gm); free(gv);
        /* and the validation's identity: the whole record, which round-trips; an inconsistent one is refused */
        ws.val_tokens = 1000; ws.val_hash = 0xfeedull; ws.eval_tokens = 512;
        CHECK(ckpt_write(dir, &ws, params, m, v) == 0);
        free(slurp(&nw));
        CHECK_EQ_INT(nw, HDR + sizeof(ckpt_state) + sizeof params + sizeof m + sizeof v);
        CHECK_MSG(ckpt_read(dir, &got, &p, &gm, &gv) == 0, "a record with val_hash: %s", tt_lasterr());
        CHECK(memcmp(&got, &ws, sizeof got) == 0);
        free(p); free(gm); free(gv);
        ws.eval_tokens = 0; /* a hash of the tokens no score takes */
        CHECK(ckpt_write(dir, &ws, params, m, v) == 0);
        CHECK_MSG(ckpt_read(dir, &got, &p, &gm, &gv) != 0 && strstr(tt_lasterr(), "validation record"),
                  "an inconsistent validation record was read: %s", tt_lasterr());
    }
    /* rslora round-trips */
    st.rslora = 1;
    CHECK(ckpt_write(dir, &st, params, m, v) == 0);
    CHECK(ckpt_read(dir, &got, &p, &gm, &gv) == 0 && got.rslora == 1);
    free(p); free(gm); free(gv);

    /* written in pieces (full training's way: a tensor at a time, zeros appended) == written whole, byte for
     * byte; read back a piece at a time; an aborted writer leaves the checkpoint there as it was, and no
     * partial file; a payload corrupted past the first 8 MiB chunk is caught by the streamed checksum */
    {
        size_t nw;
        float mz[100] = {0};
        memcpy(mz, m, 60 * sizeof(float)); /* m: 60 values, then zeros (a GaLore run's layout) */
        CHECK(ckpt_write(dir, &st, params, mz, v) == 0);
        uint8_t *wz = slurp(&nw);
        ckpt_writer *w;
        CHECK(ckpt_writer_open(&w, dir, &st) == 0);
        CHECK(ckpt_writer_put(w, params, 7 * 4) == 0 && ckpt_writer_put(w, params + 7, 93 * 4) == 0);
        CHECK(ckpt_writer_put(w, m, 60 * 4) == 0 && ckpt_writer_zeros(w, 40 * 4) == 0);
        CHECK(ckpt_writer_put(w, v, sizeof v) == 0);
        CHECK(ckpt_writer_close(w) == 0);
        size_t np2;
        uint8_t *pieces = slurp(&np2);
        CHECK_MSG(np2 == nw && memcmp(pieces, wz, nw) == 0, "written in pieces differs from written whole");
        ckpt_reader *r;
        CHECK_MSG(ckpt_reader_open(&r, dir, &got) == 0, "%s", tt_lasterr());
        float piece[10];
        CHECK(ckpt_reader_get(r, 2, 90 * 4, piece, sizeof piece) == 0 && memcmp(piece, v + 90, sizeof piece) == 0);
        CHECK(ckpt_reader_get(r, 1, 55 * 4, piece, sizeof piece) == 0 && piece[4] == m[59] && piece[5] == 0);
        CHECK(ckpt_reader_get(r, 0, 0, piece, sizeof piece) == 0 && memcmp(piece, params, sizeof piece) == 0);
        ckpt_reader_close(r);
        CHECK(ckpt_writer_open(&w, dir, &st) == 0);
        CHECK(ckpt_writer_put(w, params, sizeof params) == 0);
        char partial[760];
        snprintf(partial, sizeof partial, "%s.partial", g_path);
        CHECK(access(partial, F_OK) == 0);
        ckpt_writer_abort(w);
        CHECK_MSG(access(partial, F_OK) != 0, "an aborted checkpoint left %s", partial);
        uint8_t *after = slurp(&np2);
        CHECK_MSG(np2 == nw && memcmp(after, wz, nw) == 0, "an aborted checkpoint changed the one in place");
        free(after);
        /* 3M parameters: 36 MB of payload, five chunks of the reader's checksum pass; a bit flipped in v's end */
        ckpt_state big = st;
        big.n_params = 3u << 20;
        float *bp = tt_xcalloc(big.n_params, 4);
        for (size_t i = 0; i < big.n_params; i++) bp[i] = (float)i;
        CHECK(ckpt_write(dir, &big, bp, bp, bp) == 0);
        CHECK_MSG(ckpt_reader_open(&r, dir, &got) == 0, "%s", tt_lasterr());
        CHECK(ckpt_reader_get(r, 2, (big.n_params - 1) * 4, piece, 4) == 0 && piece[0] == (float)(big.n_params - 1));
        ckpt_reader_close(r);
        size_t nb;
        uint8_t *bb = slurp(&nb);
        bb[nb - 3] ^= 0x10;
        spit(bb, nb, 0);
        CHECK(ckpt_reader_open(&r, dir, &got) != 0 && strstr(tt_lasterr(), "checksum"));
        free(bb);
        free(bp);
        free(pieces);
        free(wz);
    }

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

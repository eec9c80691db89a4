/* tests/test_cuda_flash.c — the CUDA flash attention's loops on the CPU:
 * kernels/cuda/cuda_flash.h's per-row functions driven exactly as the
 * kernels drive them (query tiles, the causal key tiles each visits, tiles
 * staged as float with a padded row stride, GQA head mapping, dk/dv by key
 * rows over every query head of the group), against the CPU reference
 * attention (kernels/cpu/cpu_attn.c): out, lse, dq, dk, dv within float
 * rounding, with the kernels' tile size and with small unequal tiles that
 * leave partial tiles everywhere; and with packed examples (seg), against the
 * reference's packed attention. */
#include "core/base/common.h"
#include "core/base/rng.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_flash.h"
#include "tests/test.h"

#include <math.h>
#include <string.h>

typedef struct shape {
    int B, seq, nh, nkv, hd;
    const int32_t *seg; /* packed examples or NULL */
} shape;

static int lo_of(const shape *s, size_t row) { return s->seg ? s->seg[row] : 0; }

/* rows [r0, r0 + n) of a head's columns (col0, hd wide) of x (row stride xs) into t (row stride ld) */
static void stage(float *t, int ld, const float *x, int xs, int col0, int r0, int n, int hd) {
    for (int i = 0; i < n; i++) memcpy(t + (size_t)i * ld, x + (size_t)(r0 + i) * xs + col0, (size_t)hd * 4);
}

/* The forward kernel: one "thread" per query row of a tile, the key tiles it visits in order. */
static void fa_fwd(const shape *s, int bq, int bk, const float *q, const float *k, const float *v, float *out,
                   float *lse) {
    const int qs = s->nh * s->hd, ks = s->nkv * s->hd, ld = s->hd + 1, hd = s->hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float *Ks = tt_xmalloc((size_t)bk * ld * 4), *Vs = tt_xmalloc((size_t)bk * ld * 4), *qr = tt_xmalloc((size_t)ld * 4);
    float *acc = tt_xmalloc((size_t)hd * 4);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->nh; h++) {
            const int g = tt_gqa_kv_head(h, s->nh, s->nkv);
            const float *Q = q + (size_t)b * s->seq * qs, *K = k + (size_t)b * s->seq * ks, *V = v + (size_t)b * s->seq * ks;
            for (int qt = 0; qt * bq < s->seq; qt++) {
                int nt = tt_causal_kv_tiles(qt, bq, bk, s->seq);
                for (int i = qt * bq; i < (qt + 1) * bq && i < s->seq; i++) {
                    stage(qr, ld, Q, qs, h * hd, i, 1, hd);
                    float m = -INFINITY, l = 0;
                    memset(acc, 0, (size_t)hd * 4);
                    for (int kt = 0; kt < nt; kt++) {
                        int nk = s->seq - kt * bk < bk ? s->seq - kt * bk : bk;
                        stage(Ks, ld, K, ks, g * hd, kt * bk, nk, hd);
                        stage(Vs, ld, V, ks, g * hd, kt * bk, nk, hd);
                        tt_fa_fwd_tile(qr, hd, scale, Ks, Vs, ld, nk, kt * bk, i, lo_of(s, (size_t)b * s->seq + i), &m,
                                       &l, acc);
                    }
                    size_t row = (size_t)b * s->seq + i;
                    for (int d = 0; d < hd; d++) out[row * qs + (size_t)h * hd + d] = acc[d] / l;
                    lse[row * s->nh + h] = m + logf(l);
                }
            }
        }
    free(Ks); free(Vs); free(qr); free(acc);
}

/* The two backward kernels: dq by query rows (D computed there), then dk, dv by key rows. */
static void fa_bwd(const shape *s, int bq, int bk, const float *q, const float *k, const float *v, const float *o,
                   const float *lse, const float *dout, float *dq, float *dk, float *dv) {
    const int qs = s->nh * s->hd, ks = s->nkv * s->hd, ld = s->hd + 1, hd = s->hd, grp = s->nh / s->nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t T = (size_t)s->B * s->seq;
    float *Dall = tt_xmalloc(T * s->nh * 4);
    int tmax = bq > bk ? bq : bk;
    float *A = tt_xmalloc((size_t)tmax * ld * 4), *Bt = tt_xmalloc((size_t)tmax * ld * 4);
    float *r1 = tt_xmalloc((size_t)ld * 4), *r2 = tt_xmalloc((size_t)ld * 4), *acc1 = tt_xmalloc((size_t)hd * 4),
          *acc2 = tt_xmalloc((size_t)hd * 4), *ls = tt_xmalloc((size_t)bq * 4), *Ds = tt_xmalloc((size_t)bq * 4);
    int *los = tt_xmalloc((size_t)bq * sizeof *los);
    for (int b = 0; b < s->B; b++) {
        const size_t r0 = (size_t)b * s->seq;
        const float *Q = q + r0 * qs, *K = k + r0 * ks, *V = v + r0 * ks, *O = o + r0 * qs, *dO = dout + r0 * qs;
        /* pass A: dq */
        for (int h = 0; h < s->nh; h++) {
            const int g = tt_gqa_kv_head(h, s->nh, s->nkv);
            for (int qt = 0; qt * bq < s->seq; qt++) {
                int nt = tt_causal_kv_tiles(qt, bq, bk, s->seq);
                for (int i = qt * bq; i < (qt + 1) * bq && i < s->seq; i++) {
                    stage(r1, ld, Q, qs, h * hd, i, 1, hd);
                    stage(r2, ld, dO, qs, h * hd, i, 1, hd);
                    float D = tt_fa_dot(r2, O + (size_t)i * qs + (size_t)h * hd, hd);
                    Dall[(r0 + i) * s->nh + h] = D;
                    memset(acc1, 0, (size_t)hd * 4);
                    for (int kt = 0; kt < nt; kt++) {
                        int nk = s->seq - kt * bk < bk ? s->seq - kt * bk : bk;
                        stage(A, ld, K, ks, g * hd, kt * bk, nk, hd);
                        stage(Bt, ld, V, ks, g * hd, kt * bk, nk, hd);
                        tt_fa_dq_tile(r1, r2, lse[(r0 + i) * s->nh + h], D, hd, scale, A, Bt, ld, nk, kt * bk, i,
                                      lo_of(s, r0 + i), acc1);
                    }
                    memcpy(dq + (r0 + i) * qs + (size_t)h * hd, acc1, (size_t)hd * 4);
                }
            }
        }
        /* pass B: dk, dv, one key row at a time over the query heads of its group */
        for (int g = 0; g < s->nkv; g++)
            for (int kt = 0; kt * bk < s->seq; kt++)
                for (int j = kt * bk; j < (kt + 1) * bk && j < s->seq; j++) {
                    stage(r1, ld, K, ks, g * hd, j, 1, hd);
                    stage(r2, ld, V, ks, g * hd, j, 1, hd);
                    memset(acc1, 0, (size_t)hd * 4);
                    memset(acc2, 0, (size_t)hd * 4);
                    for (int h = g * grp; h < (g + 1) * grp; h++)
                        for (int qt = tt_fa_first_qtile(kt, bq, bk); qt * bq < s->seq; qt++) {
                            int nq = s->seq - qt * bq < bq ? s->seq - qt * bq : bq;
                            stage(A, ld, Q, qs, h * hd, qt * bq, nq, hd);
                            stage(Bt, ld, dO, qs, h * hd, qt * bq, nq, hd);
                            for (int i = 0; i < nq; i++) {
                                ls[i] = lse[(r0 + qt * bq + i) * s->nh + h];
                                Ds[i] = Dall[(r0 + qt * bq + i) * s->nh + h];
                                los[i] = lo_of(s, r0 + qt * bq + i);
                            }
                            tt_fa_dkv_tile(r1, r2, hd, scale, A, Bt, ls, Ds, s->seg ? los : NULL, ld, nq, qt * bq, j,
                                           acc1, acc2);
                        }
                    memcpy(dk + (r0 + j) * ks + (size_t)g * hd, acc1, (size_t)hd * 4);
                    memcpy(dv + (r0 + j) * ks + (size_t)g * hd, acc2, (size_t)hd * 4);
                }
    }
    free(Dall); free(A); free(Bt); free(r1); free(r2); free(acc1); free(acc2); free(ls); free(Ds); free(los);
}

/* max |a - b| / max |b| */
static double relerr(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return m > 0 ? d / m : d;
}

static void check(const shape *s, int bq, int bk) {
    tt_rng r;
    rng_seed(&r, 11, (uint64_t)(bq * 100 + bk));
    const size_t T = (size_t)s->B * s->seq, nq = T * s->nh * s->hd, nk = T * s->nkv * s->hd;
    float *q = tt_xmalloc(nq * 4), *k = tt_xmalloc(nk * 4), *v = tt_xmalloc(nk * 4), *dO = tt_xmalloc(nq * 4);
    rng_fill_normalish(&r, q, nq, 1.f);
    rng_fill_normalish(&r, k, nk, 1.f);
    rng_fill_normalish(&r, v, nk, 1.f);
    rng_fill_normalish(&r, dO, nq, 1.f);
    float *o = tt_xcalloc(nq, 4), *l = tt_xcalloc(T * s->nh, 4), *gq = tt_xcalloc(nq, 4), *gk = tt_xcalloc(nk, 4),
          *gv = tt_xcalloc(nk, 4);
    float *o2 = tt_xcalloc(nq, 4), *l2 = tt_xcalloc(T * s->nh, 4), *gq2 = tt_xcalloc(nq, 4), *gk2 = tt_xcalloc(nk, 4),
          *gv2 = tt_xcalloc(nk, 4);
    void *sc = tt_xmalloc(be_attn_scratch_bytes(s->B, s->seq, s->nh, s->nkv, s->hd, BE_REAL) + 1);
    be_attn_fwd(s->B, s->seq, s->nh, s->nkv, s->hd, q, k, v, o, l, s->seg, sc, BE_REAL);
    be_attn_bwd(s->B, s->seq, s->nh, s->nkv, s->hd, q, k, v, o, l, dO, gq, gk, gv, s->seg, sc, BE_REAL);
    fa_fwd(s, bq, bk, q, k, v, o2, l2);
    fa_bwd(s, bq, bk, q, k, v, o, l, dO, gq2, gk2, gv2);
    double e[5] = {relerr(o2, o, nq), relerr(l2, l, T * s->nh), relerr(gq2, gq, nq), relerr(gk2, gk, nk),
                   relerr(gv2, gv, nk)};
    const char *what[5] = {"out", "lse", "dq", "dk", "dv"};
    for (int i = 0; i < 5; i++)
        CHECK_MSG(e[i] < (i < 2 ? 2e-6 : 2e-5), "flash %s (B %d seq %d %d:%d x %d, tiles %d/%d): %.3g", what[i], s->B,
                  s->seq, s->nh, s->nkv, s->hd, bq, bk, e[i]);
    fprintf(stderr, "flash vs reference, seq %d %d:%d x %d, tiles %d/%d: out %.2g lse %.2g dq %.2g dk %.2g dv %.2g\n",
            s->seq, s->nh, s->nkv, s->hd, bq, bk, e[0], e[1], e[2], e[3], e[4]);
    free(q); free(k); free(v); free(dO); free(o); free(l); free(gq); free(gk); free(gv);
    free(o2); free(l2); free(gq2); free(gk2); free(gv2); free(sc);
}

int main(void) {
    const shape a = {2, 70, 4, 2, 16, NULL}, b = {1, 150, 6, 2, 32, NULL}, c = {1, 130, 2, 2, 128, NULL};
    check(&a, TT_FA_TILE, TT_FA_TILE); /* the kernels' tiles: one partial */
    check(&a, 8, 5);                   /* unequal tiles, partial everywhere */
    check(&b, TT_FA_TILE, TT_FA_TILE); /* GQA 3:1, three tiles */
    check(&b, 7, 16);
    check(&c, TT_FA_TILE, TT_FA_TILE); /* head_dim 128, the largest the kernels take */
    /* packed examples: sequence 0 rows 0-69 / 70-149 (a whole key tile before the second's start), sequence 1
     * rows 0-9 / 10-139 / 140-149 */
    static int32_t seg[300];
    for (int i = 0; i < 150; i++) {
        seg[i] = i < 70 ? 0 : 70;
        seg[150 + i] = i < 10 ? 0 : i < 140 ? 10 : 140;
    }
    const shape p = {2, 150, 4, 2, 32, seg};
    check(&p, TT_FA_TILE, TT_FA_TILE);
    check(&p, 7, 16);
    TEST_END();
}

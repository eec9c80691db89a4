/* tests/test_cuda_index.c — the CUDA kernels' index arithmetic
 * (kernels/cuda/cuda_index.h) on the CPU:
 *   1. NF4 nibbles and double-quantized absmax: every value decoded through
 *      the helpers equals core/base's decoder bit for bit (both layouts);
 *   2. GQA: the KV head of each query head is transformers' repeat_kv's;
 *   3. causal tiles: the visited key tiles cover every (row, key <= row),
 *      the last visited one is needed, and an unmasked tile has no key above
 *      the diagonal (seq 1..80, tile sizes 1..64);
 *   4. the online log-sum-exp over chunks equals a one-pass double one within
 *      float rounding (chunks of every size, empty chunks, wide ranges);
 *   5. row-major products through their column-major form: a naive
 *      column-major GEMM reading the operands through the derived layouts
 *      gives the row-major result bit for bit, for every transpose pair and
 *      padded leading dimensions (ASan sees any read outside the operands). */
#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "core/base/rng.h"
#include "kernels/cuda/cuda_index.h"
#include "tests/test.h"

#include <math.h>
#include <string.h>

static void t_nf4(uint64_t n, int dq) {
    tt_rng r;
    rng_seed(&r, 5, (uint64_t)dq);
    float *x = tt_xmalloc(n * sizeof *x), *ref = tt_xmalloc(n * sizeof *ref), *got = tt_xmalloc(n * sizeof *got);
    for (uint64_t i = 0; i < n; i++) x[i] = (float)(rng_normal(&r) * (1 + (i / 64) % 7)); /* blocks of varied scale */
    nf4_layout L;
    nf4_layout_of(n, dq, &L);
    uint8_t *blob = tt_xcalloc(1, L.total);
    nf4_quantize_tensor(x, n, dq, blob);
    dtype_decode_f32(dq ? TT_DTYPE_NF4DQ : TT_DTYPE_NF4, blob, n, 0, n, ref);
    float offset = 0;
    if (dq) memcpy(&offset, blob + L.offset_off, 4);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t blk = i / NF4_BLOCK;
        float am;
        if (dq) {
            float a2;
            memcpy(&a2, blob + L.absmax2_off + 4 * (blk / NF4_DQ_BLOCK), 4);
            am = tt_nf4_dq_absmax(nf4_dynamic_map[blob[L.absmax_off + blk]], a2, offset);
        } else {
            memcpy(&am, blob + L.absmax_off + 4 * blk, 4);
        }
        got[i] = tt_nf4_value(nf4_code[tt_nf4_code(blob, i)], am);
    }
    CHECK_MSG(memcmp(got, ref, n * sizeof *got) == 0, "NF4%s: the helpers' decode differs from core/base's",
              dq ? " (double quant)" : "");
    free(x); free(ref); free(got); free(blob);
}

/* A group's codes from one little-endian word, as tt_nf4_code reads them byte by byte. */
static void t_nf4_word(void) {
    tt_rng r;
    rng_seed(&r, 9, 0);
    for (int t = 0; t < 1000; t++) {
        uint8_t b[4];
        for (int i = 0; i < 4; i++) b[i] = (uint8_t)(rng_next(&r) >> 56);
        uint32_t word = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        for (int k = 0; k < 8; k++) CHECK(tt_nf4_code_in(word, k) == tt_nf4_code(b, (size_t)k));
    }
}

static void t_gqa(void) {
    for (int nkv = 1; nkv <= 8; nkv++)
        for (int rep = 1; rep <= 8; rep++) {
            int nh = nkv * rep;
            /* repeat_kv: KV head j is repeated rep times, in order */
            for (int j = 0, h = 0; j < nkv; j++)
                for (int k = 0; k < rep; k++, h++) CHECK(tt_gqa_kv_head(h, nh, nkv) == j);
        }
}

static void t_causal(void) {
    static const int sizes[] = {1, 2, 3, 4, 7, 8, 16, 64};
    const int ns = (int)(sizeof sizes / sizeof sizes[0]);
    long bad = 0;
    for (int seq = 1; seq <= 80; seq++)
        for (int a = 0; a < ns; a++)
            for (int b = 0; b < ns; b++) {
                int bq = sizes[a], bk = sizes[b];
                for (int qt = 0; qt * bq < seq; qt++) {
                    int r0 = qt * bq, r1 = r0 + bq < seq ? r0 + bq : seq; /* rows r0 .. r1-1 */
                    int n = tt_causal_kv_tiles(qt, bq, bk, seq);
                    /* covered: every key <= a row of the tile lies in a visited tile */
                    for (int i = r0; i < r1; i++) bad += i / bk >= n;
                    /* needed: the last visited tile has a key <= the tile's last row */
                    bad += (n - 1) * bk > r1 - 1;
                    /* an unmasked tile has no key above the diagonal for any of the rows */
                    for (int kt = 0; kt < n; kt++) {
                        if (tt_causal_tile_masked(qt, kt, bq, bk)) continue;
                        for (int i = r0; i < r1; i++)
                            for (int j = kt * bk; j < (kt + 1) * bk && j < seq; j++) bad += j > i;
                    }
                    /* tight for whole tiles: a masked tile does hold such a key */
                    for (int kt = 0; kt < n; kt++) {
                        if (!tt_causal_tile_masked(qt, kt, bq, bk) || (kt + 1) * bk > seq || r1 - r0 < bq) continue;
                        int above = 0;
                        for (int i = r0; i < r1; i++)
                            for (int j = kt * bk; j < (kt + 1) * bk; j++) above |= j > i;
                        bad += !above;
                    }
                }
            }
    CHECK_MSG(bad == 0, "causal tiles: %ld violations", bad);
}

static void t_lse(void) {
    tt_rng r;
    rng_seed(&r, 9, 9);
    double worst = 0;
    for (int trial = 0; trial < 200; trial++) {
        int n = 1 + (int)(rng_next(&r) % 3000), chunk = 1 + (int)(rng_next(&r) % 700);
        double scale = trial % 4 == 0 ? 40 : 3; /* wide ranges: exp underflows inside chunks */
        float *x = tt_xmalloc((size_t)n * sizeof *x);
        double mx = -INFINITY;
        for (int i = 0; i < n; i++) {
            x[i] = (float)(scale * rng_normal(&r));
            mx = fmax(mx, x[i]);
        }
        double s = 0;
        for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
        double want = mx + log(s);
        double m = -INFINITY, sum = 0;
        tt_lse_merge(&m, &sum, -INFINITY, 0); /* an empty chunk changes nothing */
        for (int c0 = 0; c0 < n; c0 += chunk) {
            int c1 = c0 + chunk < n ? c0 + chunk : n;
            float cm = -INFINITY, cs = 0;
            for (int i = c0; i < c1; i++) cm = fmaxf(cm, x[i]);
            for (int i = c0; i < c1; i++) cs += expf(x[i] - cm);
            tt_lse_merge(&m, &sum, cm, cs);
            if (c0 == 0) /* into the empty pair: the chunk's own, exactly */
                CHECK(m == (double)cm && sum == (double)cs);
        }
        double got = m + log(sum);
        worst = fmax(worst, fabs(got - want) / fmax(1, fabs(want)));
        free(x);
    }
    CHECK_MSG(worst < 2e-6, "online log-sum-exp: worst relative error %.3g", worst);
    fprintf(stderr, "online log-sum-exp over chunks: worst relative error %.3g\n", worst);
}

/* Column-major element (r, c) of a matrix with leading dimension ld, or of
 * its transpose when t. */
static float cm_at(const float *p, int ld, int t, int r, int c) { return t ? p[c + (size_t)r * ld] : p[r + (size_t)c * ld]; }

static void t_colmajor(void) {
    tt_rng r;
    rng_seed(&r, 2, 2);
    for (int trial = 0; trial < 40; trial++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int M = 1 + (int)(rng_next(&r) % 23), N = 1 + (int)(rng_next(&r) % 19), K = 1 + (int)(rng_next(&r) % 17);
                int lda = (ta ? M : K) + (int)(rng_next(&r) % 3), ldb = (tb ? K : N) + (int)(rng_next(&r) % 3);
                int ldc = N + (int)(rng_next(&r) % 3);
                size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
                float *A = tt_xmalloc(na * 4), *B = tt_xmalloc(nb * 4), *C = tt_xcalloc(nc, 4), *D = tt_xcalloc(nc, 4);
                for (size_t i = 0; i < na; i++) A[i] = (float)rng_normal(&r);
                for (size_t i = 0; i < nb; i++) B[i] = (float)rng_normal(&r);
                /* row-major reference, k ascending */
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        float s = 0;
                        for (int k = 0; k < K; k++)
                            s += (ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                                 (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                        C[(size_t)i * ldc + j] = s;
                    }
                /* column-major through the derived form, k ascending */
                tt_colmajor_gemm g = tt_colmajor_of(ta, tb, M, N, K, lda, ldb, ldc);
                const float *first = g.first_is_b ? B : A, *second = g.first_is_b ? A : B;
                CHECK(g.a_rows <= g.lda && g.b_rows <= g.ldb && g.c_rows <= g.ldc);
                CHECK((g.transa ? g.a_cols : g.a_rows) == g.m && (g.transa ? g.a_rows : g.a_cols) == g.k);
                CHECK((g.transb ? g.b_cols : g.b_rows) == g.k && (g.transb ? g.b_rows : g.b_cols) == g.n);
                CHECK(g.c_rows == g.m && g.c_cols == g.n);
                for (int i = 0; i < g.m; i++)
                    for (int j = 0; j < g.n; j++) {
                        float s = 0;
                        for (int k = 0; k < g.k; k++)
                            s += cm_at(second, g.ldb, g.transb, k, j) * cm_at(first, g.lda, g.transa, i, k);
                        D[i + (size_t)j * g.ldc] = s;
                    }
                CHECK_MSG(memcmp(C, D, nc * 4) == 0, "column-major form of ta=%d tb=%d (%d x %d x %d) differs", ta,
                          tb, M, N, K);
                free(A); free(B); free(C); free(D);
            }
}

/* Philox4x32-10 against Random123's published known-answer vectors, and the
 * dropout draw: word k of group q is column 4q + k, kept at about 1 - p. */
static void t_philox(void) {
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e, 0xa20bc7c6,
         0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb, 0x5001e420,
         0x24126ea1},
    };
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        tt_philox4x32_10(kat[v], kat[v] + 4, out);
        CHECK_MSG(memcmp(out, kat[v] + 6, sizeof out) == 0, "Philox4x32-10 known-answer vector %d: %08x %08x %08x %08x",
                  v, out[0], out[1], out[2], out[3]);
    }
    /* the draw's counter and key layout */
    uint64_t seed = 0x0123456789abcdefull, stream = (uint64_t)37 << 32 | 1234;
    uint32_t a[4], b[4];
    tt_dropout_words(seed, stream, 5, a);
    const uint32_t ctr[4] = {5, 0, 1234, 37}, key[2] = {0x89abcdef, 0x01234567};
    tt_philox4x32_10(ctr, key, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(tt_dropout_threshold(0.f) == 0 && tt_dropout_threshold(0.5f) == 0x80000000u &&
          tt_dropout_threshold(0.25f) == 0x40000000u);
    const float ps[3] = {0.05f, 0.1f, 0.5f};
    for (int k = 0; k < 3; k++) {
        uint32_t thr = tt_dropout_threshold(ps[k]), w[4];
        size_t kept = 0, n = 0;
        for (uint32_t q = 0; q < 50000; q++, n += 4) {
            tt_dropout_words(seed, stream + q % 7, q, w);
            for (int j = 0; j < 4; j++) kept += w[j] >= thr;
        }
        double frac = (double)kept / (double)n, sd = sqrt(ps[k] * (1 - ps[k]) / (double)n);
        CHECK_MSG(fabs(frac - (1 - ps[k])) < 5 * sd, "p %.2f keeps %.5f of %zu draws", ps[k], frac, n);
    }
}

int main(void) {
    t_nf4(64 * 700 + 13, 0);
    t_nf4(64 * 700 + 13, 1);
    t_nf4((uint64_t)64 * 256 * 3 + 64 * 5, 1); /* several double-quant groups, the last partial */
    t_nf4_word();
    t_gqa();
    t_causal();
    t_lse();
    t_colmajor();
    t_philox();
    TEST_END();
}

/* kernels/cuda/cuda_index.h — the index arithmetic of the CUDA kernels as
 * plain functions that compile for the host and the device (TT_HD), so that
 * tests/test_cuda_index.c checks them on the CPU, bit for bit against the
 * CPU reference where that reference is exact:
 *   - NF4: which nibble holds value i, and the double-quantized absmax with
 *     its two roundings (core/base/nf4.c's decoder);
 *   - grouped-query attention: the KV head of a query head;
 *   - causal tiles: which key tiles a query tile visits and which of them
 *     straddle the diagonal (need the mask);
 *   - the online log-sum-exp: merging (max, sum of exp(x - max)) of chunks;
 *   - LoRA dropout's mask: Philox4x32-10, each element without its predecessors;
 *   - a row-major product as the column-major one cuBLAS / cuBLASLt compute.
 * Plain C (C11 and CUDA C++): no project includes beyond <stddef.h>/<stdint.h>. */
#ifndef TT_CUDA_INDEX_H
#define TT_CUDA_INDEX_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define TT_HD static inline __host__ __device__
#else
#define TT_HD static inline
#endif

/* ---- NF4 (docs/FORMAT.md) --------------------------------------------------- */

/* The 4-bit code of value i: two values per byte, the first in the high nibble. */
TT_HD int tt_nf4_code(const uint8_t *codes, size_t i) {
    uint8_t b = codes[i >> 1];
    return (i & 1) ? (b & 15) : (b >> 4);
}

/* The code of value k (0..7) of a group whose codes are the bytes of word,
 * the first byte lowest (a little-endian load of codes + i / 2, i even):
 * tt_nf4_code's order, value k in byte k / 2, the even one high. */
TT_HD int tt_nf4_code_in(uint32_t word, int k) { return (int)(word >> (8 * (k >> 1) + ((k & 1) ? 0 : 4))) & 15; }

/* One rounding per product and per sum, on the device as on the host: nvcc
 * contracts a product and a sum that follows it into one FMA where the code's
 * shape allows, so two kernels sharing arithmetic could round it differently
 * (and differ from the CPU reference); these never fuse. ISO C (and g++ in
 * its strict modes) does not contract across statements or these calls. */
TT_HD float tt_mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
TT_HD float tt_add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

/* A double-quantized block's absmax: its 8-bit code's value (dyn) times the
 * group's scale (absmax2), plus the offset — rounded after the product and
 * after the sum, never fused into one FMA (nf4_double_dequant does the same
 * on the CPU). */
TT_HD float tt_nf4_dq_absmax(float dyn, float absmax2, float offset) { return tt_add_rn(tt_mul_rn(dyn, absmax2), offset); }

/* A value: its code's level times its block's absmax (one rounding). */
TT_HD float tt_nf4_value(float level, float absmax) { return tt_mul_rn(level, absmax); }

/* ---- attention -------------------------------------------------------------- */

/* Query head h of nh reads KV head h / (nh / nkv) (transformers' repeat_kv). */
TT_HD int tt_gqa_kv_head(int h, int nh, int nkv) { return h / (nh / nkv); }

/* Causal attention in tiles of bq query rows and bk key columns over a
 * sequence of seq tokens: query tile qt (rows qt*bq .. min(seq, qt*bq+bq)-1)
 * sees keys 0 .. its last row, so it visits key tiles 0 .. n-1 with n below;
 * the others are skipped whole. */
TT_HD int tt_causal_kv_tiles(int qt, int bq, int bk, int seq) {
    int last = (qt + 1) * bq < seq ? (qt + 1) * bq : seq; /* one past the tile's last row */
    return (last + bk - 1) / bk;
}
/* 1 when key tile kt holds a column above the diagonal for some row of query
 * tile qt (its last column is past the tile's first row): the mask is needed. */
TT_HD int tt_causal_tile_masked(int qt, int kt, int bq, int bk) { return (kt + 1) * bk - 1 > qt * bq; }

/* ---- online log-sum-exp ------------------------------------------------------ */

/* A running (max m, sum s of exp(x - m)) over some values, merged with
 * another (m2, s2): the pair over both, in double. m = -INFINITY with s = 0
 * is the empty set; merged into it, (m2, s2) comes out unchanged.
 * log-sum-exp = m + log(s). */
TT_HD void tt_lse_merge(double *m, double *s, double m2, double s2) {
    if (m2 == -INFINITY) return;
    if (*m == -INFINITY) { *m = m2; *s = s2; return; }
    if (m2 > *m) {
        *s = *s * exp(*m - m2) + s2;
        *m = m2;
    } else {
        *s += s2 * exp(m2 - *m);
    }
}

/* tt_lse_merge with a third member: a sum a of exp(x - m) f(x) rescaled
 * with s (distillation's statistics). */
TT_HD void tt_lse_merge_w(double *m, double *s, double *a, double m2, double s2, double a2) {
    if (m2 == -INFINITY) return;
    if (*m == -INFINITY) { *m = m2; *s = s2; *a = a2; return; }
    if (m2 > *m) {
        double f = exp(*m - m2);
        *s = *s * f + s2;
        *a = *a * f + a2;
        *m = m2;
    } else {
        double f = exp(m2 - *m);
        *s += s2 * f;
        *a += a2 * f;
    }
}

/* ---- LoRA dropout: a counter-based generator ------------------------------------ */

/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC'11; Random123's constants): four 32-bit words from a 128-bit
 * counter and a 64-bit key, each output a pure function of its inputs, so a
 * GPU thread computes any element of a mask without its predecessors. */
TT_HD void tt_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* The dropout mask's draw: a value is kept when its 32-bit word is at least
 * this threshold, p * 2^32 rounded down (p in [0, 1)), so with probability
 * 1 - p to within 2^-32. */
TT_HD uint32_t tt_dropout_threshold(float p) { return p <= 0.f ? 0u : (uint32_t)((double)p * 4294967296.0); }

/* The words of columns 4q .. 4q+3 of the mask row drawn from stream `stream`
 * (core/model.c: layer, projection and row) under `seed`: the counter is
 * (q, 0, the stream's low word, its high word), the key the seed's words. */
TT_HD void tt_dropout_words(uint64_t seed, uint64_t stream, uint32_t q, uint32_t out[4]) {
    const uint32_t ctr[4] = {q, 0u, (uint32_t)stream, (uint32_t)(stream >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    tt_philox4x32_10(ctr, key, out);
}

/* ---- row-major products as column-major ones --------------------------------- */

/* cuBLAS and cuBLASLt are column-major. The row-major C (M, N) = op(A) op(B)
 * is the column-major C^T (N, M) = op(B)^T op(A)^T: the operands swap, each
 * keeps its transpose flag (a row-major X with row stride ld is the
 * column-major X^T with leading dimension ld). For cuBLASLt's matrix layouts
 * the stored shape of each operand is given too (rows, cols as column-major,
 * leading dimension ld). */
typedef struct tt_colmajor_gemm {
    int transa, transb;            /* of the column-major first / second operand */
    int m, n, k;                   /* column-major C (m, n) = op(first) (m, k) op(second) (k, n) */
    int first_is_b;                /* 1: the first operand is the row-major B (always: the swap) */
    int a_rows, a_cols, lda;       /* the first operand as stored, column-major */
    int b_rows, b_cols, ldb;       /* the second */
    int c_rows, c_cols, ldc;
} tt_colmajor_gemm;

TT_HD tt_colmajor_gemm tt_colmajor_of(int ta, int tb, int M, int N, int K, int lda, int ldb, int ldc) {
    tt_colmajor_gemm g;
    g.transa = tb;
    g.transb = ta;
    g.m = N;
    g.n = M;
    g.k = K;
    g.first_is_b = 1;
    /* row-major B is (K, N), or (N, K) when tb: column-major it is (N, K) / (K, N) */
    g.a_rows = tb ? K : N;
    g.a_cols = tb ? N : K;
    g.lda = ldb;
    /* row-major A is (M, K), or (K, M) when ta */
    g.b_rows = ta ? M : K;
    g.b_cols = ta ? K : M;
    g.ldb = lda;
    g.c_rows = N;
    g.c_cols = M;
    g.ldc = ldc;
    return g;
}

#endif

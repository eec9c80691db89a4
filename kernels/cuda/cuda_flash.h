/* kernels/cuda/cuda_flash.h — the arithmetic of the CUDA flash attention
 * (kernels/cuda/cuda_backend.cu's k_fa_*) as plain functions for the host and
 * the device, so that tests/test_cuda_flash.c runs the kernels' exact loop
 * structure on the CPU against the CPU reference attention.
 *
 * Causal grouped-query attention that never holds a (seq x seq) matrix: one
 * thread per query row (forward, dq) or per key row (dk, dv), against tiles
 * of keys (or queries) staged as float in shared memory with row stride ld.
 * Positions are within the sequence; a key k is seen by query q when k <= q,
 * and, with packed examples, k >= lo, the start of q's example.
 *   forward:  m, l, acc: the running max, sum of exp(s - m) and the
 *             unnormalised output of the row; out = acc / l, lse = m + log l.
 *   backward: with P = exp(S - lse) and D_q = dO_q . O_q,
 *             dS = P (dO V^T - D);  dQ = scale dS K;  dK = scale dS^T Q;
 *             dV = P^T dO — dQ by query rows (tt_fa_dq_tile), dK and dV by
 *             key rows (tt_fa_dkv_tile): two passes, no atomics, the same
 *             result every run. */
#ifndef TT_CUDA_FLASH_H
#define TT_CUDA_FLASH_H

#include "kernels/cuda/cuda_index.h"

/* Query tile and key tile sizes of the kernels (rows per block), for head
 * dimensions up to TT_FA_MAX_HD (the shared memory of a block: up to six
 * 64-row tiles of hd + 1 floats). */
#define TT_FA_TILE 64
#define TT_FA_MAX_HD 128

TT_HD float tt_fa_dot(const float *a, const float *b, int hd) {
    float s = 0.f;
    for (int d = 0; d < hd; d++) s += a[d] * b[d];
    return s;
}

/* The forward over one tile of nk keys (K, V rows with stride ld) whose first
 * has position kpos0, for the query row q at position qpos (keys from lo). */
TT_HD void tt_fa_fwd_tile(const float *q, int hd, float scale, const float *K, const float *V, int ld, int nk,
                          int kpos0, int qpos, int lo, float *m, float *l, float *acc) {
    for (int j = lo > kpos0 ? lo - kpos0 : 0; j < nk && kpos0 + j <= qpos; j++) {
        float s = scale * tt_fa_dot(q, K + (size_t)j * ld, hd);
        if (s > *m) { /* a new max: rescale what is summed so far */
            float c = expf(*m - s); /* 0 for the first key (m = -inf) */
            *l *= c;
            for (int d = 0; d < hd; d++) acc[d] *= c;
            *m = s;
        }
        float p = expf(s - *m);
        *l += p;
        const float *v = V + (size_t)j * ld;
        for (int d = 0; d < hd; d++) acc[d] += p * v[d];
    }
}

/* dq (+)= scale * sum_k dS_qk K_k over one tile of keys, for the query row q
 * (its dO row, lse and D) at position qpos (keys from lo). */
TT_HD void tt_fa_dq_tile(const float *q, const float *dO, float lse, float D, int hd, float scale, const float *K,
                         const float *V, int ld, int nk, int kpos0, int qpos, int lo, float *dq) {
    for (int j = lo > kpos0 ? lo - kpos0 : 0; j < nk && kpos0 + j <= qpos; j++) {
        const float *k = K + (size_t)j * ld;
        float p = expf(scale * tt_fa_dot(q, k, hd) - lse);
        float ds = p * (tt_fa_dot(dO, V + (size_t)j * ld, hd) - D);
        for (int d = 0; d < hd; d++) dq[d] += scale * ds * k[d];
    }
}

/* dk, dv (+)= the contributions of one tile of nq query rows (Q, dO rows with
 * stride ld; their lse, D and example starts lo, or lo NULL) whose first has
 * position qpos0, for the key row k, v at position kpos. */
TT_HD void tt_fa_dkv_tile(const float *k, const float *v, int hd, float scale, const float *Q, const float *dO,
                          const float *lse, const float *D, const int *lo, int ld, int nq, int qpos0, int kpos, float *dk,
                          float *dv) {
    for (int i = kpos > qpos0 ? kpos - qpos0 : 0; i < nq; i++) {
        if (lo && kpos < lo[i]) continue; /* the key precedes this query's example */
        const float *qi = Q + (size_t)i * ld, *doi = dO + (size_t)i * ld;
        float p = expf(scale * tt_fa_dot(qi, k, hd) - lse[i]);
        float ds = p * (tt_fa_dot(doi, v, hd) - D[i]);
        for (int d = 0; d < hd; d++) {
            dv[d] += p * doi[d];
            dk[d] += scale * ds * qi[d];
        }
    }
}

/* The first query tile (of size bq) that sees key tile kt (size bk). */
TT_HD int tt_fa_first_qtile(int kt, int bq, int bk) { return kt * bk / bq; }

#endif

/* kernels/cpu/cpu_attn.c — causal grouped-query attention on the CPU, forward
 * and backward, the reference for the CUDA kernels.
 *
 * One (sequence, query head) at a time, in blocks of query rows: rows
 * i0..i1-1 see keys 0..i1-1 only (causal), so each block is two or three
 * small gemms plus a row-wise softmax, and the work above the diagonal is
 * mostly skipped. Scratch (the caller's, cpu_attn_scratch_bytes): one (Br,
 * seq) block in the forward, two in the backward, with Br = min(64, seq/2):
 * never more than one (seq, seq) score matrix (for seq >= 2).
 *
 * Layout (backend.h): q, out, dq (T, nh*hd); k, v, dk, dv (T, nkv*hd);
 * lse (T, nh); T = B*seq, sequence b in rows b*seq..b*seq+seq-1; query head h
 * reads KV head h / (nh/nkv). With packed examples (seg), row i sees keys
 * seg[i]..i: the keys before its example's start are masked like those after
 * it (probability exactly 0, no gradient).
 */
#include "kernels/cpu/cpu_impl.h"

#include <math.h>
#include <string.h>

#include "core/base/common.h"

/* query rows per block */
static int block_rows(int seq) {
    int br = seq / 2;
    if (br > 64) br = 64;
    return br < 1 ? 1 : br;
}

size_t cpu_attn_scratch_bytes(int seq) { return (size_t)2 * block_rows(seq) * seq * sizeof(tt_real); }

/* S (n, kn) = scale * Q[i0:i0+n] K[0:kn]^T for one head; Q rows have stride
 * qs, K rows stride ks. */
static void scores(int n, int kn, int hd, tt_real scale, const tt_real *Q, int qs, const tt_real *K, int ks,
                   tt_real *S) {
    cpu_gemm(0, 1, n, kn, hd, scale, Q, qs, K, ks, 0, S, kn);
}

void cpu_attn_fwd(int B, int seq, int nh, int nkv, int hd, const tt_real *q, const tt_real *k, const tt_real *v,
                  tt_real *out, tt_real *lse, const int32_t *seg, tt_real *scratch) {
    const int qs = nh * hd, ks = nkv * hd, grp = nh / nkv, br = block_rows(seq);
    const tt_real scale = 1 / R_SQRT((tt_real)hd);
    tt_real *S = scratch; /* (br, kn), row stride kn */
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < nh; h++) {
            const size_t r0 = (size_t)b * seq;                 /* first row of the sequence */
            const tt_real *Q = q + r0 * qs + (size_t)h * hd;   /* (seq, hd), stride qs */
            const tt_real *K = k + r0 * ks + (size_t)(h / grp) * hd; /* (seq, hd), stride ks */
            const tt_real *V = v + r0 * ks + (size_t)(h / grp) * hd;
            tt_real *O = out + r0 * qs + (size_t)h * hd;         /* (seq, hd), stride qs */
            tt_real *L = lse + r0 * nh + h;                      /* (seq), stride nh */
            for (int i0 = 0; i0 < seq; i0 += br) {
                const int n = seq - i0 < br ? seq - i0 : br, kn = i0 + n;
                scores(n, kn, hd, scale, Q + (size_t)i0 * qs, qs, K, ks, S);
                for (int r = 0; r < n; r++) {
                    const int i = i0 + r, lo = seg ? seg[r0 + (size_t)i] : 0; /* this row sees keys lo..i */
                    TT_ASSERT(lo >= 0 && lo <= i);
                    tt_real *row = S + (size_t)r * kn;
                    tt_real mx = row[lo];
                    for (int j = lo + 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
                    double sum = 0;
                    for (int j = lo; j <= i; j++) {
                        row[j] = R_EXP(row[j] - mx);
                        sum += row[j];
                    }
                    const tt_real inv = (tt_real)(1 / sum);
                    for (int j = 0; j < lo; j++) row[j] = 0;
                    for (int j = lo; j <= i; j++) row[j] *= inv;
                    for (int j = i + 1; j < kn; j++) row[j] = 0;
                    L[(size_t)i * nh] = (tt_real)((double)mx + log(sum));
                }
                cpu_gemm(0, 0, n, hd, kn, 1, S, kn, V, ks, 0, O + (size_t)i0 * qs, qs);
            }
        }
    }
}

/* With P = softmax(S) recomputed as exp(S - lse):
 *   dV = P^T dO;  dP = dO V^T;  dS = P * (dP - D), D_i = sum_d dO_id O_id;
 *   dQ = scale dS K;  dK = scale dS^T Q.
 * dk and dv sum over the query heads of a group (zeroed first); dq is
 * overwritten block by block. */
void cpu_attn_bwd(int B, int seq, int nh, int nkv, int hd, const tt_real *q, const tt_real *k, const tt_real *v,
                  const tt_real *out, const tt_real *lse, const tt_real *dout, tt_real *dq, tt_real *dk,
                  tt_real *dv, const int32_t *seg, tt_real *scratch) {
    const int qs = nh * hd, ks = nkv * hd, grp = nh / nkv, br = block_rows(seq);
    const tt_real scale = 1 / R_SQRT((tt_real)hd);
    memset(dk, 0, (size_t)B * seq * ks * sizeof *dk);
    memset(dv, 0, (size_t)B * seq * ks * sizeof *dv);
    tt_real *P = scratch; /* (br, kn) each, row stride kn */
    tt_real *dS = P + (size_t)br * seq;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < nh; h++) {
            const size_t r0 = (size_t)b * seq, qo = r0 * qs + (size_t)h * hd, ko = r0 * ks + (size_t)(h / grp) * hd;
            const tt_real *Q = q + qo, *O = out + qo, *dO = dout + qo; /* (seq, hd), stride qs */
            const tt_real *K = k + ko, *V = v + ko;                    /* (seq, hd), stride ks */
            tt_real *dQ = dq + qo, *dK = dk + ko, *dV = dv + ko;
            const tt_real *L = lse + r0 * nh + h; /* (seq), stride nh */
            for (int i0 = 0; i0 < seq; i0 += br) {
                const int n = seq - i0 < br ? seq - i0 : br, kn = i0 + n;
                const tt_real *Qb = Q + (size_t)i0 * qs, *dOb = dO + (size_t)i0 * qs;
                scores(n, kn, hd, scale, Qb, qs, K, ks, P);
                for (int r = 0; r < n; r++) {
                    const int i = i0 + r, lo = seg ? seg[r0 + (size_t)i] : 0;
                    tt_real *row = P + (size_t)r * kn;
                    const tt_real l = L[(size_t)i * nh];
                    for (int j = 0; j < lo; j++) row[j] = 0;
                    for (int j = lo; j <= i; j++) row[j] = R_EXP(row[j] - l);
                    for (int j = i + 1; j < kn; j++) row[j] = 0;
                }
                cpu_gemm(1, 0, kn, hd, n, 1, P, kn, dOb, qs, 1, dV, ks);     /* dV[0:kn] += P^T dO */
                cpu_gemm(0, 1, n, kn, hd, 1, dOb, qs, V, ks, 0, dS, kn);     /* dP = dO V^T */
                for (int r = 0; r < n; r++) {
                    const int i = i0 + r;
                    const tt_real *o = O + (size_t)i * qs, *d = dO + (size_t)i * qs;
                    double D = 0;
                    for (int c = 0; c < hd; c++) D += (double)d[c] * o[c];
                    const tt_real *p = P + (size_t)r * kn;
                    tt_real *ds = dS + (size_t)r * kn;
                    for (int j = 0; j <= i; j++) ds[j] = p[j] * (ds[j] - (tt_real)D);
                    for (int j = i + 1; j < kn; j++) ds[j] = 0;
                }
                cpu_gemm(0, 0, n, hd, kn, scale, dS, kn, K, ks, 0, dQ + (size_t)i0 * qs, qs); /* dQ = s dS K */
                cpu_gemm(1, 0, kn, hd, n, scale, dS, kn, Qb, qs, 1, dK, ks);                  /* dK += s dS^T Q */
            }
        }
    }
}

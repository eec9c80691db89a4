/* kernels/cuda/cuda_fa2.h — flash attention on tensor cores (bf16
 * activations): FlashAttention-2's loops with mma.sync.m16n8k16 (bf16 in,
 * fp32 accumulate), written once as per-thread block bodies that compile
 * for the device (the kernels in cuda_backend.cu call them) and for the CPU,
 * where tests/test_cuda_fa2.c runs every thread of a block as a POSIX thread
 * and emulates the warp-wide operations (the mma from the PTX ISA's fragment
 * layout, the shuffles, the block barrier) — so the kernels' index
 * arithmetic, masking and online softmax are tested without a GPU.
 *
 * Shapes: causal, grouped-query (query head h reads KV head
 * tt_gqa_kv_head), head_dim up to TT_FA2_HD (a smaller one is zero-padded:
 * the fragments always span TT_FA2_HD columns). A block is TT_FA2_WARPS
 * warps; each warp owns 16 rows (queries in the forward and the dq pass,
 * keys in the dk/dv pass) and walks the other side in tiles of TT_FA2_BC
 * staged in shared memory as bf16 (row stride TT_FA2_LD: conflict-free
 * fragment loads). Scores are scaled into base 2 (exp2); the saved lse is
 * natural-log, as the CPU reference's.
 *
 * Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = 4 * gid +
 * tig: A (16 x 16) register r holds row gid + 8 (r & 1), columns 2 tig +
 * 8 (r >> 1) + {0, 1}; B (16 x 8) register r holds rows 2 tig + 8 r + {0, 1}
 * of column gid; C (16 x 8) element i is row gid + 8 (i >> 1), column
 * 2 tig + (i & 1). Two bf16 share a register, the lower column (or row) in
 * the low half.
 *
 * Plain C (C11 and CUDA C++). */
#ifndef TT_CUDA_FA2_H
#define TT_CUDA_FA2_H

#include "kernels/cuda/cuda_index.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define TT_FA2_HD 128                 /* head_dim the fragments span */
#define TT_FA2_WARPS 4
#define TT_FA2_THREADS (32 * TT_FA2_WARPS)
#define TT_FA2_BR (16 * TT_FA2_WARPS) /* rows a block owns */
#define TT_FA2_BC 64                  /* the other side's tile */
#define TT_FA2_LD (TT_FA2_HD + 8)     /* shared row stride (bf16): 68 words, a fragment's 32 loads hit 32 banks */
/* Shared memory of a block (bytes): the forward and the dq pass stage K, V
 * tiles; the dk/dv pass holds its own K, V rows and stages Q, dO tiles with
 * their lse and D (above 48 KiB: the kernel opts in at start-up). */
#define TT_FA2_SMEM_FWD ((size_t)2 * TT_FA2_BC * TT_FA2_LD * 2)
#define TT_FA2_SMEM_DQ TT_FA2_SMEM_FWD
#define TT_FA2_SMEM_DKV ((size_t)2 * TT_FA2_BR * TT_FA2_LD * 2 + (size_t)2 * TT_FA2_BC * TT_FA2_LD * 2 + (size_t)2 * TT_FA2_BC * 4)

#ifdef __CUDA_ARCH__
#define TT_UNROLL _Pragma("unroll")
#else
#define TT_UNROLL
#endif

/* ---- the warp-wide operations -------------------------------------------------
 * On the device the real ones; in nvcc's host pass never called; in a plain
 * C build (the tests) the emulation's, which the test defines. */
typedef struct tt_warp_emu tt_warp_emu; /* the emulation's block state (NULL on the device) */
#if !defined(__CUDACC__)
void tt_emu_sync(tt_warp_emu *w);
float tt_emu_shfl_xor(tt_warp_emu *w, int tid, float v, int mask);
void tt_emu_mma(tt_warp_emu *w, int tid, float d[4], const uint32_t a[4], const uint32_t b[2]);
#endif

TT_HD void tt_fa2_sync(tt_warp_emu *w) {
#if defined(__CUDA_ARCH__)
    (void)w;
    __syncthreads();
#elif defined(__CUDACC__)
    (void)w;
#else
    tt_emu_sync(w);

#endif
}

TT_HD float tt_fa2_shfl_xor(tt_warp_emu *w, int tid, float v, int mask) {
#if defined(__CUDA_ARCH__)
    (void)w; (void)tid;
    return __shfl_xor_sync(0xffffffffu, v, mask);
#elif defined(__CUDACC__)
    (void)w; (void)tid; (void)mask;
    return v;
#else
    return tt_emu_shfl_xor(w, tid, v, mask);

#endif
}

/* d += A B (one m16n8k16, bf16 x bf16 -> fp32). */
TT_HD void tt_fa2_mma(tt_warp_emu *w, int tid, float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(__CUDA_ARCH__)
    (void)w; (void)tid;
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDACC__)
    (void)w; (void)tid; (void)d; (void)a; (void)b;
#else
    tt_emu_mma(w, tid, d, a, b);

#endif
}

/* ---- bf16 ---------------------------------------------------------------------- */

TT_HD uint32_t tt_f32_bits(float f) {
    union { float f; uint32_t u; } x;
    x.f = f;
    return x.u;
}
TT_HD float tt_bits_f32(uint32_t u) {
    union { float f; uint32_t u; } x;
    x.u = u;
    return x.f;
}
/* Round to nearest even, NaN kept quiet (core/base/dtype.c's, __float2bfloat16_rn's). */
TT_HD uint16_t tt_fa2_bf16(float f) {
    uint32_t u = tt_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
TT_HD float tt_fa2_f32(uint16_t h) { return tt_bits_f32((uint32_t)h << 16); }
TT_HD uint32_t tt_fa2_pack(uint16_t lo, uint16_t hi) { return (uint32_t)lo | ((uint32_t)hi << 16); }
/* Two adjacent bf16 (p even-aligned) as one register. */
TT_HD uint32_t tt_fa2_ld2(const uint16_t *p) {
#ifdef __CUDA_ARCH__
    return *(const uint32_t *)p;
#else
    return tt_fa2_pack(p[0], p[1]);

#endif
}

/* ---- fragment coordinates ------------------------------------------------------- */

TT_HD int tt_fa2_a_row(int lane, int r) { return (lane >> 2) + 8 * (r & 1); }
TT_HD int tt_fa2_a_col(int lane, int r) { return 2 * (lane & 3) + 8 * (r >> 1); } /* and + 1 */
TT_HD int tt_fa2_b_row(int lane, int r) { return 2 * (lane & 3) + 8 * r; }          /* and + 1 */
TT_HD int tt_fa2_b_col(int lane) { return lane >> 2; }
TT_HD int tt_fa2_c_row(int lane, int i) { return (lane >> 2) + 8 * (i >> 1); }
TT_HD int tt_fa2_c_col(int lane, int i) { return 2 * (lane & 3) + (i & 1); }

#if !defined(__CUDACC__)
/* The emulations' side of an mma (tests/test_cuda_fa2.c, tests/cuda_emu): a
 * warp's 16 x 16 and 16 x 8 operands put together from its 32 lanes'
 * fragments, xa[4 * lane + r] and xb[2 * lane + r], by the coordinates above. */
static inline void tt_fa2_warp_operands(const uint32_t *xa, const uint32_t *xb, float A[16][16], float B[16][8]) {
    for (int L = 0; L < 32; L++) {
        for (int r = 0; r < 4; r++) {
            uint32_t x = xa[4 * L + r];
            int row = tt_fa2_a_row(L, r), col = tt_fa2_a_col(L, r);
            A[row][col] = tt_fa2_f32((uint16_t)(x & 0xffff));
            A[row][col + 1] = tt_fa2_f32((uint16_t)(x >> 16));
        }
        for (int r = 0; r < 2; r++) {
            uint32_t x = xb[2 * L + r];
            int k = tt_fa2_b_row(L, r), n = tt_fa2_b_col(L);
            B[k][n] = tt_fa2_f32((uint16_t)(x & 0xffff));
            B[k + 1][n] = tt_fa2_f32((uint16_t)(x >> 16));
        }
    }
}
#endif

/* Rows [r0, r0 + TT_FA2_BC) of a head's columns of x (row stride xs, n rows
 * in all, hd columns) into the shared tile t (TT_FA2_LD), zero beyond n and
 * hd; by all threads of the block. */
TT_HD void tt_fa2_stage(uint16_t *t, const uint16_t *x, size_t xs, int r0, int n, int hd, int tid) {
    for (int idx = tid; idx < TT_FA2_BC * TT_FA2_HD; idx += TT_FA2_THREADS) {
        int i = idx / TT_FA2_HD, d = idx - i * TT_FA2_HD;
        t[i * TT_FA2_LD + d] = r0 + i < n && d < hd ? x[(size_t)(r0 + i) * xs + d] : (uint16_t)0;
    }
}

/* A fragments of 16 rows (r0..r0+15 of x, row stride xs; zero past n rows
 * and hd columns) across the TT_FA2_HD columns, straight from memory. */
TT_HD void tt_fa2_load_a(uint32_t a[TT_FA2_HD / 16][4], const uint16_t *x, size_t xs, int r0, int n, int hd,
                         int lane) {
    TT_UNROLL
    for (int kc = 0; kc < TT_FA2_HD / 16; kc++)
        TT_UNROLL
        for (int r = 0; r < 4; r++) {
            int row = r0 + tt_fa2_a_row(lane, r), col = kc * 16 + tt_fa2_a_col(lane, r);
            const uint16_t *p = x + (size_t)row * xs + col;
            uint16_t lo = row < n && col < hd ? p[0] : (uint16_t)0, hi = row < n && col + 1 < hd ? p[1] : (uint16_t)0;
            a[kc][r] = tt_fa2_pack(lo, hi);
        }
}

/* S (16 x 8 n8) = A X^T for A's fragments (16 x TT_FA2_HD, registers) and
 * n8 * 8 rows of the shared tile X: B (k = column d, n = row j) is X[j][d],
 * two adjacent columns per register. n8 <= TT_FA2_BC / 8, a constant at
 * each call (the loops unroll, the arrays stay in registers). */
TT_HD void tt_fa2_abt(tt_warp_emu *w, int tid, float s[TT_FA2_BC / 8][4], uint32_t a[TT_FA2_HD / 16][4],
                      const uint16_t *X, int n8) {
    const int lane = tid & 31;
    TT_UNROLL
    for (int nt = 0; nt < n8; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        const uint16_t *row = X + (nt * 8 + tt_fa2_b_col(lane)) * TT_FA2_LD;
        TT_UNROLL
        for (int kc = 0; kc < TT_FA2_HD / 16; kc++) {
            uint32_t b[2] = {tt_fa2_ld2(row + kc * 16 + tt_fa2_b_row(lane, 0)),
                             tt_fa2_ld2(row + kc * 16 + tt_fa2_b_row(lane, 1))};
            tt_fa2_mma(w, tid, s[nt], a[kc], b);
        }
    }
}

/* The same with A's 16 rows in shared memory too (Xa, row stride
 * TT_FA2_LD), its fragments loaded a 16-column chunk at a time. */
TT_HD void tt_fa2_abt_s(tt_warp_emu *w, int tid, float s[TT_FA2_BC / 8][4], const uint16_t *Xa, const uint16_t *X,
                        int n8) {
    const int lane = tid & 31;
    TT_UNROLL
    for (int nt = 0; nt < n8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    TT_UNROLL
    for (int kc = 0; kc < TT_FA2_HD / 16; kc++) {
        uint32_t a[4];
        TT_UNROLL
        for (int r = 0; r < 4; r++) a[r] = tt_fa2_ld2(Xa + tt_fa2_a_row(lane, r) * TT_FA2_LD + kc * 16 + tt_fa2_a_col(lane, r));
        TT_UNROLL
        for (int nt = 0; nt < n8; nt++) {
            const uint16_t *row = X + (nt * 8 + tt_fa2_b_col(lane)) * TT_FA2_LD + kc * 16;
            uint32_t b[2] = {tt_fa2_ld2(row + tt_fa2_b_row(lane, 0)), tt_fa2_ld2(row + tt_fa2_b_row(lane, 1))};
            tt_fa2_mma(w, tid, s[nt], a, b);
        }
    }
}

/* The accumulators of a (16 x 16 kcn) product as A fragments (bf16) of the
 * next product, whose k runs over those columns: C tiles 2kc and 2kc + 1 are
 * A's columns 0-7 and 8-15 of chunk kc. */
TT_HD void tt_fa2_c_to_a(uint32_t p[TT_FA2_BC / 16][4], float s[TT_FA2_BC / 8][4], int kcn) {
    TT_UNROLL
    for (int kc = 0; kc < kcn; kc++) {
        p[kc][0] = tt_fa2_pack(tt_fa2_bf16(s[2 * kc][0]), tt_fa2_bf16(s[2 * kc][1]));
        p[kc][1] = tt_fa2_pack(tt_fa2_bf16(s[2 * kc][2]), tt_fa2_bf16(s[2 * kc][3]));
        p[kc][2] = tt_fa2_pack(tt_fa2_bf16(s[2 * kc + 1][0]), tt_fa2_bf16(s[2 * kc + 1][1]));
        p[kc][3] = tt_fa2_pack(tt_fa2_bf16(s[2 * kc + 1][2]), tt_fa2_bf16(s[2 * kc + 1][3]));
    }
}

/* acc (16 x TT_FA2_HD) += P Y for P's fragments (16 x 16 kcn) and 16 kcn
 * rows of the shared tile Y (x TT_FA2_HD): B (k = row j, n = column d) is
 * Y[j][d], two rows per register. */
TT_HD void tt_fa2_ab(tt_warp_emu *w, int tid, float acc[TT_FA2_HD / 8][4], uint32_t p[TT_FA2_BC / 16][4],
                     const uint16_t *Y, int kcn) {
    const int lane = tid & 31;
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++) {
        const uint16_t *col = Y + dn * 8 + tt_fa2_b_col(lane);
        TT_UNROLL
        for (int kc = 0; kc < kcn; kc++) {
            int j0 = kc * 16 + tt_fa2_b_row(lane, 0), j1 = kc * 16 + tt_fa2_b_row(lane, 1);
            uint32_t b[2] = {tt_fa2_pack(col[j0 * TT_FA2_LD], col[(j0 + 1) * TT_FA2_LD]),
                             tt_fa2_pack(col[j1 * TT_FA2_LD], col[(j1 + 1) * TT_FA2_LD])};
            tt_fa2_mma(w, tid, acc[dn], p[kc], b);
        }
    }
}

/* The max and the sum over the four lanes of a quad (one accumulator row). */
TT_HD float tt_fa2_quad_max(tt_warp_emu *w, int tid, float v) {
    v = fmaxf(v, tt_fa2_shfl_xor(w, tid, v, 1));
    return fmaxf(v, tt_fa2_shfl_xor(w, tid, v, 2));
}
TT_HD float tt_fa2_quad_sum(tt_warp_emu *w, int tid, float v) {
    v += tt_fa2_shfl_xor(w, tid, v, 1);
    return v + tt_fa2_shfl_xor(w, tid, v, 2);
}

#define TT_FA2_LOG2E 1.4426950408889634f
#define TT_FA2_LN2 0.6931471805599453f

/* The example starts (seg, packed examples; NULL: 0) of the lane's two C-fragment rows, row0 + gid and
 * row0 + gid + 8 (tt_fa2_c_row of elements 0-1 and 2-3), read once per block instead of per score. */
TT_HD void tt_fa2_row_starts(int lo[2], const int32_t *seg, size_t r0, int row0, int seq, int lane) {
    for (int r = 0; r < 2; r++) {
        int row = row0 + tt_fa2_c_row(lane, 2 * r);
        lo[r] = seg && row < seq ? seg[r0 + row] : 0;
    }
}

/* ---- forward ------------------------------------------------------------------------
 * Block (qt, h, b): query rows qt * TT_FA2_BR .. of head h of sequence b;
 * out (T, nh * hd) and lse (T, nh) as backend.h's attn_fwd. smem:
 * TT_FA2_SMEM_FWD bytes. */
TT_HD void tt_fa2_fwd_block(tt_warp_emu *w, int tid, int qt, int h, int b, int seq, int nh, int nkv, int hd,
                            const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *out, float *lse,
                            const int32_t *seg, uint16_t *smem) {
    const int warp = tid >> 5, lane = tid & 31, g = tt_gqa_kv_head(h, nh, nkv);
    const size_t qs = (size_t)nh * hd, ks = (size_t)nkv * hd, r0 = (size_t)b * seq;
    const uint16_t *Q = q + r0 * qs + (size_t)h * hd, *K = k + r0 * ks + (size_t)g * hd, *V = v + r0 * ks + (size_t)g * hd;
    uint16_t *Ks = smem, *Vs = smem + TT_FA2_BC * TT_FA2_LD;
    const int row0 = qt * TT_FA2_BR + warp * 16; /* the warp's first query */
    const float sl2 = TT_FA2_LOG2E / sqrtf((float)hd);
    uint32_t qa[TT_FA2_HD / 16][4];
    tt_fa2_load_a(qa, Q, qs, row0, seq, hd, lane);
    float o[TT_FA2_HD / 8][4], s[TT_FA2_BC / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.f;
    int lo[2]; /* packed: where the lane's two rows' examples start (keys before are masked) */
    tt_fa2_row_starts(lo, seg, r0, row0, seq, lane);
    const int nt = tt_causal_kv_tiles(qt, TT_FA2_BR, TT_FA2_BC, seq);
    for (int kt = 0; kt < nt; kt++) {
        const int j0 = kt * TT_FA2_BC;
        tt_fa2_sync(w); /* the previous tile is done with */
        tt_fa2_stage(Ks, K, ks, j0, seq, hd, tid);
        tt_fa2_stage(Vs, V, ks, j0, seq, hd, tid);
        tt_fa2_sync(w);
        if (j0 > row0 + 15) continue; /* above the diagonal for all of this warp's rows */
        tt_fa2_abt(w, tid, s, qa, Ks, TT_FA2_BC / 8);
        float mx[2] = {-INFINITY, -INFINITY};
        TT_UNROLL
        for (int n8 = 0; n8 < TT_FA2_BC / 8; n8++)
            TT_UNROLL
            for (int i = 0; i < 4; i++) {
                int row = row0 + tt_fa2_c_row(lane, i), col = j0 + n8 * 8 + tt_fa2_c_col(lane, i);
                float x = col <= row && col >= lo[i >> 1] && col < seq ? s[n8][i] * sl2 : -INFINITY;
                s[n8][i] = x;
                mx[i >> 1] = fmaxf(mx[i >> 1], x);
            }
        float alpha[2], ms[2];
        TT_UNROLL
        for (int r = 0; r < 2; r++) {
            /* -inf while every key so far was masked (a packed row whose example starts in a later tile): then
             * nothing is summed yet and the exponentials below use 0 instead, giving 0, never NaN */
            float mn = fmaxf(m[r], tt_fa2_quad_max(w, tid, mx[r]));
            ms[r] = mn == -INFINITY ? 0.f : mn;
            alpha[r] = exp2f(m[r] - ms[r]);
            m[r] = mn;
            l[r] *= alpha[r];
        }
        TT_UNROLL
        for (int n8 = 0; n8 < TT_FA2_BC / 8; n8++)
            TT_UNROLL
            for (int i = 0; i < 4; i++) {
                float p = exp2f(s[n8][i] - ms[i >> 1]);
                s[n8][i] = p;
                l[i >> 1] += p; /* the lane's part of the row sum: quad-summed at the end */
            }
        TT_UNROLL
        for (int dn = 0; dn < TT_FA2_HD / 8; dn++)
            TT_UNROLL
            for (int i = 0; i < 4; i++) o[dn][i] *= alpha[i >> 1];
        uint32_t pa[TT_FA2_BC / 16][4];
        tt_fa2_c_to_a(pa, s, TT_FA2_BC / 16);
        tt_fa2_ab(w, tid, o, pa, Vs, TT_FA2_BC / 16);
    }
    float lt[2] = {tt_fa2_quad_sum(w, tid, l[0]), tt_fa2_quad_sum(w, tid, l[1])};
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++)
        TT_UNROLL
        for (int i = 0; i < 4; i++) {
            int row = row0 + tt_fa2_c_row(lane, i), col = dn * 8 + tt_fa2_c_col(lane, i);
            if (row < seq && col < hd) out[(r0 + row) * qs + (size_t)h * hd + col] = tt_fa2_bf16(o[dn][i] / lt[i >> 1]);
        }
    if ((lane & 3) == 0) {
        for (int r = 0; r < 2; r++) {
            int row = row0 + (lane >> 2) + 8 * r;
            if (row < seq) lse[(r0 + row) * nh + h] = TT_FA2_LN2 * (m[r] + log2f(lt[r]));
        }
    }
}

/* ---- backward -----------------------------------------------------------------------
 * Two passes without atomics, as the fp32-tile kernels (cuda_flash.h): dq by
 * query rows, which also writes D = dO . O per row and head into Dbuf (T,
 * nh); then dk, dv by key rows over every query head of the KV group. P is
 * recomputed from the forward's lse; dS = P (dP - D). The key tiles of the
 * dq pass and the query tiles of the dk/dv pass are taken 32 at a time (two
 * halves of a staged 64), so that S and dP fit in registers beside the
 * accumulators. */

#define TT_FA2_HALF (TT_FA2_BC / 2)

/* dq pass, block (qt, h, b): dq (T, nh * hd) and Dbuf. smem: TT_FA2_SMEM_DQ. */
TT_HD void tt_fa2_dq_block(tt_warp_emu *w, int tid, int qt, int h, int b, int seq, int nh, int nkv, int hd,
                           const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint16_t *o, const float *lse,
                           const uint16_t *dout, uint16_t *dq, float *Dbuf, const int32_t *seg, uint16_t *smem) {
    const int warp = tid >> 5, lane = tid & 31, g = tt_gqa_kv_head(h, nh, nkv);
    const size_t qs = (size_t)nh * hd, ks = (size_t)nkv * hd, r0 = (size_t)b * seq;
    const uint16_t *Q = q + r0 * qs + (size_t)h * hd, *K = k + r0 * ks + (size_t)g * hd, *V = v + r0 * ks + (size_t)g * hd;
    const uint16_t *O = o + r0 * qs + (size_t)h * hd, *dO = dout + r0 * qs + (size_t)h * hd;
    uint16_t *Ks = smem, *Vs = smem + TT_FA2_BC * TT_FA2_LD;
    const int row0 = qt * TT_FA2_BR + warp * 16;
    const float sl2 = TT_FA2_LOG2E / sqrtf((float)hd);
    uint32_t qa[TT_FA2_HD / 16][4], da[TT_FA2_HD / 16][4];
    tt_fa2_load_a(qa, Q, qs, row0, seq, hd, lane);
    tt_fa2_load_a(da, dO, qs, row0, seq, hd, lane);
    /* D of rows gid and gid + 8: the lane's dO values times O's, summed over the quad */
    float D[2] = {0.f, 0.f}, L[2];
    TT_UNROLL
    for (int kc = 0; kc < TT_FA2_HD / 16; kc++)
        TT_UNROLL
        for (int r = 0; r < 4; r++) {
            int row = row0 + tt_fa2_a_row(lane, r), col = kc * 16 + tt_fa2_a_col(lane, r);
            if (row < seq && col < hd) D[r & 1] += tt_fa2_f32((uint16_t)(da[kc][r] & 0xffff)) * tt_fa2_f32(O[(size_t)row * qs + col]);
            if (row < seq && col + 1 < hd) D[r & 1] += tt_fa2_f32((uint16_t)(da[kc][r] >> 16)) * tt_fa2_f32(O[(size_t)row * qs + col + 1]);
        }
    TT_UNROLL
    for (int r = 0; r < 2; r++) {
        D[r] = tt_fa2_quad_sum(w, tid, D[r]);
        int row = row0 + (lane >> 2) + 8 * r;
        L[r] = row < seq ? lse[(r0 + row) * nh + h] * TT_FA2_LOG2E : 0.f;
        if (row < seq && (lane & 3) == 0) Dbuf[(r0 + row) * nh + h] = D[r];
    }
    float acc[TT_FA2_HD / 8][4];
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++) acc[dn][0] = acc[dn][1] = acc[dn][2] = acc[dn][3] = 0.f;
    int lo[2];
    tt_fa2_row_starts(lo, seg, r0, row0, seq, lane);
    const int nt = tt_causal_kv_tiles(qt, TT_FA2_BR, TT_FA2_BC, seq);
    for (int kt = 0; kt < nt; kt++) {
        const int j0 = kt * TT_FA2_BC;
        tt_fa2_sync(w);
        tt_fa2_stage(Ks, K, ks, j0, seq, hd, tid);
        tt_fa2_stage(Vs, V, ks, j0, seq, hd, tid);
        tt_fa2_sync(w);
        for (int hf = 0; hf < 2; hf++) {
            const int jh = j0 + hf * TT_FA2_HALF;
            if (jh > row0 + 15) break; /* above the diagonal for all of this warp's rows */
            float s[TT_FA2_BC / 8][4], dp[TT_FA2_BC / 8][4];
            tt_fa2_abt(w, tid, s, qa, Ks + hf * TT_FA2_HALF * TT_FA2_LD, TT_FA2_HALF / 8);
            tt_fa2_abt(w, tid, dp, da, Vs + hf * TT_FA2_HALF * TT_FA2_LD, TT_FA2_HALF / 8);
            TT_UNROLL
            for (int n8 = 0; n8 < TT_FA2_HALF / 8; n8++)
                TT_UNROLL
                for (int i = 0; i < 4; i++) {
                    int row = row0 + tt_fa2_c_row(lane, i), col = jh + n8 * 8 + tt_fa2_c_col(lane, i);
                    float p = col <= row && col >= lo[i >> 1] && col < seq && row < seq ? exp2f(s[n8][i] * sl2 - L[i >> 1])
                                                                                     : 0.f;
                    s[n8][i] = p * (dp[n8][i] - D[i >> 1]); /* dS */
                }
            uint32_t dsa[TT_FA2_BC / 16][4];
            tt_fa2_c_to_a(dsa, s, TT_FA2_HALF / 16);
            tt_fa2_ab(w, tid, acc, dsa, Ks + hf * TT_FA2_HALF * TT_FA2_LD, TT_FA2_HALF / 16);
        }
    }
    const float scale = 1.0f / sqrtf((float)hd);
    uint16_t *dQ = dq + r0 * qs + (size_t)h * hd;
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++)
        TT_UNROLL
        for (int i = 0; i < 4; i++) {
            int row = row0 + tt_fa2_c_row(lane, i), col = dn * 8 + tt_fa2_c_col(lane, i);
            if (row < seq && col < hd) dQ[(size_t)row * qs + col] = tt_fa2_bf16(acc[dn][i] * scale);
        }
}

/* dk/dv pass, block (kt, g, b): key rows kt * TT_FA2_BR .. of KV head g;
 * dk, dv (T, nkv * hd). Needs the dq pass's Dbuf. smem: TT_FA2_SMEM_DKV. */
TT_HD void tt_fa2_dkv_block(tt_warp_emu *w, int tid, int kt, int g, int b, int seq, int nh, int nkv, int hd,
                            const uint16_t *q, const uint16_t *k, const uint16_t *v, const float *lse,
                            const uint16_t *dout, const float *Dbuf, uint16_t *dk, uint16_t *dv, const int32_t *seg,
                            uint16_t *smem) {
    const int warp = tid >> 5, lane = tid & 31, grp = nh / nkv;
    const size_t qs = (size_t)nh * hd, ks = (size_t)nkv * hd, r0 = (size_t)b * seq;
    const uint16_t *K = k + r0 * ks + (size_t)g * hd, *V = v + r0 * ks + (size_t)g * hd;
    uint16_t *Kb = smem, *Vb = Kb + TT_FA2_BR * TT_FA2_LD, *Qs = Vb + TT_FA2_BR * TT_FA2_LD, *dOs = Qs + TT_FA2_BC * TT_FA2_LD;
    float *Ls = (float *)(void *)(dOs + TT_FA2_BC * TT_FA2_LD), *Ds = Ls + TT_FA2_BC;
    const int key0 = kt * TT_FA2_BR, wk0 = key0 + warp * 16; /* the block's and the warp's first key */
    const float sl2 = TT_FA2_LOG2E / sqrtf((float)hd);
    /* the block's keys (TT_FA2_BR = TT_FA2_BC rows) */
    tt_fa2_stage(Kb, K, ks, key0, seq, hd, tid);
    tt_fa2_stage(Vb, V, ks, key0, seq, hd, tid);
    const uint16_t *Kw = Kb + warp * 16 * TT_FA2_LD, *Vw = Vb + warp * 16 * TT_FA2_LD;
    float dK[TT_FA2_HD / 8][4], dV[TT_FA2_HD / 8][4];
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++)
        TT_UNROLL
        for (int i = 0; i < 4; i++) dK[dn][i] = dV[dn][i] = 0.f;
    for (int h = g * grp; h < (g + 1) * grp; h++) {
        const uint16_t *Q = q + r0 * qs + (size_t)h * hd, *dO = dout + r0 * qs + (size_t)h * hd;
        for (int qt = key0 / TT_FA2_BC; qt * TT_FA2_BC < seq; qt++) {
            const int i0 = qt * TT_FA2_BC;
            tt_fa2_sync(w); /* the previous tile is done with (and, the first time, Kb and Vb are staged) */
            tt_fa2_stage(Qs, Q, qs, i0, seq, hd, tid);
            tt_fa2_stage(dOs, dO, qs, i0, seq, hd, tid);
            for (int x = tid; x < TT_FA2_BC; x += TT_FA2_THREADS) {
                int row = i0 + x;
                Ls[x] = row < seq ? lse[(r0 + row) * nh + h] * TT_FA2_LOG2E : 0.f;
                Ds[x] = row < seq ? Dbuf[(r0 + row) * nh + h] : 0.f;
            }
            tt_fa2_sync(w);
            for (int hf = 0; hf < 2; hf++) {
                const int ih = i0 + hf * TT_FA2_HALF;
                if (ih + TT_FA2_HALF - 1 < wk0) continue; /* every query of the half precedes this warp's keys */
                const uint16_t *Qh = Qs + hf * TT_FA2_HALF * TT_FA2_LD, *dOh = dOs + hf * TT_FA2_HALF * TT_FA2_LD;
                float s[TT_FA2_BC / 8][4], dp[TT_FA2_BC / 8][4];
                tt_fa2_abt_s(w, tid, s, Kw, Qh, TT_FA2_HALF / 8);   /* S^T: keys x queries */
                tt_fa2_abt_s(w, tid, dp, Vw, dOh, TT_FA2_HALF / 8); /* dP^T = V dO^T */
                TT_UNROLL
                for (int n8 = 0; n8 < TT_FA2_HALF / 8; n8++)
                    TT_UNROLL
                    for (int i = 0; i < 4; i++) {
                        int key = wk0 + tt_fa2_c_row(lane, i), x = hf * TT_FA2_HALF + n8 * 8 + tt_fa2_c_col(lane, i);
                        int qrow = i0 + x, lo = seg && qrow < seq ? seg[r0 + qrow] : 0;
                        float p = key <= qrow && key >= lo && qrow < seq && key < seq ? exp2f(s[n8][i] * sl2 - Ls[x]) : 0.f;
                        s[n8][i] = p;                       /* P^T */
                        dp[n8][i] = p * (dp[n8][i] - Ds[x]); /* dS^T */
                    }
                uint32_t fa[TT_FA2_BC / 16][4];
                tt_fa2_c_to_a(fa, s, TT_FA2_HALF / 16);
                tt_fa2_ab(w, tid, dV, fa, dOh, TT_FA2_HALF / 16); /* dV += P^T dO */
                tt_fa2_c_to_a(fa, dp, TT_FA2_HALF / 16);
                tt_fa2_ab(w, tid, dK, fa, Qh, TT_FA2_HALF / 16); /* dK += dS^T Q */
            }
        }
    }
    const float scale = 1.0f / sqrtf((float)hd);
    uint16_t *dKo = dk + r0 * ks + (size_t)g * hd, *dVo = dv + r0 * ks + (size_t)g * hd;
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++)
        TT_UNROLL
        for (int i = 0; i < 4; i++) {
            int key = wk0 + tt_fa2_c_row(lane, i), col = dn * 8 + tt_fa2_c_col(lane, i);
            if (key < seq && col < hd) {
                dKo[(size_t)key * ks + col] = tt_fa2_bf16(dK[dn][i] * scale);
                dVo[(size_t)key * ks + col] = tt_fa2_bf16(dV[dn][i]);
            }
        }
}

#endif

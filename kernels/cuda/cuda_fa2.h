/* kernels/cuda/cuda_fa2.h — flash attention on tensor cores (bf16
 * activations): FlashAttention-2's loops with mma.sync.m16n8k16 (bf16 in,
 * fp32 accumulate), written once as per-thread block bodies that compile
 * for the device (the kernels in cuda_backend.cu call them) and for the CPU,
 * where tests/test_cuda_fa2.c runs every thread of a block as a POSIX thread
 * and emulates the warp-wide operations (the mma from the PTX ISA's fragment
 * layout, ldmatrix, the shuffles, the block barrier) and cp.async (a copy
 * lands only at the wait that covers it; its destination reads NaN until
 * then) — so the kernels' index arithmetic, masking, online softmax and
 * staging order are tested without a GPU (tests/cuda_emu runs them the same
 * way inside the backend).
 *
 * Shapes: causal, grouped-query (query head h reads KV head
 * tt_gqa_kv_head), head_dim up to TT_FA2_HD (a smaller one is zero-padded:
 * the fragments always span TT_FA2_HD columns). A block is TT_FA2_WARPS
 * warps; each warp owns 16 rows (queries in the forward and the dq pass,
 * keys in the dk/dv pass) and walks the other side in tiles of TT_FA2_BC
 * staged in shared memory as bf16 (row stride TT_FA2_LD: conflict-free
 * ldmatrix rows), two deep: cp.async copies 16 bytes a thread while the
 * previous tile is multiplied (element-by-element staging where rows are not
 * 16-byte aligned); B fragments, and A fragments held in shared memory, come
 * by ldmatrix (.trans for the products whose B runs along rows). The
 * forward and the dq pass mask scores only in tiles that reach the diagonal,
 * the sequence's end or an example's start. Scores are scaled into base 2
 * (exp2); the saved lse is natural-log, as the CPU reference's.
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
#define TT_FA2_LD (TT_FA2_HD + 8)     /* shared row stride (bf16): 272 bytes, an ldmatrix's 8 rows hit all 32 banks */
/* Shared memory of a block (bytes): the forward and the dq pass stage K, V
 * tiles, two of each (the next tile's copies in flight while the current one
 * is used); the dk/dv pass holds its own K, V rows and stages Q, dO tiles with
 * their lse and D, two of each (above 48 KiB: the kernels opt in at
 * start-up). */
#define TT_FA2_KV_TILE ((size_t)2 * TT_FA2_BC * TT_FA2_LD)                      /* elements: a K and a V tile */
#define TT_FA2_QD_TILE ((size_t)2 * TT_FA2_BC * TT_FA2_LD + 2 * TT_FA2_BC * 2) /* elements: Q, dO, lse and D */
#define TT_FA2_SMEM_FWD (2 * TT_FA2_KV_TILE * 2)
#define TT_FA2_FWD2_BR (2 * TT_FA2_BR) /* tt_fa2_fwd2_block's rows: 32 a warp */
/* tt_fa2_stage's copies: every thread the same number of 16-byte pieces, in one column of the tile */
typedef char tt_fa2_stage_fits[TT_FA2_THREADS % (TT_FA2_HD / 8) == 0 &&
                                       TT_FA2_BC * (TT_FA2_HD / 8) % TT_FA2_THREADS == 0 ? 1 : -1];
#define TT_FA2_SMEM_FWD2 (TT_FA2_SMEM_FWD + (size_t)TT_FA2_FWD2_BR * TT_FA2_LD * 2)
#define TT_FA2_SMEM_DQ TT_FA2_SMEM_FWD
#define TT_FA2_SMEM_DKV ((size_t)2 * TT_FA2_BR * TT_FA2_LD * 2 + 2 * TT_FA2_QD_TILE * 2)

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
void tt_emu_ldsm(tt_warp_emu *w, int tid, uint32_t r[4], const uint16_t *row, int trans);
void tt_emu_cp16(tt_warp_emu *w, int tid, void *dst, const void *src, int valid);
void tt_emu_cp_commit(tt_warp_emu *w, int tid);
void tt_emu_cp_wait(tt_warp_emu *w, int tid, int pending);
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

/* Four 8 x 8 matrices of 16-bit elements from shared memory (ldmatrix .x4):
 * lane l names row l % 8 of matrix l / 8 (16 bytes, 16-byte aligned);
 * register j of lane l receives matrix j's row l / 4, elements 2 (l % 4) and
 * 2 (l % 4) + 1 — with trans, its column l / 4, rows 2 (l % 4) and + 1 (the
 * lower element in the low half). trans is a constant at every call. */
TT_HD void tt_fa2_ldsm(tt_warp_emu *w, int tid, uint32_t r[4], const uint16_t *row, int trans) {
#if defined(__CUDA_ARCH__)
    (void)w; (void)tid;
    unsigned a = (unsigned)__cvta_generic_to_shared(row);
    if (trans)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
#elif defined(__CUDACC__)
    (void)w; (void)tid; (void)row; (void)trans;
    r[0] = r[1] = r[2] = r[3] = 0;
#else
    tt_emu_ldsm(w, tid, r, row, trans);

#endif
}

/* 16 bytes from global to shared memory, asynchronously (cp.async; zeros
 * where !valid, src then unread): complete for this thread once a
 * tt_fa2_cp_wait covers the group tt_fa2_cp_commit closed over it, and for
 * the block after the barrier that follows that wait. */
TT_HD void tt_fa2_cp16(tt_warp_emu *w, int tid, uint16_t *dst, const uint16_t *src, int valid) {
#if defined(__CUDA_ARCH__)
    (void)w; (void)tid;
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
#elif defined(__CUDACC__)
    (void)w; (void)tid; (void)dst; (void)src; (void)valid;
#else
    tt_emu_cp16(w, tid, dst, src, valid);

#endif
}
/* Closes the group of this thread's copies issued since the last commit. */
TT_HD void tt_fa2_cp_commit(tt_warp_emu *w, int tid) {
#if defined(__CUDA_ARCH__)
    (void)w; (void)tid;
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#elif defined(__CUDACC__)
    (void)w; (void)tid;
#else
    tt_emu_cp_commit(w, tid);

#endif
}
/* Waits until at most `pending` (0 or 1, a constant at every call) of this
 * thread's newest committed groups are still in flight. */
TT_HD void tt_fa2_cp_wait(tt_warp_emu *w, int tid, int pending) {
#if defined(__CUDA_ARCH__)
    (void)w; (void)tid;
    if (pending) asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    else asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#elif defined(__CUDACC__)
    (void)w; (void)tid; (void)pending;
#else
    tt_emu_cp_wait(w, tid, pending);

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
/* An ldmatrix .x4 from the 32 lanes' row addresses (rows[l], lane l's), as
 * tt_fa2_ldsm states it: lane's four registers. */
static inline void tt_fa2_ldsm_gather(const uint16_t *const *rows, int lane, int trans, uint32_t r[4]) {
    for (int j = 0; j < 4; j++) {
        if (trans)
            r[j] = tt_fa2_pack(rows[8 * j + 2 * (lane & 3)][lane >> 2], rows[8 * j + 2 * (lane & 3) + 1][lane >> 2]);
        else r[j] = tt_fa2_pack(rows[8 * j + (lane >> 2)][2 * (lane & 3)], rows[8 * j + (lane >> 2)][2 * (lane & 3) + 1]);
    }
}

/* A thread's cp.async copies in the emulations: each fills its destination
 * with NaN (0xff bytes) when issued and copies when a wait covers its group,
 * so reading a tile before the wait, or refilling a buffer another thread
 * still reads, shows as NaN in the results. */
enum { TT_CP_EMU_MAX = 64 };
typedef struct tt_cp_emu {
    struct { void *dst; const void *src; int valid, group; } op[TT_CP_EMU_MAX];
    int n, committed;
} tt_cp_emu;
/* 0, or -1 when more than TT_CP_EMU_MAX copies are in flight. */
static inline int tt_cp_emu_issue(tt_cp_emu *c, void *dst, const void *src, int valid) {
    if (c->n == TT_CP_EMU_MAX) return -1;
    memset(dst, 0xff, 16);
    c->op[c->n].dst = dst;
    c->op[c->n].src = src;
    c->op[c->n].valid = valid;
    c->op[c->n].group = c->committed;
    c->n++;
    return 0;
}
static inline void tt_cp_emu_commit(tt_cp_emu *c) { c->committed++; }
/* Whether copy i lands at a wait that leaves `pending` groups in flight. */
static inline int tt_cp_emu_lands(const tt_cp_emu *c, int i, int pending) {
    return c->op[i].group < c->committed - pending;
}
static inline void tt_cp_emu_wait(tt_cp_emu *c, int pending) {
    int k = 0;
    for (int i = 0; i < c->n; i++) {
        if (tt_cp_emu_lands(c, i, pending)) {
            if (c->op[i].valid) memcpy(c->op[i].dst, c->op[i].src, 16);
            else memset(c->op[i].dst, 0, 16);
        } else c->op[k++] = c->op[i];
    }
    c->n = k;
}
#endif

/* Whether tiles of x (row stride xs elements, hd columns a row) can be staged
 * 16 bytes at a time: 16-byte aligned rows and head offsets. */
TT_HD int tt_fa2_vec_ok(const uint16_t *x, size_t xs, int hd) {
    return hd % 8 == 0 && xs % 8 == 0 && ((uintptr_t)x & 15) == 0;
}

/* Rows [r0, r0 + TT_FA2_BC) of a head's columns of x (row stride xs, n rows
 * in all, hd columns) into the shared tile t (TT_FA2_LD), zero beyond n and
 * hd; by all threads of the block. vec (tt_fa2_vec_ok): 16-byte
 * asynchronous copies, in this thread's current cp.async group; else element
 * by element, done when it returns. */
TT_HD void tt_fa2_stage(tt_warp_emu *w, uint16_t *t, const uint16_t *x, size_t xs, int r0, int n, int hd, int tid,
                        int vec) {
    if (vec) {
        /* 16 threads a row: each row's 256 bytes read by consecutive threads; a thread's column is the same in
         * every row it copies (TT_FA2_THREADS is a multiple of 16), so only the row moves in the loop */
        const int d = tid % (TT_FA2_HD / 8) * 8, i0 = tid / (TT_FA2_HD / 8);
        TT_UNROLL
        for (int it = 0; it < TT_FA2_BC * (TT_FA2_HD / 8) / TT_FA2_THREADS; it++) {
            int i = i0 + it * (TT_FA2_THREADS / (TT_FA2_HD / 8)), ok = r0 + i < n && d < hd;
            tt_fa2_cp16(w, tid, t + i * TT_FA2_LD + d, ok ? x + (size_t)(r0 + i) * xs + d : x, ok);
        }
        return;
    }
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

/* ldmatrix row addresses in a shared tile (row stride TT_FA2_LD) for a lane:
 * - B fragments of two k-chunks (kc, kc + 1) of column block n0 (8 columns)
 *   of B = X^T, X's rows n0..n0+7: registers {0, 1} are chunk kc's b, {2, 3}
 *   chunk kc + 1's;
 * - A fragments of a 16 x 16 block (rows 0-15, columns kc * 16..): the four
 *   registers are a[0..3];
 * - with trans, B fragments of k-chunk kc (Y's rows kc * 16..) for two column
 *   blocks d0 and d0 + 8 of B = Y: registers {0, 1} block d0's b, {2, 3}
 *   block d0 + 8's. */
TT_HD const uint16_t *tt_fa2_ldsm_bt(const uint16_t *X, int n0, int kc, int lane) {
    return X + (n0 + (lane & 7)) * TT_FA2_LD + kc * 16 + (lane >> 3) * 8;
}
TT_HD const uint16_t *tt_fa2_ldsm_a(const uint16_t *X, int kc, int lane) {
    return X + ((lane & 7) + ((lane >> 3) & 1) * 8) * TT_FA2_LD + kc * 16 + (lane >> 4) * 8;
}
TT_HD const uint16_t *tt_fa2_ldsm_b(const uint16_t *Y, int kc, int d0, int lane) {
    return Y + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * TT_FA2_LD + d0 + (lane >> 4) * 8;
}

/* S (16 x 8 n8) = A X^T for A's fragments (16 x TT_FA2_HD, registers) and
 * n8 * 8 rows of the shared tile X: B (k = column d, n = row j) is X[j][d].
 * n8 <= TT_FA2_BC / 8, a constant at each call (the loops unroll, the
 * arrays stay in registers). */
TT_HD void tt_fa2_abt(tt_warp_emu *w, int tid, float s[TT_FA2_BC / 8][4], uint32_t a[TT_FA2_HD / 16][4],
                      const uint16_t *X, int n8) {
    const int lane = tid & 31;
    TT_UNROLL
    for (int nt = 0; nt < n8; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        TT_UNROLL
        for (int kc = 0; kc < TT_FA2_HD / 16; kc += 2) {
            uint32_t b[4];
            tt_fa2_ldsm(w, tid, b, tt_fa2_ldsm_bt(X, nt * 8, kc, lane), 0);
            tt_fa2_mma(w, tid, s[nt], a[kc], b);
            tt_fa2_mma(w, tid, s[nt], a[kc + 1], b + 2);
        }
    }
}

/* The same with A's 16 rows in shared memory too (Xa, row stride
 * TT_FA2_LD), its fragments loaded two 16-column chunks at a time. */
TT_HD void tt_fa2_abt_s(tt_warp_emu *w, int tid, float s[TT_FA2_BC / 8][4], const uint16_t *Xa, const uint16_t *X,
                        int n8) {
    const int lane = tid & 31;
    TT_UNROLL
    for (int nt = 0; nt < n8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    TT_UNROLL
    for (int kc = 0; kc < TT_FA2_HD / 16; kc += 2) {
        uint32_t a0[4], a1[4];
        tt_fa2_ldsm(w, tid, a0, tt_fa2_ldsm_a(Xa, kc, lane), 0);
        tt_fa2_ldsm(w, tid, a1, tt_fa2_ldsm_a(Xa, kc + 1, lane), 0);
        TT_UNROLL
        for (int nt = 0; nt < n8; nt++) {
            uint32_t b[4];
            tt_fa2_ldsm(w, tid, b, tt_fa2_ldsm_bt(X, nt * 8, kc, lane), 0);
            tt_fa2_mma(w, tid, s[nt], a0, b);
            tt_fa2_mma(w, tid, s[nt], a1, b + 2);
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
 * Y[j][d], loaded transposed. */
TT_HD void tt_fa2_ab(tt_warp_emu *w, int tid, float acc[TT_FA2_HD / 8][4], uint32_t p[TT_FA2_BC / 16][4],
                     const uint16_t *Y, int kcn) {
    const int lane = tid & 31;
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn += 2)
        TT_UNROLL
        for (int kc = 0; kc < kcn; kc++) {
            uint32_t b[4];
            tt_fa2_ldsm(w, tid, b, tt_fa2_ldsm_b(Y, kc, dn * 8, lane), 1);
            tt_fa2_mma(w, tid, acc[dn], p[kc], b);
            tt_fa2_mma(w, tid, acc[dn + 1], p[kc], b + 2);
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

/* ---- staging, two buffers deep ------------------------------------------------------ */

/* K and V rows [j0, j0 + TT_FA2_BC) into buf (TT_FA2_KV_TILE elements: K,
 * then V), as one cp.async group. */
TT_HD void tt_fa2_stage_kv(tt_warp_emu *w, uint16_t *buf, const uint16_t *K, const uint16_t *V, size_t ks, int j0,
                           int seq, int hd, int tid, int vec) {
    tt_fa2_stage(w, buf, K, ks, j0, seq, hd, tid, vec);
    tt_fa2_stage(w, buf + TT_FA2_BC * TT_FA2_LD, V, ks, j0, seq, hd, tid, vec);
    tt_fa2_cp_commit(w, tid);
}

/* The top of iteration kt (of nt) of a loop over key tiles in two buffers
 * from smem (tile 0 staged before the loop): once every warp is done with
 * tile kt - 1, tile kt + 1's copies start into its buffer; returns when tile
 * kt is in shared memory for the whole block. */
TT_HD void tt_fa2_kv_turn(tt_warp_emu *w, uint16_t *smem, const uint16_t *K, const uint16_t *V, size_t ks, int kt,
                          int nt, int seq, int hd, int tid, int vec) {
    tt_fa2_sync(w);
    if (kt + 1 < nt) {
        tt_fa2_stage_kv(w, smem + ((kt + 1) & 1) * TT_FA2_KV_TILE, K, V, ks, (kt + 1) * TT_FA2_BC, seq, hd, tid, vec);
        tt_fa2_cp_wait(w, tid, 1);
    } else tt_fa2_cp_wait(w, tid, 0);
    tt_fa2_sync(w);
}

/* ---- forward ------------------------------------------------------------------------
 * Two block shapes, the same arithmetic for every row (the same products in the same order, so the same
 * bits): tt_fa2_fwd_block, a warp per 16 query rows with Q's fragments in registers (TT_FA2_BR rows a
 * block); tt_fa2_fwd2_block, a warp per 32 rows (two 16-row m-tiles, TT_FA2_FWD2_BR rows a block) with Q
 * staged in shared memory, so that each K and V fragment a warp loads serves two m-tiles: per key tile a
 * warp reads 40 KiB of shared memory for 256 mma instead of 32 KiB for 128 (160 bytes an mma instead of
 * 256, against the SM's 128 bytes a clock and at most one m16n8k16 a clock), the layout FlashAttention-2 takes
 * for head_dim 128. TT_CUDA_FA2_FWD (cuda_backend.cu) picks one. */

/* One key tile's scores s of a warp's 16 rows from row0 (keys from j0) into probabilities: masked where the
 * tile reaches the diagonal, the sequence's end or an example's start (lo: the lane's two rows' example
 * starts), scaled into base 2 (sl2); the lane's running max m and partial sum l of its two rows updated, the
 * output rows o rescaled; P as A fragments in pa. Each product and sum rounded on its own (tt_mul_rn,
 * tt_add_rn): both forward shapes run this code, and nvcc could fuse it into FMAs differently in each. */
TT_HD void tt_fa2_softmax_tile(tt_warp_emu *w, int tid, float s[TT_FA2_BC / 8][4], float m[2], float l[2],
                               float o[TT_FA2_HD / 8][4], uint32_t pa[TT_FA2_BC / 16][4], int row0, int j0,
                               const int lo[2], int seq, float sl2) {
    const int lane = tid & 31;
    const int edge = j0 + TT_FA2_BC - 1 > row0 || j0 + TT_FA2_BC > seq || lo[0] > j0 || lo[1] > j0;
    float mx[2] = {-INFINITY, -INFINITY};
    if (edge) {
        TT_UNROLL
        for (int n8 = 0; n8 < TT_FA2_BC / 8; n8++)
            TT_UNROLL
            for (int i = 0; i < 4; i++) {
                int row = row0 + tt_fa2_c_row(lane, i), col = j0 + n8 * 8 + tt_fa2_c_col(lane, i);
                float x = col <= row && col >= lo[i >> 1] && col < seq ? tt_mul_rn(s[n8][i], sl2) : -INFINITY;
                s[n8][i] = x;
                mx[i >> 1] = fmaxf(mx[i >> 1], x);
            }
    } else {
        TT_UNROLL
        for (int n8 = 0; n8 < TT_FA2_BC / 8; n8++)
            TT_UNROLL
            for (int i = 0; i < 4; i++) {
                s[n8][i] = tt_mul_rn(s[n8][i], sl2);
                mx[i >> 1] = fmaxf(mx[i >> 1], s[n8][i]);
            }
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
        l[r] = tt_mul_rn(l[r], alpha[r]);
    }
    TT_UNROLL
    for (int n8 = 0; n8 < TT_FA2_BC / 8; n8++)
        TT_UNROLL
        for (int i = 0; i < 4; i++) {
            float p = exp2f(s[n8][i] - ms[i >> 1]);
            s[n8][i] = p;
            l[i >> 1] = tt_add_rn(l[i >> 1], p); /* the lane's part of the row sum: quad-summed at the end */
        }
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++)
        TT_UNROLL
        for (int i = 0; i < 4; i++) o[dn][i] = tt_mul_rn(o[dn][i], alpha[i >> 1]);
    tt_fa2_c_to_a(pa, s, TT_FA2_BC / 16);
}

/* A warp's 16 rows from row0 done: out = o / l (bf16) and the natural-log lse. Q's row stride qs, the
 * sequence's first row r0. */
TT_HD void tt_fa2_fwd_store(tt_warp_emu *w, int tid, float o[TT_FA2_HD / 8][4], const float m[2], const float l[2],
                            int row0, int seq, size_t r0, size_t qs, int h, int nh, int hd, uint16_t *out, float *lse) {
    const int lane = tid & 31;
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

/* Block (qt, h, b): query rows qt * TT_FA2_BR .. of head h of sequence b;
 * out (T, nh * hd) and lse (T, nh) as backend.h's attn_fwd. smem:
 * TT_FA2_SMEM_FWD bytes. */
TT_HD void tt_fa2_fwd_block(tt_warp_emu *w, int tid, int qt, int h, int b, int seq, int nh, int nkv, int hd,
                            const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *out, float *lse,
                            const int32_t *seg, uint16_t *smem) {
    const int warp = tid >> 5, lane = tid & 31, g = tt_gqa_kv_head(h, nh, nkv);
    const size_t qs = (size_t)nh * hd, ks = (size_t)nkv * hd, r0 = (size_t)b * seq;
    const uint16_t *Q = q + r0 * qs + (size_t)h * hd, *K = k + r0 * ks + (size_t)g * hd, *V = v + r0 * ks + (size_t)g * hd;
    const int vec = tt_fa2_vec_ok(k, ks, hd) && tt_fa2_vec_ok(v, ks, hd);
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
    if (nt > 0) tt_fa2_stage_kv(w, smem, K, V, ks, 0, seq, hd, tid, vec);
    for (int kt = 0; kt < nt; kt++) {
        tt_fa2_kv_turn(w, smem, K, V, ks, kt, nt, seq, hd, tid, vec);
        const int j0 = kt * TT_FA2_BC;
        const uint16_t *Ks = smem + (kt & 1) * TT_FA2_KV_TILE, *Vs = Ks + TT_FA2_BC * TT_FA2_LD;
        if (j0 > row0 + 15) continue; /* above the diagonal for all of this warp's rows */
        tt_fa2_abt(w, tid, s, qa, Ks, TT_FA2_BC / 8);
        uint32_t pa[TT_FA2_BC / 16][4];
        tt_fa2_softmax_tile(w, tid, s, m, l, o, pa, row0, j0, lo, seq, sl2);
        tt_fa2_ab(w, tid, o, pa, Vs, TT_FA2_BC / 16);
    }
    tt_fa2_fwd_store(w, tid, o, m, l, row0, seq, r0, qs, h, nh, hd, out, lse);
}

/* S for two m-tiles: s[t] (16 x TT_FA2_BC) = A_t X^T, A_t rows 16 t.. of the shared rows Xa (row stride
 * TT_FA2_LD) across TT_FA2_HD columns, X a shared key tile; each of X's fragments feeds both. A k-chunk at
 * a time (the A fragments of one chunk live, not two: the registers the O accumulators need), X's
 * fragments for two n-tiles of the chunk by one ldmatrix (tt_fa2_ldsm_a's pattern over X's rows: registers
 * {0, 2} n-tile nt's b, {1, 3} n-tile nt + 1's). The products accumulate in tt_fa2_abt's order (the
 * k-chunks ascending). */
TT_HD void tt_fa2_abt2_s(tt_warp_emu *w, int tid, float s[2][TT_FA2_BC / 8][4], const uint16_t *Xa, const uint16_t *X) {
    const int lane = tid & 31;
    TT_UNROLL
    for (int t = 0; t < 2; t++)
        TT_UNROLL
        for (int nt = 0; nt < TT_FA2_BC / 8; nt++) s[t][nt][0] = s[t][nt][1] = s[t][nt][2] = s[t][nt][3] = 0.f;
    TT_UNROLL
    for (int kc = 0; kc < TT_FA2_HD / 16; kc++) {
        uint32_t a[2][4];
        TT_UNROLL
        for (int t = 0; t < 2; t++) tt_fa2_ldsm(w, tid, a[t], tt_fa2_ldsm_a(Xa + 16 * t * TT_FA2_LD, kc, lane), 0);
        TT_UNROLL
        for (int nt = 0; nt < TT_FA2_BC / 8; nt += 2) {
            uint32_t bf[4];
            tt_fa2_ldsm(w, tid, bf, tt_fa2_ldsm_a(X + nt * 8 * TT_FA2_LD, kc, lane), 0);
            const uint32_t b0[2] = {bf[0], bf[2]}, b1[2] = {bf[1], bf[3]};
            TT_UNROLL
            for (int t = 0; t < 2; t++) {
                tt_fa2_mma(w, tid, s[t][nt], a[t], b0);
                tt_fa2_mma(w, tid, s[t][nt + 1], a[t], b1);
            }
        }
    }
}

/* acc[t] (16 x TT_FA2_HD) += P_t Y for two m-tiles' P fragments (16 x TT_FA2_BC) and the shared tile Y
 * (TT_FA2_BC rows), each of Y's fragments feeding both; tt_fa2_ab's order. */
TT_HD void tt_fa2_ab2(tt_warp_emu *w, int tid, float acc[2][TT_FA2_HD / 8][4], uint32_t p[2][TT_FA2_BC / 16][4],
                      const uint16_t *Y) {
    const int lane = tid & 31;
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn += 2)
        TT_UNROLL
        for (int kc = 0; kc < TT_FA2_BC / 16; kc++) {
            uint32_t bf[4];
            tt_fa2_ldsm(w, tid, bf, tt_fa2_ldsm_b(Y, kc, dn * 8, lane), 1);
            TT_UNROLL
            for (int t = 0; t < 2; t++) {
                tt_fa2_mma(w, tid, acc[t][dn], p[t][kc], bf);
                tt_fa2_mma(w, tid, acc[t][dn + 1], p[t][kc], bf + 2);
            }
        }
}

/* Block (qt, h, b) of TT_FA2_FWD2_BR query rows, a warp's 32 rows as two m-tiles: what tt_fa2_fwd_block
 * computes for them, bit for bit. smem: TT_FA2_SMEM_FWD2 bytes (the key and value tiles as the forward's,
 * then the block's Q rows, staged with tile 0's copies). */
TT_HD void tt_fa2_fwd2_block(tt_warp_emu *w, int tid, int qt, int h, int b, int seq, int nh, int nkv, int hd,
                             const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *out, float *lse,
                             const int32_t *seg, uint16_t *smem) {
    const int warp = tid >> 5, lane = tid & 31, g = tt_gqa_kv_head(h, nh, nkv);
    const size_t qs = (size_t)nh * hd, ks = (size_t)nkv * hd, r0 = (size_t)b * seq;
    const uint16_t *Q = q + r0 * qs + (size_t)h * hd, *K = k + r0 * ks + (size_t)g * hd, *V = v + r0 * ks + (size_t)g * hd;
    const int vec = tt_fa2_vec_ok(k, ks, hd) && tt_fa2_vec_ok(v, ks, hd), qvec = tt_fa2_vec_ok(q, qs, hd);
    const int q0 = qt * TT_FA2_FWD2_BR, row0 = q0 + warp * 32; /* the block's and the warp's first query */
    const float sl2 = TT_FA2_LOG2E / sqrtf((float)hd);
    uint16_t *Qs = smem + 2 * TT_FA2_KV_TILE;
    float o[2][TT_FA2_HD / 8][4], s[2][TT_FA2_BC / 8][4], m[2][2], l[2][2];
    int lo[2][2];
    TT_UNROLL
    for (int t = 0; t < 2; t++) {
        TT_UNROLL
        for (int dn = 0; dn < TT_FA2_HD / 8; dn++) o[t][dn][0] = o[t][dn][1] = o[t][dn][2] = o[t][dn][3] = 0.f;
        m[t][0] = m[t][1] = -INFINITY;
        l[t][0] = l[t][1] = 0.f;
        tt_fa2_row_starts(lo[t], seg, r0, row0 + 16 * t, seq, lane);
    }
    const int nt = tt_causal_kv_tiles(qt, TT_FA2_FWD2_BR, TT_FA2_BC, seq);
    if (nt > 0) { /* Q's rows in two stagings of TT_FA2_BC, in tile 0's group */
        tt_fa2_stage(w, Qs, Q, qs, q0, seq, hd, tid, qvec);
        tt_fa2_stage(w, Qs + TT_FA2_BC * TT_FA2_LD, Q, qs, q0 + TT_FA2_BC, seq, hd, tid, qvec);
        tt_fa2_stage_kv(w, smem, K, V, ks, 0, seq, hd, tid, vec);
    }
    for (int kt = 0; kt < nt; kt++) {
        tt_fa2_kv_turn(w, smem, K, V, ks, kt, nt, seq, hd, tid, vec);
        const int j0 = kt * TT_FA2_BC;
        const uint16_t *Ks = smem + (kt & 1) * TT_FA2_KV_TILE, *Vs = Ks + TT_FA2_BC * TT_FA2_LD;
        if (j0 > row0 + 31) continue; /* above the diagonal for all of this warp's rows */
        tt_fa2_abt2_s(w, tid, s, Qs + warp * 32 * TT_FA2_LD, Ks);
        uint32_t pa[2][TT_FA2_BC / 16][4];
        TT_UNROLL
        for (int t = 0; t < 2; t++) tt_fa2_softmax_tile(w, tid, s[t], m[t], l[t], o[t], pa[t], row0 + 16 * t, j0, lo[t],
                                                        seq, sl2);
        tt_fa2_ab2(w, tid, o, pa, Vs);
    }
    TT_UNROLL
    for (int t = 0; t < 2; t++) tt_fa2_fwd_store(w, tid, o[t], m[t], l[t], row0 + 16 * t, seq, r0, qs, h, nh, hd, out, lse);
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

/* The dk/dv pass's blocks split each KV group's query heads into parts (a
 * divisor of the group size): with few sequences and KV heads (one sequence
 * of 4096 with 2 KV heads is 128 blocks, the first of them 64 times the last's
 * work) the GPU would sit half idle. The fewest parts that give
 * TT_FA2_DKV_BLOCKS blocks, from the shape alone (the planner's figures need
 * no GPU); with more than one, each part's dk and dv go to fp32 scratch and
 * a second kernel sums the parts in order (no atomics: the same bits every
 * run). */
#define TT_FA2_DKV_BLOCKS 512
TT_HD int tt_fa2_dkv_parts(int B, int seq, int nh, int nkv) {
    const int grp = nh / nkv, blocks = (seq + TT_FA2_BR - 1) / TT_FA2_BR * nkv * B;
    int d = 1;
    while (d < grp && (long long)blocks * d < TT_FA2_DKV_BLOCKS) {
        d++;
        while (grp % d) d++;
    }
    return d;
}
/* The backward's scratch, in floats from its start: D (T x nh), then with
 * parts > 1 the parts' dk sums at pk and dv sums at pv (each parts x pn,
 * pn = T x nkv x hd); floats in all. The one layout the launch and the
 * sizing (backend, planner) both read. */
typedef struct tt_fa2_scratch {
    int parts;
    size_t pn, pk, pv, floats;
} tt_fa2_scratch;
TT_HD tt_fa2_scratch tt_fa2_scratch_layout(int B, int seq, int nh, int nkv, int hd) {
    const size_t T = (size_t)B * seq;
    tt_fa2_scratch s;
    s.parts = tt_fa2_dkv_parts(B, seq, nh, nkv);
    s.pn = T * nkv * hd;
    s.pk = T * nh;
    s.pv = s.pk + (size_t)s.parts * s.pn;
    s.floats = s.parts > 1 ? s.pv + (size_t)s.parts * s.pn : s.pk;
    return s;
}
TT_HD size_t tt_fa2_scratch_bytes(int B, int seq, int nh, int nkv, int hd) {
    return tt_fa2_scratch_layout(B, seq, nh, nkv, hd).floats * sizeof(float);
}

/* dq pass, block (qt, h, b): dq (T, nh * hd) and Dbuf. smem: TT_FA2_SMEM_DQ. */
TT_HD void tt_fa2_dq_block(tt_warp_emu *w, int tid, int qt, int h, int b, int seq, int nh, int nkv, int hd,
                           const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint16_t *o, const float *lse,
                           const uint16_t *dout, uint16_t *dq, float *Dbuf, const int32_t *seg, uint16_t *smem) {
    const int warp = tid >> 5, lane = tid & 31, g = tt_gqa_kv_head(h, nh, nkv);
    const size_t qs = (size_t)nh * hd, ks = (size_t)nkv * hd, r0 = (size_t)b * seq;
    const uint16_t *Q = q + r0 * qs + (size_t)h * hd, *K = k + r0 * ks + (size_t)g * hd, *V = v + r0 * ks + (size_t)g * hd;
    const uint16_t *O = o + r0 * qs + (size_t)h * hd, *dO = dout + r0 * qs + (size_t)h * hd;
    const int vec = tt_fa2_vec_ok(k, ks, hd) && tt_fa2_vec_ok(v, ks, hd);
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
    if (nt > 0) tt_fa2_stage_kv(w, smem, K, V, ks, 0, seq, hd, tid, vec);
    for (int kt = 0; kt < nt; kt++) {
        tt_fa2_kv_turn(w, smem, K, V, ks, kt, nt, seq, hd, tid, vec);
        const int j0 = kt * TT_FA2_BC;
        const uint16_t *Ks = smem + (kt & 1) * TT_FA2_KV_TILE, *Vs = Ks + TT_FA2_BC * TT_FA2_LD;
        for (int hf = 0; hf < 2; hf++) {
            const int jh = j0 + hf * TT_FA2_HALF;
            if (jh > row0 + 15) break; /* above the diagonal for all of this warp's rows */
            float s[TT_FA2_BC / 8][4], dp[TT_FA2_BC / 8][4];
            tt_fa2_abt(w, tid, s, qa, Ks + hf * TT_FA2_HALF * TT_FA2_LD, TT_FA2_HALF / 8);
            tt_fa2_abt(w, tid, dp, da, Vs + hf * TT_FA2_HALF * TT_FA2_LD, TT_FA2_HALF / 8);
            const int edge = jh + TT_FA2_HALF - 1 > row0 || jh + TT_FA2_HALF > seq || row0 + 16 > seq || lo[0] > jh ||
                             lo[1] > jh;
            if (edge) {
                TT_UNROLL
                for (int n8 = 0; n8 < TT_FA2_HALF / 8; n8++)
                    TT_UNROLL
                    for (int i = 0; i < 4; i++) {
                        int row = row0 + tt_fa2_c_row(lane, i), col = jh + n8 * 8 + tt_fa2_c_col(lane, i);
                        float p = col <= row && col >= lo[i >> 1] && col < seq && row < seq
                                      ? exp2f(s[n8][i] * sl2 - L[i >> 1])
                                      : 0.f;
                        s[n8][i] = p * (dp[n8][i] - D[i >> 1]); /* dS */
                    }
            } else {
                TT_UNROLL
                for (int n8 = 0; n8 < TT_FA2_HALF / 8; n8++)
                    TT_UNROLL
                    for (int i = 0; i < 4; i++)
                        s[n8][i] = exp2f(s[n8][i] * sl2 - L[i >> 1]) * (dp[n8][i] - D[i >> 1]);
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

/* The dk/dv pass's tile it of its walk (query head h0 + it / nq, query
 * tile qt0 + it % nq): the Q and dO rows, their lse (in log2 units) and D
 * into buf (TT_FA2_QD_TILE elements), the copies as one cp.async group. */
TT_HD void tt_fa2_stage_qd(tt_warp_emu *w, uint16_t *buf, int it, int qt0, int nq, int h0, const uint16_t *q,
                           const uint16_t *dout, const float *lse, const float *Dbuf, size_t r0, int seq, int nh,
                           int hd, int tid, int vec) {
    const int h = h0 + it / nq, i0 = (qt0 + it % nq) * TT_FA2_BC;
    const size_t qs = (size_t)nh * hd;
    float *Ls = (float *)(void *)(buf + 2 * TT_FA2_BC * TT_FA2_LD), *Ds = Ls + TT_FA2_BC;
    tt_fa2_stage(w, buf, q + r0 * qs + (size_t)h * hd, qs, i0, seq, hd, tid, vec);
    tt_fa2_stage(w, buf + TT_FA2_BC * TT_FA2_LD, dout + r0 * qs + (size_t)h * hd, qs, i0, seq, hd, tid, vec);
    tt_fa2_cp_commit(w, tid);
    for (int x = tid; x < TT_FA2_BC; x += TT_FA2_THREADS) {
        int row = i0 + x;
        Ls[x] = row < seq ? lse[(r0 + row) * nh + h] * TT_FA2_LOG2E : 0.f;
        Ds[x] = row < seq ? Dbuf[(r0 + row) * nh + h] : 0.f;
    }
}

/* dk/dv pass, block (kt, g * parts + part, b): key rows kt * TT_FA2_BR .. of
 * KV head g, over part `part` of its group's query heads (parts:
 * tt_fa2_dkv_parts); dk, dv (T, nkv * hd) where parts is 1, else that part's
 * unscaled sums into pk, pv (parts x pn floats, pn = T * nkv * hd) for
 * tt_fa2_dkv_sum. Needs the dq pass's Dbuf. smem: TT_FA2_SMEM_DKV. */
TT_HD void tt_fa2_dkv_block(tt_warp_emu *w, int tid, int kt, int gp, int b, int seq, int nh, int nkv, int hd,
                            int parts, const uint16_t *q, const uint16_t *k, const uint16_t *v, const float *lse,
                            const uint16_t *dout, const float *Dbuf, uint16_t *dk, uint16_t *dv, float *pk, float *pv,
                            size_t pn, const int32_t *seg, uint16_t *smem) {
    const int warp = tid >> 5, lane = tid & 31, nhp = nh / nkv / parts;
    const int h0 = gp / parts * (nh / nkv) + gp % parts * nhp; /* the part's first query head */
    const size_t ks = (size_t)nkv * hd, r0 = (size_t)b * seq;
    const uint16_t *K = k + r0 * ks + (size_t)(gp / parts) * hd, *V = v + r0 * ks + (size_t)(gp / parts) * hd;
    const int vec = tt_fa2_vec_ok(k, ks, hd) && tt_fa2_vec_ok(v, ks, hd) && tt_fa2_vec_ok(q, (size_t)nh * hd, hd) &&
                    tt_fa2_vec_ok(dout, (size_t)nh * hd, hd);
    uint16_t *Kb = smem, *Vb = Kb + TT_FA2_BR * TT_FA2_LD, *qd = Vb + TT_FA2_BR * TT_FA2_LD; /* qd: two Q/dO tiles */
    const int key0 = kt * TT_FA2_BR, wk0 = key0 + warp * 16; /* the block's and the warp's first key */
    const float sl2 = TT_FA2_LOG2E / sqrtf((float)hd);
    /* the walk: every query tile from the block's diagonal on, for each query head of the group */
    const int qt0 = key0 / TT_FA2_BC, nq = (seq + TT_FA2_BC - 1) / TT_FA2_BC - qt0, total = nhp * nq;
    /* the block's keys (TT_FA2_BR = TT_FA2_BC rows), in the first tile's group */
    tt_fa2_stage(w, Kb, K, ks, key0, seq, hd, tid, vec);
    tt_fa2_stage(w, Vb, V, ks, key0, seq, hd, tid, vec);
    if (total > 0) tt_fa2_stage_qd(w, qd, 0, qt0, nq, h0, q, dout, lse, Dbuf, r0, seq, nh, hd, tid, vec);
    else { /* no block has no query (key0 < seq), but never leave copies in flight */
        tt_fa2_cp_commit(w, tid);
        tt_fa2_cp_wait(w, tid, 0);
    }
    const uint16_t *Kw = Kb + warp * 16 * TT_FA2_LD, *Vw = Vb + warp * 16 * TT_FA2_LD;
    float dK[TT_FA2_HD / 8][4], dV[TT_FA2_HD / 8][4];
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++)
        TT_UNROLL
        for (int i = 0; i < 4; i++) dK[dn][i] = dV[dn][i] = 0.f;
    for (int it = 0; it < total; it++) {
        tt_fa2_sync(w); /* every warp is done with tile it - 1, whose buffer tile it + 1 takes */
        if (it + 1 < total) {
            tt_fa2_stage_qd(w, qd + ((it + 1) & 1) * TT_FA2_QD_TILE, it + 1, qt0, nq, h0, q, dout, lse, Dbuf, r0, seq,
                            nh, hd, tid, vec);
            tt_fa2_cp_wait(w, tid, 1);
        } else tt_fa2_cp_wait(w, tid, 0);
        tt_fa2_sync(w); /* tile it is in shared memory */
        const int i0 = (qt0 + it % nq) * TT_FA2_BC;
        const uint16_t *Qs = qd + (it & 1) * TT_FA2_QD_TILE, *dOs = Qs + TT_FA2_BC * TT_FA2_LD;
        const float *Ls = (const float *)(const void *)(dOs + TT_FA2_BC * TT_FA2_LD), *Ds = Ls + TT_FA2_BC;
        for (int hf = 0; hf < 2; hf++) {
            const int ih = i0 + hf * TT_FA2_HALF;
            if (ih + TT_FA2_HALF - 1 < wk0) continue; /* every query of the half precedes this warp's keys */
            const uint16_t *Qh = Qs + hf * TT_FA2_HALF * TT_FA2_LD, *dOh = dOs + hf * TT_FA2_HALF * TT_FA2_LD;
            float s[TT_FA2_BC / 8][4], dp[TT_FA2_BC / 8][4];
            tt_fa2_abt_s(w, tid, s, Kw, Qh, TT_FA2_HALF / 8);   /* S^T: keys x queries */
            tt_fa2_abt_s(w, tid, dp, Vw, dOh, TT_FA2_HALF / 8); /* dP^T = V dO^T */
            /* the mask in every tile: a second, unmasked copy of this loop for the tiles below the diagonal
             * pushed the kernel past 255 registers (spills) */
            TT_UNROLL
            for (int n8 = 0; n8 < TT_FA2_HALF / 8; n8++)
                TT_UNROLL
                for (int i = 0; i < 4; i++) {
                    int key = wk0 + tt_fa2_c_row(lane, i), x = hf * TT_FA2_HALF + n8 * 8 + tt_fa2_c_col(lane, i);
                    int qrow = i0 + x, lo = seg && qrow < seq ? seg[r0 + qrow] : 0;
                    float p = key <= qrow && key >= lo && qrow < seq && key < seq ? exp2f(s[n8][i] * sl2 - Ls[x])
                                                                                  : 0.f;
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
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t o0 = r0 * ks + (size_t)(gp / parts) * hd; /* g and part again: nothing held through the loop */
    float *pko = parts > 1 ? pk + (size_t)(gp % parts) * pn : NULL;
    float *pvo = parts > 1 ? pv + (size_t)(gp % parts) * pn : NULL;
    TT_UNROLL
    for (int dn = 0; dn < TT_FA2_HD / 8; dn++)
        TT_UNROLL
        for (int i = 0; i < 4; i++) {
            int key = wk0 + tt_fa2_c_row(lane, i), col = dn * 8 + tt_fa2_c_col(lane, i);
            if (key >= seq || col >= hd) continue;
            size_t at = o0 + (size_t)key * ks + col;
            if (pko) {
                pko[at] = dK[dn][i];
                pvo[at] = dV[dn][i];
            } else {
                dk[at] = tt_fa2_bf16(dK[dn][i] * scale);
                dv[at] = tt_fa2_bf16(dV[dn][i]);
            }
        }
}

/* Element i (of n = T * nkv * hd) of dk and dv from the dk/dv pass's parts
 * (pk, pv: parts x n, each part's sums in order). */
TT_HD void tt_fa2_dkv_sum(size_t i, size_t n, int parts, const float *pk, const float *pv, float scale, uint16_t *dk,
                          uint16_t *dv) {
    float a = 0.f, c = 0.f;
    for (int p = 0; p < parts; p++) {
        a += pk[(size_t)p * n + i];
        c += pv[(size_t)p * n + i];
    }
    dk[i] = tt_fa2_bf16(a * scale);
    dv[i] = tt_fa2_bf16(c);
}

#endif

/* tests/test_cuda_fa2.c — the tensor-core flash attention (kernels/cuda/
 * cuda_fa2.h) on the CPU: every thread of a block is a fiber running the
 * kernel's block body (tests/cuda_emu/fiber.h); the warp-wide operations are
 * emulated (the block
 * barrier, the quad shuffles, ldmatrix from the lanes' row addresses, and
 * mma.m16n8k16 from the PTX ISA's fragment layout: each lane's registers
 * gathered into the 16 x 16 and 16 x 8 operands, each lane's four results
 * computed in fp32), and cp.async as copies that land at the covering wait
 * (NaN before). Checks: the fragment coordinates the kernel uses are the PTX
 * ISA's formulas (written out here per element, as the ISA states them) and
 * cover each operand element once; ldmatrix as the ISA states it, and the
 * row addresses the products use give those fragments; the forward's out and lse match attention computed in
 * double from the same bf16 inputs (causal, GQA, head_dim 128 and a padded
 * 64, sequences that leave partial tiles, two sequences), within the bf16
 * rounding of the probabilities and the output; the same with packed examples
 * (each row attending only from its example's start); head_dim 36 (staged
 * element by element); the dk/dv pass in parts and whole. */
#include "core/base/common.h"
#include "core/base/rng.h"
#include "kernels/cuda/cuda_fa2.h"
#include "tests/cuda_emu/fiber.h"
#include "tests/test.h"

#include <math.h>
#include <string.h>

/* ---- the emulation ------------------------------------------------------------ */

/* A block's threads meet as fibers; each warp-wide operation is two meetings of the warp: the lanes' values
 * put in, then each lane takes what it needs (no lane puts in the next operation's before all have taken). */
struct tt_warp_emu {
    tt_fib_sched fs;
    float xf[TT_FA2_THREADS];
    uint32_t xa[TT_FA2_THREADS][4], xb[TT_FA2_THREADS][2];
    const uint16_t *rows[TT_FA2_THREADS]; /* ldmatrix row addresses */
    tt_cp_emu cp[TT_FA2_THREADS];         /* each thread's cp.async copies in flight */
};

void tt_emu_sync(tt_warp_emu *w) { tt_fib_wait(&w->fs, TT_FIB_BLOCK_WAIT); }
static void warp_meet(tt_warp_emu *w) { tt_fib_wait(&w->fs, TT_FIB_WARP_WAIT); }

float tt_emu_shfl_xor(tt_warp_emu *w, int tid, float v, int mask) {
    w->xf[tid] = v;
    warp_meet(w);
    float r = w->xf[(tid & ~31) | ((tid & 31) ^ mask)];
    warp_meet(w);
    return r;
}

void tt_emu_mma(tt_warp_emu *w, int tid, float d[4], const uint32_t a[4], const uint32_t b[2]) {
    memcpy(w->xa[tid], a, sizeof w->xa[tid]);
    memcpy(w->xb[tid], b, sizeof w->xb[tid]);
    warp_meet(w);
    int base = tid & ~31, lane = tid & 31;
    float A[16][16], B[16][8];
    tt_fa2_warp_operands(w->xa[base], w->xb[base], A, B);
    for (int i = 0; i < 4; i++) {
        int row = tt_fa2_c_row(lane, i), col = tt_fa2_c_col(lane, i);
        float acc = d[i];
        for (int kk = 0; kk < 16; kk++) acc += A[row][kk] * B[kk][col];
        d[i] = acc;
    }
    warp_meet(w);
}

void tt_emu_ldsm(tt_warp_emu *w, int tid, uint32_t r[4], const uint16_t *row, int trans) {
    TT_ASSERT(((uintptr_t)row & 15) == 0); /* ldmatrix rows are 16-byte aligned */
    w->rows[tid] = row;
    warp_meet(w);
    tt_fa2_ldsm_gather(w->rows + (tid & ~31), tid & 31, trans, r);
    warp_meet(w);
}

void tt_emu_cp16(tt_warp_emu *w, int tid, void *dst, const void *src, int valid) {
    TT_ASSERT(((uintptr_t)dst & 15) == 0 && (!valid || ((uintptr_t)src & 15) == 0));
    TT_ASSERT(tt_cp_emu_issue(&w->cp[tid], dst, src, valid) == 0);
}
void tt_emu_cp_commit(tt_warp_emu *w, int tid) { tt_cp_emu_commit(&w->cp[tid]); }
void tt_emu_cp_wait(tt_warp_emu *w, int tid, int pending) { tt_cp_emu_wait(&w->cp[tid], pending); }

/* ---- fragment coordinates against the PTX ISA ----------------------------------- */

/* The ISA's formulas per element index (a0..a7, b0..b3, c0..c3). */
static void isa_a(int lane, int i, int *row, int *col) {
    int gid = lane >> 2, tig = lane % 4;
    *row = (i < 2 || (i >= 4 && i < 6)) ? gid : gid + 8;
    *col = i < 4 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
}
static void isa_b(int lane, int i, int *row, int *col) {
    int gid = lane >> 2, tig = lane % 4;
    *row = i < 2 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
    *col = gid;
}
static void isa_c(int lane, int i, int *row, int *col) {
    int gid = lane >> 2, tig = lane % 4;
    *row = i < 2 ? gid : gid + 8;
    *col = tig * 2 + (i & 1);
}

static void test_fragments(void) {
    int seen_a[16][16] = {{0}}, seen_b[16][8] = {{0}}, seen_c[16][8] = {{0}};
    for (int lane = 0; lane < 32; lane++) {
        for (int i = 0; i < 8; i++) { /* register i / 2, half i % 2 */
            int r, c;
            isa_a(lane, i, &r, &c);
            CHECK(r == tt_fa2_a_row(lane, i / 2) && c == tt_fa2_a_col(lane, i / 2) + (i & 1));
            seen_a[r][c]++;
        }
        for (int i = 0; i < 4; i++) {
            int r, c;
            isa_b(lane, i, &r, &c);
            CHECK(r == tt_fa2_b_row(lane, i / 2) + (i & 1) && c == tt_fa2_b_col(lane));
            seen_b[r][c]++;
            isa_c(lane, i, &r, &c);
            CHECK(r == tt_fa2_c_row(lane, i) && c == tt_fa2_c_col(lane, i));
            seen_c[r][c]++;
        }
    }
    for (int r = 0; r < 16; r++) {
        for (int c = 0; c < 16; c++) CHECK_EQ_INT(seen_a[r][c], 1);
        for (int c = 0; c < 8; c++) { CHECK_EQ_INT(seen_b[r][c], 1); CHECK_EQ_INT(seen_c[r][c], 1); }
    }
}

/* ldmatrix as the ISA states it (lane 8 m + i names row i of matrix m; word w
 * of that row, elements 2w and 2w + 1, goes to lane 4 i + w — with .trans,
 * of the transposed matrix), and the row addresses the products use giving
 * the fragments the coordinates above name. */
static void test_ldsm(void) {
    static uint16_t X[32][TT_FA2_LD];
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < TT_FA2_LD; j++) X[i][j] = (uint16_t)(i * 256 + j); /* every element its own value */
    const uint16_t *rows[32];
    for (int l = 0; l < 32; l++) rows[l] = &X[l][8 * (l % 3)]; /* any rows, anywhere */
    for (int trans = 0; trans < 2; trans++)
        for (int m = 0; m < 4; m++)
            for (int i = 0; i < 8; i++)
                for (int wd = 0; wd < 4; wd++) {
                    uint32_t r[4];
                    tt_fa2_ldsm_gather(rows, 4 * i + wd, trans, r);
                    const uint16_t *M0 = rows[8 * m + 2 * wd], *M1 = rows[8 * m + 2 * wd + 1], *Mi = rows[8 * m + i];
                    uint32_t want = trans ? tt_fa2_pack(M0[i], M1[i]) : tt_fa2_pack(Mi[2 * wd], Mi[2 * wd + 1]);
                    CHECK(r[m] == want);
                }
    const uint16_t *X0 = &X[0][0];
    for (int kc = 0; kc < TT_FA2_HD / 16; kc += 2)
        for (int lane = 0; lane < 32; lane++) {
            uint32_t a[4], bt[4], b[4];
            for (int l = 0; l < 32; l++) rows[l] = tt_fa2_ldsm_a(X0, kc, l);
            tt_fa2_ldsm_gather(rows, lane, 0, a);
            for (int l = 0; l < 32; l++) rows[l] = tt_fa2_ldsm_bt(X0, 8, kc, l);
            tt_fa2_ldsm_gather(rows, lane, 0, bt);
            for (int l = 0; l < 32; l++) rows[l] = tt_fa2_ldsm_b(X0, 1, 8 * kc, l);
            tt_fa2_ldsm_gather(rows, lane, 1, b);
            for (int r = 0; r < 4; r++) {
                int ar = tt_fa2_a_row(lane, r), ac = kc * 16 + tt_fa2_a_col(lane, r);
                CHECK(a[r] == tt_fa2_pack(X[ar][ac], X[ar][ac + 1])); /* A (rows 0-15, chunk kc) */
                int n = 8 + tt_fa2_b_col(lane), k = (kc + r / 2) * 16 + tt_fa2_b_row(lane, r & 1);
                CHECK(bt[r] == tt_fa2_pack(X[n][k], X[n][k + 1])); /* B = X^T: chunks kc, kc + 1 of rows 8-15 */
                int kr = 16 + tt_fa2_b_row(lane, r & 1), d = 8 * kc + 8 * (r / 2) + tt_fa2_b_col(lane);
                CHECK(b[r] == tt_fa2_pack(X[kr][d], X[kr + 1][d])); /* B = X: chunk 1, columns 8kc.. and 8kc + 8.. */
            }
        }
}

/* ---- running blocks ------------------------------------------------------------------ */

typedef struct shape {
    int B, seq, nh, nkv, hd;
    const int32_t *seg; /* packed examples (B*seq) or NULL */
    int parts;          /* the dk/dv pass's parts of each KV group's heads; 0: tt_fa2_dkv_parts's */
} shape;

/* Where row ri's keys start: its example's first row, or 0. */
static int lo_of(const shape *s, size_t ri) { return s->seg ? s->seg[ri] : 0; }

typedef struct blk {
    tt_warp_emu *w;
    int tid, x, y, b, pass; /* pass 0 forward, 1 dq, 2 dk/dv, 3 forward with 32 rows a warp */
    const shape *s;
    const uint16_t *q, *k, *v, *o, *dout;
    const float *lse;
    uint16_t *out, *dq, *dk, *dv, *smem;
    float *lse_out, *Dbuf, *pk, *pv; /* pk, pv: the dk/dv pass's parts (parts > 1) */
    int parts;
} blk;

static void block_thread(void *p, int tid) {
    blk *a = (blk *)p + tid;
    const shape *s = a->s;
    if (a->pass == 0)
        tt_fa2_fwd_block(a->w, a->tid, a->x, a->y, a->b, s->seq, s->nh, s->nkv, s->hd, a->q, a->k, a->v, a->out,
                         a->lse_out, s->seg, a->smem);
    else if (a->pass == 3)
        tt_fa2_fwd2_block(a->w, a->tid, a->x, a->y, a->b, s->seq, s->nh, s->nkv, s->hd, a->q, a->k, a->v, a->out,
                          a->lse_out, s->seg, a->smem);
    else if (a->pass == 1)
        tt_fa2_dq_block(a->w, a->tid, a->x, a->y, a->b, s->seq, s->nh, s->nkv, s->hd, a->q, a->k, a->v, a->o, a->lse,
                        a->dout, a->dq, a->Dbuf, s->seg, a->smem);
    else
        tt_fa2_dkv_block(a->w, a->tid, a->x, a->y, a->b, s->seq, s->nh, s->nkv, s->hd, a->parts, a->q, a->k, a->v,
                         a->lse, a->dout, a->Dbuf, a->dk, a->dv, a->pk, a->pv, (size_t)s->B * s->seq * s->nkv * s->hd,
                         s->seg, a->smem);
}

/* Every block of a pass's grid (row tiles x heads x sequences; the dk/dv pass: x KV heads), one after another,
 * each as TT_FA2_THREADS threads sharing one block state and stale shared memory. */
static void run_pass(const blk *tmpl) {
    const shape *s = tmpl->s;
    tt_warp_emu *w = tt_xcalloc(1, sizeof *w);
    w->fs.who = "test_cuda_fa2";
    w->fs.name = tmpl->pass == 0 ? "forward" : tmpl->pass == 1 ? "dq" : tmpl->pass == 2 ? "dk/dv" : "forward (32 rows)";
    size_t sm = tmpl->pass == 2 ? TT_FA2_SMEM_DKV : tmpl->pass == 3 ? TT_FA2_SMEM_FWD2 : TT_FA2_SMEM_FWD;
    const int br = tmpl->pass == 3 ? TT_FA2_FWD2_BR : TT_FA2_BR;
    uint16_t *smem = tt_xmalloc(sm);
    blk a[TT_FA2_THREADS];
    int heads = tmpl->pass == 2 ? s->nkv * tmpl->parts : s->nh;
    for (int b = 0; b < s->B; b++)
        for (int y = 0; y < heads; y++)
            for (int x = 0; x * br < s->seq; x++) {
                memset(smem, 0xff, sm); /* stale contents must not matter */
                memset(w->cp, 0, sizeof w->cp);
                for (int t = 0; t < TT_FA2_THREADS; t++) {
                    a[t] = *tmpl;
                    a[t].w = w; a[t].tid = t; a[t].x = x; a[t].y = y; a[t].b = b; a[t].smem = smem;
                }
                tt_fib_run(&w->fs, TT_FA2_THREADS, 512 << 10, block_thread, a);
                for (int t = 0; t < TT_FA2_THREADS; t++)
                    CHECK_MSG(w->cp[t].n == 0, "pass %d: thread %d ended with %d copies never waited for",
                              tmpl->pass, t, w->cp[t].n);
            }
    munmap(w->fs.stacks, (size_t)TT_FIB_MAX * w->fs.stack);
    free(smem);
    free(w);
}

/* ---- the reference: causal GQA attention in double ------------------------------------------ */

static void ref_fwd(const shape *s, const uint16_t *q, const uint16_t *k, const uint16_t *v, double *out, double *lse) {
    const int qs = s->nh * s->hd, ks = s->nkv * s->hd, hd = s->hd;
    double *p = tt_xmalloc((size_t)s->seq * sizeof *p), sc = 1.0 / sqrt((double)hd);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->nh; h++) {
            int g = tt_gqa_kv_head(h, s->nh, s->nkv);
            for (int i = 0; i < s->seq; i++) {
                size_t ri = (size_t)b * s->seq + i;
                const int lo = lo_of(s, ri);
                double mx = -INFINITY;
                for (int j = lo; j <= i; j++) {
                    size_t rj = (size_t)b * s->seq + j;
                    double d = 0;
                    for (int c = 0; c < hd; c++)
                        d += (double)tt_fa2_f32(q[ri * qs + (size_t)h * hd + c]) * tt_fa2_f32(k[rj * ks + (size_t)g * hd + c]);
                    p[j] = d * sc;
                    if (p[j] > mx) mx = p[j];
                }
                double l = 0;
                for (int j = lo; j <= i; j++) l += (p[j] = exp(p[j] - mx));
                for (int c = 0; c < hd; c++) {
                    double o = 0;
                    for (int j = lo; j <= i; j++)
                        o += p[j] * tt_fa2_f32(v[((size_t)b * s->seq + j) * ks + (size_t)g * hd + c]);
                    out[ri * qs + (size_t)h * hd + c] = o / l;
                }
                lse[ri * s->nh + h] = mx + log(l);
            }
        }
    free(p);
}

/* The backward in double: P from the given lse, D from the given o. */
static void ref_bwd(const shape *s, const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint16_t *o,
                    const float *lse, const uint16_t *dout, double *dq, double *dk, double *dv) {
    const int qs = s->nh * s->hd, ks = s->nkv * s->hd, hd = s->hd;
    size_t T = (size_t)s->B * s->seq;
    double sc = 1.0 / sqrt((double)hd);
    memset(dq, 0, T * qs * sizeof *dq);
    memset(dk, 0, T * ks * sizeof *dk);
    memset(dv, 0, T * ks * sizeof *dv);
#define F(x) ((double)tt_fa2_f32(x))
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->nh; h++) {
            int g = tt_gqa_kv_head(h, s->nh, s->nkv);
            for (int i = 0; i < s->seq; i++) {
                size_t ri = (size_t)b * s->seq + i, qo = ri * qs + (size_t)h * hd;
                double D = 0;
                for (int c = 0; c < hd; c++) D += F(dout[qo + c]) * F(o[qo + c]);
                for (int j = lo_of(s, ri); j <= i; j++) {
                    size_t ko = ((size_t)b * s->seq + j) * ks + (size_t)g * hd;
                    double sd = 0, dp = 0;
                    for (int c = 0; c < hd; c++) {
                        sd += F(q[qo + c]) * F(k[ko + c]);
                        dp += F(dout[qo + c]) * F(v[ko + c]);
                    }
                    double p = exp(sd * sc - lse[ri * s->nh + h]), ds = p * (dp - D);
                    for (int c = 0; c < hd; c++) {
                        dq[qo + c] += sc * ds * F(k[ko + c]);
                        dk[ko + c] += sc * ds * F(q[qo + c]);
                        dv[ko + c] += p * F(dout[qo + c]);
                    }
                }
            }
        }
#undef F
}

/* The largest |got - ref| beyond the output's own rounding (2^-8 of |ref|)
 * and the rms of the difference, both over the rms of ref. */
static void rel_err(const uint16_t *got, const double *ref, size_t n, double *worst, double *rms) {
    double d2 = 0, r2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(tt_fa2_f32(got[i]) - ref[i]);
        if (!(e - fabs(ref[i]) * 0x1p-8 <= mx)) mx = e - fabs(ref[i]) * 0x1p-8; /* NaN counts */
        d2 += e * e;
        r2 += ref[i] * ref[i];
    }
    double rr = sqrt(r2 / n) + 1e-30;
    *worst = mx / rr;
    *rms = sqrt(d2 / n) / rr;
}

static uint16_t *rand_bf16(size_t n, tt_rng *r, float scale) {
    uint16_t *x = tt_xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = tt_fa2_bf16((float)rng_normal(r) * scale);
    return x;
}

static void test_fwd(shape s, uint64_t seed) {
    tt_rng r;
    rng_seed(&r, seed, 1);
    size_t T = (size_t)s.B * s.seq, nq = T * s.nh * s.hd, nk = T * s.nkv * s.hd;
    /* scores of a few units: the softmax is neither flat nor one-hot */
    uint16_t *q = rand_bf16(nq, &r, 1.5f), *k = rand_bf16(nk, &r, 1.5f), *v = rand_bf16(nk, &r, 1.f);
    uint16_t *out = tt_xcalloc(nq, sizeof *out);
    float *lse = tt_xcalloc(T * s.nh, sizeof *lse);
    double *ro = tt_xmalloc(nq * sizeof *ro), *rl = tt_xmalloc(T * s.nh * sizeof *rl);
    blk t = {0};
    t.s = &s; t.q = q; t.k = k; t.v = v; t.out = out; t.lse_out = lse; t.pass = 0;
    run_pass(&t);
    ref_fwd(&s, q, k, v, ro, rl);
    /* each value against the size of the values it averages (v is unit normal): the bf16 rounding of each
     * probability (2^-9 relative) and of the output */
    double worst = 0, worst_l = 0, sq = 0;
    for (size_t i = 0; i < nq; i++) {
        double e = fabs(tt_fa2_f32(out[i]) - ro[i]) - fabs(ro[i]) * 0x1p-8;
        sq += (tt_fa2_f32(out[i]) - ro[i]) * (tt_fa2_f32(out[i]) - ro[i]);
        if (!(e <= worst)) worst = e; /* NaN counts */
    }

    for (size_t i = 0; i < T * s.nh; i++) {
        double e = fabs(lse[i] - rl[i]);
        if (!(e <= worst_l)) worst_l = e;
    }
    /* measured on these shapes: rms 1e-3, worst 2.4e-3 beyond the output's rounding; a wrong index is O(1) */
    CHECK_MSG(worst < 8e-3 && sqrt(sq / nq) < 2e-3, "B %d seq %d heads %d/%d hd %d: out off by %.4f (rms %.4f)", s.B,
              s.seq, s.nh, s.nkv, s.hd, worst, sqrt(sq / nq));
    CHECK_MSG(worst_l < 1e-4, "B %d seq %d heads %d/%d hd %d: lse off by %.2e", s.B, s.seq, s.nh, s.nkv, s.hd, worst_l);
    /* the forward with 32 rows a warp (Q from shared memory, each K and V fragment feeding two m-tiles) makes
     * the same products in the same order: the same bits */
    uint16_t *out2 = tt_xmalloc(nq * sizeof *out2);
    float *lse2 = tt_xmalloc(T * s.nh * sizeof *lse2);
    memset(out2, 0xff, nq * sizeof *out2);
    memset(lse2, 0xff, T * s.nh * sizeof *lse2);
    t.out = out2; t.lse_out = lse2; t.pass = 3;
    run_pass(&t);
    CHECK_MSG(memcmp(out2, out, nq * sizeof *out) == 0 && memcmp(lse2, lse, T * s.nh * sizeof *lse) == 0,
              "B %d seq %d heads %d/%d hd %d: the 32-row forward differs from the 16-row one", s.B, s.seq, s.nh, s.nkv,
              s.hd);
    free(q); free(k); free(v); free(out); free(lse); free(ro); free(rl); free(out2); free(lse2);
}

static void test_bwd(shape s, uint64_t seed) {
    tt_rng r;
    rng_seed(&r, seed, 2);
    size_t T = (size_t)s.B * s.seq, nq = T * s.nh * s.hd, nk = T * s.nkv * s.hd;
    uint16_t *q = rand_bf16(nq, &r, 1.5f), *k = rand_bf16(nk, &r, 1.5f), *v = rand_bf16(nk, &r, 1.f);
    uint16_t *dout = rand_bf16(nq, &r, 1.f), *o = tt_xmalloc(nq * sizeof *o);
    double *ro = tt_xmalloc(nq * sizeof *ro), *rl = tt_xmalloc(T * s.nh * sizeof *rl);
    ref_fwd(&s, q, k, v, ro, rl);
    float *lse = tt_xmalloc(T * s.nh * sizeof *lse), *Dbuf = tt_xcalloc(T * s.nh, sizeof *Dbuf);
    for (size_t i = 0; i < nq; i++) o[i] = tt_fa2_bf16((float)ro[i]);
    for (size_t i = 0; i < T * s.nh; i++) lse[i] = (float)rl[i];
    uint16_t *dq = tt_xcalloc(nq, 2), *dk = tt_xcalloc(nk, 2), *dv = tt_xcalloc(nk, 2);
    blk t = {0};
    t.s = &s; t.q = q; t.k = k; t.v = v; t.o = o; t.lse = lse; t.dout = dout; t.dq = dq; t.dk = dk; t.dv = dv;
    t.Dbuf = Dbuf;
    t.pass = 1;
    run_pass(&t);
    t.pass = 2;
    t.parts = s.parts ? s.parts : tt_fa2_dkv_parts(s.B, s.seq, s.nh, s.nkv);
    if (t.parts > 1) { /* NaN where no block writes */
        t.pk = tt_xmalloc((size_t)t.parts * nk * sizeof *t.pk);
        t.pv = tt_xmalloc((size_t)t.parts * nk * sizeof *t.pv);
        memset(t.pk, 0xff, (size_t)t.parts * nk * sizeof *t.pk);
        memset(t.pv, 0xff, (size_t)t.parts * nk * sizeof *t.pv);
    }
    run_pass(&t);
    if (t.parts > 1)
        for (size_t i = 0; i < nk; i++) tt_fa2_dkv_sum(i, nk, t.parts, t.pk, t.pv, 1.0f / sqrtf((float)s.hd), dk, dv);
    free(t.pk);
    free(t.pv);
    double *rq = tt_xmalloc(nq * sizeof *rq), *rk = tt_xmalloc(nk * sizeof *rk), *rv = tt_xmalloc(nk * sizeof *rv);
    ref_bwd(&s, q, k, v, o, lse, dout, rq, rk, rv);
    const char *name[3] = {"dq", "dk", "dv"};
    const uint16_t *got[3] = {dq, dk, dv};
    const double *ref[3] = {rq, rk, rv};
    size_t n[3] = {nq, nk, nk};
    for (int x = 0; x < 3; x++) {
        double worst, rms;
        rel_err(got[x], ref[x], n[x], &worst, &rms);
        /* measured: worst 0.03, rms 0.0025 (the bf16 P and dS the products take); a wrong index is O(1) */
        CHECK_MSG(worst < 0.05 && rms < 0.01, "B %d seq %d heads %d/%d hd %d: %s off by %.4f (rms %.4f) of its rms",
                  s.B, s.seq, s.nh, s.nkv, s.hd, name[x], worst, rms);
    }
    free(q); free(k); free(v); free(dout); free(o); free(ro); free(rl); free(lse); free(Dbuf);
    free(dq); free(dk); free(dv); free(rq); free(rk); free(rv);
}

int main(void) {
    test_fragments();
    test_ldsm();
    test_fwd((shape){1, 64, 1, 1, 128, NULL, 0}, 1);   /* one block, one key tile */
    /* partial tiles, GQA, two sequences; under AddressSanitizer (CI runs every test twice, and each thread of a
     * block here is a POSIX thread: slow on few CPUs) only their packed twins below, the same shapes */
#if !defined(__SANITIZE_ADDRESS__)
    test_fwd((shape){2, 150, 2, 1, 128, NULL, 0}, 2);
#endif
    test_fwd((shape){1, 129, 2, 1, 64, NULL, 0}, 3);   /* head_dim padded to the fragments' 128 */
    test_bwd((shape){1, 64, 1, 1, 128, NULL, 0}, 4);
#if !defined(__SANITIZE_ADDRESS__)
    test_bwd((shape){2, 150, 2, 1, 128, NULL, 0}, 5);
#endif
    test_bwd((shape){1, 129, 4, 1, 64, NULL, 0}, 6);  /* the dk/dv pass in 4 parts (one head each) */
    test_bwd((shape){1, 129, 4, 1, 64, NULL, 1}, 12); /* in one part of 4 heads */
    /* packed examples: sequence 0 holds rows 0-69 and 70-149 (rows 70.. see no key of the first 64-key tile: the
     * online softmax starts on a fully masked tile), sequence 1 rows 0-9, 10-139 and 140-149 */
    static int32_t seg[300];
    for (int i = 0; i < 150; i++) {
        seg[i] = i < 70 ? 0 : 70;
        seg[150 + i] = i < 10 ? 0 : i < 140 ? 10 : 140;
    }
    /* head_dim 36: rows not 16-byte aligned, tiles staged element by element */
    test_fwd((shape){1, 100, 2, 2, 36, NULL, 0}, 9);
    test_bwd((shape){1, 100, 2, 2, 36, NULL, 0}, 10);
    test_fwd((shape){2, 150, 2, 1, 128, seg, 0}, 7);
    test_bwd((shape){2, 150, 2, 1, 128, seg, 0}, 8);
    TEST_END();
}

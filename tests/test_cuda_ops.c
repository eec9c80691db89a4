/* tests/test_cuda_ops.c — every CUDA op against the CPU reference, with a
 * per-op tolerance kept in one table (STYLE.md 9). Skips (exit 77) when the
 * CUDA backend is not built or no GPU can be used.
 *
 * Without arguments: small shapes (odd sizes, partial blocks; seconds).
 * With --real: the same ops at the reference models' shapes as well —
 * llama3.1-8b projections (2048 tokens x 4096 x 4096, 14336 x 4096 NF4), the
 * pruned 70B's odd ffn (4300), attention at seq 4096 / head_dim 128 / GQA
 * 16:2, cross-entropy over vocab 128256 — with outputs poisoned (NaN) before
 * each GPU call so an unwritten element fails. tools/gpu_check.sh runs this. */
#include "core/base/common.h"
#include "core/base/nf4.h"
#include "core/base/rng.h"
#include "kernels/backend.h"
#include "tests/test.h"

#include <math.h>
#include <string.h>

/* Two tolerances per op, fp32 on both sides (the GPU reorders sums: block
 * reductions, cuBLAS tiles).
 *  - small shapes: the worst element's |gpu - cpu| / max(1, |cpu|);
 *  - real shapes (--real): the norm-wise ||gpu - cpu|| / ||cpu|| (METHOD of
 *    the GPU machine). Element-wise bounds do not carry over to long sums:
 *    a sum of K products rounds at every partial sum, whose size grows like
 *    sqrt(K), so an output near zero errs by ~ eps * K / sqrt(2) of the
 *    terms' scale (2.5e-4 at K = 4096, which is what was measured on the
 *    H200: 1.9e-4 to 3.9e-4 element-wise at K = 4096 and 8192). Norm-wise,
 *    against an f64 product of N(0,1) matrices (torch on the CPU), an fp32
 *    GEMM errs by 2.6e-7 (K = 4096) and 2.8e-7 (K = 8192), the same inputs
 *    rounded to TF32 by 2.9e-4 — so 2e-5 passes any fp32 GEMM with a wide
 *    margin and fails a TF32 one. Softmax rows and vocab rows sum positive
 *    terms, whose relative error does not grow with length. */
static const struct { const char *op; double tol, tol_real; } g_tol[] = {
    {"gemm", 1e-4, 2e-5},         /* small: K = 96 products per output */
    {"axpy", 1e-6, 1e-6},   {"scale", 1e-6, 1e-6},   {"mask_scale", 1e-6, 1e-6},
    {"sumsq", 1e-5, 1e-5},        /* double accumulation both sides, float inputs */
    {"dequant", 0, 0},            /* same float arithmetic: exact */
    {"rmsnorm_fwd", 1e-5, 1e-6}, {"rmsnorm_bwd", 1e-4, 2e-5}, {"rmsnorm_bwd_w", 1e-4, 2e-5},
    {"rope", 1e-6, 1e-6},
    {"attn_fwd", 1e-4, 2e-5},    {"attn_bwd", 5e-4, 5e-5},  /* softmax rows + two gemms */
    {"swiglu_fwd", 1e-5, 1e-6},  {"swiglu_bwd", 1e-5, 1e-6}, /* expf vs expf: ulps */
    {"xent", 1e-5, 1e-5},        {"adamw", 1e-6, 1e-6},
    {"bf16", 0, 0},               /* the same rounding (nearest even) on both sides: exact */
};
static int g_real; /* --real: norm-wise tolerances, outputs poisoned */

static double tol_of(const char *op) {
    for (size_t i = 0; i < sizeof g_tol / sizeof g_tol[0]; i++)
        if (strcmp(g_tol[i].op, op) == 0) return g_real ? g_tol[i].tol_real : g_tol[i].tol;
    TT_ASSERT(!"op without a tolerance");
    return 0;
}

static const tt_backend *cpu, *gpu;
static tt_rng rng;

static float *rnd(size_t n, double scale) {
    float *x = tt_xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * rng_normal(&rng));
    return x;
}
static float *up(const float *h, size_t n) {
    float *d = gpu->alloc(n * sizeof *d);
    gpu->to_device(d, h, n * sizeof *d);
    return d;
}
static void poison(float *d, size_t n) {
    if (g_real) gpu->fill(d, n, NAN);
}
static void cmp(const char *op, const float *ref, const float *dev, size_t n) {
    float *h = tt_xmalloc(n * sizeof *h);
    gpu->to_host(h, dev, n * sizeof *h);
    double worst = 0, d2 = 0, r2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)h[i] - ref[i], e = fabs(d) / fmax(1.0, fabs(ref[i]));
        if (!(e <= worst)) worst = e; /* NaN counts as the worst */
        d2 += d * d;
        r2 += (double)ref[i] * ref[i];
    }
    double normwise = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
    if (normwise != normwise || worst != worst) normwise = worst = INFINITY; /* NaN: unwritten or broken */
    double got = g_real ? normwise : worst;
    const char *what = g_real ? "norm-wise relative error" : "worst relative error";
    CHECK_MSG(got <= tol_of(op), "%s: %s %.3g > %.3g", op, what, got, tol_of(op));
    fprintf(stderr, "%-13s %s %.3g (tolerance %.3g; worst element %.3g)\n", op, what, got, tol_of(op), worst);
    free(h);
}

/* C = 0.5 op(A) op(B) + C, every transpose pair. */
static void t_gemm(int M, int N, int K, int all_transposes) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            if (!all_transposes && !(ta == 0 && tb == 1)) continue;
            float *A = rnd((size_t)M * K, 1), *B = rnd((size_t)K * N, 1), *C = rnd((size_t)M * N, 1);
            float *dA = up(A, (size_t)M * K), *dB = up(B, (size_t)K * N), *dC = up(C, (size_t)M * N);
            cpu->gemm(ta, tb, M, N, K, 0.5f, A, ta ? M : K, B, tb ? K : N, 1, C, N);
            gpu->gemm(ta, tb, M, N, K, 0.5f, dA, ta ? M : K, dB, tb ? K : N, 1, dC, N);
            cmp("gemm", C, dC, (size_t)M * N);
            free(A); free(B); free(C); gpu->free(dA); gpu->free(dB); gpu->free(dC);
        }
}

/* axpy, scale, mask_scale, sumsq, swiglu and adamw on n elements. */
static void t_elementwise(size_t n) {
    float *x = rnd(n, 1), *y = rnd(n, 1), *m = rnd(n, 1);
    for (size_t i = 0; i < n; i++) m[i] = m[i] > 0;
    float *dx = up(x, n), *dy = up(y, n), *dm = up(m, n);
    cpu->axpy(n, 0.3f, x, y); gpu->axpy(n, 0.3f, dx, dy); cmp("axpy", y, dy, n);
    cpu->scale(n, 1.7f, y); gpu->scale(n, 1.7f, dy); cmp("scale", y, dy, n);
    poison(dy, n);
    cpu->mask_scale(n, x, m, 2.f, y); gpu->mask_scale(n, dx, dm, 2.f, dy); cmp("mask_scale", y, dy, n);
    double s1 = 0, s2 = 0, *d_acc = gpu->alloc(sizeof(double)); /* zeroed */
    cpu->sumsq(n, x, &s1);
    gpu->sumsq(n, dx, d_acc);
    gpu->to_host(&s2, d_acc, sizeof s2);
    CHECK_MSG(fabs(s1 - s2) <= tol_of("sumsq") * s1, "sumsq %.9g vs %.9g", s1, s2);
    gpu->free(d_acc);
    /* LoRA dropout masks: the same generator, bit for bit */
    {
        int cols = (int)(n < 4096 ? n : 4096), rows = (int)(n / (size_t)cols);
        float *hm = tt_xmalloc((size_t)rows * cols * 4), *dmask = up(hm, (size_t)rows * cols);
        cpu->dropout_mask(rows, cols, 99, (uint64_t)5 << 32 | 17, 0.1f, hm);
        gpu->dropout_mask(rows, cols, 99, (uint64_t)5 << 32 | 17, 0.1f, dmask);
        float *back = tt_xmalloc((size_t)rows * cols * 4);
        gpu->to_host(back, dmask, (size_t)rows * cols * 4);
        CHECK_MSG(memcmp(hm, back, (size_t)rows * cols * 4) == 0, "dropout_mask differs from the CPU's");
        free(hm); free(back); gpu->free(dmask);
    }
    /* bf16 activation storage: round trip, with a NaN and infinities */
    {
        float *a = rnd(n, 3), *ra = tt_xmalloc(n * 4);
        a[0] = NAN; a[1] = INFINITY; a[2] = -INFINITY; a[3] = 1.00390625f; /* a tie: rounds to even */
        uint16_t *hb = tt_xmalloc(n * 2);
        cpu->to_bf16(n, a, hb);
        cpu->from_bf16(n, hb, ra);
        float *d_a = up(a, n), *d_r = gpu->alloc(n * 4);
        uint16_t *d_b = gpu->alloc(n * 2);
        poison(d_r, n);
        gpu->to_bf16(n, d_a, d_b);
        gpu->from_bf16(n, d_b, d_r);
        float *hr = tt_xmalloc(n * 4);
        gpu->to_host(hr, d_r, n * 4);
        CHECK_MSG(memcmp(hr + 1, ra + 1, (n - 1) * 4) == 0 && hr[0] != hr[0], "bf16 round trip differs");
        ra[0] = ra[1] = ra[2] = 0; /* NaN and infinities: compared above (cmp's arithmetic cannot) */
        gpu->fill(d_r, 3, 0);
        cmp("bf16", ra, d_r, n);
        free(a); free(ra); free(hb); free(hr); gpu->free(d_a); gpu->free(d_r); gpu->free(d_b);
    }
    /* swiglu */
    {
        float *g = rnd(n, 2), *u = rnd(n, 1), *mm = tt_xmalloc(n * 4), *dg = tt_xmalloc(n * 4), *du = tt_xmalloc(n * 4);
        float *d_g = up(g, n), *d_u = up(u, n), *d_m = gpu->alloc(n * 4), *d_dg = gpu->alloc(n * 4), *d_du = gpu->alloc(n * 4);
        poison(d_m, n); poison(d_dg, n); poison(d_du, n);
        cpu->swiglu_fwd(n, g, u, mm); gpu->swiglu_fwd(n, d_g, d_u, d_m); cmp("swiglu_fwd", mm, d_m, n);
        cpu->swiglu_bwd(n, g, u, x, dg, du); gpu->swiglu_bwd(n, d_g, d_u, dx, d_dg, d_du);
        cmp("swiglu_bwd", dg, d_dg, n); cmp("swiglu_bwd", du, d_du, n);
        gpu->swiglu_bwd(n, d_g, d_u, dx, d_g, d_u); /* in place, as the workspace runs it */
        cmp("swiglu_bwd", dg, d_g, n); cmp("swiglu_bwd", du, d_u, n);
        free(g); free(u); free(mm); free(dg); free(du);
        gpu->free(d_g); gpu->free(d_u); gpu->free(d_m); gpu->free(d_dg); gpu->free(d_du);
    }
    /* adamw, two steps */
    {
        float *p = rnd(n, 1), *g = rnd(n, 1), *mo = tt_xcalloc(n, 4), *ve = tt_xcalloc(n, 4);
        float *d_p = up(p, n), *d_g = up(g, n), *d_m = up(mo, n), *d_v = up(ve, n);
        for (int st = 1; st <= 2; st++) {
            cpu->adamw(n, p, g, mo, ve, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, st);
            gpu->adamw(n, d_p, d_g, d_m, d_v, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, st);
        }
        cmp("adamw", p, d_p, n);
        free(p); free(g); free(mo); free(ve); gpu->free(d_p); gpu->free(d_g); gpu->free(d_m); gpu->free(d_v);
    }
    free(x); free(y); free(m); gpu->free(dx); gpu->free(dy); gpu->free(dm);
}

/* NF4 with and without double quantization: bit-exact. */
static void t_dequant(size_t nn) {
    for (int dq = 0; dq < 2; dq++) {
        float *v = rnd(nn, 0.1), *ref = tt_xmalloc(nn * sizeof *ref);
        nf4_layout L;
        nf4_layout_of(nn, dq, &L);
        uint8_t *blob = tt_xcalloc(1, L.total);
        nf4_quantize_tensor(v, nn, dq, blob);
        cpu->dequant(dq ? 4 : 3, blob, nn, 0, nn, ref);
        void *dblob = gpu->alloc(L.total);
        gpu->to_device(dblob, blob, L.total);
        float *out = gpu->alloc(nn * sizeof(float));
        poison(out, nn);
        gpu->dequant(dq ? 4 : 3, dblob, nn, 0, nn, out);
        cmp("dequant", ref, out, nn);
        /* a range: from the second NF4 block to 17 values before the end */
        size_t v0 = 64, k = nn - 64 - 17;
        poison(out, k);
        gpu->dequant(dq ? 4 : 3, dblob, nn, v0, k, out);
        cmp("dequant", ref + v0, out, k);
        free(v); free(ref); free(blob); gpu->free(dblob); gpu->free(out);
    }
}

/* linear with a stored NF4 (double-quant) weight: a row block, both directions, against the CPU */
static void t_linear(int rows, int in, int out) {
    size_t nn = (size_t)out * in;
    int o0 = 64, n = out - 64 - 32; /* o0 * in: whole NF4 blocks */
    float *v = rnd(nn, 0.1), *x = rnd((size_t)rows * in, 1), *dy = rnd((size_t)rows * out, 1);
    nf4_layout L;
    nf4_layout_of(nn, 1, &L);
    uint8_t *blob = tt_xcalloc(1, L.total);
    nf4_quantize_tensor(v, nn, 1, blob);
    void *dblob = gpu->alloc(L.total);
    gpu->to_device(dblob, blob, L.total);
    float *sc = tt_xmalloc((size_t)n * in * 4), *d_sc = gpu->alloc((size_t)n * in * 4);
    float *y = tt_xcalloc((size_t)rows * out, 4), *dx = rnd((size_t)rows * in, 2);
    float *d_x = up(x, (size_t)rows * in), *d_dy = up(dy, (size_t)rows * out), *d_y = up(y, (size_t)rows * out),
          *d_dx = up(dx, (size_t)rows * in);
    cpu->linear(0, rows, in, n, x, in, 4 /* NF4DQ */, blob, out, o0, sc, 0, y + o0, out);
    gpu->linear(0, rows, in, n, d_x, in, 4, dblob, out, o0, d_sc, 0, d_y + o0, out);
    cmp("gemm", y, d_y, (size_t)rows * out);
    cpu->linear(1, rows, in, n, dy + o0, out, 4 /* NF4DQ */, blob, out, o0, sc, 1, dx, in);
    gpu->linear(1, rows, in, n, d_dy + o0, out, 4, dblob, out, o0, d_sc, 1, d_dx, in);
    cmp("gemm", dx, d_dx, (size_t)rows * in);
    free(v); free(x); free(dy); free(blob); free(sc); free(y); free(dx);
    gpu->free(dblob); gpu->free(d_sc); gpu->free(d_x); gpu->free(d_dy); gpu->free(d_y); gpu->free(d_dx);
}

/* queues and events: a copy on its own (non-blocking) stream, an event, the
 * compute queue waiting for it, an op after it — the op must see the copy */
static void t_async(size_t n) {
    float *h = gpu->host_alloc_pinned(n * 4), *back = tt_xmalloc(n * 4), *src = rnd(n, 1);
    memcpy(h, src, n * 4);
    float *d = gpu->alloc(n * 4);
    tt_queue *q = gpu->queue_new();
    tt_event *ev = gpu->event_new();
    gpu->copy_async(d, h, n * 4, BE_H2D, q);
    gpu->event_record(ev, q);
    gpu->queue_wait(NULL, ev);
    gpu->scale(n, 2.f, d);
    gpu->to_host(back, d, n * 4);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= back[i] == 2.f * src[i];
    CHECK_MSG(ok, "an op after queue_wait did not see the copy on the other queue");
    gpu->event_sync(ev);
    CHECK(gpu->event_query(ev) == 1);
    gpu->queue_free(q);
    gpu->event_free(ev);
    gpu->free(d);
    gpu->host_free_pinned(h);
    free(back); free(src);
}

static void t_rmsnorm(int T, int C) {
    float *xx = rnd((size_t)T * C, 1), *w = rnd(C, 1), *g = rnd((size_t)T * C, 1);
    float *yr = tt_xmalloc(sizeof(float) * T * C), *rs = tt_xmalloc(sizeof(float) * T), *dxr = rnd((size_t)T * C, 1);
    float *dxx = up(xx, (size_t)T * C), *dw = up(w, C), *dg = up(g, (size_t)T * C), *dyy = up(xx, (size_t)T * C);
    float *drs = up(rs, T), *ddx = up(dxr, (size_t)T * C);
    cpu->rmsnorm_fwd(T, C, xx, w, 1e-5f, yr, rs);
    poison(dyy, (size_t)T * C); poison(drs, T);
    gpu->rmsnorm_fwd(T, C, dxx, dw, 1e-5f, dyy, drs);
    cmp("rmsnorm_fwd", yr, dyy, (size_t)T * C);
    cpu->rmsnorm_bwd(T, C, xx, w, rs, g, dxr, 1);
    gpu->rmsnorm_bwd(T, C, dxx, dw, drs, dg, ddx, 1);
    cmp("rmsnorm_bwd", dxr, ddx, (size_t)T * C);
    float *gw = rnd(C, 1), *dgw = up(gw, C); /* accumulates into existing values */
    cpu->rmsnorm_bwd_w(T, C, xx, rs, g, gw);
    gpu->rmsnorm_bwd_w(T, C, dxx, drs, dg, dgw);
    cmp("rmsnorm_bwd_w", gw, dgw, C);
    free(gw); gpu->free(dgw);
    free(xx); free(w); free(g); free(yr); free(rs); free(dxr);
    gpu->free(dxx); gpu->free(dw); gpu->free(dg); gpu->free(dyy); gpu->free(drs); gpu->free(ddx);
}

/* rope forward and inverse; tables real (theta) when theta > 0, else random. */
static void t_rope(int seq, int T, int nh, int hd, double theta) {
    size_t nt = (size_t)seq * hd / 2;
    float *cs = rnd(nt, 1), *sn = rnd(nt, 1), *q = rnd((size_t)T * nh * hd, 1);
    if (theta > 0)
        for (int t = 0; t < seq; t++)
            for (int i = 0; i < hd / 2; i++) {
                double a = t * pow(theta, -2.0 * i / hd);
                cs[(size_t)t * hd / 2 + i] = (float)cos(a);
                sn[(size_t)t * hd / 2 + i] = (float)sin(a);
            }
    float *dcs = up(cs, nt), *dsn = up(sn, nt), *dq = up(q, (size_t)T * nh * hd);
    for (int inv = 0; inv < 2; inv++) {
        cpu->rope(T, seq, nh, hd, cs, sn, q, inv);
        gpu->rope(T, seq, nh, hd, dcs, dsn, dq, inv);
        cmp("rope", q, dq, (size_t)T * nh * hd);
    }
    free(cs); free(sn); free(q); gpu->free(dcs); gpu->free(dsn); gpu->free(dq);
}

/* causal GQA attention forward (out, lse) and backward (dq, dk, dv). */
static void t_attn(int B, int seq, int nh, int nkv, int hd) {
    int T = B * seq;
    size_t nq = (size_t)T * nh * hd, nk = (size_t)T * nkv * hd;
    float *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nk, 1), *dout = rnd(nq, 1);
    float *o = tt_xmalloc(nq * 4), *lse = tt_xmalloc((size_t)T * nh * 4), *gq = tt_xmalloc(nq * 4),
          *gk = tt_xmalloc(nk * 4), *gv = tt_xmalloc(nk * 4);
    float *d_q = up(q, nq), *d_k = up(k, nk), *d_v = up(v, nk), *d_do = up(dout, nq);
    float *d_o = gpu->alloc(nq * 4), *d_l = gpu->alloc((size_t)T * nh * 4), *d_gq = gpu->alloc(nq * 4),
          *d_gk = gpu->alloc(nk * 4), *d_gv = gpu->alloc(nk * 4);
    poison(d_o, nq); poison(d_l, (size_t)T * nh); poison(d_gq, nq); poison(d_gk, nk); poison(d_gv, nk);
    cpu->attn_fwd(B, seq, nh, nkv, hd, q, k, v, o, lse);
    gpu->attn_fwd(B, seq, nh, nkv, hd, d_q, d_k, d_v, d_o, d_l);
    cmp("attn_fwd", o, d_o, nq);
    cmp("attn_fwd", lse, d_l, (size_t)T * nh);
    cpu->attn_bwd(B, seq, nh, nkv, hd, q, k, v, o, lse, dout, gq, gk, gv);
    gpu->attn_bwd(B, seq, nh, nkv, hd, d_q, d_k, d_v, d_o, d_l, d_do, d_gq, d_gk, d_gv);
    cmp("attn_bwd", gq, d_gq, nq);
    cmp("attn_bwd", gk, d_gk, nk);
    cmp("attn_bwd", gv, d_gv, nk);
    free(q); free(k); free(v); free(dout); free(o); free(lse); free(gq); free(gk); free(gv);
    gpu->free(d_q); gpu->free(d_k); gpu->free(d_v); gpu->free(d_do); gpu->free(d_o); gpu->free(d_l);
    gpu->free(d_gq); gpu->free(d_gk); gpu->free(d_gv);
}

/* cross-entropy with an ignored row (target -1) and a masked one (weight 0) */
static void t_xent(int R, int V) {
    float *lg = rnd((size_t)R * V, 3), *w = tt_xmalloc((size_t)R * 4);
    int32_t *tg = tt_xmalloc((size_t)R * sizeof *tg);
    for (int r = 0; r < R; r++) { tg[r] = r == 4 ? -1 : (int32_t)(((int64_t)r * 7919 + 31) % V); w[r] = r == 7 ? 0.f : 1.f; }
    float *d_lg = up(lg, (size_t)R * V), *d_w = up(w, (size_t)R);
    int32_t *d_tg = gpu->alloc((size_t)R * sizeof *tg);
    gpu->to_device(d_tg, tg, (size_t)R * sizeof *tg);
    double l1 = 0, l2 = 0, *d_acc = gpu->alloc(sizeof(double));
    cpu->xent(R, V, lg, tg, w, 0.25f, &l1);
    gpu->xent(R, V, d_lg, d_tg, d_w, 0.25f, d_acc);
    gpu->to_host(&l2, d_acc, sizeof l2);
    gpu->free(d_w); gpu->free(d_tg); gpu->free(d_acc);
    CHECK_MSG(fabs(l1 - l2) <= tol_of("xent") * fabs(l1), "xent loss %.9g vs %.9g", l1, l2);
    cmp("xent", lg, d_lg, (size_t)R * V);
    free(lg); free(w); free(tg); gpu->free(d_lg);
}

int main(int argc, char **argv) {
    int real = argc > 1 && strcmp(argv[1], "--real") == 0;
    if (argc > 1 && !real) {
        fprintf(stderr, "usage: test_cuda_ops [--real]\n");
        return 2;
    }
    gpu = be_by_name("cuda");
    if (!gpu) TEST_SKIP("%s", tt_lasterr());
    cpu = backend_cpu();
    rng_seed(&rng, 3, 4);
    fprintf(stderr, "-- small shapes\n");
    t_gemm(37, 53, 96, 1);
    t_elementwise(10007);
    t_dequant(64 * 300 + 17);
    t_linear(33, 128, 320);
    t_async((size_t)1 << 22);
    t_rmsnorm(9, 96);
    t_rope(7, 14, 3, 8, 0);
    t_attn(2, 40, 4, 2, 16);
    t_xent(13, 257);
    if (real) {
        g_real = 1;
        fprintf(stderr, "-- real shapes: linear 2048 x 4096 x 4096 (every transpose)\n");
        t_gemm(2048, 4096, 4096, 1);
        fprintf(stderr, "-- pruned 70B gate/up (2048 x 8192 -> 4300) and down (4300 -> 8192)\n");
        t_gemm(2048, 4300, 8192, 0);
        t_gemm(2048, 8192, 4300, 0);
        fprintf(stderr, "-- NF4 weights 14336 x 4096 and 4300 x 8192\n");
        t_dequant((size_t)14336 * 4096);
        t_dequant((size_t)4300 * 8192);
        fprintf(stderr, "-- element-wise on 2048 x 14336\n");
        t_elementwise((size_t)2048 * 14336);
        fprintf(stderr, "-- rmsnorm 2048 x 8192, rope seq 4096 x 32 heads x 128 (theta 500000)\n");
        t_rmsnorm(2048, 8192);
        t_rope(4096, 4096, 32, 128, 500000.0);
        fprintf(stderr, "-- attention seq 4096, head_dim 128, GQA 16:2\n");
        t_attn(1, 4096, 16, 2, 128);
        fprintf(stderr, "-- cross-entropy 256 rows x vocab 128256\n");
        t_xent(256, 128256);
    }
    TEST_END();
}

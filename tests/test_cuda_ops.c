/* tests/test_cuda_ops.c — every CUDA op against the CPU reference, with a
 * per-op tolerance kept in one table (STYLE.md 9). Skips (exit 77) when the
 * CUDA backend is not built or no GPU can be used.
 *
 * Without arguments: small shapes (odd sizes, partial blocks; seconds).
 * With --real: the same ops at the reference models' shapes as well —
 * llama3.1-8b projections (2048 tokens x 4096 x 4096, 14336 x 4096 NF4), the
 * pruned 70B's odd ffn (4300), attention at seq 4096 / head_dim 128 / GQA
 * 16:2, cross-entropy over vocab 128256 — with outputs poisoned (NaN) before
 * each GPU call so an unwritten element fails. Every op runs twice: with
 * fp32 activations, then with bf16 ones (the GPU's bf16 results against the
 * CPU's fp32 ones on the same bf16 inputs). tools/gpu_check.sh runs this. */
#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "core/base/rng.h"
#include "kernels/backend.h"
#include "tests/test.h"

#include <math.h>
#include <string.h>

/* Tolerances (each case of the table at the end carries its own), fp32 on
 * both sides first (the GPU reorders sums: block reductions, cuBLAS tiles):
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
 *    terms, whose relative error does not grow with length.
 *  - bf16 activations (the second pass): inputs are bf16 values on both
 *    sides, the CPU computes in fp32 and keeps fp32, the GPU rounds its
 *    output to bf16 (at most 2^-8 relative, 2^-9 on average) — and, in
 *    attention, its P and dS before their products (as flash kernels do).
 *    Element-wise: 8e-3 (two roundings' worth); norm-wise: 4e-3 (an output
 *    rounding is ~2^-9 / sqrt(3) = 1.1e-3 norm-wise); attention more.
 *    Outputs that stay fp32 in the bf16 pass (lse, rstd, a norm weight's
 *    gradient, a LoRA gradient's product, the loss) take the fp32 tolerance. */
typedef struct op_case {
    const char *op;               /* the ops the case runs */
    void (*run)(const int *s);
    int s[5];                     /* its shape arguments */
    const char *shape;            /* in words */
    int real;                     /* 1: --real only (norm-wise tolerances, outputs poisoned) */
    double tol, tol_bf16;         /* fp32 outputs / bf16 outputs (the bf16 pass) */
} op_case;
static const op_case *g_case;     /* the case running */
static int g_real;                /* its norm-wise comparisons */
static int g_dt;                  /* the activations' type in this pass: BE_REAL, then BE_BF16 */

/* The running case's tolerance for an output of type dt. */
static double tol_for(int dt) { return dt == BE_BF16 ? g_case->tol_bf16 : g_case->tol; }

static const tt_backend *cpu, *gpu;
static tt_rng rng;

static float bf16_round(float f) { return bf16_to_f32(f32_to_bf16(f)); }

/* n random values; in the bf16 pass bf16 values, so both sides read the same inputs. */
static float *rnd(size_t n, double scale) {
    float *x = tt_xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(scale * rng_normal(&rng));
        if (g_dt == BE_BF16) x[i] = bf16_round(x[i]);
    }
    return x;
}
/* Device copies: up_real of fp32 values (weights, tables, loss weights);
 * up / act of activations (the pass's type). */
static float *up_real(const float *h, size_t n) {
    float *d = gpu->alloc(n * sizeof *d);
    gpu->to_device(d, h, n * sizeof *d);
    return d;
}
static void *act(size_t n) { return gpu->alloc(n * be_elem_size(g_dt)); }
static void *up(const float *h, size_t n) {
    if (g_dt == BE_REAL) return up_real(h, n);
    uint16_t *b = tt_xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) b[i] = f32_to_bf16(h[i]);
    void *d = act(n);
    gpu->to_device(d, b, n * 2);
    free(b);
    return d;
}
/* n values of type dt on the device, as floats on the host. */
static float *down(const void *dev, size_t n, int dt) {
    float *h = tt_xmalloc(n * sizeof *h);
    if (dt == BE_REAL) {
        gpu->to_host(h, dev, n * sizeof *h);
        return h;
    }
    uint16_t *b = tt_xmalloc(n * 2);
    gpu->to_host(b, dev, n * 2);
    for (size_t i = 0; i < n; i++) h[i] = bf16_to_f32(b[i]);
    free(b);
    return h;
}
/* --real: every byte 0xff first (NaN in fp32 and in bf16), so an unwritten element fails. */
static void poison_t(void *d, size_t n, int dt) {
    if (!g_real) return;
    size_t bytes = n * be_elem_size(dt);
    void *h = tt_xmalloc(bytes);
    memset(h, 0xff, bytes);
    gpu->to_device(d, h, bytes);
    free(h);
}
static void poison(void *d, size_t n) { poison_t(d, n, g_dt); }

/* h (n values of type dt, already on the host as floats) against ref, with
 * the running case's tolerance; one result line per call (tests/test_ops_table.sh
 * greps them). */
static void cmp_host(const char *op, const float *ref, const float *h, size_t n, int dt) {
    double worst = 0, d2 = 0, r2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)h[i] - ref[i], e = fabs(d) / fmax(1.0, fabs(ref[i]));
        if (!(e <= worst)) worst = e; /* NaN counts as the worst */
        d2 += d * d;
        r2 += (double)ref[i] * ref[i];
    }
    double normwise = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
    if (normwise != normwise || worst != worst) normwise = worst = INFINITY; /* NaN: unwritten or broken */
    double got = g_real ? normwise : worst, tol = tol_for(dt);
    const char *what = g_real ? "norm-wise relative error" : "worst relative error";
    const char *pass = g_dt == BE_BF16 ? "bf16" : "fp32";
    CHECK_MSG(got <= tol, "%s (%s pass, %s): %s %.3g > %.3g", op, pass, g_case->shape, what, got, tol);
    fprintf(stderr, "%-13s %s %-22s %s %.3g (tolerance %.3g; worst element %.3g)\n", op, pass, g_case->shape, what,
            got, tol, worst);
}
static void cmp_t(const char *op, const float *ref, const void *dev, size_t n, int dt) {
    float *h = down(dev, n, dt);
    cmp_host(op, ref, h, n, dt);
    free(h);
}

/* An activation output (the pass's type) / an fp32 output. */
static void cmp(const char *op, const float *ref, const void *dev, size_t n) { cmp_t(op, ref, dev, n, g_dt); }
static void cmp_real(const char *op, const float *ref, const void *dev, size_t n) { cmp_t(op, ref, dev, n, BE_REAL); }

/* C = 0.5 op(A) op(B) + C, every transpose pair; the CPU reference in fp32
 * on the same values. The bf16 pass adds the mixed products the LoRA path
 * runs: bf16 x fp32 -> bf16 and fp32 x bf16 -> bf16 (the fp32 factor rounded
 * to bf16 first, the rule of backend.h; in slices where it is larger than
 * the backend's conversion buffer) and bf16 x bf16 -> fp32 (a LoRA
 * gradient). GEMM_MIXED: the mixed product with the larger operand in fp32
 * alone, read either way (the slicing cases: each product costs the emulated
 * GPU seconds). */
enum { GEMM_ALL_T = 1, GEMM_MIXED = 2 };

/* C0 + 0.5 op(A) op(B) on the CPU from A, B (fp32) and the device's product
 * from dA (type at), dB (type bt), compared. */
static void gemm_cmp(int ta, int tb, int M, int N, int K, const float *A, const float *B, const float *C0,
                     const void *dA, int at, const void *dB, int bt, int ct) {
    const int R = BE_REAL, lda = ta ? M : K, ldb = tb ? K : N;
    float *C = tt_xmalloc((size_t)M * N * 4);
    memcpy(C, C0, (size_t)M * N * 4);
    void *dC = ct == R ? (void *)up_real(C0, (size_t)M * N) : up(C0, (size_t)M * N);
    cpu->gemm(ta, tb, M, N, K, 0.5f, A, R, lda, B, R, ldb, 1, C, R, N);
    gpu->gemm(ta, tb, M, N, K, 0.5f, dA, at, lda, dB, bt, ldb, 1, dC, ct, N);
    if (ct == R) cmp_real(g_dt == BE_BF16 ? "gemm_to_f32" : "gemm", C, dC, (size_t)M * N);
    else cmp("gemm", C, dC, (size_t)M * N);
    free(C);
    gpu->free(dC);
}

/* An fp32 operand that is not a bf16 value (x 1.001) on the device, and the
 * bf16 values the op rounds it to, in *rounded. */
static float *fp32_operand(const float *x, size_t n, float **rounded) {
    float *f = tt_xmalloc(n * 4), *r = tt_xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        f[i] = x[i] * 1.001f;
        r[i] = bf16_round(f[i]);
    }
    float *d = up_real(f, n);
    free(f);
    *rounded = r;
    return d;
}

static void t_gemm(int M, int N, int K, int how) {
    const int R = BE_REAL;
    if ((how & GEMM_MIXED) && g_dt != BE_BF16) return; /* mixed products are the bf16 pass's */
    /* the same values for every transpose pair (each reads them its own way) */
    float *A = rnd((size_t)M * K, 1), *B = rnd((size_t)K * N, 1), *C0 = rnd((size_t)M * N, 1), *r;
    void *dA = up(A, (size_t)M * K), *dB = up(B, (size_t)K * N);
    const int big_a = (size_t)M * K > (size_t)K * N;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            if (!(how & GEMM_ALL_T) && !(ta == 0 && tb == 1)) continue;
            /* GEMM_MIXED: the fp32 operand's two ways of being read (its slices whole rows, or bands of columns) */
            if ((how & GEMM_MIXED) && (big_a ? tb != 1 : ta != 0)) continue;
            if (!(how & GEMM_MIXED)) gemm_cmp(ta, tb, M, N, K, A, B, C0, dA, g_dt, dB, g_dt, g_dt);
            if (g_dt == BE_BF16 && !(how & GEMM_MIXED)) /* bf16 x bf16 -> fp32 */
                gemm_cmp(ta, tb, M, N, K, A, B, C0, dA, g_dt, dB, g_dt, R);
            if (g_dt == BE_BF16 && (!(how & GEMM_MIXED) || !big_a)) { /* bf16 x fp32 -> bf16 */
                float *dBf = fp32_operand(B, (size_t)K * N, &r);
                gemm_cmp(ta, tb, M, N, K, A, r, C0, dA, g_dt, dBf, R, g_dt);
                free(r); gpu->free(dBf);
            }
            if (g_dt == BE_BF16 && (!(how & GEMM_MIXED) || big_a)) { /* fp32 x bf16 -> bf16 */
                float *dAf = fp32_operand(A, (size_t)M * K, &r);
                gemm_cmp(ta, tb, M, N, K, r, B, C0, dAf, R, dB, g_dt, g_dt);
                free(r); gpu->free(dAf);
            }
        }
    free(A); free(B); free(C0); gpu->free(dA); gpu->free(dB);
}

/* axpy, mask_scale, LoRA dropout and swiglu on n elements (the pass's type);
 * scale, sumsq and adamw (fp32 only; bit for bit, kernels/adamw.h) in the fp32 pass. */
static void t_elementwise(size_t n) {
    const int R = BE_REAL;
    float *x = rnd(n, 1), *y = rnd(n, 1), *m = rnd(n, 1);
    for (size_t i = 0; i < n; i++) m[i] = m[i] > 0;
    void *dx = up(x, n), *dy = up(y, n), *dm = up(m, n);
    cpu->axpy(n, 0.3f, x, y, R); gpu->axpy(n, 0.3f, dx, dy, g_dt); cmp("axpy", y, dy, n);
    if (g_dt == BE_REAL) {
        cpu->scale(n, 1.7f, y); gpu->scale(n, 1.7f, dy); cmp("scale", y, dy, n);
        double s1 = 0, s2 = 0, *d_acc = gpu->alloc(sizeof(double)); /* zeroed */
        cpu->sumsq(n, x, &s1);
        gpu->sumsq(n, dx, d_acc);
        gpu->to_host(&s2, d_acc, sizeof s2);
        CHECK_MSG(fabs(s1 - s2) <= tol_for(BE_REAL) * s1, "sumsq %.9g vs %.9g", s1, s2);
        gpu->free(d_acc);
    }
    poison(dy, n);
    cpu->mask_scale(n, x, m, 2.f, y, R); gpu->mask_scale(n, dx, dm, 2.f, dy, g_dt); cmp("mask_scale", y, dy, n);
    /* LoRA dropout, written and accumulated: the same generator and roundings, bit for bit (the CPU
     * reference on the device's own input bytes, in the pass's type); rows whose width is a multiple of
     * the kernel's four-column groups, and rows that end inside one */
    for (int odd = 0; odd < 2; odd++)
        for (int acc = 0; acc < 2; acc++) {
            int cols = (int)(n < 4096 ? n : 4096) - (odd && n > 3 ? 3 : 0), rows = (int)(n / (size_t)cols);
            size_t nm = (size_t)rows * cols, es = be_elem_size(g_dt);
            void *dxx = up(x, nm), *dyy = up(y, nm);
            char *hx = tt_xmalloc(nm * es), *hy = tt_xmalloc(nm * es), *back = tt_xmalloc(nm * es);
            gpu->to_host(hx, dxx, nm * es);
            gpu->to_host(hy, dyy, nm * es);
            cpu->dropout(rows, cols, 99, (uint64_t)5 << 32 | 17, 0.1f, 1 / 0.9f, hx, hy, acc, g_dt);
            gpu->dropout(rows, cols, 99, (uint64_t)5 << 32 | 17, 0.1f, 1 / 0.9f, dxx, dyy, acc, g_dt);
            gpu->to_host(back, dyy, nm * es);
            CHECK_MSG(memcmp(hy, back, nm * es) == 0, "dropout (%d x %d%s) differs from the CPU's", rows, cols,
                      acc ? ", accumulating" : "");
            free(hx); free(hy); free(back); gpu->free(dxx); gpu->free(dyy);
        }
    /* swiglu */
    {
        float *g = rnd(n, 2), *u = rnd(n, 1), *mm = tt_xmalloc(n * 4), *dg = tt_xmalloc(n * 4), *du = tt_xmalloc(n * 4);
        void *d_g = up(g, n), *d_u = up(u, n), *d_m = act(n), *d_dg = act(n), *d_du = act(n);
        poison(d_m, n); poison(d_dg, n); poison(d_du, n);
        cpu->swiglu_fwd(n, g, u, mm, R); gpu->swiglu_fwd(n, d_g, d_u, d_m, g_dt); cmp("swiglu_fwd", mm, d_m, n);
        cpu->swiglu_bwd(n, g, u, x, dg, du, R); gpu->swiglu_bwd(n, d_g, d_u, dx, d_dg, d_du, g_dt);
        cmp("swiglu_bwd", dg, d_dg, n); cmp("swiglu_bwd", du, d_du, n);
        gpu->swiglu_bwd(n, d_g, d_u, dx, d_g, d_u, g_dt); /* in place, as the workspace runs it */
        cmp("swiglu_bwd", dg, d_g, n); cmp("swiglu_bwd", du, d_u, n);
        free(g); free(u); free(mm); free(dg); free(du);
        gpu->free(d_g); gpu->free(d_u); gpu->free(d_m); gpu->free(d_dg); gpu->free(d_du);
    }
    /* bf16 buffers 16-byte aligned take 8 values a thread, others one: the same bits either way (a streamed run's
     * buffers may lie otherwise than a resident run's) */
    if (g_dt == BE_BF16) {
        float *g = rnd(n, 2), *u = rnd(n, 1);
        size_t nb = (n + 1) * 2;
        void *buf[6], *ali[3], *mis[3];
        for (int i = 0; i < 6; i++) buf[i] = act(n + 1);
        const float *src[3] = {g, u, x};
        for (int i = 0; i < 3; i++) { /* the same values at offsets 0 and 1 (2 bytes: never 16-byte aligned) */
            uint16_t *b = tt_xcalloc(n + 1, 2);
            for (size_t j = 0; j < n; j++) b[j] = f32_to_bf16(src[i][j]);
            gpu->to_device(buf[i], b, nb);
            memmove(b + 1, b, n * 2);
            gpu->to_device(buf[3 + i], b, nb);
            free(b);
            ali[i] = buf[i];
            mis[i] = be_at(buf[3 + i], 1, g_dt);
        }
        void *r1 = act(n), *r2 = act(n + 1), *m2 = be_at(r2, 1, g_dt);
        int same = 1;
        const char *what = "";
#define SAME_BITS(op)                                                                                  \
    do {                                                                                               \
        float *a_ = down(r1, n, g_dt), *b_ = down(m2, n, g_dt);                                        \
        if (same && memcmp(a_, b_, n * 4) != 0) { same = 0; what = op; }                              \
        free(a_); free(b_);                                                                            \
    } while (0)
        gpu->swiglu_fwd(n, ali[0], ali[1], r1, g_dt); gpu->swiglu_fwd(n, mis[0], mis[1], m2, g_dt);
        SAME_BITS("swiglu_fwd");
        gpu->copy(r1, ali[1], n * 2); gpu->copy(m2, mis[1], n * 2);
        gpu->axpy(n, 0.3f, ali[2], r1, g_dt); gpu->axpy(n, 0.3f, mis[2], m2, g_dt);
        SAME_BITS("axpy");
        gpu->swiglu_bwd(n, ali[0], ali[1], ali[2], ali[0], r1, g_dt); /* in place: dg over g */
        gpu->swiglu_bwd(n, mis[0], mis[1], mis[2], mis[0], m2, g_dt);
        SAME_BITS("swiglu_bwd du");
        gpu->copy(r1, ali[0], n * 2); gpu->copy(m2, mis[0], n * 2);
        SAME_BITS("swiglu_bwd dg");
#undef SAME_BITS
        CHECK_MSG(same, "%s: 16-byte aligned and unaligned bf16 buffers give other bits", what);
        free(g); free(u);
        for (int i = 0; i < 6; i++) gpu->free(buf[i]);
        gpu->free(r1); gpu->free(r2);
    }
    /* adamw, two steps */
    if (g_dt == BE_REAL) {
        float *p = rnd(n, 1), *g = rnd(n, 1), *mo = tt_xcalloc(n, 4), *ve = tt_xcalloc(n, 4);
        float *d_p = up_real(p, n), *d_g = up_real(g, n), *d_m = up_real(mo, n), *d_v = up_real(ve, n);
        for (int st = 1; st <= 2; st++) {
            cpu->adamw(n, p, g, mo, ve, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, st);
            gpu->adamw(n, d_p, d_g, d_m, d_v, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, st);
        }
        cmp("adamw", p, d_p, n);
        /* kernels/adamw.h: the same operations in double, never fused on the GPU: the CPU's bits */
        const float *host[3] = {p, mo, ve};
        const float *dev[3] = {d_p, d_m, d_v};
        for (int k = 0; k < 3; k++) {
            float *back = down(dev[k], n, BE_REAL);
            CHECK_MSG(memcmp(back, host[k], n * 4) == 0, "adamw's %s differs from the CPU's bits",
                      k == 0 ? "parameters" : k == 1 ? "first moment" : "second moment");
            free(back);
        }
        free(p); free(g); free(mo); free(ve); gpu->free(d_p); gpu->free(d_g); gpu->free(d_m); gpu->free(d_v);
    }
    free(x); free(y); free(m); gpu->free(dx); gpu->free(dy); gpu->free(dm);
}

/* bf16 stores round to nearest even: f32 values (ties, NaN, infinities)
 * through the dequant op into bf16, against core/base/dtype.h's rounding, bit
 * for bit (a NaN only as a NaN). */
static void t_bf16_rounding(size_t n) {
    float *a = tt_xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) a[i] = (float)(3 * rng_normal(&rng));
    a[0] = NAN; a[1] = INFINITY; a[2] = -INFINITY; a[3] = 1.00390625f; a[4] = 1.01171875f; /* ties: to even */
    float *d_a = up_real(a, n);
    uint16_t *d_b = gpu->alloc(n * 2), *hb = tt_xmalloc(n * 2);
    gpu->dequant(1 /* TT_DTYPE_F32 */, d_a, n, 0, n, d_b, BE_BF16);
    gpu->to_host(hb, d_b, n * 2);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t want = f32_to_bf16(a[i]);
        if (a[i] != a[i]) bad += (hb[i] & 0x7fff) <= 0x7f80; /* a NaN must stay a NaN */
        else bad += hb[i] != want;
    }
    CHECK_MSG(bad == 0, "bf16 rounding: %zu of %zu values differ from the CPU's f32_to_bf16", bad, n);
    free(a); free(hb); gpu->free(d_a); gpu->free(d_b);
}

/* NF4 with and without double quantization: bit-exact (in the bf16 pass:
 * the CPU's fp32 values rounded, against the GPU's bf16 output). */
static void t_dequant(size_t nn) {
    for (int dq = 0; dq < 2; dq++) {
        float *v = rnd(nn, 0.1), *ref = tt_xmalloc(nn * sizeof *ref);
        nf4_layout L;
        nf4_layout_of(nn, dq, &L);
        uint8_t *blob = tt_xcalloc(1, L.total);
        nf4_quantize_tensor(v, nn, dq, blob);
        cpu->dequant(dq ? 4 : 3, blob, nn, 0, nn, ref, BE_REAL);
        if (g_dt == BE_BF16)
            for (size_t i = 0; i < nn; i++) ref[i] = bf16_round(ref[i]);
        void *dblob = gpu->alloc(L.total);
        gpu->to_device(dblob, blob, L.total);
        void *out = act(nn);
        poison(out, nn);
        gpu->dequant(dq ? 4 : 3, dblob, nn, 0, nn, out, g_dt);
        cmp("dequant", ref, out, nn);
        /* a range: from the second NF4 block to 17 values before the end */
        size_t v0 = 64, k = nn - 64 - 17;
        poison(out, k);
        gpu->dequant(dq ? 4 : 3, dblob, nn, v0, k, out, g_dt);
        cmp("dequant", ref + v0, out, k);
        free(v); free(ref); free(blob); gpu->free(dblob); gpu->free(out);
    }
}

/* linear with a stored NF4 (double-quant) weight, or a bf16 one (a bf16
 * store's layers, a bf16 lm_head: the GPU multiplies a block whose rows need
 * no padding where it lies), a row block, both directions, against the CPU
 * (which computes in fp32 on the same inputs; in the bf16 pass its scratch
 * holds the weights rounded to bf16 too). */
static void t_linear(int rows, int in, int out, uint32_t dtype) {
    size_t nn = (size_t)out * in;
    int o0 = 64, n = out - 64 - 32; /* o0 * in: whole NF4 blocks */
    float *v = rnd(nn, 0.1), *x = rnd((size_t)rows * in, 1), *dy = rnd((size_t)rows * out, 1);
    size_t total;
    uint8_t *blob;
    if (dtype == TT_DTYPE_BF16) {
        total = nn * 2;
        blob = tt_xmalloc(total);
        for (size_t i = 0; i < nn; i++) ((uint16_t *)blob)[i] = f32_to_bf16(v[i]);
    } else {
        nf4_layout L;
        nf4_layout_of(nn, 1, &L);
        total = L.total;
        blob = tt_xcalloc(1, total);
        nf4_quantize_tensor(v, nn, 1, blob);
    }
    void *dblob = gpu->alloc(total);
    gpu->to_device(dblob, blob, total);
    /* the CPU side in the pass's type too: its scratch then rounds the weights like the GPU's */
    size_t es = be_elem_size(g_dt);
    /* the scratch the op takes: n rows of be_row_pad(in) (the GPU pads a row to 16 bytes) */
    void *sc = tt_xmalloc((size_t)n * be_row_pad((size_t)in) * es), *d_sc = act((size_t)n * be_row_pad((size_t)in));
    float *y = tt_xcalloc((size_t)rows * out, 4), *dx = rnd((size_t)rows * in, 2);
    void *d_x = up(x, (size_t)rows * in), *d_dy = up(dy, (size_t)rows * out), *d_y = up(y, (size_t)rows * out),
         *d_dx = up(dx, (size_t)rows * in);
    float *wr = tt_xmalloc((size_t)n * in * 4); /* the block as the CPU's scratch holds it, in fp32 */
    cpu->dequant(dtype, blob, nn, (size_t)o0 * in, (size_t)n * in, wr, BE_REAL);
    if (g_dt == BE_BF16)
        for (size_t i = 0; i < (size_t)n * in; i++) wr[i] = bf16_round(wr[i]);
    cpu->gemm(0, 1, rows, n, in, 1, x, BE_REAL, in, wr, BE_REAL, in, 0, y + o0, BE_REAL, out);
    gpu->linear(0, rows, in, n, d_x, in, dtype, dblob, out, o0, d_sc, 0, be_at(d_y, o0, g_dt), out, g_dt);
    cmp("gemm", y, d_y, (size_t)rows * out);
    cpu->gemm(0, 0, rows, in, n, 1, dy + o0, BE_REAL, out, wr, BE_REAL, in, 1, dx, BE_REAL, in);
    gpu->linear(1, rows, in, n, be_at(d_dy, o0, g_dt), out, dtype, dblob, out, o0, d_sc, 1, d_dx, in, g_dt);
    cmp("gemm", dx, d_dx, (size_t)rows * in);
    /* the CPU's own linear op gives the same composition */
    float *y2 = tt_xcalloc((size_t)rows * out, 4);
    if (g_dt == BE_REAL) {
        cpu->linear(0, rows, in, n, x, in, dtype, blob, out, o0, sc, 0, y2 + o0, out, BE_REAL);
        CHECK_MSG(memcmp(y2, y, (size_t)rows * out * 4) == 0, "the CPU's linear differs from dequant + gemm");
    }
    free(v); free(x); free(dy); free(blob); free(sc); free(y); free(y2); free(dx); free(wr);
    gpu->free(dblob); gpu->free(d_sc); gpu->free(d_x); gpu->free(d_dy); gpu->free(d_y); gpu->free(d_dx);
}

/* queues and events: a copy on its own (non-blocking) stream, an event, the
 * compute queue waiting for it, an op after it — the op must see the copy */
static void t_async(size_t n) {
    /* pinned where the backend has it (cpu-async, the self-check's device, has not) */
    float *h = gpu->host_alloc_pinned ? gpu->host_alloc_pinned(n * 4) : tt_xmalloc(n * 4);
    float *back = tt_xmalloc(n * 4), *src = rnd(n, 1);
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
    if (gpu->host_free_pinned) gpu->host_free_pinned(h);
    else free(h);
    free(back); free(src);
}

static void t_rmsnorm(int T, int C) {
    const int R = BE_REAL;
    size_t TC = (size_t)T * C;
    float *xx = rnd(TC, 1), *w = rnd(C, 1), *g = rnd(TC, 1);
    float *yr = tt_xmalloc(sizeof(float) * TC), *rs = tt_xmalloc(sizeof(float) * T), *dxr = rnd(TC, 1);
    void *dxx = up(xx, TC), *dg = up(g, TC), *dyy = act(TC), *ddx = up(dxr, TC);
    float *dw = up_real(w, C), *drs = up_real(rs, T);
    cpu->rmsnorm_fwd(T, C, xx, w, 1e-5f, yr, rs, R);
    poison(dyy, TC); poison_t(drs, T, R);
    gpu->rmsnorm_fwd(T, C, dxx, dw, 1e-5f, dyy, drs, g_dt);
    cmp("rmsnorm_fwd", yr, dyy, TC);
    cmp_real("rstd", rs, drs, T);
    cpu->rmsnorm_bwd(T, C, xx, w, rs, g, dxr, 1, R);
    gpu->rmsnorm_bwd(T, C, dxx, dw, drs, dg, ddx, 1, g_dt);
    cmp("rmsnorm_bwd", dxr, ddx, TC);
    float *gw = rnd(C, 1), *dgw = up_real(gw, C); /* accumulates into existing values */
    cpu->rmsnorm_bwd_w(T, C, xx, rs, g, gw, R);
    gpu->rmsnorm_bwd_w(T, C, dxx, drs, dg, dgw, g_dt);
    cmp_real("rmsnorm_bwd_w", gw, dgw, C);
    free(gw); gpu->free(dgw);
    free(xx); free(w); free(g); free(yr); free(rs); free(dxr);
    gpu->free(dxx); gpu->free(dw); gpu->free(dg); gpu->free(dyy); gpu->free(drs); gpu->free(ddx);
}

/* rope forward and inverse; tables real (theta) when theta > 0, else random.
 * The bf16 pass compares each direction from the same (bf16) input. */
static void t_rope(int seq, int T, int nh, int hd, double theta) {
    size_t nt = (size_t)seq * hd / 2, nq = (size_t)T * nh * hd;
    float *cs = rnd(nt, 1), *sn = rnd(nt, 1), *q = rnd(nq, 1);
    if (theta > 0)
        for (int t = 0; t < seq; t++)
            for (int i = 0; i < hd / 2; i++) {
                double a = t * pow(theta, -2.0 * i / hd);
                cs[(size_t)t * hd / 2 + i] = (float)cos(a);
                sn[(size_t)t * hd / 2 + i] = (float)sin(a);
            }
    float *dcs = up_real(cs, nt), *dsn = up_real(sn, nt);
    for (int inv = 0; inv < 2; inv++) {
        float *qi = tt_xmalloc(nq * 4);
        memcpy(qi, q, nq * 4);
        void *dq = up(qi, nq);
        cpu->rope(T, seq, nh, hd, cs, sn, qi, inv, NULL, BE_REAL);
        gpu->rope(T, seq, nh, hd, dcs, dsn, dq, inv, NULL, g_dt);
        cmp("rope", qi, dq, nq);
        free(qi); gpu->free(dq);
    }
    free(cs); free(sn); free(q); gpu->free(dcs); gpu->free(dsn);
}

/* causal GQA attention forward (out, lse) and backward (dq, dk, dv); the
 * backward's inputs are the CPU's forward outputs (rounded in the bf16 pass).
 * packed: every sequence holds examples of 37 rows (the last shorter), so no
 * attention may cross the 37-row boundaries (seg, as both backends take it). */
static void t_attn_seg(int B, int seq, int nh, int nkv, int hd, int packed) {
    const int R = BE_REAL;
    int T = B * seq;
    size_t nq = (size_t)T * nh * hd, nk = (size_t)T * nkv * hd, nl = (size_t)T * nh;
    float *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nk, 1), *dout = rnd(nq, 1);
    float *o = tt_xmalloc(nq * 4), *lse = tt_xmalloc(nl * 4), *gq = tt_xmalloc(nq * 4), *gk = tt_xmalloc(nk * 4),
          *gv = tt_xmalloc(nk * 4);
    void *d_q = up(q, nq), *d_k = up(k, nk), *d_v = up(v, nk), *d_do = up(dout, nq);
    void *d_o = act(nq), *d_gq = act(nq), *d_gk = act(nk), *d_gv = act(nk);
    float *d_l = gpu->alloc(nl * 4);
    poison(d_o, nq); poison_t(d_l, nl, R); poison(d_gq, nq); poison(d_gk, nk); poison(d_gv, nk);
    int32_t *seg = NULL, *d_seg = NULL;
    if (packed) {
        seg = tt_xmalloc((size_t)T * sizeof *seg);
        for (int t = 0; t < T; t++) seg[t] = (t % seq) / 37 * 37;
        d_seg = gpu->alloc((size_t)T * sizeof *seg);
        gpu->to_device(d_seg, seg, (size_t)T * sizeof *seg);
    }
    void *sc = tt_xmalloc(cpu->attn_scratch_bytes(B, seq, nh, nkv, hd, R) + 1);
    void *d_sc = gpu->alloc(gpu->attn_scratch_bytes(B, seq, nh, nkv, hd, g_dt) + 1);
    cpu->attn_fwd(B, seq, nh, nkv, hd, q, k, v, o, lse, seg, sc, R);
    gpu->attn_fwd(B, seq, nh, nkv, hd, d_q, d_k, d_v, d_o, d_l, d_seg, d_sc, g_dt);
    cmp("attn_fwd", o, d_o, nq);
    cmp_real("lse", lse, d_l, nl);
    if (g_dt == BE_BF16) /* the backward from the same inputs on both sides */
        for (size_t i = 0; i < nq; i++) o[i] = bf16_round(o[i]);
    void *d_o2 = up(o, nq);
    float *d_l2 = up_real(lse, nl);
    cpu->attn_bwd(B, seq, nh, nkv, hd, q, k, v, o, lse, dout, gq, gk, gv, seg, sc, R);
    gpu->attn_bwd(B, seq, nh, nkv, hd, d_q, d_k, d_v, d_o2, d_l2, d_do, d_gq, d_gk, d_gv, d_seg, d_sc, g_dt);
    free(sc); gpu->free(d_sc);
    cmp("attn_bwd", gq, d_gq, nq);
    cmp("attn_bwd", gk, d_gk, nk);
    cmp("attn_bwd", gv, d_gv, nk);
    free(q); free(k); free(v); free(dout); free(o); free(lse); free(gq); free(gk); free(gv);
    gpu->free(d_q); gpu->free(d_k); gpu->free(d_v); gpu->free(d_do); gpu->free(d_o); gpu->free(d_l);
    gpu->free(d_o2); gpu->free(d_l2); gpu->free(d_gq); gpu->free(d_gk); gpu->free(d_gv);
    free(seg);
    if (d_seg) gpu->free(d_seg);
}
static void t_attn(int B, int seq, int nh, int nkv, int hd) {
    t_attn_seg(B, seq, nh, nkv, hd, 0);
    t_attn_seg(B, seq, nh, nkv, hd, 1);
}

/* B sequences' KV caches kc/vc (B, cap, nkv*hd): rows pos[b] + n .. cap - 1 of
 * sequence b, after its last query's position, set to 0xff bytes (NaN, as
 * poison_t writes, in fp32 and once uploaded in bf16), so that a kernel which
 * reads one of them fails (its output turns NaN). */
static void poison_kv_tail(float *kc, float *vc, int B, int n, int cap, const int32_t *pos, size_t ks) {
    for (int b = 0; b < B; b++) {
        size_t r0 = (size_t)b * cap + (size_t)pos[b] + (size_t)n, rows = (size_t)cap - (size_t)pos[b] - (size_t)n;
        memset(kc + r0 * ks, 0xff, rows * ks * sizeof *kc);
        memset(vc + r0 * ks, 0xff, rows * ks * sizeof *vc);
    }
}

/* attention of n new query rows per sequence against a KV cache (attn_kv:
 * n = 1 is a decoding step, n > 1 a prefill chunk), GQA, B = 3 sequences at
 * positions 0, cap - n (its rows fill the cache to the last one: a read one
 * row past it lands in the next sequence's keys) and 5. The cache rows after
 * each sequence's last position hold NaN on both sides (poison_kv_tail); the
 * rows of the chunk after a query's own position hold real keys, so a kernel
 * ignoring causality within the chunk fails too. q (B*n, nh*hd), kc/vc
 * (B, cap, nkv*hd), pos (B) int32, out (B*n, nh*hd). */
static void t_attn_kv(int n, int cap, int nh, int nkv, int hd) {
    enum { B = 3 };
    const int32_t pos[B] = {0, cap - n, 5};
    TT_ASSERT(n >= 1 && 5 + n <= cap); /* the table's shapes */
    const size_t nq = (size_t)B * n * nh * hd, ks = (size_t)nkv * hd, nc = (size_t)B * cap * ks;
    float *q = rnd(nq, 1), *kc = rnd(nc, 1), *vc = rnd(nc, 1), *o = tt_xmalloc(nq * sizeof *o);
    poison_kv_tail(kc, vc, B, n, cap, pos, ks);
    int32_t *d_pos = gpu->alloc(sizeof pos);
    gpu->to_device(d_pos, pos, sizeof pos);
    void *d_q = up(q, nq), *d_kc = up(kc, nc), *d_vc = up(vc, nc), *d_o = act(nq);
    poison(d_o, nq);
    cpu->attn_kv(B, n, cap, nh, nkv, hd, q, kc, vc, pos, o, BE_REAL);
    gpu->attn_kv(B, n, cap, nh, nkv, hd, d_q, d_kc, d_vc, d_pos, d_o, g_dt);
    cmp("attn_kv", o, d_o, nq);
    free(q); free(kc); free(vc); free(o);
    gpu->free(d_pos); gpu->free(d_q); gpu->free(d_kc); gpu->free(d_vc); gpu->free(d_o);
}

/* The reference's attn_kv against its attn_fwd (the attention the table
 * tests above): with pos = 0 and n = seq, the cache rows 0..seq-1 of each
 * sequence holding its k and v (NaN after them, up to cap = seq + 9), the
 * two compute the same rows. On the CPU backend alone, fp32 only (the bf16
 * path of attn_kv is the case above's second pass). */
static void t_attn_kv_fwd(int B, int seq, int nh, int nkv, int hd) {
    if (g_dt != BE_REAL) return;
    const int R = BE_REAL, cap = seq + 9;
    const size_t nq = (size_t)B * seq * nh * hd, ks = (size_t)nkv * hd, nk = (size_t)B * seq * ks,
                 nc = (size_t)B * cap * ks;
    float *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nk, 1);
    float *kc = tt_xmalloc(nc * sizeof *kc), *vc = tt_xmalloc(nc * sizeof *vc);
    int32_t *pos = tt_xcalloc((size_t)B, sizeof *pos); /* every sequence from position 0 */
    for (int b = 0; b < B; b++) {
        memcpy(kc + (size_t)b * cap * ks, k + (size_t)b * seq * ks, (size_t)seq * ks * sizeof *kc);
        memcpy(vc + (size_t)b * cap * ks, v + (size_t)b * seq * ks, (size_t)seq * ks * sizeof *vc);
    }
    poison_kv_tail(kc, vc, B, seq, cap, pos, ks);
    float *o = tt_xmalloc(nq * sizeof *o), *o2 = tt_xmalloc(nq * sizeof *o2);
    float *lse = tt_xmalloc((size_t)B * seq * nh * sizeof *lse);
    void *sc = tt_xmalloc(cpu->attn_scratch_bytes(B, seq, nh, nkv, hd, R) + 1);
    cpu->attn_fwd(B, seq, nh, nkv, hd, q, k, v, o, lse, NULL, sc, R);
    cpu->attn_kv(B, seq, cap, nh, nkv, hd, q, kc, vc, pos, o2, R);
    cmp_host("attn_kv=fwd", o, o2, nq, R);
    free(q); free(k); free(v); free(kc); free(vc); free(pos); free(o); free(o2); free(lse); free(sc);
}

/* cross-entropy with an ignored row (target -1) and a masked one (weight 0),
 * the GPU a vocabulary chunk of vc columns at a time */
static void t_xent(int R, int V, int vc) {
    float *lg = rnd((size_t)R * V, 3), *w = tt_xmalloc((size_t)R * 4);
    int32_t *tg = tt_xmalloc((size_t)R * sizeof *tg);
    for (int r = 0; r < R; r++) { tg[r] = r == 4 ? -1 : (int32_t)(((int64_t)r * 7919 + 31) % V); w[r] = r == 7 ? 0.f : 1.f; }
    void *d_lg = up(lg, (size_t)R * V);
    float *d_w = up_real(w, (size_t)R);
    int32_t *d_tg = gpu->alloc((size_t)R * sizeof *tg);
    gpu->to_device(d_tg, tg, (size_t)R * sizeof *tg);
    double l1 = 0, l2 = 0, *d_acc = gpu->alloc(sizeof(double));
    double *st = tt_xmalloc((size_t)R * 3 * sizeof(double)), *d_st = gpu->alloc((size_t)R * 3 * sizeof(double));
    /* the CPU in one chunk, the GPU in chunks of vc (the online log-sum-exp across them) */
    cpu->xent_stats(R, V, V, 0, lg, tg, st, BE_REAL);
    cpu->xent_loss(R, st, tg, w, &l1);
    cpu->xent_grad(R, V, V, 0, lg, tg, w, 0.25f, st, BE_REAL);
    for (int v0 = 0; v0 < V; v0 += vc)
        gpu->xent_stats(R, V - v0 < vc ? V - v0 : vc, V, v0, be_at(d_lg, (size_t)v0, g_dt), d_tg, d_st, g_dt);
    gpu->xent_loss(R, d_st, d_tg, d_w, d_acc);
    for (int v0 = 0; v0 < V; v0 += vc)
        gpu->xent_grad(R, V - v0 < vc ? V - v0 : vc, V, v0, be_at(d_lg, (size_t)v0, g_dt), d_tg, d_w, 0.25f, d_st, g_dt);
    gpu->to_host(&l2, d_acc, sizeof l2);
    free(st); gpu->free(d_st);
    gpu->free(d_w); gpu->free(d_tg); gpu->free(d_acc);
    CHECK_MSG(fabs(l1 - l2) <= tol_for(BE_REAL) * fabs(l1), "xent loss %.9g vs %.9g", l1, l2);
    cmp("xent", lg, d_lg, (size_t)R * V);
    free(lg); free(w); free(tg); gpu->free(d_lg);
}

/* distillation (kd_*) beside the cross-entropy, the same rows skipped, the
 * teacher's logits from another draw, at temperature tau/10 */
static void t_kd(int R, int V, int vc, int tau10) {
    float *lg = rnd((size_t)R * V, 3), *tl = rnd((size_t)R * V, 3), *w = tt_xmalloc((size_t)R * 4);
    int32_t *tg = tt_xmalloc((size_t)R * sizeof *tg);
    for (int r = 0; r < R; r++) { tg[r] = r == 4 ? -1 : (int32_t)(((int64_t)r * 7919 + 31) % V); w[r] = r == 7 ? 0.f : 1.f; }
    const float tau = (float)tau10 / 10, a = 0.75f;
    void *d_lg = up(lg, (size_t)R * V), *d_tl = up(tl, (size_t)R * V);
    float *d_w = up_real(w, (size_t)R);
    int32_t *d_tg = gpu->alloc((size_t)R * sizeof *tg);
    gpu->to_device(d_tg, tg, (size_t)R * sizeof *tg);
    double l1 = 0, l2 = 0, *d_acc = gpu->alloc(sizeof(double));
    gpu->to_device(d_acc, &l2, sizeof l2);
    double *xs = tt_xmalloc((size_t)R * 3 * sizeof(double)), *d_xs = gpu->alloc((size_t)R * 3 * sizeof(double));
    double *ks = tt_xmalloc((size_t)R * 5 * sizeof(double)), *d_ks = gpu->alloc((size_t)R * 5 * sizeof(double));
    cpu->xent_stats(R, V, V, 0, lg, tg, xs, BE_REAL);
    cpu->kd_stats(R, V, V, 0, lg, tl, tau, ks, BE_REAL);
    cpu->kd_loss(R, ks, tg, w, tau, &l1);
    cpu->kd_grad(R, V, V, 0, lg, tl, tg, w, 0.25f, a, tau, xs, ks, BE_REAL);
    for (int v0 = 0; v0 < V; v0 += vc) {
        int n = V - v0 < vc ? V - v0 : vc;
        gpu->xent_stats(R, n, V, v0, be_at(d_lg, (size_t)v0, g_dt), d_tg, d_xs, g_dt);
        gpu->kd_stats(R, n, V, v0, be_at(d_lg, (size_t)v0, g_dt), be_at(d_tl, (size_t)v0, g_dt), tau, d_ks, g_dt);
    }
    gpu->kd_loss(R, d_ks, d_tg, d_w, tau, d_acc);
    for (int v0 = 0; v0 < V; v0 += vc)
        gpu->kd_grad(R, V - v0 < vc ? V - v0 : vc, V, v0, be_at(d_lg, (size_t)v0, g_dt), be_at(d_tl, (size_t)v0, g_dt),
                     d_tg, d_w, 0.25f, a, tau, d_xs, d_ks, g_dt);
    gpu->to_host(&l2, d_acc, sizeof l2);
    free(xs); gpu->free(d_xs); free(ks); gpu->free(d_ks);
    gpu->free(d_w); gpu->free(d_tg); gpu->free(d_acc);
    /* the KL sum is a difference of log-sum-exps: absolute slack of the loss's size */
    CHECK_MSG(fabs(l1 - l2) <= tol_for(BE_REAL) * (fabs(l1) + R), "kd loss %.9g vs %.9g", l1, l2);
    cmp("kd", lg, d_lg, (size_t)R * V);
    free(lg); free(tl); free(w); free(tg); gpu->free(d_lg); gpu->free(d_tl);
}

static void c_gemm(const int *s) { t_gemm(s[0], s[1], s[2], s[3]); }
static void c_elementwise(const int *s) { t_elementwise((size_t)s[0] * s[1]); }
static void c_dequant(const int *s) { t_dequant((size_t)s[0] * s[1] + (size_t)s[2]); }
static void c_linear(const int *s) { t_linear(s[0], s[1], s[2], s[3] ? (uint32_t)s[3] : TT_DTYPE_NF4DQ); }
static void c_rmsnorm(const int *s) { t_rmsnorm(s[0], s[1]); }
static void c_rope(const int *s) { t_rope(s[0], s[1], s[2], s[3], (double)s[4]); }
static void c_attn(const int *s) { t_attn(s[0], s[1], s[2], s[3], s[4]); }
static void c_attn_kv(const int *s) { t_attn_kv(s[0], s[1], s[2], s[3], s[4]); }
static void c_attn_kv_fwd(const int *s) { t_attn_kv_fwd(s[0], s[1], s[2], s[3], s[4]); }
static void c_xent(const int *s) { t_xent(s[0], s[1], s[2]); }
static void c_kd(const int *s) { t_kd(s[0], s[1], s[2], s[3]); }

/* Every case: the op(s), the shapes, the tolerances. Small shapes are odd
 * sizes and partial blocks; the real ones (--real) are llama3.1-8b's
 * projections, the pruned 70B's odd ffn (4300, also as a linear op's padded
 * dequantization rows), attention at seq 4096 /
 * head_dim 128 / GQA 16:2 and cross-entropy over vocab 128256. */
static const op_case g_cases[] = {
    {"gemm", c_gemm, {37, 53, 96, GEMM_ALL_T}, "37x53x96, all transposes", 0, 1e-4, 8e-3},
    /* a float factor past the CUDA backend's 8M-value conversion buffer (rank 586 x 14336 is): rounded and
     * multiplied in slices (of 4032 rows or columns here, then 68), fp32 A and fp32 B, each read both ways (its
     * slices whole stored rows, or bands of stored columns) */
    {"gemm", c_gemm, {4100, 2, 2050, GEMM_ALL_T | GEMM_MIXED}, "4100x2x2050, A > 8M values", 0, 1e-4, 8e-3},
    {"gemm", c_gemm, {2, 4100, 2050, GEMM_ALL_T | GEMM_MIXED}, "2x4100x2050, B > 8M values", 0, 1e-4, 8e-3},
    {"elementwise", c_elementwise, {1, 10007}, "10007", 0, 1e-5, 8e-3},
    {"dequant", c_dequant, {64, 300, 17}, "nf4 19217 values", 0, 0, 0},
    {"linear", c_linear, {33, 128, 320}, "33 x 128 -> 320 nf4-dq", 0, 1e-4, 8e-3},
    {"linear", c_linear, {17, 100, 320}, "17 x 100 -> 320, padded rows", 0, 1e-4, 8e-3},
    {"linear", c_linear, {33, 128, 320, TT_DTYPE_BF16}, "33 x 128 -> 320 bf16", 0, 1e-4, 8e-3},
    {"linear", c_linear, {17, 100, 320, TT_DTYPE_BF16}, "17 x 100 -> 320 bf16, padded", 0, 1e-4, 8e-3},
    {"rmsnorm", c_rmsnorm, {9, 96}, "9 x 96", 0, 1e-4, 1.6e-2},
    {"rope", c_rope, {7, 14, 3, 8, 0}, "seq 7, 14 x 3 x 8", 0, 1e-6, 8e-3},
    {"attention", c_attn, {2, 40, 4, 2, 16}, "2 x seq 40, 4:2 x 16", 0, 5e-4, 3e-2},
    /* four key (and query) tiles of 64, the last one partial: each staging buffer is refilled (the emulated
     * GPU's racecheck sees a missing barrier before a refill only where a block walks three tiles or more) */
    {"attention", c_attn, {1, 200, 4, 2, 128}, "seq 200 (4 tiles), 4:2 x 128", 0, 5e-4, 3e-2},
    /* attn_kv (n, cap, nh, nkv, hd; 3 sequences): a decoding step and a
     * prefill chunk, GQA 4:1, head_dim 64, 128 and 80 (lanes left idle in a
     * warp). Only the output is rounded in the bf16 pass (the GPU keeps P in
     * fp32), so the element-wise ops' 8e-3. The check against attn_fwd is on
     * the CPU alone, in fp32: two orders of the same sums. */
    {"attn_kv", c_attn_kv, {1, 32, 8, 2, 64}, "n 1, cap 32, 8:2 x 64", 0, 1e-4, 8e-3},
    {"attn_kv", c_attn_kv, {7, 32, 8, 2, 64}, "n 7, cap 32, 8:2 x 64", 0, 1e-4, 8e-3},
    {"attn_kv", c_attn_kv, {1, 32, 8, 2, 128}, "n 1, cap 32, 8:2 x 128", 0, 1e-4, 8e-3},
    {"attn_kv", c_attn_kv, {7, 32, 8, 2, 128}, "n 7, cap 32, 8:2 x 128", 0, 1e-4, 8e-3},
    {"attn_kv", c_attn_kv, {7, 20, 8, 2, 80}, "n 7, cap 20, 8:2 x 80", 0, 1e-4, 8e-3},
    /* head_dim past 256 (32 dimensions a lane; a config allows 1024), lanes idle in the last group */
    {"attn_kv", c_attn_kv, {3, 20, 4, 2, 320}, "n 3, cap 20, 4:2 x 320", 0, 1e-4, 8e-3},
    {"attn_kv", c_attn_kv_fwd, {3, 40, 8, 2, 64}, "= attn_fwd, 3 x seq 40", 0, 1e-5, 0},
    /* the head's losses over a vocabulary in chunks (the last partial), rows 4 and 7 skipped */
    {"xent", c_xent, {9, 1003, 64}, "9 x 1003 / 64", 0, 1e-5, 8e-3},
    {"kd", c_kd, {9, 1003, 64, 5}, "9 x 1003 / 64, T 0.5", 0, 1e-5, 8e-3},
    {"gemm", c_gemm, {2048, 4096, 4096, GEMM_ALL_T}, "2048x4096x4096, all transp.", 1, 2e-5, 4e-3},
    {"gemm", c_gemm, {2048, 4300, 8192, 0}, "70B-pruned gate 8192->4300", 1, 2e-5, 4e-3},
    {"gemm", c_gemm, {2048, 8192, 4300, 0}, "70B-pruned down 4300->8192", 1, 2e-5, 4e-3},
    {"linear", c_linear, {512, 4300, 1024}, "512 x 4300 -> 1024, padded rows", 1, 2e-5, 4e-3},
    {"dequant", c_dequant, {14336, 4096, 0}, "nf4 14336 x 4096", 1, 0, 0},
    {"dequant", c_dequant, {4300, 8192, 0}, "nf4 4300 x 8192", 1, 0, 0},
    {"elementwise", c_elementwise, {2048, 14336}, "2048 x 14336", 1, 1e-6, 4e-3},
    {"rmsnorm", c_rmsnorm, {2048, 8192}, "2048 x 8192", 1, 2e-5, 4e-3},
    {"rope", c_rope, {4096, 4096, 32, 128, 500000}, "seq 4096, 32 x 128", 1, 1e-6, 4e-3},
    {"attention", c_attn, {1, 4096, 16, 2, 128}, "seq 4096, 16:2 x 128", 1, 5e-5, 1e-2},
    {"attn_kv", c_attn_kv, {1, 4096, 32, 8, 128}, "n 1, cap 4096, 32:8x128", 1, 5e-5, 4e-3},
    {"xent", c_xent, {256, 128256, 16384}, "256 x 128256 / 16384", 1, 1e-5, 4e-3},
    {"kd", c_kd, {256, 128256, 16384, 20}, "256 x 128256 / 16384, T 2", 1, 1e-5, 4e-3},
};

/* --only's comma-separated list: the item after the one at p, and whether the one at p is op. */
static const char *next_item(const char *p) {
    p += strcspn(p, ",");
    return *p ? p + 1 : p;
}
static int item_is(const char *p, const char *op) {
    size_t n = strcspn(p, ",");
    return n == strlen(op) && strncmp(p, op, n) == 0;
}

/* Whether op is in the list (NULL: every op). */
static int op_in(const char *list, const char *op) {
    if (!list) return 1;
    for (const char *p = list; *p; p = next_item(p))
        if (item_is(p, op)) return 1;
    return 0;
}

int main(int argc, char **argv) {
    int real = 0;
    const char *device = "cuda", *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--real") == 0) real = 1;
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) device = argv[++i];
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: test_cuda_ops [--real] [--device cuda|cpu-async] [--only OP[,OP...]]\n"
                            "  --device cpu-async: the table against the CPU reference on the CPU (no GPU: a\n"
                            "  check of the test itself and of the CPU's bf16 ops against its fp32 ones)\n"
                            "  --only OP[,OP...]: the table's cases of those ops (its first column: attention,\n"
                            "  gemm, ...)\n");
            return 2;
        }
    }
    /* every op --only names is in the table */
    for (const char *p = only; p && *p; p = next_item(p)) {
        size_t n = 0;
        for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++) n += item_is(p, g_cases[i].op);
        if (!n) {
            fprintf(stderr, "test_cuda_ops: --only %.*s: no such op in the table\n", (int)strcspn(p, ","), p);
            return 2;
        }
    }
    gpu = be_by_name(device);
    if (!gpu) TEST_SKIP("%s", tt_lasterr());
    cpu = backend_cpu();
    rng_seed(&rng, 3, 4);
    static const op_case async_case = {"async", NULL, {0}, "4M floats", 0, 0, 0};
    g_case = &async_case;
    t_async((size_t)1 << 22);
    t_bf16_rounding(100003);
    /* every case with fp32 activations, then with bf16 ones */
    for (int pass = 0; pass < 2; pass++) {
        g_dt = pass ? BE_BF16 : BE_REAL;
        for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++) {
            g_case = &g_cases[i];
            if ((g_case->real && !real) || !op_in(only, g_case->op)) continue;
            g_real = g_case->real;
            g_case->run(g_case->s);
        }
    }
    TEST_END();
}

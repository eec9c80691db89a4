/* kernels/backend.c — the checked be_* wrappers around the current backend. */
#include "kernels/backend.h"

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "kernels/opprof.h"

#include <string.h>

#include "kernels/cuda/cuda_backend.h" /* plain C: the estimate is always built */

static const tt_backend *g_be;

static const tt_backend *cur(void) {
    if (!g_be) g_be = backend_cpu();
    return g_be;
}

void be_use(const tt_backend *b) {
    if (g_be && b != g_be) prof_switch();
    g_be = b;
}

/* ---- the op profile (kernels/opprof.h): each op between two timing marks, with its FLOPs or bytes ---- */
#define PROFILED(kind, flops, bytes, call)                                                                             \
    do {                                                                                                               \
        if (!prof_enabled()) {                                                                                         \
            call;                                                                                                      \
            break;                                                                                                     \
        }                                                                                                              \
        prof_tok tok_ = prof_begin();                                                                                  \
        call;                                                                                                          \
        prof_end(tok_, (kind), (flops), (bytes));                                                                      \
    } while (0)
#define ES(dt) ((double)be_elem_size(dt))
#define RS ((double)sizeof(tt_real))
void be_prof_window(int step) { prof_window(step); }
void be_prof_pause(int paused) { prof_pause(paused); }

const tt_backend *be_by_name(const char *name) {
    if (strcmp(name, "cpu") == 0) return backend_cpu();
    if (strcmp(name, "cpu-async") == 0) return backend_cpu_async();
    if (strcmp(name, "cuda") == 0) {
#ifdef TT_HAVE_CUDA
        return backend_cuda();
#else
        tt_seterr("this tiertrain was built without the CUDA backend (nvcc was not found); rebuild where nvcc is "
                  "installed, or use --device cpu");
        return NULL;
#endif
    }
    tt_seterr("--device must be cpu, cpu-async or cuda, not '%s'", name);
    return NULL;
}
const tt_backend *be_for_planning(const char *name) {
    const tt_backend *b = be_by_name(name);
    if (!b && strcmp(name, "cuda") == 0) b = backend_cuda_estimate();
    return b;
}
const tt_backend *be_current(void) { return cur(); }

void *be_alloc(size_t bytes) { return cur()->alloc(bytes); }
int be_host_register(void *p, size_t bytes) { return cur()->host_register ? cur()->host_register(p, bytes) : 0; }
void be_host_unregister(void *p) { if (cur()->host_unregister) cur()->host_unregister(p); }
size_t be_reserved_bytes(void) { return cur()->reserved_bytes ? cur()->reserved_bytes() : 0; }
int be_dev_in_use(uint64_t *bytes) { return cur()->dev_in_use ? cur()->dev_in_use(bytes) : -1; }
uint64_t be_dev_avail(void) { return cur()->dev_avail ? cur()->dev_avail() : 0; }
void *be_host_alloc_pinned(size_t bytes) { return cur()->host_alloc_pinned ? cur()->host_alloc_pinned(bytes) : NULL; }
void be_host_free_pinned(void *p) { if (p && cur()->host_free_pinned) cur()->host_free_pinned(p); }
void be_free(void *p) { if (p) cur()->free(p); }
void be_to_device(void *dst, const void *src, size_t bytes) {
    TT_ASSERT(dst && (src || !bytes));
    cur()->to_device(dst, src, bytes);
}
void be_to_host(void *dst, const void *src, size_t bytes) {
    TT_ASSERT(dst && (src || !bytes));
    cur()->to_host(dst, src, bytes);
    if (prof_enabled()) prof_flush(); /* the compute queue's work is done: its timing marks can be read */
}
void be_copy(void *dst, const void *src, size_t bytes) {
    TT_ASSERT(dst && (src || !bytes));
    PROFILED(PK_COPY, 0, 2.0 * bytes, cur()->copy(dst, src, bytes));
}
void be_fill(tt_real *x, size_t n, tt_real v) {
    TT_ASSERT(x || !n);
    PROFILED(PK_FILL, 0, RS * n, cur()->fill(x, n, v));
}

static int dt_ok(int dt) { return dt == BE_REAL || dt == BE_BF16; }

/* Causal attention's FLOPs, as bench kernels counts them: the forward's two products over the lower triangle. */
static double attn_flops(int B, int seq, int nh, int hd) { return 2.0 * B * (double)seq * seq * hd * nh; }

void be_gemm_t(int ta, int tb, int M, int N, int K, tt_real alpha, const void *A, int at, int lda, const void *B,
               int bt, int ldb, tt_real beta, void *C, int ct, int ldc) {
    TT_ASSERT(M > 0 && N > 0 && K > 0 && A && B && C && dt_ok(at) && dt_ok(bt) && dt_ok(ct));
    TT_ASSERT(ct == BE_REAL || at == BE_BF16 || bt == BE_BF16);
    TT_ASSERT(lda >= (ta ? M : K) && ldb >= (tb ? K : N) && ldc >= N);
    PROFILED(M <= 64 || N <= 64 || K <= 64 ? PK_GEMM_RANK : PK_GEMM, 2.0 * M * N * K,
             ES(at) * M * K + ES(bt) * K * N + ES(ct) * M * N * (beta != 0 ? 2 : 1),
             cur()->gemm(ta, tb, M, N, K, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc));
}
void be_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const tt_real *A, int lda, const tt_real *B,
             int ldb, tt_real beta, tt_real *C, int ldc) {
    be_gemm_t(ta, tb, M, N, K, alpha, A, BE_REAL, lda, B, BE_REAL, ldb, beta, C, BE_REAL, ldc);
}

void be_linear(int T, int in, int out, const tt_real *x, const tt_real *W, tt_real *y, int accumulate) {
    be_gemm(0, 1, T, out, in, 1, x, in, W, in, accumulate ? 1 : 0, y, out);
}

void be_axpy(size_t n, tt_real alpha, const void *x, void *y, int dt) {
    TT_ASSERT(x && y && dt_ok(dt));
    PROFILED(PK_AXPY, 0, 3 * ES(dt) * n, cur()->axpy(n, alpha, x, y, dt));
}
void be_scale(size_t n, tt_real alpha, tt_real *x) {
    TT_ASSERT(x || !n);
    PROFILED(PK_SCALE, 0, 2 * RS * n, cur()->scale(n, alpha, x));
}
void be_mask_scale(size_t n, const void *x, const void *mask, tt_real alpha, void *y, int dt) {
    TT_ASSERT(x && mask && y && dt_ok(dt));
    PROFILED(PK_MASK_SCALE, 0, 3 * ES(dt) * n, cur()->mask_scale(n, x, mask, alpha, y, dt));
}
void be_sumsq(size_t n, const tt_real *x, double *acc) {
    TT_ASSERT((x || !n) && acc);
    PROFILED(PK_SUMSQ, 0, RS * n, cur()->sumsq(n, x, acc));
}
void be_dropout(int rows, int cols, uint64_t seed, uint64_t stream0, float p, tt_real alpha, const void *x, void *y,
                int accumulate, int dt) {
    TT_ASSERT(rows > 0 && cols > 0 && x && y && p >= 0.f && p < 1.f && dt_ok(dt));
    PROFILED(PK_DROPOUT, 0, (accumulate ? 3 : 2) * ES(dt) * rows * cols,
             cur()->dropout(rows, cols, seed, stream0, p, alpha, x, y, accumulate, dt));
}
void be_dequant(uint32_t dtype, const void *blob, size_t n, void *out, int odt) {
    be_dequant_range(dtype, blob, n, 0, n, out, odt);
}
void be_dequant_range(uint32_t dtype, const void *blob, size_t n, size_t v0, size_t count, void *out, int odt) {
    TT_ASSERT(blob && out && dtype >= 1 && dtype <= 4 && v0 <= n && count <= n - v0 && dt_ok(odt));
    TT_ASSERT((dtype != TT_DTYPE_NF4 && dtype != TT_DTYPE_NF4DQ) || v0 % NF4_BLOCK == 0);
    PROFILED(PK_DEQUANT, 0, (double)dtype_bytes(dtype, count) + ES(odt) * count,
             cur()->dequant(dtype, blob, n, v0, count, out, odt));
}
void be_linear_w(int trans, int rows, int in, int n, const void *x, int ldx, uint32_t dtype, const void *blob,
                 size_t out_total, size_t o0, void *scratch, tt_real beta, void *y, int ldy, int dt) {
    TT_ASSERT(rows > 0 && in > 0 && n > 0 && x && blob && scratch && y && o0 + (size_t)n <= out_total && dt_ok(dt));
    TT_ASSERT(ldx >= (trans ? n : in) && ldy >= (trans ? in : n) && dtype >= 1 && dtype <= 4);
    TT_ASSERT((dtype != TT_DTYPE_NF4 && dtype != TT_DTYPE_NF4DQ) || o0 * (size_t)in % NF4_BLOCK == 0);
    double wv = (double)n * in; /* the block's weights: read stored, written and read dequantized */
    double xin = trans ? n : in, yout = trans ? in : n; /* y read too where beta is not 0 */
    PROFILED(PK_LINEAR, 2.0 * rows * wv,
             (double)dtype_bytes(dtype, (uint64_t)n * in) + 2 * ES(dt) * wv +
                 ES(dt) * rows * (xin + yout * (beta != 0 ? 2 : 1)),
             cur()->linear(trans, rows, in, n, x, ldx, dtype, blob, out_total, o0, scratch, beta, y, ldy, dt));
}
void be_rmsnorm_fwd(int T, int C, const void *x, const tt_real *w, tt_real eps, void *y, tt_real *rstd, int dt) {
    TT_ASSERT(T > 0 && C > 0 && x && w && y && rstd && eps > 0 && dt_ok(dt));
    PROFILED(PK_RMS_FWD, 0, 2 * ES(dt) * T * C, cur()->rmsnorm_fwd(T, C, x, w, eps, y, rstd, dt));
}
void be_rmsnorm_bwd(int T, int C, const void *x, const tt_real *w, const tt_real *rstd, const void *dy, void *dx,
                    int accumulate, int dt) {
    TT_ASSERT(T > 0 && C > 0 && x && w && rstd && dy && dx && dt_ok(dt));
    PROFILED(PK_RMS_BWD, 0, (accumulate ? 4 : 3) * ES(dt) * T * C,
             cur()->rmsnorm_bwd(T, C, x, w, rstd, dy, dx, accumulate, dt));
}
void be_rmsnorm_bwd_w(int T, int C, const void *x, const tt_real *rstd, const void *dy, tt_real *dw, int dt) {
    TT_ASSERT(T > 0 && C > 0 && x && rstd && dy && dw && dt_ok(dt));
    PROFILED(PK_RMS_BWD_W, 0, 2 * ES(dt) * T * C, cur()->rmsnorm_bwd_w(T, C, x, rstd, dy, dw, dt));
}
void be_rope(int T, int seq, int nh, int hd, const tt_real *cos_t, const tt_real *sin_t, void *x, int inverse,
             const int32_t *seg, int dt) {
    TT_ASSERT(T > 0 && seq > 0 && T % seq == 0 && nh > 0 && hd > 0 && hd % 2 == 0 && cos_t && sin_t && x);
    TT_ASSERT(dt_ok(dt));
    PROFILED(PK_ROPE, 0, 2 * ES(dt) * T * nh * hd, cur()->rope(T, seq, nh, hd, cos_t, sin_t, x, inverse, seg, dt));
}
size_t be_mlp_chunk_elems(void) { return cur()->mlp_chunk_elems; }
size_t be_wbuf_elems(void) { return cur()->wbuf_elems; }
size_t be_xent_chunk_elems(void) { return cur()->xent_chunk_elems; }
int be_decode_layers(void) { return cur()->decode_layers; }
const char *be_attn_path_name(int B, int seq, int nh, int nkv, int hd, int dt) {
    return cur()->attn_path_name ? cur()->attn_path_name(B, seq, nh, nkv, hd, dt) : "reference";
}
size_t be_attn_scratch_bytes(int B, int seq, int nh, int nkv, int hd, int dt) {
    return cur()->attn_scratch_bytes ? cur()->attn_scratch_bytes(B, seq, nh, nkv, hd, dt) : 0;
}
void be_attn_fwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v, void *out,
                 tt_real *lse, const int32_t *seg, void *scratch, int dt) {
    TT_ASSERT(B > 0 && seq > 0 && nkv > 0 && nh % nkv == 0 && hd > 0 && q && k && v && out && lse && dt_ok(dt));
    TT_ASSERT(scratch || !be_attn_scratch_bytes(B, seq, nh, nkv, hd, dt));
    PROFILED(PK_ATTN_FWD, attn_flops(B, seq, nh, hd), 0,
             cur()->attn_fwd(B, seq, nh, nkv, hd, q, k, v, out, lse, seg, scratch, dt));
}
void be_attn_kv(int B, int n, int cap, int nh, int nkv, int hd, const void *q, const void *kc, const void *vc,
                const int32_t *pos, void *out, int dt) {
    TT_ASSERT(B > 0 && n > 0 && n <= cap && nkv > 0 && nh % nkv == 0 && hd > 0 && q && kc && vc && pos && out);
    TT_ASSERT(dt_ok(dt));
    PROFILED(PK_ATTN_KV, 0, ES(dt) * B * (2.0 * cap * nkv * hd + 2.0 * n * nh * hd),
             cur()->attn_kv(B, n, cap, nh, nkv, hd, q, kc, vc, pos, out, dt));
}
void be_attn_bwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                 const void *out, const tt_real *lse, const void *dout, void *dq, void *dk, void *dv,
                 const int32_t *seg, void *scratch, int dt) {
    TT_ASSERT(B > 0 && seq > 0 && nkv > 0 && nh % nkv == 0 && hd > 0 && dt_ok(dt));
    TT_ASSERT(q && k && v && out && lse && dout && dq && dk && dv);
    TT_ASSERT(scratch || !be_attn_scratch_bytes(B, seq, nh, nkv, hd, dt));
    PROFILED(PK_ATTN_BWD, 2.5 * attn_flops(B, seq, nh, hd), 0,
             cur()->attn_bwd(B, seq, nh, nkv, hd, q, k, v, out, lse, dout, dq, dk, dv, seg, scratch, dt));
}
void be_swiglu_fwd(size_t n, const void *g, const void *u, void *m, int dt) {
    TT_ASSERT(g && u && m && dt_ok(dt));
    PROFILED(PK_SWIGLU_FWD, 0, 3 * ES(dt) * n, cur()->swiglu_fwd(n, g, u, m, dt));
}
void be_swiglu_bwd(size_t n, const void *g, const void *u, const void *dm, void *dg, void *du, int dt) {
    TT_ASSERT(g && u && dm && dg && du && dt_ok(dt));
    PROFILED(PK_SWIGLU_BWD, 0, 5 * ES(dt) * n, cur()->swiglu_bwd(n, g, u, dm, dg, du, dt));
}
void be_xent_stats(int R, int n, int ld, int v0, const void *logits, const int32_t *targets, double *stats, int dt) {
    TT_ASSERT(R > 0 && n > 0 && ld >= n && v0 >= 0 && logits && targets && stats && dt_ok(dt));
    PROFILED(PK_XENT, 0, ES(dt) * R * n, cur()->xent_stats(R, n, ld, v0, logits, targets, stats, dt));
}
void be_xent_loss(int R, const double *stats, const int32_t *targets, const tt_real *weight, double *acc) {
    TT_ASSERT(R > 0 && R <= XENT_MAX_ROWS && stats && targets && weight && acc);
    PROFILED(PK_XENT, 0, 32.0 * R, cur()->xent_loss(R, stats, targets, weight, acc));
}
void be_xent_grad(int R, int n, int ld, int v0, void *logits, const int32_t *targets, const tt_real *weight,
                  tt_real dscale, const double *stats, int dt) {
    TT_ASSERT(R > 0 && n > 0 && ld >= n && v0 >= 0 && logits && targets && weight && stats && dt_ok(dt));
    PROFILED(PK_XENT, 0, 2 * ES(dt) * R * n,
             cur()->xent_grad(R, n, ld, v0, logits, targets, weight, dscale, stats, dt));
}
void be_kd_stats(int R, int n, int ld, int v0, const void *s, const void *t, tt_real tau, double *kstats, int dt) {
    TT_ASSERT(R > 0 && n > 0 && ld >= n && v0 >= 0 && s && t && tau > 0 && kstats && dt_ok(dt));
    PROFILED(PK_KD, 0, 2 * ES(dt) * R * n, cur()->kd_stats(R, n, ld, v0, s, t, tau, kstats, dt));
}
void be_kd_loss(int R, const double *kstats, const int32_t *targets, const tt_real *weight, tt_real tau, double *acc) {
    TT_ASSERT(R > 0 && R <= XENT_MAX_ROWS && kstats && targets && weight && tau > 0 && acc);
    PROFILED(PK_KD, 0, 48.0 * R, cur()->kd_loss(R, kstats, targets, weight, tau, acc));
}
void be_kd_grad(int R, int n, int ld, int v0, void *s, const void *t, const int32_t *targets, const tt_real *weight,
                tt_real dscale, tt_real alpha, tt_real tau, const double *xstats, const double *kstats, int dt) {
    TT_ASSERT(R > 0 && n > 0 && ld >= n && v0 >= 0 && s && t && targets && weight && tau > 0 && alpha >= 0 &&
              alpha <= 1 && xstats && kstats && dt_ok(dt));
    PROFILED(PK_KD, 0, 3 * ES(dt) * R * n,
             cur()->kd_grad(R, n, ld, v0, s, t, targets, weight, dscale, alpha, tau, xstats, kstats, dt));
}
void be_xent(int R, int V, int vc, void *logits, const int32_t *targets, const tt_real *weight, tt_real dscale,
             double *acc, double *stats, int dt) {
    TT_ASSERT(V > 0 && vc > 0);
    for (int v0 = 0; v0 < V; v0 += vc)
        be_xent_stats(R, V - v0 < vc ? V - v0 : vc, V, v0, be_at(logits, (size_t)v0, dt), targets, stats, dt);
    for (int r0 = 0; r0 < R; r0 += XENT_MAX_ROWS)
        be_xent_loss(R - r0 < XENT_MAX_ROWS ? R - r0 : XENT_MAX_ROWS, stats + 3 * (size_t)r0, targets + r0, weight + r0,
                     acc);
    for (int v0 = 0; v0 < V; v0 += vc)
        be_xent_grad(R, V - v0 < vc ? V - v0 : vc, V, v0, be_at(logits, (size_t)v0, dt), targets, weight, dscale, stats,
                     dt);
}
void be_adamw(size_t n, tt_real *p, const tt_real *g, float *m, float *v, float lr, float b1, float b2, float eps,
              float wd, int step) {
    TT_ASSERT(p && g && m && v && step >= 1);
    PROFILED(PK_ADAMW, 0, (3 * RS + 16.0) * n, cur()->adamw(n, p, g, m, v, lr, b1, b2, eps, wd, step));
}

/* ---- queues and events ----------------------------------------------------- */

static char g_done_token; /* the event of a backend without events: always complete */
#define NO_EVENTS() (!cur()->event_new)
#define TOKEN ((tt_event *)&g_done_token)

int be_is_async(void) { return cur()->queue_new != NULL; }
tt_queue *be_queue_new(void) { return cur()->queue_new ? cur()->queue_new() : NULL; }
void be_queue_free(tt_queue *q) { if (q && cur()->queue_free) cur()->queue_free(q); }
tt_event *be_event_new(void) {
    if (NO_EVENTS()) return TOKEN;
    tt_event *ev = cur()->event_new();
    TT_ASSERT(ev);
    return ev;
}
void be_event_free(tt_event *ev) { if (ev && ev != TOKEN) cur()->event_free(ev); }
void be_event_record(tt_event *ev, tt_queue *q) {
    TT_ASSERT(ev);
    if (ev != TOKEN) cur()->event_record(ev, q);
}
void be_queue_wait(tt_queue *q, tt_event *ev) {
    TT_ASSERT(ev);
    if (ev != TOKEN) cur()->queue_wait(q, ev);
}
void be_event_sync(tt_event *ev) {
    TT_ASSERT(ev);
    if (ev != TOKEN) cur()->event_sync(ev);
}
int be_event_query(tt_event *ev) { return ev == TOKEN || cur()->event_query(ev); }
void be_copy_async(void *dst, const void *src, size_t bytes, int kind, tt_queue *q) {
    TT_ASSERT(dst && (src || !bytes) && kind >= BE_H2D && kind <= BE_D2D);
    if (cur()->copy_async) { cur()->copy_async(dst, src, bytes, kind, q); return; }
    if (kind == BE_H2D) cur()->to_device(dst, src, bytes);
    else if (kind == BE_D2H) cur()->to_host(dst, src, bytes);
    else cur()->copy(dst, src, bytes);
}
void be_synchronize(void) { if (cur()->synchronize) cur()->synchronize(); }
tt_event *be_timer_new(void) { return cur()->timer_new && !NO_EVENTS() ? cur()->timer_new() : NULL; }
double be_timer_elapsed(tt_event *a, tt_event *b) {
    TT_ASSERT(a && b && cur()->timer_elapsed);
    return cur()->timer_elapsed(a, b);
}

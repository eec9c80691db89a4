/* tests/test_cudnn_graph.c — the arithmetic of the cuDNN attention graphs
 * (kernels/cuda/cuda_cudnn.c): tests/test_cudnn_plan.c has cuDNN accept and
 * compile them, which checks their form, not what they compute. Here each
 * graph, as tt_sdpa_graph_describe gives it op by op, is evaluated on the CPU
 * with the ops' documented meaning — matmul batched over (b, h) with the
 * second operand's heads shared by groups of the first's, pointwise ops with
 * broadcasting over extent-1 dimensions, reductions over the dimensions the
 * output keeps at 1 (and over each group of heads it keeps one of), GEN_INDEX the position along an axis, BINARY_SELECT
 * t ? x : b, a reshape the same memory under the new strides (the
 * transposes), bf16 tensors rounded — on the project's buffers through the
 * graph's own strides, and compared with the CPU reference attention: the
 * output and log-sum-exp forward, dq, dk and dv backward, for grouped-query,
 * multi-head and multi-query shapes. A stride, an operand or a mode wrong in
 * the graph changes the numbers here long before a GPU would show it.
 *
 * Skips (77) in a build without cuDNN's headers. */
#include "kernels/cuda/cuda_cudnn.h"

#include "core/base/common.h"
#include "core/base/rng.h"
#include "kernels/backend.h"
#include "tests/test.h"

#include <math.h>
#include <string.h>

#if __has_include(<cudnn_graph.h>) && defined(TT_HAVE_CUDA)
#include <cudnn_graph.h>
#define HAVE_GRAPH 1
#endif

#ifdef HAVE_GRAPH

static float round_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* Where each tensor's elements are: our buffers and reshapes (views of
 * another's memory) through the graph's strides; the other virtual tensors,
 * which live in cuDNN's registers, packed (their declared strides may
 * overlap: the frontend's dO.O product's do). */
typedef struct ev {
    const tt_sdpa_graph *g;
    float *buf[TT_SDPA_MAX_TENSORS];
    int64_t str[TT_SDPA_MAX_TENSORS][4];
    int written[TT_SDPA_MAX_TENSORS];
    float *owned[TT_SDPA_MAX_TENSORS];
} ev;

/* a tensor's element at (i0, i1, i2, i3), an extent-1 dimension broadcast */
static size_t at(const ev *e, int ti, const int64_t i[4]) {
    size_t o = 0;
    for (int d = 0; d < 4; d++) o += (size_t)(e->g->t[ti].dim[d] == 1 ? 0 : i[d]) * (size_t)e->str[ti][d];
    return o;
}

static float get(ev *e, int ti, const int64_t i[4]) {
    const tt_sdpa_tensor *t = &e->g->t[ti];
    if (t->byval) return t->value;
    CHECK_MSG(e->written[ti], "tensor %lld read before it is written", (long long)t->uid);
    return e->buf[ti][at(e, ti, i)];
}
static void put(ev *e, int ti, const int64_t i[4], double v) {
    const tt_sdpa_tensor *t = &e->g->t[ti];
    float f = (float)v;
    e->buf[ti][at(e, ti, i)] = t->dtype == CUDNN_DATA_BFLOAT16 ? round_bf16(f) : f;
}

#define FOR4(i, dim)                                                                                          \
    for (i[0] = 0; i[0] < (dim)[0]; i[0]++)                                                                   \
        for (i[1] = 0; i[1] < (dim)[1]; i[1]++)                                                               \
            for (i[2] = 0; i[2] < (dim)[2]; i[2]++)                                                           \
                for (i[3] = 0; i[3] < (dim)[3]; i[3]++)

static double pointwise(int mode, int64_t axis, const int64_t i[4], double x, double b, double t) {
    switch (mode) {
    case CUDNN_POINTWISE_ADD: return x + b;
    case CUDNN_POINTWISE_SUB: return x - b;
    case CUDNN_POINTWISE_MUL: return x * b;
    case CUDNN_POINTWISE_DIV: return x / b;
    case CUDNN_POINTWISE_EXP: return exp(x);
    case CUDNN_POINTWISE_LOG: return log(x);
    case CUDNN_POINTWISE_IDENTITY: return x;
    case CUDNN_POINTWISE_GEN_INDEX: return (double)i[axis];
    case CUDNN_POINTWISE_CMP_GE: return x >= b ? 1 : 0;
    case CUDNN_POINTWISE_BINARY_SELECT: return t != 0 ? x : b;
    }
    CHECK_MSG(0, "pointwise mode %d has no meaning here", mode);
    return 0;
}

static void run(ev *e) {
    const tt_sdpa_graph *g = e->g;
    for (int n = 0; n < g->nop; n++) {
        const tt_sdpa_op *o = &g->op[n];
        const tt_sdpa_tensor *y = &g->t[o->out];
        int64_t i[4], j[4], k[4];
        if (o->kind == TT_SDPA_OP_RESHAPE) { /* the same memory under y's strides */
            const int x = o->in[0];
            CHECK(e->written[x] && !g->t[x].byval);
            CHECK_MSG(!memcmp(e->str[x], g->t[x].str, sizeof e->str[x]), "reshape of a tensor laid out otherwise");
            e->buf[o->out] = e->buf[x];
            memcpy(e->str[o->out], y->str, sizeof e->str[o->out]);
            e->written[o->out] = 1;
            continue;
        }
        if (!e->buf[o->out]) { /* virtual: packed */
            e->buf[o->out] = e->owned[o->out] = tt_xcalloc((size_t)(y->dim[0] * y->dim[1] * y->dim[2] * y->dim[3]), 4);
            int64_t *st = e->str[o->out];
            st[3] = 1, st[2] = y->dim[3], st[1] = y->dim[2] * st[2], st[0] = y->dim[1] * st[1];
        }
        if (o->kind == TT_SDPA_OP_POINTWISE) {
            FOR4(i, y->dim) {
                double x = get(e, o->in[0], i), b = o->in[1] >= 0 ? get(e, o->in[1], i) : 0;
                double t = o->in[2] >= 0 ? get(e, o->in[2], i) : 0;
                put(e, o->out, i, pointwise(o->mode, o->axis, i, x, b, t));
            }
        } else if (o->kind == TT_SDPA_OP_MATMUL) {
            const tt_sdpa_tensor *a = &g->t[o->in[0]], *b = &g->t[o->in[1]];
            CHECK_MSG(a->dim[3] == b->dim[2] && a->dim[2] == y->dim[2] && b->dim[3] == y->dim[3],
                      "matmul op %d: shapes do not chain", n);
            FOR4(i, y->dim) {
                double s = 0;
                for (int64_t kk = 0; kk < a->dim[3]; kk++) {
                    /* heads: a's and b's are y's, or shared by groups of y's */
                    j[0] = i[0], j[1] = i[1] / (y->dim[1] / a->dim[1]), j[2] = i[2], j[3] = kk;
                    k[0] = i[0], k[1] = i[1] / (y->dim[1] / b->dim[1]), k[2] = kk, k[3] = i[3];
                    s += (double)get(e, o->in[0], j) * get(e, o->in[1], k);
                }
                put(e, o->out, i, s);
            }
        } else { /* reduction over the dimensions y keeps at 1, and over each group of heads y keeps one of */
            const tt_sdpa_tensor *x = &g->t[o->in[0]];
            const int max = o->mode == CUDNN_REDUCE_TENSOR_MAX;
            CHECK(max || o->mode == CUDNN_REDUCE_TENSOR_ADD);
            FOR4(i, y->dim) put(e, o->out, i, max ? -INFINITY : 0);
            FOR4(i, x->dim) {
                for (int d = 0; d < 4; d++) j[d] = i[d] / (x->dim[d] / y->dim[d]); /* heads: their group's */
                double v = get(e, o->in[0], i), cur = e->buf[o->out][at(e, o->out, j)];
                put(e, o->out, j, max ? (v > cur ? v : cur) : cur + v);
            }
        }
        e->written[o->out] = 1;
    }
}

/* The graph's non-virtual tensor of that id (exactly one), or -1 when it has none. */
static int by_uid(const tt_sdpa_graph *g, int64_t uid) {
    int f = -1;
    for (int i = 0; i < g->nt; i++)
        if (g->t[i].uid == uid) {
            CHECK_MSG(f < 0 || g->t[f].dtype == g->t[i].dtype, "tensor %lld made twice, differently", (long long)uid);
            if (f < 0) f = i;
        }
    return f;
}

static double rel_err(const float *ref, const float *got, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        r += (double)ref[i] * ref[i];
    }
    return sqrt(d / (r > 0 ? r : 1));
}

static void one_shape(tt_sdpa_shape sh, tt_rng *rng) {
    const tt_backend *cpu = backend_cpu();
    const int B = sh.B, S = sh.S, H = sh.H, G = sh.Hkv, D = sh.D;
    const size_t nq = (size_t)B * S * H * D, nk = (size_t)B * S * G * D, nr = (size_t)B * S * H;
    float *q = tt_xmalloc(nq * 4), *k = tt_xmalloc(nk * 4), *v = tt_xmalloc(nk * 4), *o = tt_xmalloc(nq * 4);
    float *dout = tt_xmalloc(nq * 4), *lse = tt_xmalloc(nr * 4), *dq = tt_xmalloc(nq * 4);
    float *dk = tt_xmalloc(nk * 4), *dv = tt_xmalloc(nk * 4);
    /* bf16 values, as the GPU's buffers hold them */
    for (size_t i = 0; i < nq; i++) q[i] = round_bf16((float)rng_normal(rng));
    for (size_t i = 0; i < nk; i++) k[i] = round_bf16((float)rng_normal(rng));
    for (size_t i = 0; i < nk; i++) v[i] = round_bf16((float)rng_normal(rng));
    for (size_t i = 0; i < nq; i++) dout[i] = round_bf16((float)rng_normal(rng));
    void *sc = tt_xmalloc(cpu->attn_scratch_bytes(B, S, H, G, D, BE_REAL) + 1);
    cpu->attn_fwd(B, S, H, G, D, q, k, v, o, (tt_real *)lse, NULL, sc, BE_REAL);
    for (size_t i = 0; i < nq; i++) o[i] = round_bf16(o[i]); /* the forward's output, stored in bf16 */
    cpu->attn_bwd(B, S, H, G, D, q, k, v, o, (tt_real *)lse, dout, dq, dk, dv, NULL, sc, BE_REAL);
    float *packed = tt_xmalloc(nr * 4); /* cuDNN's (B, H, S) log-sum-exp */
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++)
            for (int h = 0; h < H; h++) packed[((size_t)b * H + h) * S + s] = lse[((size_t)b * S + s) * H + h];

    for (int dir = TT_SDPA_FWD; dir <= TT_SDPA_BWD; dir++) {
        static tt_sdpa_graph g;
        CHECK(tt_sdpa_graph_describe(dir, sh, &g) == 0);
        ev e = {.g = &g};
        float *got_o = tt_xcalloc(nq, 4), *got_l = tt_xcalloc(nr, 4), *got_dq = tt_xcalloc(nq, 4);
        float *got_dk = tt_xcalloc(nk, 4), *got_dv = tt_xcalloc(nk, 4);
        float *sum = tt_xcalloc(nr, 4), *acc = tt_xcalloc(nq, 4);
        struct { int64_t uid; float *p; int in; } io[] = {
            {TT_SDPA_UID_Q, q, 1}, {TT_SDPA_UID_K, k, 1}, {TT_SDPA_UID_V, v, 1},
            {TT_SDPA_UID_O, dir ? o : got_o, dir}, {TT_SDPA_UID_STATS, dir ? packed : got_l, dir},
            {TT_SDPA_UID_DO, dout, 1}, {TT_SDPA_UID_DQ, got_dq, 0}, {TT_SDPA_UID_DK, got_dk, 0},
            {TT_SDPA_UID_DV, got_dv, 0}, {TT_SDPA_UID_SUM, sum, 0}, {TT_SDPA_UID_DQACC, acc, 0},
        };
        for (size_t i = 0; i < sizeof io / sizeof io[0]; i++) {
            int t = by_uid(&g, io[i].uid);
            if (t < 0) continue;
            for (int u = 0; u < g.nt; u++) /* every tensor of that id (K as K^T and again in the dQ product) */
                if (g.t[u].uid == io[i].uid) {
                    e.buf[u] = io[i].p, e.written[u] = io[i].in;
                    memcpy(e.str[u], g.t[u].str, sizeof e.str[u]);
                }
        }
        for (int i = 0; i < g.nt; i++)
            CHECK_MSG(g.t[i].virt || g.t[i].byval || e.buf[i], "tensor %lld: no buffer of ours", (long long)g.t[i].uid);
        run(&e);
        char what[96];
        snprintf(what, sizeof what, "B %d S %d heads %d/%d D %d", B, S, H, G, D);
        if (dir == TT_SDPA_FWD) {
            double eo = rel_err(o, got_o, nq), el = rel_err(packed, got_l, nr);
            printf("forward  %s: out %.2e, lse %.2e\n", what, eo, el);
            CHECK_MSG(eo < 1e-2, "forward %s: out relative error %.3g", what, eo);
            CHECK_MSG(el < 1e-5, "forward %s: lse relative error %.3g", what, el);
        } else {
            double eq = rel_err(dq, got_dq, nq), ek = rel_err(dk, got_dk, nk), evv = rel_err(dv, got_dv, nk);
            printf("backward %s: dq %.2e, dk %.2e, dv %.2e\n", what, eq, ek, evv);
            CHECK_MSG(eq < 1e-2 && ek < 1e-2 && evv < 1e-2, "backward %s: dq %.3g dk %.3g dv %.3g", what, eq, ek, evv);
        }
        for (int i = 0; i < g.nt; i++) free(e.owned[i]);
        free(got_o), free(got_l), free(got_dq), free(got_dk), free(got_dv), free(sum), free(acc);
    }
    free(q), free(k), free(v), free(o), free(dout), free(lse), free(dq), free(dk), free(dv), free(sc), free(packed);
}

int main(void) {
    tt_rng rng;
    rng_seed(&rng, 11, 12);
    const tt_sdpa_shape shapes[] = {{2, 7, 4, 2, 8}, {1, 5, 3, 3, 8}, {2, 9, 6, 1, 16}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) one_shape(shapes[i], &rng);
    TEST_END();
}

#else

int main(void) {
    fprintf(stderr, "test_cudnn_graph: skipped: built without cuDNN's headers\n");
    return 77;
}

#endif

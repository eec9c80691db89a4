/* kernels/cuda/cuda_cudnn.c — cuDNN's flash-attention engines, loaded with
 * dlopen and driven through its backend (C) API: see cuda_cudnn.h.
 *
 * The graph of each direction is written out op by op below, in the order
 * and with the tensor shapes cuDNN's frontend uses for SDPA (dims in cuDNN's
 * b, h, s, d order; strides say where our row-major (B*S, heads*D) buffers
 * keep them). cuDNN's runtime recognises the pattern and compiles one fused
 * kernel per direction; a graph it does not recognise gets no engine, which
 * tt_sdpa_plan_new reports. */
#include "kernels/cuda/cuda_cudnn.h"

#include "core/base/common.h"

#if defined(TT_HAVE_CUDA) && __has_include(<cudnn_graph.h>)
#include <cudnn_graph.h>
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tt_cudnn {
    void *lib;
    size_t version;
    size_t (*getVersion)(void);
    const char *(*getErrorString)(cudnnStatus_t);
    void (*getLastErrorString)(char *, size_t);
    cudnnStatus_t (*create)(cudnnHandle_t *);
    cudnnStatus_t (*destroy)(cudnnHandle_t);
    cudnnStatus_t (*setStream)(cudnnHandle_t, cudaStream_t);
    cudnnStatus_t (*createDesc)(cudnnBackendDescriptorType_t, cudnnBackendDescriptor_t *);
    cudnnStatus_t (*destroyDesc)(cudnnBackendDescriptor_t);
    cudnnStatus_t (*setAttr)(cudnnBackendDescriptor_t, cudnnBackendAttributeName_t, cudnnBackendAttributeType_t,
                             int64_t, const void *);
    cudnnStatus_t (*getAttr)(cudnnBackendDescriptor_t, cudnnBackendAttributeName_t, cudnnBackendAttributeType_t,
                             int64_t, int64_t *, void *);
    cudnnStatus_t (*finalize)(cudnnBackendDescriptor_t);
    cudnnStatus_t (*execute)(cudnnHandle_t, cudnnBackendDescriptor_t, cudnnBackendDescriptor_t);
};

static void say(char *why, size_t n, const char *fmt, ...) {
    if (!why || !n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
}

tt_cudnn *tt_cudnn_open(char *why, size_t n) {
    const char *name = getenv("TT_CUDNN_LIB");
    if (!name || !*name) name = "libcudnn.so.9";
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        say(why, n, "cannot load %s (%s); set TT_CUDNN_LIB to its path or add its folder to LD_LIBRARY_PATH", name,
            dlerror());
        return NULL;
    }
    tt_cudnn *c = calloc(1, sizeof *c);
    TT_ASSERT(c);
    c->lib = lib;
    /* dlsym returns void *; the casts through a union keep -Wpedantic quiet about object-to-function casts */
#define SYM(field, sym)                                                                                       \
    do {                                                                                                      \
        void *p_ = dlsym(lib, sym);                                                                           \
        if (!p_) {                                                                                            \
            say(why, n, "%s has no %s (cuDNN 9 or newer is needed)", name, sym);                              \
            tt_cudnn_close(c);                                                                                \
            return NULL;                                                                                      \
        }                                                                                                     \
        memcpy(&c->field, &p_, sizeof p_);                                                                    \
    } while (0)
    SYM(getVersion, "cudnnGetVersion");
    SYM(getErrorString, "cudnnGetErrorString");
    SYM(getLastErrorString, "cudnnGetLastErrorString");
    SYM(create, "cudnnCreate");
    SYM(destroy, "cudnnDestroy");
    SYM(setStream, "cudnnSetStream");
    SYM(createDesc, "cudnnBackendCreateDescriptor");
    SYM(destroyDesc, "cudnnBackendDestroyDescriptor");
    SYM(setAttr, "cudnnBackendSetAttribute");
    SYM(getAttr, "cudnnBackendGetAttribute");
    SYM(finalize, "cudnnBackendFinalize");
    SYM(execute, "cudnnBackendExecute");
#undef SYM
    c->version = c->getVersion();
    if (c->version < 90000) {
        say(why, n, "%s is cuDNN %zu; 9.0 or newer is needed", name, c->version);
        tt_cudnn_close(c);
        return NULL;
    }
    return c;
}

void tt_cudnn_close(tt_cudnn *c) {
    if (!c) return;
    /* the library stays loaded: a plan or handle freed later still calls into it, and cuDNN does not
     * support being unloaded and reloaded in one process */
    free(c);
}

size_t tt_cudnn_version(const tt_cudnn *c) { return c->version; }

static void status_msg(tt_cudnn *c, cudnnStatus_t st, const char *what, char *why, size_t n) {
    char last[512] = "";
    c->getLastErrorString(last, sizeof last);
    say(why, n, "cuDNN %zu: %s: %s%s%s", c->version, what, c->getErrorString(st), *last ? ": " : "", last);
}

void *tt_cudnn_handle(tt_cudnn *c, void *stream, char *why, size_t n) {
    cudnnHandle_t h = NULL;
    cudnnStatus_t st = c->create(&h);
    if (st != CUDNN_STATUS_SUCCESS) {
        status_msg(c, st, "cudnnCreate", why, n);
        return NULL;
    }
    st = c->setStream(h, (cudaStream_t)stream);
    if (st != CUDNN_STATUS_SUCCESS) {
        status_msg(c, st, "cudnnSetStream", why, n);
        c->destroy(h);
        return NULL;
    }
    return h;
}

void tt_cudnn_handle_free(tt_cudnn *c, void *handle) {
    if (handle) c->destroy((cudnnHandle_t)handle);
}

/* ---- the graphs ---------------------------------------------------------------- */

/* Tensor ids (the variant pack's keys, cuda_cudnn.h); virtual tensors count up from U_VIRT. */
enum {
    U_Q = TT_SDPA_UID_Q, U_K = TT_SDPA_UID_K, U_V = TT_SDPA_UID_V, U_O = TT_SDPA_UID_O, U_STATS = TT_SDPA_UID_STATS,
    U_DO = TT_SDPA_UID_DO, U_DQ = TT_SDPA_UID_DQ, U_DK = TT_SDPA_UID_DK, U_DV = TT_SDPA_UID_DV,
    U_SUM = TT_SDPA_UID_SUM, U_DQACC = TT_SDPA_UID_DQACC, U_SCALE = TT_SDPA_UID_SCALE, U_ONE = TT_SDPA_UID_ONE,
    U_NEG = TT_SDPA_UID_NEG, U_VIRT = TT_SDPA_UID_VIRT
};

#define PLAN_DESCS 160
/* The masked scores' value: the lowest float, which every cuDNN 9 masks with (-inf only from 9.10). */
#define SDPA_MASKED (-3.40282347e38f)

struct tt_sdpa_plan {
    tt_cudnn *c;
    int dir;
    tt_sdpa_shape sh;
    cudnnBackendDescriptor_t desc[PLAN_DESCS]; /* every descriptor made, freed last to first */
    int ndesc;
    cudnnBackendDescriptor_t plan;
    int64_t workspace, engine;
    /* the by-value scalars: the variant pack points at these */
    float scale, one, neg;
};

/* One graph's construction: the first failure is kept and everything after
 * it does nothing, so the builders below read as the graph, not as checks.
 * rec, when set, receives the graph as data; dry: no cuDNN at all (made-up
 * descriptors, tt_sdpa_graph_describe). */
typedef struct gb {
    tt_sdpa_plan *p;
    int bad;
    char *why;
    size_t n;
    cudnnBackendDescriptor_t ops[TT_SDPA_MAX_OPS];
    int nops;
    int64_t next_uid;
    tt_sdpa_graph *rec;
    cudnnBackendDescriptor_t rec_desc[TT_SDPA_MAX_TENSORS]; /* rec->t[i]'s descriptor */
    int dry;
    uintptr_t dry_next;
} gb;

static cudnnBackendDescriptor_t gb_desc(gb *g, cudnnBackendDescriptorType_t t, const char *what) {
    if (g->bad) return NULL;
    if (g->dry) return (cudnnBackendDescriptor_t)++g->dry_next;
    TT_ASSERT(g->p->ndesc < PLAN_DESCS);
    cudnnBackendDescriptor_t d = NULL;
    cudnnStatus_t st = g->p->c->createDesc(t, &d);
    if (st != CUDNN_STATUS_SUCCESS) {
        status_msg(g->p->c, st, what, g->why, g->n);
        g->bad = 1;
        return NULL;
    }
    g->p->desc[g->p->ndesc++] = d;
    return d;
}

static void gb_set(gb *g, cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t a, cudnnBackendAttributeType_t t,
                   int64_t count, const void *v, const char *what) {
    if (g->bad || g->dry) return;
    cudnnStatus_t st = g->p->c->setAttr(d, a, t, count, v);
    if (st != CUDNN_STATUS_SUCCESS) {
        status_msg(g->p->c, st, what, g->why, g->n);
        g->bad = 1;
    }
}

static void gb_fin(gb *g, cudnnBackendDescriptor_t d, const char *what) {
    if (g->bad || g->dry) return;
    cudnnStatus_t st = g->p->c->finalize(d);
    if (st != CUDNN_STATUS_SUCCESS) {
        status_msg(g->p->c, st, what, g->why, g->n);
        g->bad = 1;
    }
}

/* A tensor descriptor: flag is IS_VIRTUAL (an intermediate cuDNN keeps in
 * the fused kernel) or IS_BY_VALUE (a scalar the variant pack points at in
 * host memory), set when on. */
static cudnnBackendDescriptor_t tensor_desc(gb *g, int64_t uid, cudnnDataType_t dt, const int64_t dim[4],
                                            const int64_t str[4], cudnnBackendAttributeName_t flag, bool on) {
    cudnnBackendDescriptor_t t = gb_desc(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor");
    const int64_t align = 16;
    gb_set(g, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor id");
    gb_set(g, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, "tensor type");
    gb_set(g, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim, "tensor dimensions");
    gb_set(g, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str, "tensor strides");
    gb_set(g, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, "tensor alignment");
    if (on) gb_set(g, t, flag, CUDNN_TYPE_BOOLEAN, 1, &on, "tensor kind");
    gb_fin(g, t, "tensor");
    if (g->rec && !g->bad) {
        tt_sdpa_graph *r = g->rec;
        TT_ASSERT(r->nt < TT_SDPA_MAX_TENSORS);
        tt_sdpa_tensor *e = &r->t[r->nt];
        e->uid = uid;
        memcpy(e->dim, dim, sizeof e->dim);
        memcpy(e->str, str, sizeof e->str);
        e->dtype = (int)dt;
        e->virt = flag == CUDNN_ATTR_TENSOR_IS_VIRTUAL && on;
        e->byval = flag == CUDNN_ATTR_TENSOR_IS_BY_VALUE && on;
        e->value = uid == U_SCALE ? g->p->scale : uid == U_ONE ? g->p->one : uid == U_NEG ? g->p->neg : 0.f;
        g->rec_desc[r->nt++] = t;
    }
    return t;
}

/* A tensor: uid 0 makes a virtual one with the next free id. */
static cudnnBackendDescriptor_t tensor(gb *g, int64_t uid, cudnnDataType_t dt, int64_t d0, int64_t d1, int64_t d2,
                                       int64_t d3, int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    const int64_t dim[4] = {d0, d1, d2, d3}, str[4] = {s0, s1, s2, s3};
    const bool virt = uid == 0;
    return tensor_desc(g, virt ? g->next_uid++ : uid, dt, dim, str, CUDNN_ATTR_TENSOR_IS_VIRTUAL, virt);
}

/* A float scalar passed by value. */
static cudnnBackendDescriptor_t scalar(gb *g, int64_t uid) {
    const int64_t one[4] = {1, 1, 1, 1};
    return tensor_desc(g, uid, CUDNN_DATA_FLOAT, one, one, CUDNN_ATTR_TENSOR_IS_BY_VALUE, true);
}

/* One operation of the graph: a descriptor of type t with its inputs and
 * outputs (attribute, descriptor) — a NULL descriptor is left unset —
 * finalized and added to the graph's list. */
typedef struct opin {
    cudnnBackendAttributeName_t a;
    cudnnBackendDescriptor_t d;
} opin;
static int rec_index(const gb *g, cudnnBackendDescriptor_t d) {
    if (!d) return -1;
    for (int i = 0; i < g->rec->nt; i++)
        if (g->rec_desc[i] == d) return i;
    TT_ASSERT(0); /* every tensor an op takes was made by tensor_desc */
    return -1;
}
/* The op as data (rec): its kind, mode and tensors. */
static void rec_op(gb *g, int kind, int mode, int64_t axis, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
                   cudnnBackendDescriptor_t c, cudnnBackendDescriptor_t y) {
    if (!g->rec || g->bad) return;
    TT_ASSERT(g->rec->nop < TT_SDPA_MAX_OPS);
    tt_sdpa_op *o = &g->rec->op[g->rec->nop++];
    *o = (tt_sdpa_op){kind, mode, axis, {rec_index(g, a), rec_index(g, b), rec_index(g, c)}, rec_index(g, y)};
}

static void add_op(gb *g, cudnnBackendDescriptorType_t t, const char *what, int n, const opin *in) {
    cudnnBackendDescriptor_t op = gb_desc(g, t, what);
    for (int i = 0; i < n; i++)
        if (in[i].d) gb_set(g, op, in[i].a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &in[i].d, what);
    gb_fin(g, op, what);
    if (g->bad) return;
    TT_ASSERT(g->nops < (int)(sizeof g->ops / sizeof g->ops[0]));
    g->ops[g->nops++] = op;
}
#define ADD_OP(g, t, what, ...) \
    add_op(g, t, what, (int)(sizeof((opin[]){__VA_ARGS__}) / sizeof(opin)), (opin[]){__VA_ARGS__})

/* The fp32 accumulation matmul and reduction descriptors carry. */
static const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;

/* y = mode(x[, b[, t]]) elementwise (with broadcasting), computed in prec;
 * axis >= 0 for GEN_INDEX. */
static void pointwise(gb *g, cudnnPointwiseMode_t mode, cudnnDataType_t prec, int64_t axis,
                      cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t,
                      cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t pw = gb_desc(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise");
    gb_set(g, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    gb_set(g, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
    if (axis >= 0) gb_set(g, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
    gb_fin(g, pw, "pointwise");
    rec_op(g, TT_SDPA_OP_POINTWISE, (int)mode, axis, x, b, t, y);
    ADD_OP(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise op",
           {CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw}, {CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x},
           {CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b}, {CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t},
           {CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y});
}

/* c = a b over the last two dimensions, batched over the first two (b's
 * heads broadcast over a's groups of heads), fp32 accumulation. */
static void matmul(gb *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t mm = gb_desc(g, CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul");
    gb_set(g, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "matmul type");
    gb_fin(g, mm, "matmul");
    rec_op(g, TT_SDPA_OP_MATMUL, 0, -1, a, b, NULL, c);
    ADD_OP(g, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul op", {CUDNN_ATTR_OPERATION_MATMUL_ADESC, a},
           {CUDNN_ATTR_OPERATION_MATMUL_BDESC, b}, {CUDNN_ATTR_OPERATION_MATMUL_CDESC, c},
           {CUDNN_ATTR_OPERATION_MATMUL_DESC, mm});
}

/* y = x reduced (max or sum) over the dimensions where y has extent 1. */
static void reduction(gb *g, cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t rd = gb_desc(g, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction");
    gb_set(g, rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode, "reduction mode");
    gb_set(g, rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "reduction type");
    gb_fin(g, rd, "reduction");
    rec_op(g, TT_SDPA_OP_REDUCTION, (int)mode, -1, x, NULL, NULL, y);
    ADD_OP(g, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction op", {CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x},
           {CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y}, {CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd});
}

/* y = x seen with other dimensions and strides (a transpose, no data moved). */
static void reshape(gb *g, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    rec_op(g, TT_SDPA_OP_RESHAPE, 0, -1, x, NULL, NULL, y);
    ADD_OP(g, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape op", {CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x},
           {CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y});
}

/* The scores' shapes: (B, H, S, S) fp32, and per row (B, H, S, 1). */
static cudnnBackendDescriptor_t scores(gb *g, cudnnDataType_t dt) {
    const int64_t B = g->p->sh.B, H = g->p->sh.H, S = g->p->sh.S;
    return tensor(g, 0, dt, B, H, S, S, H * S * S, S * S, S, 1);
}
static cudnnBackendDescriptor_t rows(gb *g, int64_t uid) {
    const int64_t B = g->p->sh.B, H = g->p->sh.H, S = g->p->sh.S;
    return tensor(g, uid, CUDNN_DATA_FLOAT, B, H, S, 1, H * S, S, 1, 1);
}

/* s = causal(scale * Q K^T): rows keep the keys at or before them (row >= column). */
static cudnnBackendDescriptor_t masked_scores(gb *g, cudnnBackendDescriptor_t q, cudnnBackendDescriptor_t kt,
                                              cudnnBackendDescriptor_t scale, cudnnBackendDescriptor_t neg) {
    cudnnBackendDescriptor_t s0 = scores(g, CUDNN_DATA_FLOAT), s1 = scores(g, CUDNN_DATA_FLOAT);
    matmul(g, q, kt, s0);
    pointwise(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, -1, s0, scale, NULL, s1);
    cudnnBackendDescriptor_t row = scores(g, CUDNN_DATA_INT32), col = scores(g, CUDNN_DATA_INT32);
    cudnnBackendDescriptor_t keep = scores(g, CUDNN_DATA_BOOLEAN), s2 = scores(g, CUDNN_DATA_FLOAT);
    pointwise(g, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, 2, s1, NULL, NULL, row);
    pointwise(g, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, 3, s1, NULL, NULL, col);
    pointwise(g, CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, -1, row, col, NULL, keep);
    pointwise(g, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, -1, s1, neg, keep, s2);
    return s2;
}

/* Q, K^T, V (and their kin) as cuDNN sees our buffers. */
typedef struct qkv {
    cudnnBackendDescriptor_t q, kt, v, vt, o, stats, scale, neg;
} qkv;

static qkv inputs(gb *g) {
    const int64_t B = g->p->sh.B, H = g->p->sh.H, G = g->p->sh.Hkv, S = g->p->sh.S, D = g->p->sh.D;
    qkv t;
    t.q = tensor(g, U_Q, CUDNN_DATA_BFLOAT16, B, H, S, D, S * H * D, D, H * D, 1);
    t.kt = tensor(g, U_K, CUDNN_DATA_BFLOAT16, B, G, D, S, S * G * D, D, 1, G * D);
    t.v = g->p->dir == TT_SDPA_FWD ? tensor(g, U_V, CUDNN_DATA_BFLOAT16, B, G, S, D, S * G * D, D, G * D, 1) : NULL;
    t.vt = g->p->dir == TT_SDPA_BWD ? tensor(g, U_V, CUDNN_DATA_BFLOAT16, B, G, D, S, S * G * D, D, 1, G * D) : NULL;
    t.o = tensor(g, U_O, CUDNN_DATA_BFLOAT16, B, H, S, D, S * H * D, D, H * D, 1);
    t.stats = rows(g, U_STATS); /* packed (B, H, S): engines before 9.26 read and write it so whatever the strides */
    t.scale = scalar(g, U_SCALE);
    t.neg = scalar(g, U_NEG);
    return t;
}

static void graph_fwd(gb *g) {
    qkv t = inputs(g);
    cudnnBackendDescriptor_t s = masked_scores(g, t.q, t.kt, t.scale, t.neg);
    /* softmax with its log-sum-exp: stats = max + log(sum exp(s - max)) */
    cudnnBackendDescriptor_t mx = rows(g, 0), d = scores(g, CUDNN_DATA_FLOAT), e = scores(g, CUDNN_DATA_FLOAT);
    cudnnBackendDescriptor_t sum = rows(g, 0), lg = rows(g, 0), p = scores(g, CUDNN_DATA_BFLOAT16);
    reduction(g, CUDNN_REDUCE_TENSOR_MAX, s, mx);
    pointwise(g, CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, -1, s, mx, NULL, d);
    pointwise(g, CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, -1, d, NULL, NULL, e);
    reduction(g, CUDNN_REDUCE_TENSOR_ADD, e, sum);
    pointwise(g, CUDNN_POINTWISE_LOG, CUDNN_DATA_FLOAT, -1, sum, NULL, NULL, lg);
    pointwise(g, CUDNN_POINTWISE_ADD, CUDNN_DATA_FLOAT, -1, mx, lg, NULL, t.stats);
    pointwise(g, CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, -1, e, sum, NULL, p);
    matmul(g, p, t.v, t.o);
}

/* dX for K or V: (B, Hkv, S, D) in the (B*S, Hkv*D) buffer; with grouped
 * heads, the product runs per query head and a sum folds each group. */
static void grad_kv(gb *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, int64_t uid) {
    const int64_t B = g->p->sh.B, H = g->p->sh.H, G = g->p->sh.Hkv, S = g->p->sh.S, D = g->p->sh.D;
    cudnnBackendDescriptor_t dx = tensor(g, uid, CUDNN_DATA_BFLOAT16, B, G, S, D, S * G * D, D, G * D, 1);
    if (H == G) {
        matmul(g, a, b, dx);
        return;
    }
    cudnnBackendDescriptor_t full = tensor(g, 0, CUDNN_DATA_BFLOAT16, B, H, S, D, H * S * D, S * D, D, 1);
    matmul(g, a, b, full);
    reduction(g, CUDNN_REDUCE_TENSOR_ADD, full, dx);
}

static void graph_bwd(gb *g) {
    const int64_t B = g->p->sh.B, H = g->p->sh.H, G = g->p->sh.Hkv, S = g->p->sh.S, D = g->p->sh.D;
    qkv t = inputs(g);
    cudnnBackendDescriptor_t dO = tensor(g, U_DO, CUDNN_DATA_BFLOAT16, B, H, S, D, S * H * D, D, H * D, 1);
    cudnnBackendDescriptor_t dQ = tensor(g, U_DQ, CUDNN_DATA_BFLOAT16, B, H, S, D, S * H * D, D, H * D, 1);
    cudnnBackendDescriptor_t one = scalar(g, U_ONE);
    /* sum_d dO * O per row (ours, in the scratch) */
    cudnnBackendDescriptor_t dOO = tensor(g, 0, CUDNN_DATA_FLOAT, B, H, S, D, H * S * D, S * D, H * D, 1);
    cudnnBackendDescriptor_t r = rows(g, 0), sum = rows(g, U_SUM);
    pointwise(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, -1, dO, t.o, NULL, dOO);
    reduction(g, CUDNN_REDUCE_TENSOR_ADD, dOO, r);
    pointwise(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, -1, r, one, NULL, sum);
    /* P = exp(s - lse) */
    cudnnBackendDescriptor_t s = masked_scores(g, t.q, t.kt, t.scale, t.neg);
    cudnnBackendDescriptor_t d = scores(g, CUDNN_DATA_FLOAT), p = scores(g, CUDNN_DATA_FLOAT);
    pointwise(g, CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, -1, s, t.stats, NULL, d);
    pointwise(g, CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, -1, d, NULL, NULL, p);
    /* dV = P^T dO */
    cudnnBackendDescriptor_t pt = tensor(g, 0, CUDNN_DATA_BFLOAT16, B, H, S, S, H * S * S, S * S, 1, S);
    reshape(g, p, pt);
    grad_kv(g, pt, dO, U_DV);
    /* dS = scale * P * (dO V^T - sum) */
    cudnnBackendDescriptor_t dp = scores(g, CUDNN_DATA_FLOAT), dp1 = scores(g, CUDNN_DATA_FLOAT);
    cudnnBackendDescriptor_t dp2 = scores(g, CUDNN_DATA_FLOAT), dp3 = scores(g, CUDNN_DATA_FLOAT);
    cudnnBackendDescriptor_t ds = scores(g, CUDNN_DATA_FLOAT);
    matmul(g, dO, t.vt, dp);
    pointwise(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, -1, dp, one, NULL, dp1);
    pointwise(g, CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, -1, dp1, sum, NULL, dp2);
    pointwise(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, -1, dp2, p, NULL, dp3);
    pointwise(g, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, -1, dp3, t.scale, NULL, ds);
    /* dK = dS^T Q */
    cudnnBackendDescriptor_t dst = tensor(g, 0, CUDNN_DATA_BFLOAT16, B, H, S, S, H * S * S, S * S, 1, S);
    reshape(g, ds, dst);
    grad_kv(g, dst, t.q, U_DK);
    /* dQ = dS K, accumulated in fp32 (ours, in the scratch), then rounded */
    cudnnBackendDescriptor_t k = tensor(g, 0, CUDNN_DATA_BFLOAT16, B, G, S, D, S * G * D, D, G * D, 1);
    cudnnBackendDescriptor_t acc = tensor(g, U_DQACC, CUDNN_DATA_FLOAT, B, H, S, D, H * S * D, S * D, D, 1);
    reshape(g, t.kt, k);
    matmul(g, ds, k, acc);
    pointwise(g, CUDNN_POINTWISE_IDENTITY, CUDNN_DATA_FLOAT, -1, acc, NULL, NULL, dQ);
}

static int64_t engine_index(gb *g, cudnnBackendDescriptor_t cfg) {
    tt_cudnn *c = g->p->c;
    cudnnBackendDescriptor_t eng = NULL;
    int64_t cnt = 0, idx = -1;
    if (c->createDesc(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) != CUDNN_STATUS_SUCCESS) return -1;
    if (c->getAttr(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cnt, &eng) ==
            CUDNN_STATUS_SUCCESS &&
        cnt == 1)
        c->getAttr(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &cnt, &idx);
    c->destroyDesc(eng);
    return idx;
}

tt_sdpa_plan *tt_sdpa_plan_new(tt_cudnn *c, void *handle, const char *devprop_json, int dir, tt_sdpa_shape sh,
                               char *why, size_t n) {
    TT_ASSERT(dir == TT_SDPA_FWD || dir == TT_SDPA_BWD);
    if (sh.B < 1 || sh.S < (dir == TT_SDPA_BWD ? 2 : 1) || sh.Hkv < 1 || sh.H % sh.Hkv != 0 || sh.D < 8 ||
        sh.D % 8 != 0 || sh.D > 256) {
        say(why, n, "cuDNN attention: shapes B %d S %d heads %d/%d head_dim %d are not supported", sh.B, sh.S, sh.H,
            sh.Hkv, sh.D);
        return NULL;
    }
    /* what NVIDIA's frontend refuses too (its sdpa support checks) */
    if (c->version == 91000 || c->version == 91001) {
        say(why, n, "cuDNN %zu: 9.10.0 and 9.10.1 have known bugs in bf16 attention; use another cuDNN", c->version);
        return NULL;
    }
    if (dir == TT_SDPA_BWD && c->version <= 91500 && sh.S % 128 != 0) {
        say(why, n, "cuDNN %zu's attention backward needs seq a multiple of 128 (up to 9.15.0), not %d", c->version,
            sh.S);
        return NULL;
    }
    tt_sdpa_plan *p = calloc(1, sizeof *p);
    TT_ASSERT(p);
    p->c = c;
    p->dir = dir;
    p->sh = sh;
    p->scale = 1.0f / sqrtf((float)sh.D);
    p->one = 1.0f;
    p->neg = SDPA_MASKED;
    p->engine = -1;
    gb g = {.p = p, .why = why, .n = n, .next_uid = U_VIRT};
    if (dir == TT_SDPA_FWD)
        graph_fwd(&g);
    else
        graph_bwd(&g);

    cudnnBackendDescriptor_t devprop = NULL;
    if (!handle) {
        TT_ASSERT(devprop_json);
        devprop = gb_desc(&g, CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, "device properties");
        gb_set(&g, devprop, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, (int64_t)strlen(devprop_json),
               devprop_json, "device properties");
        gb_fin(&g, devprop, "device properties");
    }
    cudnnBackendDescriptor_t graph = gb_desc(&g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
    gb_set(&g, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, g.nops, g.ops, "graph ops");
    if (handle) gb_set(&g, graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "graph handle");
    gb_fin(&g, graph, dir == TT_SDPA_FWD ? "forward attention graph" : "backward attention graph");

    cudnnBackendDescriptor_t heur = gb_desc(&g, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics");
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    gb_set(&g, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph, "heuristics");
    gb_set(&g, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
    if (devprop)
        gb_set(&g, heur, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &devprop, "heuristics");
    gb_fin(&g, heur, "heuristics");
    int64_t count = 0;
    if (!g.bad) {
        cudnnStatus_t st =
            c->getAttr(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, NULL);
        if (st != CUDNN_STATUS_SUCCESS) {
            status_msg(c, st, "heuristics results", why, n);
            g.bad = 1;
        } else if (count < 1) {
            say(why, n, "cuDNN %zu has no engine for this attention graph", c->version);
            g.bad = 1;
        }
    }
    if (count > 8) count = 8;
    cudnnBackendDescriptor_t cfgs[8] = {0};
    for (int64_t i = 0; i < count && !g.bad; i++)
        cfgs[i] = gb_desc(&g, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config");
    if (!g.bad) {
        int64_t got = 0;
        cudnnStatus_t st =
            c->getAttr(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, cfgs);
        if (st != CUDNN_STATUS_SUCCESS) {
            status_msg(c, st, "heuristics results", why, n);
            g.bad = 1;
        }
        count = got < count ? got : count;
        if (!g.bad && count < 1) { /* ranked, but none passed cuDNN's support checks for this GPU */
            say(why, n, "cuDNN %zu has no engine for this attention graph on this GPU", c->version);
            g.bad = 1;
        }
    }
    /* the first ranked engine that builds. Without a GPU (devprop) cuDNN compiles the fused kernel for
     * the described one and stops where the driver would load it: that engine is reported, unloaded. */
    int built = 0;
    for (int64_t i = 0; i < count && !g.bad && !built; i++) {
        cudnnBackendDescriptor_t plan = gb_desc(&g, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan");
        if (g.bad) break;
        cudnnStatus_t st = c->setAttr(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                      &cfgs[i]);
        if (st == CUDNN_STATUS_SUCCESS)
            st = handle ? c->setAttr(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle)
                        : c->setAttr(plan, CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                     &devprop);
        if (st == CUDNN_STATUS_SUCCESS) st = c->finalize(plan);
        int64_t got = 0;
        if (st == CUDNN_STATUS_SUCCESS) {
            p->plan = plan;
            st = c->getAttr(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got, &p->workspace);
        } else if (!handle && st == CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER) {
            st = c->getAttr(cfgs[i], CUDNN_ATTR_ENGINECFG_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got, &p->workspace);
        } else {
            status_msg(c, st, "no engine it ranks builds this attention graph; the last", why, n);
            continue;
        }
        built = 1;
        p->engine = engine_index(&g, cfgs[i]); /* for the log only: -1 if cuDNN does not say */
        if (st != CUDNN_STATUS_SUCCESS) {
            status_msg(c, st, "plan workspace", why, n);
            g.bad = 1;
        }
    }
    if (g.bad || !built) {
        tt_sdpa_plan_free(p);
        return NULL;
    }
    return p;
}

int tt_sdpa_graph_describe(int dir, tt_sdpa_shape sh, tt_sdpa_graph *out) {
    TT_ASSERT(dir == TT_SDPA_FWD || dir == TT_SDPA_BWD);
    tt_sdpa_plan p = {.dir = dir, .sh = sh, .scale = 1.0f / sqrtf((float)sh.D), .one = 1.0f, .neg = SDPA_MASKED};
    memset(out, 0, sizeof *out);
    gb g = {.p = &p, .next_uid = U_VIRT, .rec = out, .dry = 1};
    if (dir == TT_SDPA_FWD)
        graph_fwd(&g);
    else
        graph_bwd(&g);
    return 0;
}

void tt_sdpa_plan_free(tt_sdpa_plan *p) {
    if (!p) return;
    for (int i = p->ndesc - 1; i >= 0; i--) p->c->destroyDesc(p->desc[i]);
    free(p);
}

int64_t tt_sdpa_plan_workspace(const tt_sdpa_plan *p) { return p->workspace; }
int64_t tt_sdpa_plan_engine(const tt_sdpa_plan *p) { return p->engine; }

int tt_sdpa_loaded(const tt_sdpa_plan *p) { return p->plan != NULL; }

int tt_sdpa_run(tt_sdpa_plan *p, void *handle, const tt_sdpa_io *io, char *why, size_t n) {
    tt_cudnn *c = p->c;
    TT_ASSERT(p->plan); /* a plan built for a GPU that is not there cannot run */
    int64_t uids[16];
    void *ptrs[16];
    int k = 0;
#define PUT(u, ptr) (uids[k] = (u), ptrs[k] = (void *)(uintptr_t)(ptr), k++)
    PUT(U_Q, io->q);
    PUT(U_K, io->k);
    PUT(U_V, io->v);
    PUT(U_O, io->o);
    const tt_sdpa_scratch l = tt_sdpa_layout(p->sh);
    PUT(U_STATS, (char *)io->scratch + l.lse);
    PUT(U_SCALE, &p->scale);
    PUT(U_NEG, &p->neg);
    if (p->dir == TT_SDPA_BWD) {
        PUT(U_DO, io->dout);
        PUT(U_DQ, io->dq);
        PUT(U_DK, io->dk);
        PUT(U_DV, io->dv);
        PUT(U_ONE, &p->one);
        PUT(U_SUM, (char *)io->scratch + l.sum);
        PUT(U_DQACC, (char *)io->scratch + l.dqacc);
    }
#undef PUT
    cudnnBackendDescriptor_t vp = NULL;
    cudnnStatus_t st = c->createDesc(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (st == CUDNN_STATUS_SUCCESS)
        st = c->setAttr(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, k, uids);
    if (st == CUDNN_STATUS_SUCCESS)
        st = c->setAttr(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, k, ptrs);
    void *ws = io->workspace;
    if (st == CUDNN_STATUS_SUCCESS)
        st = c->setAttr(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (st == CUDNN_STATUS_SUCCESS) st = c->finalize(vp);
    if (st == CUDNN_STATUS_SUCCESS) st = c->execute((cudnnHandle_t)handle, p->plan, vp);
    if (st != CUDNN_STATUS_SUCCESS)
        status_msg(c, st, p->dir == TT_SDPA_FWD ? "attention forward" : "attention backward", why, n);
    if (vp) c->destroyDesc(vp);
    return st == CUDNN_STATUS_SUCCESS ? 0 : -1;
}

#else /* no CUDA toolkit (or no cuDNN headers) at build time */

tt_cudnn *tt_cudnn_open(char *why, size_t n) {
    if (why && n) snprintf(why, n, "this build has no cuDNN support (built without the CUDA toolkit's cuDNN headers)");
    return NULL;
}
/* nothing below is reached without a library */
void tt_cudnn_close(tt_cudnn *c) {}
size_t tt_cudnn_version(const tt_cudnn *c) { return 0; }
void *tt_cudnn_handle(tt_cudnn *c, void *stream, char *why, size_t n) { return NULL; }
void tt_cudnn_handle_free(tt_cudnn *c, void *handle) {}
tt_sdpa_plan *tt_sdpa_plan_new(tt_cudnn *c, void *handle, const char *devprop_json, int dir, tt_sdpa_shape sh,
                               char *why, size_t n) {
    return NULL;
}
void tt_sdpa_plan_free(tt_sdpa_plan *p) {}
int64_t tt_sdpa_plan_workspace(const tt_sdpa_plan *p) { return 0; }
int64_t tt_sdpa_plan_engine(const tt_sdpa_plan *p) { return -1; }
int tt_sdpa_loaded(const tt_sdpa_plan *p) { return 0; }
int tt_sdpa_run(tt_sdpa_plan *p, void *handle, const tt_sdpa_io *io, char *why, size_t n) { return -1; }
int tt_sdpa_graph_describe(int dir, tt_sdpa_shape sh, tt_sdpa_graph *out) { return -1; }

#endif

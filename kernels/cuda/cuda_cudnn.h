/* kernels/cuda/cuda_cudnn.h — causal grouped-query attention through cuDNN's
 * fused flash-attention engines: the CUDA backend's TT_CUDA_ATTN=cudnn path.
 *
 * cuDNN is loaded with dlopen (libcudnn.so.9, or the file TT_CUDNN_LIB names),
 * so the binary runs where it is missing; every failure — no library, a
 * version without the engines, shapes the engines refuse — is a message in
 * `why` and a NULL, and the caller keeps its own kernels.
 *
 * The graphs are the ones cuDNN's frontend builds for SDPA and the runtime
 * fuses into one flash-attention kernel each way (Q K^T, scale, causal mask
 * by row >= column, softmax with its log-sum-exp saved, P V; the backward from
 * that log-sum-exp, with an fp32 dQ accumulator and dO.O row sums of ours).
 * A plan can be built for a GPU that is not there, from its properties
 * (devprop_json): tests/test_cudnn_plan.c checks here, without a GPU, that
 * cuDNN would run both graphs on an H200 at the real shapes.
 *
 * Layouts are the backend's (backend.h attn_fwd): q/out/dq (B*S, H*D),
 * k/v/dk/dv (B*S, Hkv*D), bf16. The log-sum-exp of each row's scaled scores
 * (natural log, as the other paths keep it) lives at the start of the
 * scratch packed (B, H, S) fp32 — cuDNN engines before 9.26 read and write
 * it packed whatever strides the graph names — and the caller moves it to
 * and from its (B*S, H) lse. The backward adds into its dQ accumulator from
 * many blocks at once: unlike the kernels it is not bit-reproducible run to
 * run. */
#ifndef TT_CUDA_CUDNN_H
#define TT_CUDA_CUDNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tt_cudnn tt_cudnn;

/* Loads the library and its entry points. NULL (and why) if it cannot:
 * missing, or older than 9.0. Free with tt_cudnn_close. */
tt_cudnn *tt_cudnn_open(char *why, size_t n);
void tt_cudnn_close(tt_cudnn *c);
/* cudnnGetVersion(): 91900 for 9.19.0. */
size_t tt_cudnn_version(const tt_cudnn *c);
/* A handle on the current device issuing to stream (a cudaStream_t); NULL
 * (and why) where there is no usable GPU. Destroy with tt_cudnn_handle_free. */
void *tt_cudnn_handle(tt_cudnn *c, void *stream, char *why, size_t n);
void tt_cudnn_handle_free(tt_cudnn *c, void *handle);

enum { TT_SDPA_FWD, TT_SDPA_BWD };

typedef struct tt_sdpa_shape {
    int B, S, H, Hkv, D; /* batch, sequence, query heads, KV heads (H % Hkv == 0), head_dim */
} tt_sdpa_shape;

typedef struct tt_sdpa_plan tt_sdpa_plan;

/* The execution plan of one direction for one shape: for the GPU behind
 * handle, or (handle NULL) for a GPU described by devprop_json (cuDNN's
 * device-property JSON). The first engine the heuristics rank that
 * finalizes is kept. NULL (and why) if cuDNN refuses the graph or no engine
 * builds. Without a GPU cuDNN still compiles the engine's kernel for the
 * described one (given a libcuda.so.1 to load, the toolkit's stub will do)
 * and stops where the driver would load it: that plan is returned unloaded
 * (tt_sdpa_loaded 0), with its engine and workspace, and cannot run. Free
 * with tt_sdpa_plan_free. */
tt_sdpa_plan *tt_sdpa_plan_new(tt_cudnn *c, void *handle, const char *devprop_json, int dir, tt_sdpa_shape sh,
                               char *why, size_t n);
void tt_sdpa_plan_free(tt_sdpa_plan *p);
/* cuDNN's own workspace for the plan (bytes). */
int64_t tt_sdpa_plan_workspace(const tt_sdpa_plan *p);
/* The engine cuDNN chose (its global index), for the log. */
int64_t tt_sdpa_plan_engine(const tt_sdpa_plan *p);
/* 1 when the plan can run (built with a handle). */
int tt_sdpa_loaded(const tt_sdpa_plan *p);

/* The scratch's layout, byte offsets from its start (the same both ways):
 * our buffers, fp32, 256-byte aligned each — the log-sum-exp (B, H, S), and
 * for the backward the dO.O row sums (B, H, S) and the dQ accumulator
 * (B, H, S, D) — then cuDNN's workspace. */
typedef struct tt_sdpa_scratch {
    size_t lse, sum, dqacc, workspace;
} tt_sdpa_scratch;
static inline tt_sdpa_scratch tt_sdpa_layout(tt_sdpa_shape sh) {
    const size_t r = ((size_t)sh.B * sh.H * sh.S * sizeof(float) + 255) / 256 * 256;
    const tt_sdpa_scratch l = {0, r, 2 * r, r * (2 + (size_t)sh.D)};
    return l;
}
/* The workspace cuDNN 9.19's engines ask (tests/test_cudnn_plan.c checks it
 * on every shape it plans): the backward keeps the grouped heads' dK and dV
 * per query head, bf16, (B, H, S, D) each, when H > Hkv; 256 bytes else. The
 * backend reserves this and takes another path where a plan asks more. */
static inline size_t tt_sdpa_workspace_estimate(int dir, tt_sdpa_shape sh) {
    if (dir != TT_SDPA_BWD || sh.H == sh.Hkv) return 256;
    return (size_t)sh.B * sh.H * sh.S * sh.D * 2 * sizeof(uint16_t) + 256;
}

typedef struct tt_sdpa_io {
    const void *q, *k, *v; /* bf16, layouts above */
    void *o;               /* forward: written; backward: read */
    const void *dout;      /* backward */
    void *dq, *dk, *dv;    /* backward: overwritten */
    void *scratch;         /* tt_sdpa_layout's buffers, 256-byte aligned */
    void *workspace;       /* tt_sdpa_plan_workspace bytes (at the layout's workspace) */
} tt_sdpa_io;

/* Enqueues the plan on the handle's stream. 0, or -1 and why. */
int tt_sdpa_run(tt_sdpa_plan *p, void *handle, const tt_sdpa_io *io, char *why, size_t n);

/* ---- the graphs as data ---------------------------------------------------------
 * What tt_sdpa_plan_new hands cuDNN, op by op in order, for
 * tests/test_cudnn_graph.c to evaluate on the CPU against the reference
 * attention (cuDNN's planning checks the graph's form, not its arithmetic).
 * Non-virtual tensors are the variant pack's, by id: */
enum {
    TT_SDPA_UID_Q = 1, TT_SDPA_UID_K, TT_SDPA_UID_V, TT_SDPA_UID_O, TT_SDPA_UID_STATS, TT_SDPA_UID_DO,
    TT_SDPA_UID_DQ, TT_SDPA_UID_DK, TT_SDPA_UID_DV, TT_SDPA_UID_SUM, TT_SDPA_UID_DQACC, TT_SDPA_UID_SCALE,
    TT_SDPA_UID_ONE, TT_SDPA_UID_NEG, TT_SDPA_UID_VIRT = 100 /* virtual tensors count up from here */
};
enum { TT_SDPA_OP_POINTWISE, TT_SDPA_OP_MATMUL, TT_SDPA_OP_REDUCTION, TT_SDPA_OP_RESHAPE };
typedef struct tt_sdpa_tensor {
    int64_t uid, dim[4], str[4]; /* cuDNN's (b, h, s, d) order */
    int dtype;                   /* a cudnnDataType_t */
    int virt, byval;
    float value;                 /* byval: the scalar */
} tt_sdpa_tensor;
typedef struct tt_sdpa_op {
    int kind;     /* TT_SDPA_OP_* */
    int mode;     /* pointwise: a cudnnPointwiseMode_t; reduction: a cudnnReduceTensorOp_t */
    int64_t axis; /* GEN_INDEX's */
    int in[3];    /* tensor indexes: pointwise x, b, t; matmul a, b; reduction and reshape x; -1 unused */
    int out;
} tt_sdpa_op;
#define TT_SDPA_MAX_TENSORS 96
#define TT_SDPA_MAX_OPS 48
typedef struct tt_sdpa_graph {
    int nt, nop;
    tt_sdpa_tensor t[TT_SDPA_MAX_TENSORS];
    tt_sdpa_op op[TT_SDPA_MAX_OPS];
} tt_sdpa_graph;
/* The graph of a direction for a shape, without cuDNN (its headers only, at
 * build time): 0, or -1 in a build without them. */
int tt_sdpa_graph_describe(int dir, tt_sdpa_shape sh, tt_sdpa_graph *out);

#ifdef __cplusplus
}
#endif

#endif

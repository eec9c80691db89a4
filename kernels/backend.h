/* kernels/backend.h — the compute backend: a table of function pointers that
 * the CPU reference (kernels/cpu/) and the CUDA backend (kernels/cuda/) fill
 * (STYLE.md 3). core/ calls only the be_* wrappers below, which check shapes
 * and pointers once and dispatch; no kernel is called directly.
 *
 * Element types: LoRA parameters and their gradients are tt_real — float, or
 * double in the "f64" build used by the finite-difference gradient tests
 * (compile with -DTT_F64). Activations and the workspace are tt_real or bf16
 * (BE_REAL / BE_BF16, named by each op's dt argument: --act-dtype). Frozen
 * weights arrive in their stored encoding (tt_dtype) and are dequantized by
 * be_dequant.
 *
 * Layout conventions: matrices are row-major. A linear layer's weight W is
 * (out, in) as in Hugging Face checkpoints, so y = x W^T. Activations of a
 * micro-batch are (T, C) with T = batch * seq rows; sequence b occupies rows
 * b*seq .. b*seq+seq-1. Heads are contiguous inside a row: q row = [head 0
 * (head_dim) | head 1 | ...].
 *
 * "Device" pointers are whatever the backend's alloc returns (host memory on
 * the CPU backend).
 *
 * Asynchrony (DESIGN.md, "Asynchrony"): every op runs on the backend's
 * compute queue, in the order it is called; it may still be running when the
 * call returns. No op allocates and no op returns a host scalar (sums
 * accumulate into device doubles, read back once per step). to_device and
 * to_host are synchronous with respect to the host: they are ordered after
 * every op called before them and complete on return; copy (device to
 * device) is ordered like an op and may still run after the call. Other
 * queues (copies), their asynchronous copies and the events that order
 * queues are optional slots: where a backend leaves them NULL, the be_*
 * wrappers do the synchronous thing (the CPU reference runs everything at
 * the call). A buffer written or read by one queue is reused by another only
 * after the second waits for an event the first recorded after its use.
 */
#ifndef TT_BACKEND_H
#define TT_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef TT_F64
typedef double tt_real;
#else
typedef float tt_real;
#endif

/* Element types of activations (and of the workspace they live in): tt_real,
 * or bfloat16 (uint16_t bits; ops read it as f32, compute in f32 and round to
 * nearest even when they store, NaN kept quiet). LoRA parameters, their
 * gradients, norm weights and optimizer state are always tt_real. */
enum { BE_REAL = 0, BE_BF16 = 1 };
static inline size_t be_elem_size(int dt) { return dt == BE_BF16 ? 2 : sizeof(tt_real); }
/* The row stride a workspace gives n values (a multiple of 8: 16-byte rows
 * in bf16, as tensor-core products want their leading dimensions). */
static inline size_t be_row_pad(size_t n) { return (n + 7) & ~(size_t)7; }
/* p advanced by n elements of type dt. */
static inline void *be_at(const void *p, size_t n, int dt) { return (char *)(uintptr_t)p + n * be_elem_size(dt); }

typedef struct tt_queue tt_queue; /* opaque, the backend's */
typedef struct tt_event tt_event;

enum { BE_H2D = 1, BE_D2H = 2, BE_D2D = 3 }; /* the direction of an asynchronous copy */

typedef struct tt_backend {
    const char *name;

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes);                 /* zeroed; NULL on failure */
    void (*free)(void *p);
    void (*to_device)(void *dst, const void *src, size_t bytes);
    void (*to_host)(void *dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);      /* device to device */
    void (*fill)(tt_real *x, size_t n, tt_real v);

    /* ---- dense algebra ---- */
    /* C(M,N) = alpha * op(A) op(B) + beta * C, row-major; op(A) is (M,K):
     * A is (M,K) with row stride lda, or (K,M) when ta. Likewise op(B) (K,N).
     * at, bt, ct: the operands' element types (BE_REAL or BE_BF16). Products
     * accumulate in f32 and C is rounded once; when A and B differ in type,
     * the BE_REAL one is rounded to bf16 first (as tensor cores take it). A
     * bf16 C needs a bf16 A or B (cuBLAS has no fp32 x fp32 -> bf16). */
    void (*gemm)(int ta, int tb, int M, int N, int K, tt_real alpha, const void *A, int at, int lda, const void *B,
                 int bt, int ldb, tt_real beta, void *C, int ct, int ldc);
    /* y += alpha * x (both of type dt) */
    void (*axpy)(size_t n, tt_real alpha, const void *x, void *y, int dt);
    /* x *= alpha */
    void (*scale)(size_t n, tt_real alpha, tt_real *x);
    /* y = x * mask * alpha (element-wise; mask holds 0/1; all of type dt) */
    void (*mask_scale)(size_t n, const void *x, const void *mask, tt_real alpha, void *y, int dt);
    /* *acc += sum of squares of x, in double; acc is one device double */
    void (*sumsq)(size_t n, const tt_real *x, double *acc);
    /* LoRA dropout: y (rows, cols) = [y +] alpha * keep * x (all of type dt;
     * accumulate: added into y, else written; x may be y). keep(t, i) is 1
     * with probability 1 - p, drawn from the stream stream0 + t under seed:
     * cuda_index.h's Philox draw, column i word i % 4 of group i / 4, kept when
     * >= tt_dropout_threshold(p) — the same masks on every backend, whatever
     * the chunking of rows or the padding of columns. alpha * x rounds once to
     * tt_real and the sum once (no fused multiply-add): bit for bit on every
     * backend. */
    void (*dropout)(int rows, int cols, uint64_t seed, uint64_t stream0, float p, tt_real alpha, const void *x,
                    void *y, int accumulate, int dt);

    /* ---- frozen weights ---- */
    /* Decodes values [v0, v0 + count) of a stored tensor of n values (dtype
     * tt_dtype; blob in the store layout of docs/FORMAT.md, already on the
     * device) into out (count values of type odt). For NF4, v0 is a multiple
     * of NF4_BLOCK (64). */
    void (*dequant)(uint32_t dtype, const void *blob, size_t n, size_t v0, size_t count, void *out, int odt);

    /* Products with a block of a stored weight W (out_total, in) (dtype, blob
     * on the device): Wb = rows [o0, o0 + n) of W.
     *   trans 0: y (rows, n)  = x (rows, in) Wb^T + beta y
     *   trans 1: y (rows, in) = x (rows, n)  Wb   + beta y
     * x and y have row strides ldx and ldy; scratch holds n * be_row_pad(in)
     * values for a backend that dequantizes first (the reference does:
     * be_dequant_range into scratch, row stride in, then gemm — bit for bit;
     * the CUDA backend pads the rows to be_row_pad(in), so that a bf16 row
     * starts 16-byte aligned for the tensor cores). x, y and scratch are of
     * type dt. For NF4, o0 * in is a multiple of 64. One op so that a device
     * backend can fuse the dequantization. */
    void (*linear)(int trans, int rows, int in, int n, const void *x, int ldx, uint32_t dtype, const void *blob,
                   size_t out_total, size_t o0, void *scratch, tt_real beta, void *y, int ldy, int dt);

    /* ---- layer ops ----
     * Activations (x, y, dy, dx, q, k, v, ...) are of type dt; the norm
     * weight w, rstd, lse and the rope tables are tt_real whatever dt. */
    /* y = x * rsqrt(mean(x^2) + eps) * w, per row; rstd[T] saved for backward. */
    void (*rmsnorm_fwd)(int T, int C, const void *x, const tt_real *w, tt_real eps, void *y, tt_real *rstd, int dt);
    /* dx (+)= d/dx of the above given dy (w frozen); accumulate: dx += instead of =. */
    void (*rmsnorm_bwd)(int T, int C, const void *x, const tt_real *w, const tt_real *rstd, const void *dy, void *dx,
                        int accumulate, int dt);
    /* dw += d/dw of the above: dw_c += sum_t dy_tc * x_tc * rstd_t (full
     * training's norm-weight gradient; dw is tt_real). */
    void (*rmsnorm_bwd_w)(int T, int C, const void *x, const tt_real *rstd, const void *dy, tt_real *dw, int dt);
    /* Rotary embedding in place on x (T rows of nh heads of hd), HF rotate_half
     * convention: for i < hd/2, (x_i, x_{i+hd/2}) rotated by angle pos*freq_i.
     * cos/sin are (seq, hd/2) tables; row t has position t % seq, or
     * t % seq - seg[t] with packed examples (seg below). inverse = 1 rotates by
     * the negative angle (the backward pass). */
    void (*rope)(int T, int seq, int nh, int hd, const tt_real *cos_t, const tt_real *sin_t, void *x, int inverse,
                 const int32_t *seg, int dt);
    /* Causal grouped-query attention per sequence: q (T, nh*hd), k/v (T, nkv*hd),
     * out (T, nh*hd); query head h uses KV head h / (nh/nkv); softmax scale
     * 1/sqrt(hd). lse (T, nh) receives each row's log-sum-exp for backward.
     * seg (device, T int32; NULL: none): packed examples — row t of a sequence
     * attends only to keys seg[t]..t of it (seg[t] = where t's example starts,
     * counted in the sequence), so no attention crosses an example boundary.
     * scratch: attn_scratch_bytes(...) bytes of device memory (the caller's
     * workspace), contents undefined before and after. */
    void (*attn_fwd)(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v, void *out,
                     tt_real *lse, const int32_t *seg, void *scratch, int dt);
    /* Given dout, computes dq, dk, dv (overwritten; dk/dv sum over the query
     * heads of each KV group). Probabilities are recomputed from lse. */
    void (*attn_bwd)(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                     const void *out, const tt_real *lse, const void *dout, void *dq, void *dk, void *dv,
                     const int32_t *seg, void *scratch, int dt);
    /* The scratch attn_fwd and attn_bwd take for these shapes (bytes). */
    size_t (*attn_scratch_bytes)(int B, int seq, int nh, int nkv, int hd, int dt);
    /* Attention of new queries against a KV cache (generation; forward only,
     * no lse): each of B sequences has n query rows, q (B*n, nh*hd), row
     * b*n + i at position pos[b] + i, which attends causally to cache rows
     * 0 .. pos[b] + i of its sequence. kc/vc (B, cap, nkv*hd): row j of
     * sequence b at b*cap + j, already holding this pass's keys and values
     * (rotated) at rows pos[b] .. pos[b]+n-1. pos: device int32 (B), with
     * pos[b] + n <= cap. out (B*n, nh*hd). GQA and scale as attn_fwd. */
    void (*attn_kv)(int B, int n, int cap, int nh, int nkv, int hd, const void *q, const void *kc, const void *vc,
                    const int32_t *pos, void *out, int dt);
    /* m = silu(g) * u, element-wise. */
    void (*swiglu_fwd)(size_t n, const void *g, const void *u, void *m, int dt);
    /* dg, du from dm; in place allowed: dg may be g, du may be u, either may be dm. */
    void (*swiglu_bwd)(size_t n, const void *g, const void *u, const void *dm, void *dg, void *du, int dt);
    /* Cross-entropy a chunk of the vocabulary at a time, for all R rows at
     * once (so that the head dequantizes each lm_head chunk once per pass).
     * logits (R, n) of type dt, row stride ld, are columns v0 .. v0+n-1 of
     * the vocabulary; targets (R) int32 and weight (R) tt_real are device
     * arrays; weight[r] is 0 for masked rows (prompt tokens, padding). stats
     * (R, 3) double holds each row's running max, sum of exp(logit - max)
     * and target logit (the online log-sum-exp, in double; on the CPU one
     * chunk gives exactly the single-pass softmax of the reference, on a GPU
     * the sum's order differs).
     * xent_stats: merges the chunk into stats (v0 == 0 starts them afresh).
     * xent_loss: adds sum_r weight[r] * (max + log(sum) - target logit) to
     *   *acc (one device double; rows in order, R <= XENT_MAX_ROWS); a row
     *   with weight 0 or targets[r] < 0 adds nothing.
     * xent_grad: replaces the chunk by dlogits = (exp(logit - max) / sum -
     *   onehot) * weight[r] * dscale, from complete stats (0 for a row that
     *   adds nothing). */
    void (*xent_stats)(int R, int n, int ld, int v0, const void *logits, const int32_t *targets, double *stats,
                       int dt);
    void (*xent_loss)(int R, const double *stats, const int32_t *targets, const tt_real *weight, double *acc);
    void (*xent_grad)(int R, int n, int ld, int v0, void *logits, const int32_t *targets, const tt_real *weight,
                      tt_real dscale, const double *stats, int dt);
    /* Distillation: KL(teacher || student) of the next-token distributions
     * at temperature tau, a vocabulary chunk at a time like the
     * cross-entropy. s and t: the student's and the teacher's logits (R, n)
     * of type dt, row stride ld, columns v0 .. v0+n-1. kstats (R, 5) double
     * holds each row's online statistics of u = s/tau and v = t/tau: max u,
     * sum of exp(u - max u), max v, sum of exp(v - max v) and sum of
     * exp(v - max v) (v - u) (merged like xent_stats').
     * kd_stats: merges the chunk into kstats (v0 == 0 starts them afresh).
     * kd_loss: adds sum_r weight[r] tau^2 KL_r to *acc (rows in order, R <=
     *   XENT_MAX_ROWS; rows xent_loss skips add nothing).
     * kd_grad: replaces the student's chunk s by the gradient of
     *   (1 - alpha) CE + alpha tau^2 KL, times weight[r] * dscale:
     *   (1 - alpha) (softmax(s) - onehot) + alpha tau (softmax(u) - softmax(v)),
     *   from complete xstats (xent_stats') and kstats; 0 for a skipped row. */
    void (*kd_stats)(int R, int n, int ld, int v0, const void *s, const void *t, tt_real tau, double *kstats, int dt);
    void (*kd_loss)(int R, const double *kstats, const int32_t *targets, const tt_real *weight, tt_real tau,
                    double *acc);
    void (*kd_grad)(int R, int n, int ld, int v0, void *s, const void *t, const int32_t *targets, const tt_real *weight,
                    tt_real dscale, tt_real alpha, tt_real tau, const double *xstats, const double *kstats, int dt);

    /* ---- optimizer ---- */
    /* AdamW step on n parameters (PyTorch's formulation): p -= lr * wd * p;
     * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     * p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). Moments are float. */
    void (*adamw)(size_t n, tt_real *p, const tt_real *g, float *m, float *v, float lr, float b1, float b2, float eps,
                  float wd, int step);

    /* ---- optional (NULL when the backend has nothing to do) ---- */
    /* Pins host memory for fast asynchronous copies (cudaHostRegister);
     * returns 0 or -errno with tt_lasterr set. */
    int (*host_register)(void *p, size_t bytes);
    void (*host_unregister)(void *p);
    /* Device memory the backend itself holds outside the arena (runtime
     * context, library workspaces), for the planner's accounting of --hbm;
     * the ops take nothing else (their scratch is in the workspace). */
    size_t (*reserved_bytes)(void);
    /* Page-locked host memory from the runtime itself (cudaMallocHost): the
     * reference `bench kernels` holds the registered host arena's copies to.
     * NULL where the backend has no such thing. */
    void *(*host_alloc_pinned)(size_t bytes);
    void (*host_free_pinned)(void *p);

    /* ---- optional asynchrony (all NULL or all set) ---- */
    /* Queues besides the compute queue (the one ops run on; q == NULL below
     * means it). */
    tt_queue *(*queue_new)(void);
    void (*queue_free)(tt_queue *q);           /* waits for its work first */
    tt_event *(*event_new)(void);              /* an event never recorded is complete */
    void (*event_free)(tt_event *ev);          /* after every queue is done with it */
    /* Marks the point of q's work issued so far; the event completes when q
     * reaches it. Recording again moves the mark (waits issued earlier keep
     * the old one). */
    void (*event_record)(tt_event *ev, tt_queue *q);
    void (*queue_wait)(tt_queue *q, tt_event *ev); /* q's later work waits for ev's mark (the host does not) */
    void (*event_sync)(tt_event *ev);          /* the host waits for ev's mark */
    int (*event_query)(tt_event *ev);          /* 1 when ev's mark was reached */
    /* An asynchronous copy on q (kind BE_H2D, BE_D2H or BE_D2D); host memory
     * must stay untouched until an event recorded after it completes. */
    void (*copy_async)(void *dst, const void *src, size_t bytes, int kind, tt_queue *q);
    void (*synchronize)(void);                 /* the host waits for every queue */

    /* ---- optional device timing (both or neither) ---- */
    /* An event (as event_new, freed by event_free) that also notes when its
     * mark was reached: the trace's device times (sched/trace.h). */
    tt_event *(*timer_new)(void);
    /* Seconds from a's mark to b's, both reached (negative when b's came first). */
    double (*timer_elapsed)(tt_event *a, tt_event *b);

    /* ---- optional measurement ---- */
    /* The device memory this process holds now, everything counted (the
     * arenas, the runtime's context, loaded kernels, library workspaces);
     * 0, or -1 when it cannot be measured. */
    int (*dev_in_use)(uint64_t *bytes);

    /* ---- planning hints (0: the default) ---- */
    /* The MLP's chunk of a micro-batch in LoRA training, in values (rows x
     * ffn; core/exec.c, core/model.c): each chunk dequantizes the MLP's three
     * frozen weights again, 8 times a layer, so a backend whose
     * dequantization costs against its products takes bigger chunks (more
     * workspace, fewer dequantizations). 0: 16M. */
    size_t mlp_chunk_elems;
    /* The dequantization scratch in LoRA training, in values (core/model.c):
     * a projection is dequantized and multiplied a block of its output rows
     * at a time, at most this many values a block, so a backend whose
     * products lose throughput when split (a GPU's tiles a block fills
     * partly, a bf16 sum over the blocks) takes a bigger scratch. 0: 16M. */
    size_t wbuf_elems;
    /* The head's logits chunk in LoRA training, in values (the micro-batch's
     * rows x a chunk of the vocabulary): three products a chunk per
     * micro-batch, so a backend with a per-product cost takes fewer, bigger
     * chunks. 0: 4M. */
    size_t xent_chunk_elems;
    /* 1: in LoRA training and evaluation, each layer's frozen projections are
     * converted to the activations' type once per pass over the layer, for
     * all its micro-batches, into a device region the plan places where the
     * budget allows (core/model.c's model_decode_layer), instead of once per
     * product (each micro-batch, MLP chunk, the recomputation and the input
     * gradient: about 12 times a layer a step at 4 micro-batches). The same
     * values go into the same products: the same bits either way. A backend
     * whose dequantization costs against its products takes it. 0: every
     * product dequantizes its block (the CPU reference). */
    int decode_layers;

    /* ---- optional description ---- */
    /* Which attention ran at these shapes and activation type (the last
     * forward and backward there), in words, for bench kernels; NULL: the
     * backend has one. */
    const char *(*attn_path_name)(int B, int seq, int nh, int nkv, int hd, int dt);

    /* ---- optional: the device's free memory ---- */
    /* The largest --hbm this process can have now: what the backend holds
     * outside the arena (reserved_bytes) plus the free device memory an
     * arena may take (less what loads lazily later); 0 where the device
     * memory is the machine's (the CPU backends) or unknown. */
    uint64_t (*dev_avail)(void);
} tt_backend;

/* The largest cross-entropy chunk (rows) a backend must take. */
#define XENT_MAX_ROWS 65536

/* The CPU reference backend (OpenBLAS for gemm). */
const tt_backend *backend_cpu(void);
/* The CPU backend with real queues (kernels/cpu-async/): each queue a worker
 * thread, seeded random delays, real events. */
const tt_backend *backend_cpu_async(void);
/* Its delays: every task waits a random 0..max_delay_us first with
 * probability 1/4, drawn from seed (per queue). Call when no work is queued. */
void cpu_async_configure(uint64_t seed, int max_delay_us);

int be_host_register(void *p, size_t bytes);   /* 0 when the backend has no such call */
void be_host_unregister(void *p);
size_t be_reserved_bytes(void);
int be_dev_in_use(uint64_t *bytes); /* -1 where the backend cannot tell */
uint64_t be_dev_avail(void);         /* backend.h's dev_avail; 0 where the backend has none */
void *be_host_alloc_pinned(size_t bytes);     /* NULL when the backend has none (or out of memory) */
void be_host_free_pinned(void *p);

/* A backend by name: "cpu", "cpu-async" or "cuda". NULL with tt_lasterr set when it is
 * not available (not built, or no usable GPU). */
const tt_backend *be_by_name(const char *name);
/* The same for planning only: "cuda" without a usable GPU (or without the
 * CUDA build) gives backend_cuda_estimate(), whose accounting needs no GPU. */
const tt_backend *be_for_planning(const char *name);

/* ---- checked wrappers (what core/ calls) --------------------------------- */

/* Selects the backend used by the be_* functions (default: CPU). */
void be_use(const tt_backend *b);
/* The op profile (TT_PROFILE_OPS=1, kernels/opprof.h): what ran before this
 * call is the warm-up; the report at exit shows what ran from `step` on. */
void be_prof_window(int step);
/* Sets what runs while paused (validation) apart from that window. */
void be_prof_pause(int paused);
const tt_backend *be_current(void);

void *be_alloc(size_t bytes);
void be_free(void *p);
void be_to_device(void *dst, const void *src, size_t bytes);
void be_to_host(void *dst, const void *src, size_t bytes);
void be_copy(void *dst, const void *src, size_t bytes);
void be_fill(tt_real *x, size_t n, tt_real v);
/* gemm on tt_real operands; be_gemm_t names each operand's type. */
void be_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const tt_real *A, int lda, const tt_real *B,
             int ldb, tt_real beta, tt_real *C, int ldc);
void be_gemm_t(int ta, int tb, int M, int N, int K, tt_real alpha, const void *A, int at, int lda, const void *B,
               int bt, int ldb, tt_real beta, void *C, int ct, int ldc);
/* y (T, out) (+)= x (T, in) W^T for W (out, in), all tt_real: the linear layer. */
void be_linear(int T, int in, int out, const tt_real *x, const tt_real *W, tt_real *y, int accumulate);
void be_axpy(size_t n, tt_real alpha, const void *x, void *y, int dt);
void be_scale(size_t n, tt_real alpha, tt_real *x);
void be_mask_scale(size_t n, const void *x, const void *mask, tt_real alpha, void *y, int dt);
void be_sumsq(size_t n, const tt_real *x, double *acc);
void be_dropout(int rows, int cols, uint64_t seed, uint64_t stream0, float p, tt_real alpha, const void *x, void *y,
                int accumulate, int dt);
void be_dequant(uint32_t dtype, const void *blob, size_t n, void *out, int odt); /* the whole tensor */
/* Values [v0, v0 + count) of a tensor of n values (NF4: v0 a multiple of 64). */
void be_dequant_range(uint32_t dtype, const void *blob, size_t n, size_t v0, size_t count, void *out, int odt);
void be_linear_w(int trans, int rows, int in, int n, const void *x, int ldx, uint32_t dtype, const void *blob,
                 size_t out_total, size_t o0, void *scratch, tt_real beta, void *y, int ldy, int dt);
void be_rmsnorm_fwd(int T, int C, const void *x, const tt_real *w, tt_real eps, void *y, tt_real *rstd, int dt);
void be_rmsnorm_bwd(int T, int C, const void *x, const tt_real *w, const tt_real *rstd, const void *dy, void *dx,
                    int accumulate, int dt);
void be_rmsnorm_bwd_w(int T, int C, const void *x, const tt_real *rstd, const void *dy, tt_real *dw, int dt);
void be_rope(int T, int seq, int nh, int hd, const tt_real *cos_t, const tt_real *sin_t, void *x, int inverse,
             const int32_t *seg, int dt);
void be_attn_fwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v, void *out,
                 tt_real *lse, const int32_t *seg, void *scratch, int dt);
void be_attn_bwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                 const void *out, const tt_real *lse, const void *dout, void *dq, void *dk, void *dv,
                 const int32_t *seg, void *scratch, int dt);
size_t be_attn_scratch_bytes(int B, int seq, int nh, int nkv, int hd, int dt);
size_t be_mlp_chunk_elems(void); /* the backend's hint, 0 when it gives none */
size_t be_wbuf_elems(void);       /* the backend's hint, 0 when it gives none */
size_t be_xent_chunk_elems(void); /* the backend's hint, 0 when it gives none */
int be_decode_layers(void);          /* the backend's hint (tt_backend.decode_layers) */
/* The attention the backend ran at these shapes, in words ("reference" when it has one path). */
const char *be_attn_path_name(int B, int seq, int nh, int nkv, int hd, int dt);
void be_attn_kv(int B, int n, int cap, int nh, int nkv, int hd, const void *q, const void *kc, const void *vc,
                const int32_t *pos, void *out, int dt);
void be_swiglu_fwd(size_t n, const void *g, const void *u, void *m, int dt);
void be_swiglu_bwd(size_t n, const void *g, const void *u, const void *dm, void *dg, void *du, int dt);
void be_xent_stats(int R, int n, int ld, int v0, const void *logits, const int32_t *targets, double *stats, int dt);
void be_xent_loss(int R, const double *stats, const int32_t *targets, const tt_real *weight, double *acc);
void be_xent_grad(int R, int n, int ld, int v0, void *logits, const int32_t *targets, const tt_real *weight,
                  tt_real dscale, const double *stats, int dt);
void be_kd_stats(int R, int n, int ld, int v0, const void *s, const void *t, tt_real tau, double *kstats, int dt);
void be_kd_loss(int R, const double *kstats, const int32_t *targets, const tt_real *weight, tt_real tau, double *acc);
void be_kd_grad(int R, int n, int ld, int v0, void *s, const void *t, const int32_t *targets, const tt_real *weight,
                tt_real dscale, tt_real alpha, tt_real tau, const double *xstats, const double *kstats, int dt);
/* The three on a whole (R, V) block of logits, vocabulary chunks of vc
 * columns: loss added to *acc, logits replaced by dlogits. stats: (R, 3). */
void be_xent(int R, int V, int vc, void *logits, const int32_t *targets, const tt_real *weight, tt_real dscale,
             double *acc, double *stats, int dt);
void be_adamw(size_t n, tt_real *p, const tt_real *g, float *m, float *v, float lr, float b1, float b2, float eps,
              float wd, int step);

/* ---- queues and events (synchronous stand-ins where the backend has none) -- */

/* NULL where the backend has no queues: work "on" it then runs at the call. */
tt_queue *be_queue_new(void);
void be_queue_free(tt_queue *q);
/* Never NULL: without backend events, a token that is always complete. */
tt_event *be_event_new(void);
void be_event_free(tt_event *ev);
void be_event_record(tt_event *ev, tt_queue *q);
void be_queue_wait(tt_queue *q, tt_event *ev);
void be_event_sync(tt_event *ev);
int be_event_query(tt_event *ev);
void be_copy_async(void *dst, const void *src, size_t bytes, int kind, tt_queue *q);
void be_synchronize(void);
/* 1 when the backend's queues really run asynchronously. */
int be_is_async(void);
/* A timing event, or NULL where the backend has none (the host's clock then
 * tells when work ran: it runs at the call). */
tt_event *be_timer_new(void);
double be_timer_elapsed(tt_event *a, tt_event *b);

#endif

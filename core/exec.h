/* core/exec.h — the step loop of LoRA training over a model whose frozen
 * layers live in the store (NVMe) and are streamed through sched/stream.h's
 * weight provider, k layers ahead of compute, in forward order and then in
 * reverse for backward (DESIGN.md, "The streaming step loop").
 *
 * - Block schedule: each loaded layer serves all K micro-batches of the step,
 *   forward and backward; LoRA gradients accumulate over the micro-batches
 *   and the layer's AdamW step follows its backward (unless clipping needs
 *   the global norm first: defer_optimizer).
 * - Layer-boundary activations go to the activation store (kept on the
 *   device or spilled, as the plan says); the layers read and write the
 *   cells directly, in the workspace's type (f32 or bf16).
 * - Loss and gradient norm are summed on the device and read back once per
 *   step; everything else is issued on the compute queue.
 *
 * Results do not depend on the budgets or on the backend's timing: the same
 * operations run on the same data whatever the placement (tests/test_stream.c
 * and tests/test_stream_async.c check bit-identity).
 */
#ifndef TT_EXEC_H
#define TT_EXEC_H

#include <stdint.h>

#include "core/lora.h"
#include "core/model.h"
#include "sched/plan.h"
#include "sched/trace.h"

typedef struct tt_exec tt_exec;

/* What the plan request carries for LoRA training (in tt_plan_req.user). */
typedef struct tt_exec_cfg {
    tt_lora_cfg lora;
    int defer_optimizer;  /* keep every layer's LoRA gradients until the step's end (global-norm clipping) */
    int wgrad;            /* a device buffer for one layer's weight gradients (exec_set_wgrad_hook) */
} tt_exec_cfg;
/* Makes u describe LoRA training's device regions (LoRA parameters, gradients
 * and AdamW moments, the workspace) for the planner. */
void exec_user(tt_dev_user *u, const tt_lora_cfg *lora, int defer_optimizer);
tt_exec_cfg exec_user_cfg(const tt_dev_user *u);
/* Adds the weight-gradient buffer to u's regions (exec_set_wgrad_hook). */
void exec_user_set_wgrad(tt_dev_user *u);

/* Weight gradients of the frozen projections (Taylor importance), one
 * projection at a time: in exec_step's backward, as soon as projection p of
 * layer l has its dL/dW (rows x cols, scaled like the LoRA gradients), fn(ctx,
 * l, p, g) gets it in a device buffer the size of the largest projection,
 * which fn reads (be_to_host) before returning: the next projection reuses
 * it. The plan must have one micro-batch a step (K = 1: each gradient is
 * then complete at once; exec_user_set_wgrad also makes the workspace take
 * the MLP in one chunk). */
void exec_set_wgrad_hook(tt_exec *e, void (*fn)(void *ctx, int l, int p, const tt_real *g), void *ctx);

/* Reopens store (the one plan was made for; stream_create), reserves both
 * arenas, starts the IO and copy threads and initialises the LoRA adapter from
 * seed. plan->req.user must come from exec_user. trace may be NULL. Returns 0
 * or -errno with a message. */
int exec_create(tt_exec **out, const tier_store *store, const tt_plan *plan, uint64_t seed, tt_trace *trace);
void exec_free(tt_exec *e);

/* The model whose layers a stream provides: a shell with the stream's
 * embedding and head bound (layers are bound as they are acquired). Shared
 * with the generation engine (core/generate.c). */
struct tt_stream;
tt_model *exec_stream_model(struct tt_stream *st);

tt_lora *exec_lora(tt_exec *e);
const tt_model *exec_model(const tt_exec *e);
const tt_plan *exec_plan(const tt_exec *e);

/* One optimizer step on K micro-batches (host arrays of K*B*seq entries).
 * lr and step (1-based, for AdamW's bias correction); drop_seed != 0 enables
 * LoRA dropout (micro-batch k uses drop_seed + k). clip > 0: global-norm
 * clipping (needs defer_optimizer). Returns 0 with *loss (mean over weighted
 * tokens) and *gnorm, or -errno (IO error: message names the file/offset;
 * the adapter is then unchanged since the last completed step only if the
 * error came before the optimizer ran — callers treat any error as fatal). */
int exec_step(tt_exec *e, const int32_t *inputs, const int32_t *targets, const tt_real *weight, float lr, int step,
              float b1, float b2, float eps, float wd, float clip, uint64_t drop_seed, double *loss, double *gnorm);

/* Packed examples for the exec_step / exec_eval calls that follow: segs
 * (host, K*B*seq) gives for each token where its example starts within its
 * sequence (ws_set_seg); NULL (the default): one text per sequence. The
 * array is read at each call. */
void exec_set_segments(tt_exec *e, const int32_t *segs);

/* Forward + loss only on K micro-batches; *loss_sum = summed weighted NLL. */
int exec_eval(tt_exec *e, const int32_t *inputs, const int32_t *targets, const tt_real *weight, double *loss_sum);
/* exec_eval that also gives each token's negative log-likelihood: nll (host,
 * K*B*seq doubles) receives for token i -log p(targets[i] | the inputs of its
 * sequence up to i), not weighted, or NaN where targets[i] < 0 or weight[i]
 * == 0 (a token exec_eval does not score). *loss_sum (may be NULL) is
 * exec_eval's, bit for bit, and so is every other effect. Costs a read-back
 * of the head's statistics (3 doubles a token) after each micro-batch; the
 * first call allocates a host buffer for them, kept until exec_free. */
int exec_eval_tokens(tt_exec *e, const int32_t *inputs, const int32_t *targets, const tt_real *weight,
                     double *loss_sum, double *nll);

/* The forward pass alone over the K micro-batches of inputs (K*B*seq
 * tokens): each micro-batch's last hidden states (before the final norm;
 * (B*seq, hidden) in the workspace's type) into out + k * that size (host).
 * A distillation teacher's side of a streamed step (core/fulltrain.c). */
int exec_forward_hidden(tt_exec *e, const int32_t *inputs, void *out);

/* IO only: the layer accesses of one step (forward, then backward) through
 * the slots, loading what they lack, with no compute. */
int exec_io_pass(tt_exec *e);

/* Peak bytes used so far in the device and host arenas. */
uint64_t exec_dev_peak(const tt_exec *e);
uint64_t exec_host_peak(const tt_exec *e);
/* NVMe bytes read so far. */
uint64_t exec_io_bytes(const tt_exec *e);

/* Test hook: the n-th NVMe read request from now fails with -err. Call it
 * only between steps (no load in flight: the IO thread owns the reader). */
void exec_inject_io_fault(tt_exec *e, uint64_t nth, int err);

#endif

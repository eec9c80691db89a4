/* core/model.h — the LLaMA model as Hugging Face's LlamaForCausalLM computes
 * it, with LoRA on the projections, expressed with backend ops (be_*):
 *
 *   x0 = embed[tokens]
 *   per layer: h = x + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))), n1 = rmsnorm(x)
 *              y = h + down_proj(silu(gate_proj(n2)) * up_proj(n2)),             n2 = rmsnorm(h)
 *   logits = lm_head(rmsnorm(x_L)); loss = cross-entropy, computed in row
 *   chunks so the full (T, vocab) logits never exist.
 *
 * Backward uses per-layer activation checkpointing: the forward pass keeps
 * only each layer's input; the backward pass recomputes the layer's forward
 * from it, then backpropagates. Gradients flow to the LoRA parameters only.
 *
 * The frozen weights are kept in their stored encoding (NF4, bf16, f32) and
 * dequantized per matrix just before each use. */
#ifndef TT_MODEL_H
#define TT_MODEL_H

#include <stdint.h>

#include "core/base/alloc.h"
#include "core/base/config.h"
#include "core/lora.h"
#include "kernels/backend.h"

#include "io/tier.h"

/* One layer's frozen weights as the kernels consume them: device pointers
 * into the layer's extent (the store encoding), norms as f32. */
typedef struct tt_layer_weights {
    const void *norm[2];                    /* input / post-attention RMSNorm, f32 (hidden) */
    const void *proj[TT_PROJ_COUNT];        /* blobs in the store encoding */
    uint32_t dtype[TT_PROJ_COUNT];
} tt_layer_weights;

/* The head: final norm and lm_head. lm_head is used in vocab chunks,
 * dequantized one chunk at a time; when it lives on the host (streamed),
 * each chunk is first copied to a device staging buffer of the workspace. */
typedef struct tt_head_weights {
    const void *norm;      /* f32 (hidden), device */
    const void *lm;        /* (vocab, hidden) blob: device, or host when lm_on_host */
    uint32_t lm_dtype;     /* f32 or bf16 */
    int lm_on_host;
} tt_head_weights;

typedef struct tt_model tt_model;

/* Loads a whole store (resident: every layer on the device, memory from
 * be_alloc). Returns 0 or -errno with a message naming the file. */
int model_load(tt_model **out, const char *store_path);
/* A model with the config of s and no weights bound yet (the streaming
 * runtime binds layer slots, the head and the embedding as they arrive). */
tt_model *model_shell(const tier_store *s);
void model_free(tt_model *m);
const tt_config *model_config(const tt_model *m);
const tt_layer_weights *model_layer(const tt_model *m, int l);
/* Binds layer l to its raw extent at ext (device memory holding the decoded
 * extent, laid out as the store's directory says). */
void model_bind_layer(tt_model *m, const tier_store *s, int l, const void *ext);
/* Binds the head from its raw extent (device or host) and, when tied, the
 * embedding blob; lm_on_host says where the lm_head bytes are. */
void model_bind_head(tt_model *m, const tier_store *s, const void *ext, int lm_on_host);
/* Points the final norm at a device copy (when the head extent stays on the host). */
void model_bind_head_norm(tt_model *m, const void *norm_dev);
/* Binds the embedding: the stored blob (vocab, hidden) in host memory. */
void model_bind_embed(tt_model *m, const void *blob, uint32_t dtype);
/* Binds layer l / the head to weights held elsewhere (full training binds
 * its f32 master weights this way). */
void model_bind_layer_weights(tt_model *m, int l, const tt_layer_weights *lw);
void model_bind_head_weights(tt_model *m, const tt_head_weights *h);

/* Weight gradients (full-parameter training, Taylor pruning importance).
 * With model_set_wgrad(m, g), every backward pass also accumulates (+=)
 * dL/dW, scaled like the LoRA gradients, into each non-NULL array: the
 * projections (out, in) and layer norms (hidden) on the device, the final
 * norm (device), and the embedding (vocab, hidden) in HOST memory (the
 * embedding is gathered on the host; model_micro_step scatters into it).
 * lm_head never gets a gradient (frozen, as in LoRAM's alignment). */
typedef struct tt_wgrad {
    tt_real *proj[TT_MAX_LAYERS][TT_PROJ_COUNT];
    tt_real *norm[TT_MAX_LAYERS][2];
    tt_real *final_norm;
    tt_real *embed;
    /* optional: called right after projection p of layer l has added its weight gradient (issued on the compute
     * queue), so that one buffer can serve every projection in turn (Taylor calibration). Needs the MLP in one
     * chunk (tt_ws_opts.mlp_rows >= the micro-batch's tokens): each gradient is then complete at its call. */
    void (*done)(void *ctx, int l, int p);
    void *done_ctx;
} tt_wgrad;
void model_set_wgrad(tt_model *m, tt_wgrad *g); /* NULL: LoRA gradients only */


typedef struct tt_ws_opts {
    int B, seq;            /* micro-batch: B sequences of seq tokens */
    int with_ckpt;         /* layer-input checkpoints for model_micro_step */
    int head_streamed;     /* a device staging buffer for lm_head chunks */
    int mlp_rows;          /* tokens per MLP chunk; 0: chunks of at most mlp_chunk_elems values (rows x ffn), as
                            * even as they go */
    size_t mlp_chunk_elems; /* 0: 16M */
    size_t wbuf_elems;     /* dequantization scratch cap in values (the backend's hint, tests); 0: 16M (at least
                            * 64 rows) */
    size_t xent_chunk_elems; /* the head's logits chunk cap in values (rows x vocab chunk; the backend's hint);
                              * 0: 4M */
    const tt_alloc *host;  /* the host buffers (the embedding gather) from here, e.g. the pinned host arena so
                            * that their uploads are asynchronous; NULL: malloc */
    size_t drop_elems;     /* LoRA dropout's chunk cap in values (tests); 0: 4M (at least one row) */
    int act_bf16;          /* activations and the workspace in bf16 (BE_BF16); 0: tt_real */
    int gen_cap;           /* generation: the KV cache's length (positions), and no gradient buffers (the
                            * workspace then runs generation passes only); 0: a training workspace */
    int with_distill;      /* buffers for distillation's teacher side of the head (ws_set_distill) */
    int decode_layer;      /* a buffer for one layer's frozen projections in the workspace's type
                            * (model_decode_layer; the largest layer's, all seven projections) */
} tt_ws_opts;

/* Whether a workspace's decoded-layer buffer would serve a run on store s with activations of that type: the
 * backend asks for it (tt_backend.decode_layers) and some projection is stored in another type (NF4, or f32
 * under bf16 activations) with unpadded rows (backend.h's be_row_pad). */
int model_decode_wanted(const tier_store *s, int act_bf16);

/* Activation workspace for one micro-batch. Every activation the model
 * functions below take or give (x, y, dx, dy, xL) is of the workspace's type
 * ws_dtype(): BE_REAL or BE_BF16 (kernels/backend.h). */
typedef struct tt_ws tt_ws;
int ws_create(tt_ws **out, const tt_config *cfg, const tt_lora_cfg *lc, const tt_ws_opts *o, const tt_alloc *alloc);
void ws_free(tt_ws *w);
int ws_dtype(const tt_ws *w);

/* The embedding of a micro-batch: rows gathered on the host (converted to
 * the workspace's type) into one of two host buffers, then copied to x
 * (device, (T, hidden)) on the compute queue; tokens are read at the call. */
void model_embed(const tt_model *m, tt_ws *w, const int32_t *tokens, void *x);
/* The embedding's gradient: rows of dx (device, (T, hidden), dL/d(embedding
 * output)) added to the model's wgrad->embed rows of their tokens. */
void model_embed_backward(const tt_model *m, tt_ws *w, const int32_t *tokens, const void *dx);
/* Final norm, lm_head and cross-entropy on xL (T, hidden), in row and vocab
 * chunks. Adds the summed weighted NLL to *loss (one device double); with
 * dx != NULL also writes dloss/dxL (scaled by dscale) into dx.
 * targets/weight are host arrays, copied on the compute queue: they must
 * stay untouched until the caller synchronises (reads the loss back). */
void model_head(tt_model *m, tt_ws *w, const void *xL, const int32_t *targets, const tt_real *weight, tt_real dscale,
                void *dx, double *loss);
/* Each row's negative log-likelihood from the statistics the last model_head
 * on w left: max + log(sum) - target logit, as the loss computes it but not
 * weighted, into nll (host, T = B*seq doubles); NaN for a row the loss skips
 * (targets[r] < 0 or weight[r] == 0). targets/weight: the host arrays that
 * model_head got; stats: host scratch of 3*T doubles. Waits for the compute
 * queue (the statistics are read back). */
void model_head_nll(const tt_ws *w, const int32_t *targets, const tt_real *weight, double *stats, double *nll);
/* Distillation (train --full --teacher): with a setting, model_head's
 * gradient pass (dx != NULL) trains on (1 - weight) CE + weight temp^2
 * KL(teacher || student), the teacher's next-token distribution at
 * temperature temp from its final norm and lm_head applied to xL, a
 * vocabulary chunk at a time beside the student's (backend.h's kd_*); the
 * KL sum goes to the third device double of ws_acc, and model_micro_step
 * returns the objective. Evaluation passes stay plain cross-entropy. The
 * teacher has the student's hidden size and vocabulary (LoRAM's pruning
 * keeps both). The workspace needs with_distill; d is copied; NULL: off. */
typedef struct tt_distill {
    const tt_model *teacher;
    const void *xL;        /* the teacher's last hidden states for this micro-batch (device, (T, hidden), ws type) */
    float weight, temp;
} tt_distill;
void ws_set_distill(tt_ws *w, const tt_distill *d);
/* The forward pass alone (with_ckpt workspace, no dropout): the embedding
 * of inputs and every layer; returns the last hidden states (device, (T,
 * hidden), in w's checkpoints, valid until w's next pass). */
const void *model_forward(tt_model *m, tt_lora *lo, tt_ws *w, const int32_t *inputs);
/* Three device doubles of the workspace (loss sum, sum of squared gradients)
 * for callers that accumulate a step's scalars on the device (and the
 * distillation KL sum, third). */
double *ws_acc(tt_ws *w);
/* Packed examples for the layer passes that follow: seg (device, B*seq int32)
 * gives, for each token, where its example starts in its sequence (positions
 * count from there and attention stays inside it); NULL: one text per
 * sequence. */
void ws_set_seg(tt_ws *w, const int32_t *seg);

/* ---- generation: passes over a KV cache -----------------------------------
 * In generation mode (a workspace made with gen_cap > 0) each layer forward
 * takes n new rows per sequence (x: (B*n, hidden), sequence b's rows b*n ..
 * b*n+n-1, n <= the workspace's seq) at positions pos[b] .. pos[b]+n-1:
 * their keys and values (rotated at those positions) are written into the
 * layer's cache, and the queries attend to the cache's rows 0 .. their own
 * position. Everything else is the training forward, op for op. */
/* Starts a pass of n rows per sequence at positions pos (host, B entries;
 * pos[b] + n <= gen_cap): uploads the positions and the rows' rope tables. */
void ws_gen_begin(tt_ws *w, int n, const int32_t *pos);
/* The KV cache the next model_layer_forward reads and extends: k and v
 * (device, (B, gen_cap, n_kv_heads * head_dim) each, of the workspace's type). */
void ws_gen_layer(tt_ws *w, void *k, void *v);
/* Leaves generation mode (the workspace is a training one again). */
void ws_gen_end(tt_ws *w);
/* Logits of R rows of xL ((R, hidden), device, R <= the workspace's rows):
 * the final norm and lm_head, a vocabulary chunk at a time, into out (host,
 * (R, vocab) floats). */
void model_logits(tt_model *m, tt_ws *w, const void *xL, int R, float *out);

/* The sum of the loss weights of the n positions that have a target (targets[i] >= 0): what a step's loss and
 * gradient are divided by, so that the loss is the mean over the tokens trained on (the responses of
 * instruction data; every position of plain text); 0 when none has. */
double model_target_weight(const int32_t *targets, const tt_real *weight, size_t n);

/* One micro-batch: inputs/targets (B*seq), weight (B*seq; 0 = not in the
 * loss; a target < 0 is also ignored). Returns the summed weighted
 * negative log-likelihood. With backward, LoRA gradients are accumulated
 * (+=) scaled by dscale (usually 1 / tokens in the optimizer step).
 * drop_seed != 0 enables LoRA dropout with masks drawn from it (the same
 * masks in the recomputation); 0 = no dropout (evaluation). */
double model_micro_step(tt_model *m, tt_lora *lo, tt_ws *w, const int32_t *inputs, const int32_t *targets,
                        const tt_real *weight, tt_real dscale, int backward, uint64_t drop_seed);

/* Layer l's frozen projections converted to the workspace's type once, on the compute queue, into its
 * decoded-layer buffer (tt_ws_opts.decode_layer), where their stored type differs and their rows are unpadded:
 * the layer's products then read them there, for every micro-batch, while the buffer holds layer l of m bound
 * to the same weights (the next call for another layer replaces it; the products of a layer bound elsewhere
 * since dequantize their blocks as before). Nothing without the buffer, or when it holds these weights already.
 * The layer must be bound (model_bind_layer). The same values go into the same products: the same bits. */
void model_decode_layer(const tt_model *m, tt_ws *w, int l);

/* Single-layer entry points (tests; the streaming runtime later): y = layer(x)
 * and, given dy, dx (overwritten) with LoRA gradients accumulated. */
void model_layer_forward(tt_model *m, tt_lora *lo, tt_ws *w, int l, const void *x, void *y, uint64_t drop_seed);
void model_layer_backward(tt_model *m, tt_lora *lo, tt_ws *w, int l, const void *x, const void *dy, void *dx,
                          uint64_t drop_seed);

/* RoPE tables (seq, head_dim/2) in double, with LLaMA-3.1 frequency scaling
 * when the config asks for it (as transformers' rope_init_fn computes them). */
void model_rope_tables(const tt_config *cfg, int seq, double *cos_t, double *sin_t);

#endif

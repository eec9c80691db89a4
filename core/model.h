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

#include "core/config.h"
#include "core/lora.h"
#include "kernels/backend.h"

/* One layer's frozen weights as the kernels consume them. */
typedef struct tt_layer_weights {
    const tt_real *norm1, *norm2;           /* device (hidden) */
    const void *proj[TT_PROJ_COUNT];        /* device blobs in the store encoding */
    uint32_t dtype[TT_PROJ_COUNT];
} tt_layer_weights;

typedef struct tt_model tt_model;

/* Loads a whole store (resident: every layer on the device). Returns 0 or
 * -errno with a message naming the file. */
int model_load(tt_model **out, const char *store_path);
void model_free(tt_model *m);
const tt_config *model_config(const tt_model *m);
const tt_layer_weights *model_layer(const tt_model *m, int l);

/* Activation workspace for micro-batches of B sequences of seq tokens. */
typedef struct tt_ws tt_ws;
int ws_create(tt_ws **out, const tt_config *cfg, const tt_lora_cfg *lc, int B, int seq);
void ws_free(tt_ws *w);

/* One micro-batch: inputs/targets (B*seq), weight (B*seq; 0 = not in the
 * loss; a target < 0 is also ignored). Returns the summed weighted
 * negative log-likelihood. With backward, LoRA gradients are accumulated
 * (+=) scaled by dscale (usually 1 / tokens in the optimizer step).
 * drop_seed != 0 enables LoRA dropout with masks drawn from it (the same
 * masks in the recomputation); 0 = no dropout (evaluation). */
double model_micro_step(tt_model *m, tt_lora *lo, tt_ws *w, const int32_t *inputs, const int32_t *targets,
                        const tt_real *weight, tt_real dscale, int backward, uint64_t drop_seed);

/* Single-layer entry points (tests; the streaming runtime later): y = layer(x)
 * and, given dy, dx (overwritten) with LoRA gradients accumulated. */
void model_layer_forward(tt_model *m, tt_lora *lo, tt_ws *w, int l, const tt_real *x, tt_real *y,
                         uint64_t drop_seed);
void model_layer_backward(tt_model *m, tt_lora *lo, tt_ws *w, int l, const tt_real *x, const tt_real *dy,
                          tt_real *dx, uint64_t drop_seed);

/* RoPE tables (seq, head_dim/2) in double, with LLaMA-3.1 frequency scaling
 * when the config asks for it (as transformers' rope_init_fn computes them). */
void model_rope_tables(const tt_config *cfg, int seq, double *cos_t, double *sin_t);

#endif

/* core/lora.h — LoRA adapters on the projections of every layer.
 *
 * For a projection W (out, in) with LoRA, y = x W^T + s * (drop(x) A^T) B^T,
 * A (r, in), B (out, r), s = alpha / r (PEFT's LoraLayer; alpha / sqrt(r) with
 * rank-stabilised LoRA, PEFT's use_rslora). A is initialised
 * as PEFT does (kaiming_uniform_(a = sqrt(5)), i.e. uniform in
 * [-1/sqrt(in), 1/sqrt(in)]), B = 0.
 *
 * All parameters live in one device buffer (and gradients in another, Adam
 * moments in two more), layer after layer, A then B for each targeted
 * projection in q,k,v,o,gate,up,down order, so a layer's parameters are one
 * contiguous range (the streaming runtime steps a layer's optimizer alone). */
#ifndef TT_LORA_H
#define TT_LORA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/alloc.h"
#include "core/base/config.h"
#include "kernels/backend.h"

#define LORA_ALL_TARGETS 0x7fu

typedef struct tt_lora_cfg {
    int rank;
    float alpha;
    float dropout;      /* probability in [0, 1) */
    unsigned targets;   /* bit p = projection p (tt_proj) */
    int rslora;         /* 1: rank-stabilised scaling alpha / sqrt(rank) (--rslora) */
} tt_lora_cfg;

/* The LoRA scaling s of y = x W^T + s B A x: alpha / rank, or alpha / sqrt(rank)
 * with rslora (PEFT's LoraLayer.update_layer). */
static inline float lora_scaling(float alpha, int rank, int rslora) {
    return rslora ? alpha / sqrtf((float)rank) : alpha / (float)rank;
}

typedef struct tt_lora_slot {
    size_t a, b;        /* offsets (in elements) of A (r, in) and B (out, r); meaningful if present */
    int in, out;        /* 0 when the projection has no LoRA */
} tt_lora_slot;

typedef struct tt_lora {
    tt_lora_cfg cfg;
    int n_layers;
    float scale;        /* lora_scaling(cfg) */
    size_t n;           /* parameter count */
    tt_real *params;    /* device, n — NULL when params_host holds them (see lora_layer_params) */
    tt_real *params_host; /* pinned host, n: the parameters when the device holds only the layers in use */
    tt_real *layer_buf[2]; /* with params_host: two layers' parameters on the device, used in turn */
    int layer_in[2];       /* the layer each holds, -1: none */
    tt_real *grads;     /* device: n, or one layer's worth (grad_off below) */
    size_t grad_off;    /* index of grads[0]: 0, or layer_off[l] while layer l's gradients live alone */
    size_t grad_n;      /* elements in grads */
    float *m, *v;       /* device: AdamW moments, n — or one layer's (lora_max_layer) when they live on the host */
    float *m_host, *v_host; /* pinned host, n: the moments between their layer's steps; NULL: on the device */
    tt_real *grads_host; /* pinned host, n: a deferred step's gradients (host moments, all-layer gradients) */
    tt_lora_slot slot[TT_MAX_LAYERS][TT_PROJ_COUNT];
    size_t layer_off[TT_MAX_LAYERS + 1]; /* layer l's parameters: [layer_off[l], layer_off[l+1]) */
    int owned_by_arena;
} tt_lora;

/* Parses "q,k,v,o,gate,up,down" (or "all") into a target mask; returns 0 or
 * -EINVAL with a message naming the bad entry. */
int lora_parse_targets(const char *s, unsigned *mask);
/* Writes the names of the targets in mask ("q_proj", ...) separated by commas. */
void lora_targets_str(unsigned mask, char *buf, size_t cap);
/* HF module name of projection p: "q_proj", ..., "down_proj". */
const char *lora_proj_name(int p);

/* Lays out and allocates the adapter for cfg's per-layer shapes (device
 * buffers from the backend), initialised from seed. Returns 0 or -ENOMEM. */
int lora_init(tt_lora *lo, const tt_config *cfg, const tt_lora_cfg *lc, uint64_t seed);
void lora_free(tt_lora *lo);

/* The same layout with buffers carved by alloc(ctx, bytes, label) (an
 * arena); layer_grads: gradients for one layer at a time (the largest) instead
 * of all. With host (the pinned host arena), the parameters and the AdamW
 * moments live there (params_host, m_host, v_host) and the device holds two
 * layers' parameters and one layer's moments for its step; the device then
 * keeps one layer's gradients, and a step that needs all (!layer_grads)
 * parks them in grads_host. layer_grads LORA_FROZEN: the parameters only,
 * no gradients and no moments (inference). With measuring, only sizes are
 * taken (no initialisation). */
#define LORA_FROZEN (-1)
int lora_init_in(tt_lora *lo, const tt_config *cfg, const tt_lora_cfg *lc, uint64_t seed, const struct tt_alloc *alloc,
                 int layer_grads, const struct tt_alloc *host);
/* The AdamW moments (n each) to / from host arrays, wherever they live
 * (synchronous: after the work issued so far). */
void lora_moments_get(const tt_lora *lo, float *m, float *v);
void lora_moments_set(tt_lora *lo, const float *m, const float *v);
/* The parameters (n) likewise. */
void lora_params_get(const tt_lora *lo, tt_real *p);
void lora_params_set(tt_lora *lo, const tt_real *p);

/* Layer l's parameters on the device (offsets in the slots are then relative
 * to layer_off[l]); with params_host the layer must have been staged. */
tt_real *lora_layer_params(const tt_lora *lo, int l);
/* With params_host: copies layer l's parameters to the device (one of two
 * buffers, by the parity of l, so consecutive layers never share one) on the
 * compute queue, unless it is there already; unstage copies them back after
 * an update. No-ops when the parameters are resident. */
void lora_stage_layer(tt_lora *lo, int l);
void lora_unstage_layer(tt_lora *lo, int l);
/* Largest parameter count of one layer. */
size_t lora_max_layer(const tt_lora *lo);

#endif

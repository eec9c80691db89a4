/* core/base/config.h — the model configuration of a LLaMA-family model, its
 * presets, LoRAM's structured pruning shapes, and the one table of tensors a
 * model is made of (names, shapes, which extent of the store holds them).
 *
 * Per-layer dimensions may differ from the model-wide ones after structured
 * pruning: a pruned layer keeps n_kv_heads' KV heads with their query groups
 * (head_dim unchanged) and ffn' MLP channels; hidden size never changes.
 */
#ifndef TT_CONFIG_H
#define TT_CONFIG_H

#include <stdint.h>

#define TT_MAX_LAYERS 1024
#define TT_NAME_MAX 64

typedef enum tt_rope_type {
    TT_ROPE_DEFAULT = 0,
    TT_ROPE_LLAMA3 = 1, /* LLaMA-3.1 frequency scaling */
} tt_rope_type;

typedef struct tt_layer_dims {
    uint32_t n_heads;    /* query heads in this layer */
    uint32_t n_kv_heads; /* KV heads in this layer */
    uint32_t ffn;        /* MLP intermediate size in this layer */
    uint32_t pruned;     /* 1 if structurally pruned */
} tt_layer_dims;

typedef struct tt_config {
    char name[32];          /* preset or model name, informational */
    uint32_t n_layers;
    uint32_t hidden;
    uint32_t vocab;
    uint32_t head_dim;
    uint32_t n_heads;       /* of the original (unpruned) model */
    uint32_t n_kv_heads;    /* of the original model */
    uint32_t ffn;           /* of the original model */
    uint32_t max_pos;
    uint32_t tie_embeddings;
    uint32_t bos_id, eos_id;
    float rms_eps;
    float rope_theta;
    uint32_t rope_type;     /* tt_rope_type */
    float rope_factor, rope_low_freq, rope_high_freq;
    uint32_t rope_orig_max_pos;
    tt_layer_dims layers[TT_MAX_LAYERS];
} tt_config;

/* Fills cfg from a preset name ("tiny", "small", "llama2-7b", "llama2-13b",
 * "llama2-70b", "llama3.1-8b", "llama3.1-70b"), all layers unpruned. Returns 0
 * or -EINVAL (message lists the presets). */
int config_preset(const char *name, tt_config *cfg);
/* Space-separated list of the preset names. */
const char *config_preset_names(void);

/* Default pruned layer range [*a, *b): 4..L-2 for models of 16+ layers
 * (LoRAM / LLM-Pruner: the first 4 and the last 2 layers untouched),
 * 1..L-1 for 3 to 15 layers, and every layer (0..L) for 1 or 2, where
 * 1..L-1 would be empty. */
void config_default_prune_layers(const tt_config *cfg, uint32_t *a, uint32_t *b);

/* LoRAM's structured shapes for ratio r in (0,1):
 *   kv' = nkv - floor(nkv*r), heads' = kv' * (n_heads / n_kv_heads),
 *   ffn' = ffn - ceil(ffn*r). */
void config_pruned_dims(const tt_config *cfg, double r, tt_layer_dims *out);

/* Applies config_pruned_dims to layers [a, b). Returns 0, or -EINVAL with a
 * message when r is outside (0,1), the range is invalid, or r leaves nothing. */
int config_prune(tt_config *cfg, double r, uint32_t a, uint32_t b);

/* Checks internal consistency (non-zero dims, GQA groups, per-layer dims not
 * larger than the original). Returns 0 or -EINVAL with a message mentioning
 * `what` (e.g. the file name). */
int config_validate(const tt_config *cfg, const char *what);
/* Makes cfg->name (informational: a preset or a directory's base name, also
 * read from files) safe to print anywhere, JSON included: every byte outside
 * letters, digits and "._+-" becomes '_'. */
void config_clean_name(tt_config *cfg);

/* A 64-bit fingerprint of the model's shapes (all dims, per-layer dims and
 * rope settings): adapters and checkpoints record it to refuse another model. */
uint64_t config_fingerprint(const tt_config *cfg);

/* ---- the tensor table ---------------------------------------------------- */

/* Extents of a store, in file order: the embedding, each layer, the head
 * (final norm + lm_head). */
#define TT_EXTENT_EMBED(cfg) 0u
#define TT_EXTENT_LAYER(l) (1u + (uint32_t)(l))
#define TT_EXTENT_HEAD(cfg) (1u + (cfg)->n_layers)
#define TT_N_EXTENTS(cfg) ((cfg)->n_layers + 2u)

typedef enum tt_tensor_role {
    TT_ROLE_EMBED = 0,  /* (vocab, hidden) */
    TT_ROLE_NORM,       /* (hidden) RMSNorm weights */
    TT_ROLE_LINEAR,     /* a quantizable projection (out, in) */
    TT_ROLE_LM_HEAD,    /* (vocab, hidden) */
} tt_tensor_role;

/* Projections of a layer, in store order (HF names). */
typedef enum tt_proj {
    TT_PROJ_Q = 0, TT_PROJ_K, TT_PROJ_V, TT_PROJ_O, TT_PROJ_GATE, TT_PROJ_UP, TT_PROJ_DOWN,
    TT_PROJ_COUNT
} tt_proj;

typedef struct tt_tensor_desc {
    char name[TT_NAME_MAX]; /* HF name, e.g. "model.layers.3.self_attn.q_proj.weight" */
    uint32_t role;          /* tt_tensor_role */
    uint32_t extent;        /* extent index (see TT_EXTENT_*) */
    int32_t layer;          /* -1 outside layers */
    int32_t proj;           /* tt_proj for linears, else -1 */
    uint32_t ndim;          /* 1 or 2 */
    uint64_t rows, cols;    /* shape (rows, cols); ndim 1: (rows) and cols = 1 */
} tt_tensor_desc;

/* Number of tensors the model has, and the i-th in store order. */
uint32_t config_n_tensors(const tt_config *cfg);
void config_tensor(const tt_config *cfg, uint32_t i, tt_tensor_desc *out);

/* Parameter counts: everything (embeddings, norms, lm_head included), and
 * the linear projections of the layers only. */
uint64_t config_n_params(const tt_config *cfg);
uint64_t config_n_linear_params(const tt_config *cfg);

#endif

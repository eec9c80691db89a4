/* io/peft.h — LoRA adapters in the Hugging Face PEFT layout, the directory
 * that `peft.PeftModel.from_pretrained(LlamaForCausalLM, dir)` loads:
 *
 *   dir/adapter_model.safetensors   one lora_A / lora_B pair per adapted
 *                                   projection of each layer
 *   dir/adapter_config.json         the LoraConfig (r, lora_alpha, target_modules, ...)
 *
 * Tensor names: base_model.model.model.layers.{L}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
 * and base_model.model.model.layers.{L}.mlp.{gate,up,down}_proj.lora_{A,B}.weight;
 * lora_A is (r, in_features), lora_B is (out_features, r), row-major, F32 or
 * BF16. The adapted weight is W + (lora_alpha / r) * B @ A (lora_alpha / sqrt(r)
 * with use_rslora). docs/FORMAT.md
 * lists every field.
 *
 * tiertrain also records which store shapes and pruning map an adapter was
 * trained on, as a hex string under "tiertrain_base" in the safetensors
 * metadata (which PEFT ignores), so recover/merge/eval can refuse an adapter
 * from a store pruned differently but to the same shapes.
 *
 * The config's lora_alpha and use_rslora, which no tensor shape checks, are
 * repeated under "tiertrain_lora" in the safetensors metadata.
 *
 * Each file is written to "<file>.partial", fsynced and renamed (the tensors
 * first, then the config); the reader checks that the two agree: shapes
 * against r and target_modules, and tiertrain_lora (where present) against
 * the config, so a config left from another save is refused.
 */
#ifndef TT_PEFT_H
#define TT_PEFT_H

/* The two files of an adapter directory. */
#define PEFT_TENSORS "adapter_model.safetensors"
#define PEFT_CONFIG "adapter_config.json"

#include <stdint.h>

/* Projections in the order of peft_adapter.target_mask bits. */
typedef enum peft_proj {
    PEFT_PROJ_Q = 0,
    PEFT_PROJ_K,
    PEFT_PROJ_V,
    PEFT_PROJ_O,
    PEFT_PROJ_GATE,
    PEFT_PROJ_UP,
    PEFT_PROJ_DOWN,
    PEFT_N_PROJ
} peft_proj;

/* "q_proj", "k_proj", ..., "down_proj" (PEFT's target_modules spelling). */
const char *peft_proj_name(int p);

/* One adapted projection of one layer. */
typedef struct peft_lora {
    uint32_t in, out;  /* in_features, out_features; both 0 = not adapted */
    float *A;          /* (rank, in) f32, row-major */
    float *B;          /* (out, rank) f32, row-major */
} peft_lora;

typedef struct peft_adapter {
    uint32_t n_layers;       /* 1..TT_MAX_LAYERS */
    uint32_t rank;           /* r */
    float alpha;             /* lora_alpha; scaling = alpha / rank, or alpha / sqrt(rank) with rslora */
    int rslora;              /* use_rslora */
    float dropout;           /* lora_dropout (recorded only) */
    unsigned target_mask;    /* bit p set: projection p is adapted in every layer */
    const char *base_model;  /* base_model_name_or_path; NULL writes null */
    int bf16;                /* 1: tensors stored as BF16 (writer: convert; reader: the file had BF16) */
    uint64_t base_fp;        /* tier_base_fingerprint of the store it was trained on (shapes + pruning map),
                                kept in the safetensors metadata as "tiertrain_base"; 0: not recorded */
    peft_lora *lora;         /* [n_layers * PEFT_N_PROJ], entry l * PEFT_N_PROJ + p */
    void *mem_;              /* peft_read only: the block holding every A and B */
} peft_adapter;

/* The entry of layer l, projection p. */
static inline peft_lora *peft_at(const peft_adapter *a, uint32_t l, int p) {
    return &a->lora[(uint64_t)l * PEFT_N_PROJ + (uint64_t)p];
}

/* Writes a (read only) to dir, creating dir (the last path component) if
 * needed. Every targeted projection must be present (in, out > 0, A and B
 * set) in every layer and the others absent. Returns 0, or -errno with one
 * sentence naming the file (-EINVAL inconsistent adapter, -ENOTDIR dir is a
 * file, -ENOSPC disk full, ...); a failed write leaves any previous adapter
 * file in place, never a half-written one nor new tensors beside an old or
 * missing config, and removes dir when it created it. */
int peft_write(const char *dir, const peft_adapter *a);

/* Reads the adapter in dir into *out (zeroed first). n_layers: the base
 * model's layer count, or 0 to infer it (highest layer index + 1). Checks
 * peft_type LORA and the LoRA options tiertrain supports, every tensor name,
 * shapes against r, complete A/B pairs, every targeted projection in every
 * layer. BF16 and F16 tensors are converted to f32. Returns 0 (free *out with
 * peft_free), or -errno with one sentence naming the file and the problem
 * (-ENOENT missing dir or file, -EINVAL bad JSON / config / tensor). */
int peft_read(const char *dir, uint32_t n_layers, peft_adapter *out);

/* Frees what peft_read allocated (lora, every A/B, base_model) and zeroes
 * *a. Only for adapters from peft_read; NULL-safe. */
void peft_free(peft_adapter *a);

#endif

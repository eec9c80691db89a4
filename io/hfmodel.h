/* io/hfmodel.h — Hugging Face LLaMA checkpoint directories: config.json <->
 * tt_config, the safetensors files of a directory and which one holds each
 * tensor, and whole-model conversion between such a directory and a .tier
 * store, streamed tensor by tensor (memory: about one tensor, never the model).
 *
 * A checkpoint directory holds config.json and either one model.safetensors
 * or model.safetensors.index.json, whose "weight_map" object maps each tensor
 * name to the shard file (in the same directory) that holds it. Like
 * transformers, model.safetensors wins when both are present.
 *
 * config.json: the LlamaConfig fields. Import requires model_type "llama"
 * (or, without model_type, "LlamaForCausalLM" in architectures), hidden_act
 * "silu", no attention/MLP bias, no quantization_config, num_attention_heads
 * x head_dim = hidden_size, and rope_scaling null, "default" or "llama3";
 * missing optional fields take LlamaConfig's defaults. tiertrain keeps one
 * bos / eos id: of a list the first, null becomes 0.
 *
 * Pruned stores: config.json always describes the original model (hidden
 * size, heads, KV heads, intermediate size before pruning), and the tensors
 * have the pruned shapes. When any layer is structurally pruned, export adds
 * (after the standard fields, one layer per line):
 *
 *   "tiertrain": {
 *     "format_version": 1,
 *     "note": "...",                  (what this is, for a human reader)
 *     "source": "meta-llama/...",     (optional: the original model's name)
 *     "layers": [                     (num_hidden_layers objects, in layer order)
 *       {"pruned": false, "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 688},
 *       {"pruned": true,  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 344,
 *        "kept_kv_heads": [0, 3], "kept_ffn_channels": [0, 2, ...]},
 *       ...]}
 *
 * After "note", "source": the store's source record (tier_source: the
 * original model's hub name or directory) when it has one. The kept lists
 * (strictly increasing original indices, as tier_prune_map) appear on every
 * pruned layer when the store has a pruning map and on none otherwise.
 * Import reads the object back, so a pruned store round-trips, its source
 * included: an adapter recovered on the imported store names the original,
 * never the pruned directory.
 * transformers cannot load per-layer dimensions: such a directory is for
 * tiertrain (and for inspecting the weights), not for from_pretrained.
 */
#ifndef TT_HFMODEL_H
#define TT_HFMODEL_H

#include <stdint.h>

#include "core/base/config.h"
#include "io/safetensors.h"
#include "io/tier.h"

#define HF_CONFIG_FILE "config.json"
#define HF_WEIGHTS_FILE "model.safetensors"
#define HF_INDEX_FILE "model.safetensors.index.json"

/* ---- config.json ---------------------------------------------------------- */

/* Reads dir/config.json into cfg (its name: the directory's base name). When
 * the file has a "tiertrain" object, the per-layer dimensions go to
 * cfg->layers and, when it lists kept indices, the pruning map to *map
 * (malloc'ed arrays; free them with store_prune_map_clear) and *has_map = 1.
 * On failure map holds nothing. Returns 0, or -errno with one sentence naming
 * config.json, the field and its value (an unsupported model type, activation,
 * bias, rope scaling or quantization; a missing or out-of-range field). */
int hf_config_read(const char *dir, tt_config *cfg, tier_prune_map *map, int *has_map);

/* Writes dir/config.json for cfg (via "config.json.partial", fsync, rename):
 * the LlamaConfig fields of the original model with torch_dtype "bfloat16" or
 * "float32" (dtype TT_DTYPE_BF16 / TT_DTYPE_F32), plus the "tiertrain" object
 * when a layer is pruned (map may be NULL). Returns 0 or -errno with a
 * message naming the file. */
int hf_config_write(const char *dir, const tt_config *cfg, const tier_prune_map *map, uint32_t dtype);

/* ---- the safetensors files of a checkpoint -------------------------------- */

typedef struct hf_weights hf_weights;

/* Opens dir's model.safetensors, or every shard model.safetensors.index.json
 * names, and validates their headers and the weight map (each listed tensor
 * must be in the shard it names; shard names must be plain file names).
 * Returns 0 (free with hf_weights_close), or -errno with one sentence naming
 * the file. */
int hf_weights_open(const char *dir, hf_weights **out);
void hf_weights_close(hf_weights *w); /* NULL is fine */
uint32_t hf_weights_n_files(const hf_weights *w);
const st_file *hf_weights_file(const hf_weights *w, uint32_t i);
/* The file holding tensor name and its index there, or NULL when the
 * checkpoint has no such tensor. Marks the tensor used (hf_weights_unused). */
const st_file *hf_weights_find(hf_weights *w, const char *name, uint32_t *idx);
/* Tensors of the files never returned by hf_weights_find (e.g. the
 * rotary_emb.inv_freq buffers old checkpoints carry); *example names one of
 * them (owned by w) or is NULL. */
uint32_t hf_weights_unused(const hf_weights *w, const char **example);

/* ---- whole models ----------------------------------------------------------- */

/* Progress of a long conversion: bytes done out of total. */
typedef void (*hf_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct hf_import_opts {
    uint32_t linear;          /* dtype of the projections: TT_DTYPE_BF16, F32, NF4 or NF4DQ. The
                                 embedding and lm_head are bf16 (f32 when linear is f32), norms f32. */
    hf_progress_fn progress;  /* NULL: none */
    void *progress_ctx;
    const char *source;       /* the store's source record (tier_source): the model's hub name or directory;
                                 NULL: see source_default */
    int source_default;       /* with source NULL, 1: the default record, `import` without --base-model: the
                                 original's name config.json's "tiertrain" object records, else none for a
                                 structurally pruned checkpoint (its shapes are not a model an adapter can
                                 name), else dir's absolute path; 0: no record */
} hf_import_opts;

typedef struct hf_import_stats {
    uint32_t n_files;         /* safetensors files read */
    uint64_t bytes;           /* tensor bytes read */
    uint32_t n_unused;        /* tensors of the checkpoint the model does not use */
    char unused_example[128]; /* the name of one of them ("" when none) */
    int no_source;            /* 1: source_default found a pruned checkpoint naming no original: no record */
} hf_import_stats;

/* Converts the checkpoint in dir into a store at out (atomically, as
 * store_write). Every tensor of the model (config_tensor order) must be in
 * the checkpoint with its exact shape and dtype F32, BF16 or F16; values are
 * widened to f32 exactly and encoded as the store's dtype (BF16 -> bf16 and
 * F32 -> f32 keep every bit). Everything is checked before the first byte is
 * written; first of all, that out can be written (store_check_output) and
 * is none of the checkpoint's own files (config.json, model.safetensors, the
 * index or a shard it names; same path or inode). stats may be NULL. Returns
 * 0, or -errno with one sentence naming the file and the tensor or field. */
int hf_import(const char *dir, const char *out, const hf_import_opts *o, hf_import_stats *stats);

/* Writes the store at store_path as a checkpoint directory dir (created when
 * missing; its parent must exist): dir/model.safetensors with every tensor in
 * dtype (TT_DTYPE_BF16 or TT_DTYPE_F32; NF4 is dequantized), in store order,
 * and dir/config.json. Both files are built under ".partial" names and renamed
 * into place only when both are complete. Refuses a dir that is a file or
 * already holds a sharded checkpoint, and, unless force, one that already
 * holds model.safetensors or config.json (-EEXIST; with force those two are
 * replaced and every other file there is left as it is). progress may be
 * NULL. Returns 0, or -errno with one sentence naming the file. */
int hf_export(const char *store_path, const char *dir, uint32_t dtype, int force, hf_progress_fn progress,
              void *progress_ctx);

#endif

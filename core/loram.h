/* core/loram.h — what LoRAM does with an adapter once it is trained on a
 * pruned store ("train small, infer large"):
 *
 *   recovery  the pruned adapter is scattered into zero matrices of the
 *             original shapes (DESIGN.md, "Recovery rule"): rows of lora_B of
 *             q/k/v/gate/up at the kept output indices, columns of lora_A of
 *             o/down at the kept input indices, the other factor (whose
 *             dimension is the hidden size, never pruned) copied. B·A is then
 *             exactly zero at every pruned row/column, so the recovered
 *             adapter changes only the weights the pruned model had.
 *   merge     W + (alpha / r) B A for every adapted projection of a store,
 *             written as a new store in the same dtypes (NF4 re-quantized).
 *   loading   an adapter into the trainer's LoRA (tt_lora) for evaluation.
 *
 * Adapters are io/peft.h's peft_adapter (f32, PEFT layout).
 */
#ifndef TT_LORAM_H
#define TT_LORAM_H

#include <stdint.h>

#include "core/base/config.h"
#include "core/lora.h"
#include "io/peft.h"
#include "io/tier.h"

/* Checks that adapter a (read from dir) fits cfg, the config of the store at
 * model: the same layer count and, for every adapted projection of every
 * layer, (out_features, in_features) equal to the projection's shape in cfg.
 * Returns 0, or -EINVAL with one sentence naming dir, model, the layer, the
 * projection and both shapes ("adapter DIR was trained for another model:
 * layer 3 q_proj is 256 x 2048 (out x in) in the adapter but 2048 x 2048 in
 * MODEL; ..."), with a hint when the adapter looks like a pruned one that
 * needs recovery, or an already recovered one. Non-finite adapter values are
 * refused too (they would poison every merged weight). */
int loram_check_adapter(const peft_adapter *a, const char *dir, const tt_config *cfg, const char *model);

/* Checks the store identity the adapter recorded (peft_adapter.base_fp, when
 * present) against the store at model (config cfg, pruning map map, may be
 * NULL): an adapter trained on a store pruned to the same shapes but with
 * other kept heads/channels is refused with one sentence naming dir and
 * model. Returns 0 or -EINVAL. */
int loram_check_base(const peft_adapter *a, const char *dir, const tt_config *cfg, const tier_prune_map *map,
                     const char *model);

/* The config of the original model that pruned was cut from: the same
 * model-wide dims, every layer back to n_heads, n_kv_heads and ffn, unpruned. */
void loram_original_config(const tt_config *pruned, tt_config *orig);

/* Recovers the adapter a, trained on a store with config cfg and pruning map
 * map (cfg's pruned layers all have map entries, as tier_open guarantees),
 * into *out with the shapes of loram_original_config(cfg): the same rank,
 * alpha, dropout and targets; base_model NULL (the original store is not
 * known here); base_fp that of the original shapes without a map. a must pass loram_check_adapter against cfg (asserted).
 * Returns 0 (free *out with loram_free), or -ENOMEM. */
int loram_recover(const peft_adapter *a, const tt_config *cfg, const tier_prune_map *map, peft_adapter *out);

/* Frees what loram_recover allocated and zeroes *a; NULL-safe. */
void loram_free(peft_adapter *a);

/* Called after each extent of a merge: bytes of the source store done so far
 * and in all (for progress reports). */
typedef void (*loram_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* Writes out_path: the store at model with every projection that adapter a
 * (read from adapter_dir) adapts replaced by W + (alpha / r) B A, computed in
 * f32 and encoded in the projection's stored dtype (NF4 is re-quantized, so
 * it carries a fresh quantization error); every other tensor is copied byte
 * for byte, and the pruning map and lz4 use are kept. a must fit the store
 * (checked with loram_check_adapter). One extent is in memory at a time.
 * progress may be NULL. Returns 0, or -errno with one sentence (the store is
 * written atomically: on error nothing is left at out_path, and a file already
 * there is untouched). */
int loram_merge(const char *model, const peft_adapter *a, const char *adapter_dir, const char *out_path,
                loram_progress_fn progress, void *progress_ctx);

/* Copies adapter a into lo's parameters (device memory, be_to_device). lo
 * must have been laid out for a config that a fits (loram_check_adapter) with
 * a's rank and targets; its scale (alpha / r) comes from that layout, so
 * lo->cfg.alpha must be a's alpha (all asserted). Returns 0 or -ENOMEM. */
int loram_load_lora(tt_lora *lo, const peft_adapter *a);

#endif

/* core/prune.h — pruning a model store (LoRAM's first step) and quantizing
 * it to NF4 (its second).
 *
 * Methods, each applied to the layers [layer_a, layer_b) only:
 *   - PRUNE_STRU: LLM-Pruner / LoRAM structured pruning. Attention is pruned
 *     by coupled groups: KV head j together with its GQA query group (rows of
 *     k_proj and v_proj for head j, rows of q_proj for query heads
 *     j*g .. j*g+g-1, g = n_heads / n_kv_heads, and the matching columns of
 *     o_proj); the MLP by intermediate channel c (row c of gate_proj and
 *     up_proj, column c of down_proj). A group's score is the sum over its
 *     weights of an elementwise saliency (magnitude: w^2; taylor:
 *     |w * dL/dw|). The kv' = nkv - floor(nkv*r) and ffn' = ffn - ceil(ffn*r)
 *     best groups are kept (config_pruned_dims), ties to the lower index; the
 *     kept indices become the store's pruning map.
 *   - PRUNE_RAND: the same structure, groups chosen at random from a seed
 *     (LoRAM's random-pruning baseline).
 *   - PRUNE_SEMI: 2:4 semi-structured sparsity: in every group of 4
 *     consecutive weights along the input dimension the 2 of highest saliency
 *     are kept, the other 2 set to zero (ties: the lower index is kept). A
 *     final group of t < 4 weights (input size not a multiple of 4) keeps its
 *     min(t, 2) best. Shapes do not change.
 *   - PRUNE_UNST: unstructured: in each projection, round(r * n) weights of
 *     lowest saliency are set to zero (ties: the lower index goes first).
 *     Shapes do not change.
 * The masked methods (semi, unst) write their layer extents lz4-compressed
 * where that saves at least 1/8, and keep an input's pruning map.
 *
 * Everything streams tensor by tensor through store_reader / store_write, so
 * memory stays at a few tensors whatever the model size (taylor importance
 * holds the calibration gradients of the pruned layers' projections,
 * fulltrain_calib_grads, and the model while they are computed).
 * Output dtypes are the input's; NF4 input is refused (prune, then quantize).
 */
#ifndef TT_PRUNE_H
#define TT_PRUNE_H

#include <stdint.h>

#include "core/base/config.h"

typedef enum tt_prune_method {
    PRUNE_STRU = 0,
    PRUNE_RAND,
    PRUNE_SEMI,
    PRUNE_UNST,
} tt_prune_method;

typedef enum tt_prune_importance {
    PRUNE_MAGNITUDE = 0, /* w^2 */
    PRUNE_TAYLOR,        /* |w * dL/dw| on calibration tokens */
} tt_prune_importance;

/* "stru" / "rand" / "semi" / "unst" -> method, or -1. */
int prune_parse_method(const char *s);
/* "magnitude" / "taylor" -> importance, or -1. */
int prune_parse_importance(const char *s);

/* Long work reports here: phase names the pass ("scoring", "writing",
 * "quantizing"); called with done = 0 when a phase starts and done = total
 * when it ends (if total > 0). Units are bytes of the input store. A phase
 * with nothing to count (total = 0: Taylor calibration, one forward and
 * backward pass) is called with done = 0 when it starts and done = 1 when it
 * ends. */
typedef void (*prune_progress_fn)(void *ctx, const char *phase, uint64_t done, uint64_t total);

typedef struct tt_prune_opts {
    int method;               /* tt_prune_method */
    int importance;           /* tt_prune_importance; PRUNE_MAGNITUDE for rand */
    double ratio;             /* stru, rand, unst: in (0,1); semi: 0.5 */
    uint32_t layer_a, layer_b; /* pruned layers [a, b); a = b = 0: config_default_prune_layers */
    uint64_t seed;            /* rand */
    /* taylor: calibration tokens (each < the model's vocab), and the windows
     * fulltrain_calib_grads takes from them */
    const uint32_t *calib;
    uint64_t n_calib;
    int calib_samples, calib_seq; /* >= 1; 2..1048576 */
    /* taylor: stream the calibration through the device under these budgets (fulltrain_calib_grads_stream:
     * the layers are never all resident, the gradients go to a temporary file beside out); both 0: resident */
    uint64_t hbm, host;
    prune_progress_fn progress; /* NULL: quiet */
    void *progress_ctx;
} tt_prune_opts;

typedef struct tt_prune_report {
    tt_config before, after;  /* configs of the input and the output store */
    uint32_t layer_a, layer_b; /* the layers that were pruned */
    uint64_t masked;          /* semi, unst: weights of the pruned layers' projections */
    uint64_t zeroed;          /* semi, unst: how many of them were set to zero */
} tt_prune_report;

/* The checks of o that need neither a file nor the calibration tokens (what
 * the command's flags alone decide, so it can refuse them before any work or
 * output): the ratio for the method, an empty --layers range, --importance
 * with rand, --hbm / --host without taylor, taylor's --calib-samples and
 * --calib-seq. Returns 0 or -EINVAL with one sentence naming the option.
 * prune_store makes them again. */
int prune_check_flags(const tt_prune_opts *o);

/* Prunes the store at in and writes the result at out. Returns 0 (report
 * filled when rep != NULL), or -errno with one sentence naming the file or
 * the option (-o, --ratio, --layers, --importance, --calib-*) and what to do;
 * no file is left at out then. Refused before any work (store_check_output):
 * out that is the input, a directory, or in a missing or unwritable folder.
 * Refused: what prune_check_flags refuses; NF4 input; stru/rand on a store that is
 * already structurally pruned; a ratio outside (0,1) (semi: other than 0.5);
 * a layer range that is empty or past the model; a ratio that would remove
 * every KV head or MLP channel; non-finite weights (or gradients) to rank. */
int prune_store(const char *in, const char *out, const tt_prune_opts *o, tt_prune_report *rep);

/* Writes at out a copy of the store at in with every linear projection in
 * NF4 (double_quant: with QLoRA's double quantization, dtype nf4-dq), the
 * embedding, lm_head and norms in their dtype, the per-layer dims and the
 * pruning map unchanged; layer extents are lz4-compressed where that saves at
 * least 1/8 (sparse pruned stores). Refuses NF4 input. Returns 0 or -errno
 * with a message; no file is left at out on failure. out is checked first, as
 * prune_store checks it. */
int quantize_store(const char *in, const char *out, int double_quant, prune_progress_fn progress, void *progress_ctx);

#endif

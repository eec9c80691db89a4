/* core/generate.h — text generation with a KV cache over the streaming
 * runtime ("infer large": the original model + a recovered adapter under the
 * same --hbm/--host budgets as training).
 *
 * A batch of up to B prompts shares every layer load (FlexGen's block
 * schedule): the prompt pass (in chunks of `chunk` tokens per sequence) and
 * each decoding step walk the layers once, forward only, for the whole batch.
 * Each layer's KV cache, (B, cap, kv heads x head_dim) keys and values in the
 * activations' type, lives on the device for the first plan.user_dev layers
 * and in the pinned host arena for the rest (uploaded for the layer's pass,
 * the new rows copied back after it).
 *
 * Results do not depend on the budgets: the same ops run on the same data
 * whatever the placement (tests/test_generate.c). */
#ifndef TT_GENERATE_H
#define TT_GENERATE_H

#include <stdint.h>

#include "core/lora.h"
#include "sched/plan.h"

typedef struct tt_gen tt_gen;

/* Fills req for generation on store s: B sequences per batch, prompt chunks of
 * `chunk` tokens, KV caches of cap positions, the LoRA shape lora (an adapter's,
 * or rank 1 on q_proj for the bare model: its B is zero). Budgets, lm_head and
 * act_bf16 are the caller's (set them before or after). */
void gen_plan_req(tt_plan_req *req, const tier_store *s, const tt_lora_cfg *lora, int B, int chunk, int cap);

/* Reopens store (the one plan was made for; stream_create), reserves the arenas
 * and starts the runtime. Returns 0 or -errno with a message. */
int gen_create(tt_gen **out, const tier_store *store, const tt_plan *plan);
void gen_free(tt_gen *g);
tt_lora *gen_lora(tt_gen *g);       /* load an adapter into it (loram_load_lora) */
const tt_plan *gen_plan(const tt_gen *g);
int gen_cap(const tt_gen *g);        /* KV positions per sequence */
uint64_t gen_dev_peak(const tt_gen *g);
uint64_t gen_host_peak(const tt_gen *g);
uint64_t gen_io_bytes(const tt_gen *g);

typedef struct gen_params {
    int max_new;            /* tokens to generate at most per prompt */
    float temperature;      /* 0: greedy (the first largest logit) */
    int top_k;              /* 0: all */
    float top_p;            /* 1: all */
    uint64_t seed;          /* sampling: prompt i draws from the stream rng_seed(seed, streams[i]) */
    const uint32_t *eos;    /* ids that end a sequence (kept as its last token) */
    int n_eos;
} gen_params;

/* Why a sequence stopped. */
enum { GEN_EOS = 1, GEN_LENGTH, GEN_CONTEXT, GEN_CALLER };

/* Called for every generated token of prompt i (in order; logits: the V
 * floats it was drawn from). Returns 0 to go on, 1 when prompt i is done
 * (a stop string), -1 to stop the whole run (an interrupt). */
typedef int (*gen_token_fn)(void *ctx, int i, uint32_t token, const float *logits);

/* Generates for n prompts (n <= B; prompt i: lens[i] >= 1 tokens, each below
 * the vocabulary, lens[i] < cap). streams: each prompt's sampling stream
 * (NULL: 0..n-1). why[i] (may be NULL) receives GEN_*. Returns 0 (also after
 * a -1 from fn), or -errno (an IO error: the message names the file). */
int gen_run(tt_gen *g, int n, const uint32_t *const *prompts, const int *lens, const gen_params *p,
            const uint64_t *streams, gen_token_fn fn, void *ctx, int *why);

/* The token gen_params p draws from logits (V floats) with rng r (greedy:
 * r unused). Exposed for the tests. */
struct tt_rng;
uint32_t gen_sample(const float *logits, int V, const gen_params *p, struct tt_rng *r);

#endif

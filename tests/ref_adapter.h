/* tests/ref_adapter.h — the small PEFT adapter that tests/fuzz_adapter.c
 * fuzzes around and tests/corpus_gen.c writes as that target's seeds (one
 * definition, so the seeds match the reference): REF_LAYERS layers, rank
 * REF_RANK, every targeted projection REF_DIM x REF_DIM, A = B = i / 7 - 2. */
#ifndef TT_REF_ADAPTER_H
#define TT_REF_ADAPTER_H

#include "io/peft.h"

#include <string.h>

#define REF_LAYERS 2u
#define REF_RANK 2u
#define REF_DIM 16u
#define REF_QV (1u << PEFT_PROJ_Q | 1u << PEFT_PROJ_V)

/* Fills a (lora: REF_LAYERS * PEFT_N_PROJ entries, the caller's) with the
 * projections of mask; its A and B point at static storage. */
static inline void ref_adapter(peft_adapter *a, peft_lora *lora, unsigned mask, int bf16, const char *base_model,
                               uint64_t base_fp) {
    static float A[REF_RANK * REF_DIM], B[REF_DIM * REF_RANK];
    for (uint32_t i = 0; i < REF_RANK * REF_DIM; i++) A[i] = B[i] = (float)i / 7.f - 2.f;
    *a = (peft_adapter){.n_layers = REF_LAYERS, .rank = REF_RANK, .alpha = 4, .target_mask = mask, .bf16 = bf16,
                        .base_model = base_model, .base_fp = base_fp, .lora = lora};
    memset(lora, 0, REF_LAYERS * PEFT_N_PROJ * sizeof *lora);
    for (uint32_t l = 0; l < REF_LAYERS; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++)
            if (mask >> p & 1) lora[l * PEFT_N_PROJ + (uint32_t)p] = (peft_lora){REF_DIM, REF_DIM, A, B};
}

#endif

/* tools/cmd_recover.c — `tiertrain recover` (LoRAM recovery: a LoRA adapter
 * trained on a pruned store, scattered back to the original model's shapes)
 * and `tiertrain merge` (an adapter folded into a store's weights). The work
 * is in core/loram.c. */
#include "core/base/common.h"
#include "core/loram.h"
#include "io/ckpt.h"
#include "io/peft.h"
#include "io/tier.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Do paths a and b name the same existing file or directory? */
static int same_path(const char *a, const char *b) {
    char ra[PATH_MAX], rb[PATH_MAX];
    return realpath(a, ra) && realpath(b, rb) && strcmp(ra, rb) == 0;
}

int cmd_recover(int argc, char **argv) {
    const char *adapter, *pruned, *out, *base_model;
    int force;
    cli_opt opts[] = {
        {"adapter", 'a', CLI_STR, &adapter, NULL, "DIR", "PEFT adapter trained on the pruned store (required)"},
        {"pruned", 'p', CLI_STR, &pruned, NULL, "FILE", "the pruned store (.tier, with its pruning map) it was trained on (required)"},
        {"output", 'o', CLI_STR, &out, NULL, "DIR", "where the recovered PEFT adapter goes, created if needed (required)"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "replace the adapter files DIR already holds"},
        {"base-model", 0, CLI_STR, &base_model, NULL, "NAME", "the recovered adapter's base_model_name_or_path, the original model PEFT loads it onto (default: the source `import` recorded in the pruned store)"},
        {0},
    };
    cli_cmd cmd = {"recover", NULL,
                   "Recovers a LoRA adapter trained on a pruned store to the original model's shapes (LoRAM): lora_B "
                   "rows of q/k/v/gate/up and lora_A columns of o/down go to the kept heads and channels of the "
                   "pruning map, zeros elsewhere, so B·A is exactly zero at pruned positions; the result is a standard "
                   "PEFT adapter for the original model, with the same r, alpha and targets.",
                   opts, 0, 0, "tiertrain recover --adapter run1 --pruned pruned.tier -o run1-recovered"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    const char *missing = !adapter ? "--adapter DIR" : !pruned ? "--pruned FILE" : !out ? "-o DIR" : NULL;
    if (missing) {
        fprintf(stderr, "tiertrain recover: %s is required (see tiertrain recover --help)\n", missing);
        return 2;
    }
    if (base_model && tier_source_check(base_model, "--base-model")) { tool_fail("recover"); return 2; }
    if (same_path(adapter, out)) {
        fprintf(stderr, "tiertrain recover: -o %s is the --adapter directory; recovering in place would replace the "
                        "adapter trained on %s, so give another directory\n", out, pruned);
        return 2;
    }
    if (tool_holds_run(out)) {
        fprintf(stderr, "tiertrain recover: -o %s is a training run (it holds " CKPT_FILE "), whose adapter must stay "
                        "the one its checkpoint continues; give another directory\n", out);
        return 2;
    }
    const char *inputs[] = {adapter, pruned, NULL}, *names[] = {PEFT_TENSORS, PEFT_CONFIG, NULL};
    if (tool_check_out_dir("recover", "-o", out, "an adapter", names, inputs, force)) return 2;
    tier_store *s = NULL;
    peft_adapter a = {0}, rec = {0};
    int exit_code = 1;
    if (tier_open(&s, pruned)) { tool_fail("recover"); goto done; }
    const tt_config *cfg = tier_config(s);
    uint32_t n_pruned = 0;
    for (uint32_t l = 0; l < cfg->n_layers; l++) n_pruned += cfg->layers[l].pruned;
    if (!tier_prune(s)) {
        if (n_pruned)
            fprintf(stderr, "tiertrain recover: %s has %u pruned layers but no pruning map (the kept heads and "
                            "channels), which recovery needs; prune with a tool that records it (tiertrain synth "
                            "--prune-ratio, tiertrain prune)\n", pruned, n_pruned);
        else
            fprintf(stderr, "tiertrain recover: %s has no pruning map: it is not a pruned store, so an adapter "
                            "trained on it needs no recovery; use the adapter as it is\n", pruned);
        goto done;
    }
    if (peft_read(adapter, 0, &a) || loram_check_adapter(&a, adapter, cfg, pruned) ||
        loram_check_base(&a, adapter, cfg, tier_prune(s), pruned) ||
        loram_recover(&a, cfg, tier_prune(s), &rec)) {
        tool_fail("recover");
        goto done;
    }
    rec.base_model = base_model ? base_model : tier_source(s); /* the original model, as import recorded it */
    if (peft_write(out, &rec)) {
        tool_fail("recover");
        goto done;
    }
    char tg[128];
    lora_targets_str(a.target_mask, tg, sizeof tg);
    printf("recover: %s (r=%u, alpha=%g%s, %s) trained on %s: %u of %u layers scattered to the original shapes "
           "(%u/%u heads, ffn %u), %u copied; adapter written to %s\n",
           adapter, a.rank, (double)a.alpha, a.rslora ? ", rslora" : "", tg, pruned, n_pruned, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads,
           cfg->ffn, cfg->n_layers - n_pruned, out);
    exit_code = 0;
done:
    loram_free(&rec);
    peft_free(&a);
    tier_close(s);
    return exit_code;
}

static void merge_progress(void *ctx, uint64_t done, uint64_t total) {
    tool_progress *p = ctx;
    p->total = total; /* known once loram_merge has opened the store */
    progress_update(p, done);
}

int cmd_merge(int argc, char **argv) {
    const char *model, *adapter, *out;
    int force;
    cli_opt opts[] = {
        {"model", 'm', CLI_STR, &model, NULL, "FILE", "the store (.tier) the adapter belongs to (required)"},
        {"adapter", 'a', CLI_STR, &adapter, NULL, "DIR", "PEFT adapter with the store's shapes (required)"},
        {"output", 'o', CLI_STR, &out, NULL, "FILE", "the merged store to write (required)"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "replace FILE if it exists"},
        {0},
    };
    cli_cmd cmd = {"merge", NULL,
                   "Merges a LoRA adapter into a store: every adapted projection becomes W + (alpha/r) B A (alpha/sqrt(r) for use_rslora), computed "
                   "in f32 and stored in the projection's dtype. NF4 projections are re-quantized (a fresh "
                   "quantization error on top of the merge); f32 and bf16 ones are exact up to their rounding. Other "
                   "tensors and the pruning map are copied unchanged.",
                   opts, 0, 0, "tiertrain merge --model llama.tier --adapter run1-recovered -o llama-merged.tier"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    const char *missing = !model ? "--model FILE" : !adapter ? "--adapter DIR" : !out ? "-o FILE" : NULL;
    if (missing) {
        fprintf(stderr, "tiertrain merge: %s is required (see tiertrain merge --help)\n", missing);
        return 2;
    }
    const char *inputs[] = {model, adapter, NULL};
    if (tool_check_out("merge", "-o", out, inputs, force)) return 2;
    peft_adapter a;
    if (peft_read(adapter, 0, &a)) return tool_fail("merge");
    tool_progress prog;
    progress_start(&prog, "merge", 1);
    rc = loram_merge(model, &a, adapter, out, merge_progress, &prog);
    if (rc == 0) {
        progress_end(&prog, prog.total);
        char tg[128];
        lora_targets_str(a.target_mask, tg, sizeof tg);
        printf("merge: %s (r=%u, alpha=%g%s, %s) merged into the %u layers of %s; written to %s\n", adapter,
               a.rank, (double)a.alpha, a.rslora ? ", rslora" : "", tg, a.n_layers, model, out);
    }
    peft_free(&a);
    return rc ? tool_fail("merge") : 0;
}

/* tools/cmd_hf.c — `tiertrain import` (a Hugging Face LLaMA checkpoint
 * directory into a store) and `tiertrain export` (a store into such a
 * directory). io/hfmodel.c does the work, streaming tensor by tensor; this
 * file parses the flags, shows progress and prints the summary. */
#include "core/base/common.h"
#include "core/base/dtype.h"
#include "io/hfmodel.h"
#include "tools/cli.h"
#include "tools/tools.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Progress through hf_progress_fn: the total is known only once the
 * conversion has checked its input, so the line starts on the first call. */
typedef struct hf_progress {
    tool_progress p;
    const char *what;
    int started;
    uint64_t total;
} hf_progress;

static void on_progress(void *ctx, uint64_t done, uint64_t total) {
    hf_progress *h = ctx;
    if (!h->started) {
        progress_start(&h->p, h->what, total);
        h->started = 1;
        h->total = total;
    }
    progress_update(&h->p, done);
}

static void progress_finish(hf_progress *h) {
    if (h->started) progress_end(&h->p, h->total);
}

int cmd_import(int argc, char **argv) {
    const char *out, *dtype_s, *base_model;
    int no_dq, force;
    cli_opt opts[] = {
        {"output", 'o', CLI_STR, &out, NULL, "FILE", "store to write (required)"},
        {"base-model", 0, CLI_STR, &base_model, NULL, "NAME",
         "the model's name for the adapters trained on it, e.g. meta-llama/Llama-3.1-70B (default: the original "
         "model a pruned export's config.json names, none for a pruned one naming none, else HF_DIR's absolute "
         "path); PEFT's base_model_name_or_path, carried by prune and quantize"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL, "replace FILE if it exists"},
        {"dtype", 0, CLI_STR, &dtype_s, "bf16", "T",
         "projection weights: bf16, f32, or nf4 (NF4 with double quantization as QLoRA, also spelled nf4-dq); the "
         "embedding and lm_head stay bf16 (f32 with f32), norms f32"},
        {"no-double-quant", 0, CLI_FLAG, &no_dq, NULL, NULL, "with --dtype nf4: plain NF4 (absmax kept in f32)"},
        {0},
    };
    cli_cmd cmd = {"import", "HF_DIR",
                   "Converts a Hugging Face LLaMA checkpoint directory (config.json with model.safetensors or "
                   "model.safetensors.index.json and its shards) into a store, tensor by tensor.",
                   opts, 1, 1, "tiertrain import Meta-Llama-3.1-8B --dtype nf4 -o llama3.1-8b-nf4.tier"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!out) {
        fprintf(stderr, "tiertrain import: -o FILE is required (the store to write)\n");
        return 2;
    }
    uint32_t lin;
    if (strcmp(dtype_s, "bf16") == 0) lin = TT_DTYPE_BF16;
    else if (strcmp(dtype_s, "f32") == 0) lin = TT_DTYPE_F32;
    else if (strcmp(dtype_s, "nf4") == 0 || strcmp(dtype_s, "nf4-dq") == 0) lin = TT_DTYPE_NF4DQ;
    else {
        fprintf(stderr, "tiertrain import: --dtype must be bf16, f32, nf4 or nf4-dq, not '%s'\n", dtype_s);
        return 2;
    }
    if (no_dq) {
        if (strcmp(dtype_s, "nf4") != 0) {
            fprintf(stderr, "tiertrain import: --no-double-quant goes with --dtype nf4 only\n");
            return 2;
        }
        lin = TT_DTYPE_NF4;
    }
    const char *inputs[] = {pos[0], NULL}; /* the directory: every file in it */
    if (tool_check_out("import", "-o", out, inputs, force)) return 2;
    if (base_model && tier_source_check(base_model, "--base-model")) {
        tool_fail("import");
        return 2;
    }
    hf_progress prog = {.what = "import"};
    /* without --base-model hf_import picks the default: the config's recorded original, or the directory */
    hf_import_opts o = {lin, on_progress, &prog, base_model, 1};
    hf_import_stats st;
    rc = hf_import(pos[0], out, &o, &st);
    if (rc) return tool_fail("import");
    progress_finish(&prog);
    char sz[32];
    printf("import: %s -> %s: %u safetensors file%s, %s of tensors, %s projections\n", pos[0], out, st.n_files,
           st.n_files == 1 ? "" : "s", tt_fmt_bytes(st.bytes, sz, sizeof sz), dtype_name(lin));
    char ex[sizeof st.unused_example * 4 + 8]; /* a tensor name from the file */
    if (st.no_source)
        fprintf(stderr, "tiertrain import: note: %s holds a pruned model whose config.json names no original, so "
                        "the store records no source; pass --base-model NAME to name it for adapters\n", pos[0]);
    if (st.n_unused)
        fprintf(stderr, "tiertrain import: note: ignored %u tensor%s that LLaMA does not use (e.g. %s)\n", st.n_unused,
                st.n_unused == 1 ? "" : "s", tt_escape(st.unused_example, ex, sizeof ex));
    return 0;
}

int cmd_export(int argc, char **argv) {
    const char *out, *dtype_s;
    int force;
    cli_opt opts[] = {
        {"output", 'o', CLI_STR, &out, NULL, "DIR", "checkpoint directory to write, created when missing (required)"},
        {"dtype", 0, CLI_STR, &dtype_s, "bf16", "T", "dtype of every tensor: bf16 or f32 (NF4 is dequantized)"},
        {"force", 0, CLI_FLAG, &force, NULL, NULL,
         "replace model.safetensors and config.json when DIR already holds a checkpoint (other files there, e.g. "
         "the tokenizer, stay as they are)"},
        {0},
    };
    cli_cmd cmd = {"export", "FILE",
                   "Writes a store as a Hugging Face checkpoint directory: config.json and model.safetensors (a "
                   "pruned store adds its per-layer dimensions and pruning map to config.json).",
                   opts, 1, 1, "tiertrain export llama3.1-8b-nf4.tier -o llama3.1-8b-hf"};
    char *pos[1];
    int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
    if (rc) return rc == 1 ? 0 : 2;
    if (!out) {
        fprintf(stderr, "tiertrain export: -o DIR is required (the checkpoint directory to write)\n");
        return 2;
    }
    uint32_t dt = dtype_parse(dtype_s);
    if (dt != TT_DTYPE_BF16 && dt != TT_DTYPE_F32) {
        fprintf(stderr, "tiertrain export: --dtype must be bf16 or f32, not '%s'\n", dtype_s);
        return 2;
    }
    const char *inputs[] = {pos[0], NULL}, *names[] = {HF_WEIGHTS_FILE, HF_CONFIG_FILE, NULL};
    if (tool_check_out_dir("export", "-o", out, "a checkpoint", names, inputs, force)) return 2;
    hf_progress prog = {.what = "export"};
    if (hf_export(pos[0], out, dt, force, on_progress, &prog)) return tool_fail("export");
    progress_finish(&prog);
    printf("export: %s -> %s/" HF_WEIGHTS_FILE " (%s) and %s/" HF_CONFIG_FILE "\n", pos[0], out, dtype_name(dt), out);
    return 0;
}
